"""A runtime that is missing, refuses, hangs: one log line and a metric each, never a blocked caller.

Real sockets in each state (a path with nothing there, a socket nobody listens on, a listener that accepts and
never answers), the real Docker SDK client, the real MetadataService and hold; only the events are made here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stalling_sockets import Listener

from falconet.model.event import Container, Event, Process
from falconet.sensor.containers.hold import MetadataHold
from falconet.sensor.containers.registry import EngineSettings
from falconet.sensor.containers.service import MetadataService

CID = "0123456789ab"


def event(num: int, container_id: str) -> Event:
    return Event(num=num, ts=num, type="execve", tid=100 + num, res=0, proc=Process(pid=100 + num, name="sh"),
                 container=Container(id=container_id))


@pytest.fixture
def hanging_socket(tmp_path: Path) -> Iterator[Path]:
    """A listener that accepts connections and never answers."""
    with Listener(tmp_path / "hang.sock") as listener:
        yield listener.path


@pytest.fixture
def refusing_socket(tmp_path: Path) -> Path:
    """A socket file nobody listens on (a runtime that crashed): connect() is refused."""
    path = tmp_path / "refuse.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return path


@pytest.mark.parametrize("state", ["missing", "refusing", "hanging"])
def test_a_broken_runtime_costs_one_log_line_and_a_metric(
    state: str, tmp_path: Path, refusing_socket: Path, hanging_socket: Path
) -> None:
    path = {"missing": tmp_path / "absent.sock", "refusing": refusing_socket, "hanging": hanging_socket}[state]
    logs: list[str] = []
    settings = EngineSettings(sockets=(str(path),), timeout=0.5)
    svc = MetadataService({"docker": settings, "podman": EngineSettings(enabled=False),
                           "cri": EngineSettings(enabled=False)}, logs.append)
    svc.start()
    try:
        hold = MetadataHold(svc)
        # Events flow at once while the runtime is being tried: host and container alike.
        t0 = time.monotonic()
        out = hold.feed([event(1, "host"), event(2, CID)])
        assert [e.num for e in out] == [1, 2] and time.monotonic() - t0 < 0.1
        # A lookup returns (within the client's timeout) and says nothing is known.
        t0 = time.monotonic()
        assert svc.lookup(CID) is None
        assert time.monotonic() - t0 < 5
        deadline = time.monotonic() + 10
        while svc.stats.runtimes["docker"].errors == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        state_ = svc.stats.runtimes["docker"]
        assert state_.up is False and state_.errors == 1
        # The watcher keeps retrying (with backoff) without logging again.
        time.sleep(1.0)
        assert svc.stats.runtimes["docker"].errors == 1
        unavailable = [line for line in logs if "unavailable" in line]
        assert len(unavailable) == 1, logs
        assert "docker" in unavailable[0]
        # Unknown container: its events pass without waiting, fields as Falco reads unknown containers.
        out = hold.feed([event(3, CID)])
        assert [e.num for e in out] == [3] and out[0].container.name is None
        assert hold.expired == 0
    finally:
        svc.close()


def test_no_runtime_at_all_changes_nothing_for_host_events() -> None:
    svc = MetadataService({}, lambda _line: None, clients=[])
    svc.start()
    hold = MetadataHold(svc)
    events = [event(i, "host") for i in range(100)]
    assert hold.feed(events) == events
    assert hold.poll_timeout_ms(100) == 100 and hold.waited == 0


def test_podman_whose_files_are_readable_is_not_down_when_its_api_is_slow(tmp_path: Path, hanging_socket: Path) -> None:
    """Podman's API waits on the container's lock while `podman run` holds it (seconds, under load); with its
    storage readable, a lookup the files cannot answer yet is "not known yet", never "Podman unavailable"
    (which would stop every hold for Podman containers until the events stream reconnected)."""
    from falconet.sensor.containers.podman import PodmanClient

    (tmp_path / "storage" / "overlay-containers").mkdir(parents=True)
    (tmp_path / "storage" / "overlay-containers" / "containers.json").write_text("[]")
    client = PodmanClient(EngineSettings(sockets=(str(hanging_socket),), timeout=0.3,
                                         extra={"storage_root": str(tmp_path / "storage")}))
    try:
        assert client.lookup(CID) is None
    finally:
        client.close()
