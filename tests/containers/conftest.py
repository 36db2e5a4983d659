"""Fixtures for the container tests: real runtimes (container_runtimes.py), the locally built image
(container_images.py), and a real `falconet run` with the real eBPF sensor whose container engines point at
them. Every test here is marked `containers`. With CI=true a runtime or sensor that cannot start FAILS the
test; elsewhere (not root, runtime not installed) it skips.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))  # daemon_harness, shared with tests/daemon

from container_images import ALLOWED_REPO, IMAGE_TAG, ImageError  # noqa: E402
from container_runtimes import Dockerd, Podman, PodmanService, RuntimeStartError  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.containers)


def unavailable(what: str) -> None:
    """FAIL under CI (the machine must have it), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(what)
    pytest.skip(what)


def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("the container tests need root (runtimes and the eBPF sensor)")


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    need_root()
    d = Dockerd()
    try:
        d.start()
        d.ensure_image()
        d.ensure_image(f"{ALLOWED_REPO}:{IMAGE_TAG}")
    except (RuntimeStartError, ImageError, RuntimeError) as exc:
        d.stop()
        unavailable(f"dockerd cannot start here: {exc}")
    yield d
    d.stop()


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    need_root()
    p = Podman()
    try:
        p.check()
        p.ensure_image()
        p.ensure_image(f"{ALLOWED_REPO}:{IMAGE_TAG}")
    except (RuntimeStartError, ImageError, RuntimeError) as exc:
        unavailable(f"podman cannot run here: {exc}")
    yield p
    p.cleanup()


@pytest.fixture(scope="session")
def podman_service(podman: Podman) -> Iterator[PodmanService]:
    svc = PodmanService()
    try:
        svc.start()
    except RuntimeStartError as exc:
        unavailable(str(exc))
    yield svc
    svc.stop()
