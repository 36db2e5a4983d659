"""Fixtures for the container tests: real runtimes (container_runtimes.py), the locally built image
(container_images.py), and a real `falconet run` with the real eBPF sensor whose container engines point at
them. Tests that run containers are marked `containers` (and `bpf`, `upstream` where they use the sensor and
Falco's rules). With CI=true a runtime or sensor that cannot start FAILS the test; elsewhere (not root,
runtime not installed) it skips (tests/resources.py). Each test run claims a slot of its own for its runtimes
(run_slots.py), so two runs on one machine at once neither share nor stop each other's dockerd.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from container_images import ALLOWED_REPO, IMAGE_TAG, ImageError
from container_runtimes import Dockerd, Podman, PodmanService, RuntimeStartError
from resources import missing, require_root


def unavailable(what: str) -> None:
    """tests/resources.py's policy: FAIL with CI=true (CI has the runtimes), skip elsewhere."""
    missing(what)


def need_root() -> None:
    require_root("running containers")


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
        p.cleanup()  # what a killed earlier run of this slot left
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
