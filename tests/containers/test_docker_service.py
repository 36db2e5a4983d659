"""The metadata service against a real dockerd, without the sensor: what its events stream and records give.

A container is known from `create`, before any process of it runs (so the hold has nothing to wait for), and
its entry goes when it exits (grace 0 here)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from container_images import IMAGE_REF, IMAGE_REPO, IMAGE_TAG
from container_runtimes import LABEL, RUN_LIMITS, Dockerd

from falconet.sensor.containers.registry import EngineSettings
from falconet.sensor.containers.service import MetadataService
from falconet.sensor.containers.store import ContainerStore

pytestmark = pytest.mark.containers


@pytest.fixture
def service(dockerd: Dockerd) -> Iterator[MetadataService]:
    svc = MetadataService({"docker": EngineSettings(sockets=(str(dockerd.socket),)),
                           "podman": EngineSettings(enabled=False), "cri": EngineSettings(enabled=False)},
                          lambda _line: None, store=ContainerStore(exit_grace=0.0))
    svc.start()
    wait(lambda: svc.stats.runtimes["docker"].up, "dockerd's events stream")
    yield svc
    svc.close()


def wait(pred: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_known_from_create_and_gone_after_exit(dockerd: Dockerd, service: MetadataService) -> None:
    name = f"fnt-docker-svc-{uuid.uuid4().hex[:8]}"
    full_id = dockerd.cli("create", "--name", name, "--label", LABEL, "--network", "none", *RUN_LIMITS,
                          "-v", "/etc/hostname:/var/run/docker.sock:ro", IMAGE_REF).stdout.strip()
    try:
        # Created, never started: no process of it exists, and the service already knows it.
        got = wait(lambda: service.get(full_id[:12]), "the created container in the cache")
        assert service.stats.lookups == 0  # from the events stream, not from a lookup
        assert (got.name, got.full_id, got.type) == (name, full_id, "docker")
        assert (got.image_repository, got.image_tag) == (IMAGE_REPO, IMAGE_TAG)
        assert got.mounts[0]["dest"] == "/var/run/docker.sock" and got.mounts[0]["rdwr"] is False
        dockerd.cli("start", name)
        dockerd.cli("rm", "-f", name)

        def gone() -> bool:
            service.sweep()
            return service.get(full_id[:12]) is None

        wait(gone, "the entry to go after the container exits")
    finally:
        dockerd.cli("rm", "-f", name, check=False)
