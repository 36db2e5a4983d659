"""Podman with no API service (the usual case without systemd): metadata from its on-disk state, live.

Real rootful Podman containers; the MetadataService's podman client with no socket to talk to reads
containers/storage's records, the OCI bundle and the events log."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from container_images import IMAGE_REPO, IMAGE_TAG
from container_live import podman_runtime
from container_runtimes import Podman

from falconet.model.event import Container
from falconet.sensor.containers.registry import EngineSettings
from falconet.sensor.containers.service import MetadataService
from falconet.sensor.containers.store import ContainerStore

pytestmark = pytest.mark.containers


@pytest.fixture
def service(podman: Podman, tmp_path: Any) -> Iterator[MetadataService]:
    settings = EngineSettings(sockets=(str(tmp_path / "no-service.sock"),))
    svc = MetadataService({"podman": settings, "docker": EngineSettings(enabled=False),
                           "cri": EngineSettings(enabled=False)}, lambda _line: None,
                          store=ContainerStore(exit_grace=0.0))
    svc.start()
    yield svc
    svc.close()


def wait(pred: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_podman_without_a_service_is_read_from_disk(service: MetadataService) -> None:
    rt = podman_runtime()
    name = f"fnt-podman-disk-{uuid.uuid4().hex[:8]}"
    try:
        full_id = rt.run(name, opts=("--privileged", "--label", "tier=db"))
        # The events log announces the container: cached without anyone asking.
        # (First what the events log's line said, then the full record from the files.)
        got: Container = wait(lambda: None if service.store.is_partial(full_id[:12]) else service.get(full_id[:12]),
                              "the container's full record in the cache")
        assert service.stats.runtimes["podman"].up is True
        assert (got.name, got.full_id, got.type) == (name, full_id, "podman")
        assert (got.image_repository, got.image_tag) == (f"localhost/{IMAGE_REPO}", IMAGE_TAG)
        assert got.privileged is True
        assert got.labels.get("tier") == "db" and got.labels.get("app") == "falconet-test"
        assert got.host_network is False and got.host_pid is False
        rt.remove(name)
        # Its exit is in the events log too: the entry goes (grace 0 here).
        def gone() -> bool:
            service.sweep()
            return service.get(full_id[:12]) is None

        wait(gone, "the entry to go")
    finally:
        rt.remove(name)
