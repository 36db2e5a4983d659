"""The metadata service against a real dockerd, without the sensor: what its events stream and records give.

A container is known from `create`, before any process of it runs (so the hold has nothing to wait for), and
its entry goes when it exits (grace 0 here)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from container_images import IMAGE_REF, IMAGE_REPO, IMAGE_TAG
from container_runtimes import RUN_LIMITS, Dockerd, label
from stalling_sockets import StallingProxy

from falconet.model.event import Container, Event
from falconet.sensor.containers.registry import EngineSettings
from falconet.sensor.containers.service import MetadataService
from falconet.sensor.containers.store import ContainerStore
from falconet.server.daemon_containers import ContainerSource
from falconet.server.source import KernelFilter, SourceCounters

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


def service_named(svc: MetadataService, full_id: str) -> Container | None:
    """The cached container when its record carries a name (a partial one from an event may not)."""
    got = svc.get(full_id[:12])
    return got if got is not None and got.name is not None else None


def test_known_from_create_and_gone_after_exit(dockerd: Dockerd, service: MetadataService) -> None:
    name = f"fnt-docker-svc-{uuid.uuid4().hex[:8]}"
    full_id = dockerd.cli("create", "--name", name, "--label", label(), "--network", "none", *RUN_LIMITS,
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


def test_a_stalled_api_leaves_docker_up_and_its_new_containers_named(dockerd: Dockerd, tmp_path: Path) -> None:
    """dockerd too busy to answer (its API stalls past the client's timeout) while its events stream flows:
    the lookup that timed out must not leave Docker down, and containers created during and after the stall
    are cached with their names and images."""
    logs: list[str] = []
    with StallingProxy(tmp_path / "docker.sock", dockerd.socket) as proxy:
        svc = MetadataService({"docker": EngineSettings(sockets=(str(proxy.path),), timeout=1.0),
                               "podman": EngineSettings(enabled=False), "cri": EngineSettings(enabled=False)},
                              logs.append, store=ContainerStore(exit_grace=0.0))
        svc.start()
        names: list[str] = []
        try:
            wait(lambda: svc.stats.runtimes["docker"].up, "dockerd's events stream")
            proxy.stall()
            # An id dockerd's files do not have goes to the API, which says nothing within the timeout.
            assert svc.lookup(uuid.uuid4().hex * 2, "docker") is None
            assert proxy.held_requests > 0
            # Busy is not down: holds still wait for Docker's containers, and no outage is reported.
            assert svc.can_wait_for(uuid.uuid4().hex[:12], "docker"), logs
            assert svc.stats.runtimes["docker"].errors == 0 and not [m for m in logs if "unavailable" in m], logs
            for phase in ("during", "after"):
                name = f"fnt-docker-stall-{phase}-{uuid.uuid4().hex[:8]}"
                names.append(name)
                full_id = dockerd.cli("run", "-d", "--name", name, "--label", label(), "--network", "none",
                                      *RUN_LIMITS, IMAGE_REF).stdout.strip()
                got = wait(lambda: service_named(svc, full_id), f"the container created {phase} the stall, named")
                assert (got.name, got.image_repository, got.image_tag) == (name, IMAGE_REPO, IMAGE_TAG)
                assert svc.can_wait_for(full_id[:12], "docker"), logs
                proxy.resume()
        finally:
            svc.close()
            if names:
                dockerd.cli("rm", "-f", *names, check=False)


class _NoEvents:
    """Stands in for the sensor, which this test is not about: it only has to start and stop."""

    name = "ebpf"

    def start(self) -> None: ...

    def poll(self, timeout_ms: int) -> list[Event] | None:
        return []

    def counters(self) -> SourceCounters:
        return SourceCounters(0, 0)

    def kernel_filter(self) -> KernelFilter | None:
        return None

    def close(self) -> None: ...


def test_the_daemons_container_source_starts_once_docker_has_answered(dockerd: Dockerd, tmp_path: Path) -> None:
    """The daemon says "ready" when its source has started. Had the source started before Docker's first
    answer, a container started right then would pass unnamed (Docker "not reached yet" is not worth waiting
    for): Docker's first requests are held here until they are seen, so start() must outlast them."""
    logs: list[str] = []
    with StallingProxy(tmp_path / "docker.sock", dockerd.socket) as proxy:
        proxy.stall()

        def release() -> None:
            wait(lambda: proxy.held_requests, "Docker's first request")
            proxy.resume()

        releaser = threading.Thread(target=release, daemon=True)
        releaser.start()
        svc = MetadataService({"docker": EngineSettings(sockets=(str(proxy.path),), timeout=10.0),
                               "podman": EngineSettings(enabled=False), "cri": EngineSettings(enabled=False)},
                              logs.append)
        source = ContainerSource(_NoEvents(), svc)
        source.start()
        try:
            assert svc.stats.runtimes["docker"].up is True, logs
            assert proxy.held_requests > 0  # the answer really was late
        finally:
            source.close()
            releaser.join(30)
