"""The container metadata machinery without runtimes: parsing what runtimes say, the bounded cache, and the
hold's delivery rule (driven by a stub runtime client, since the rule is what is under test here; the real
runtimes are in tests/containers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from falconet.model.event import Container, Event, Process
from falconet.sensor.containers import parse
from falconet.sensor.containers.docker import DockerClient
from falconet.sensor.containers.hold import MetadataHold
from falconet.sensor.containers.registry import EngineSettings, RuntimeEvent
from falconet.sensor.containers.service import MetadataService
from falconet.sensor.containers.store import ContainerStore

A, B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nginx", ("nginx", "latest", None)),
        ("nginx:1.27", ("nginx", "1.27", None)),
        ("localhost/falconet-test/busybox:1.0", ("localhost/falconet-test/busybox", "1.0", None)),
        ("registry:5000/team/app", ("registry:5000/team/app", "latest", None)),
        ("registry:5000/team/app:2@sha256:abc", ("registry:5000/team/app", "2", "sha256:abc")),
        ("app@sha256:abc", ("app", None, "sha256:abc")),
        ("sha256:" + "f" * 64, (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_split_image(ref: str | None, expected: tuple[str | None, ...]) -> None:
    assert parse.split_image(ref) == expected


def test_runtime_text_is_made_safe() -> None:
    assert parse.clean("evil\x1b[31mname\n") == "evil?[31mname?"
    labels = parse.labels({"ok": "v", "long": "x" * 101, "bad\x00key": "v\x07", 3: "n", "empty": ""})
    assert labels == {"ok": "v", "bad?key": "v?", "empty": ""}
    assert parse.rfc3339_ns("2026-12-06T06:46:35.80218272Z") == 1796539595802182720
    assert parse.rfc3339_ns("0001-01-01T00:00:00Z") is None and parse.rfc3339_ns("garbage") is None


def test_docker_inspect_becomes_the_model() -> None:
    client = DockerClient(EngineSettings(sockets=("/nonexistent",)))
    full = "018a4db8b9df240d43370b788910eab1a1c4cf1defed3be85fd90ddbcd2af224"
    c = client.container({
        "Id": full, "Name": "/web", "Created": "2026-12-06T06:46:35.80218272Z", "Image": "sha256:" + "c" * 64,
        "Config": {"Image": "falconet-test/busybox:1.0", "Labels": {"app": "demo"}},
        "HostConfig": {"Privileged": True, "PidMode": "host", "NetworkMode": "none", "IpcMode": "private"},
        "Mounts": [{"Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock", "Mode": "",
                    "RW": True, "Propagation": "rprivate"}],
        "NetworkSettings": {"IPAddress": "", "Networks": {"doc": {"IPAddress": "192.0.2.7"}}},
    })
    assert (c.id, c.full_id, c.type, c.name) == (full[:12], full, "docker", "web")
    assert (c.image_repository, c.image_tag, c.image_id) == ("falconet-test/busybox", "1.0", "c" * 64)
    assert c.privileged is True and c.host_pid is True and c.host_network is False and c.host_ipc is False
    assert c.ip == "192.0.2.7" and c.labels == {"app": "demo"} and c.start_ts == 1796539595802182720
    assert c.mounts == [{"source": "/var/run/docker.sock", "dest": "/var/run/docker.sock", "mode": "",
                         "rdwr": True, "propagation": "rprivate"}]


def test_the_cache_is_bounded_and_forgets_exited_containers() -> None:
    now = [0.0]
    store = ContainerStore(max_entries=3, exit_grace=5.0, clock=lambda: now[0])
    for i in range(5):
        store.put(Container(id=f"{i:012d}"))
    assert len(store) == 3 and store.evicted == 2 and store.get(f"{0:012d}") is None
    store.mark_exited(f"{4:012d}")
    now[0] = 4.0
    assert store.sweep() == 0 and store.get(f"{4:012d}") is not None  # in its grace: late events still find it
    now[0] = 5.0
    assert store.sweep() == 1 and store.get(f"{4:012d}") is None


class StubRuntime:
    """Answers lookups for the ids it is given, each once `gate` opens (or at once when it is open)."""

    name = "docker"
    types = frozenset({"docker"})

    def __init__(self, known: dict[str, Container]) -> None:
        self.known = known
        self.gate = threading.Event()
        self.gate.set()

    def lookup(self, container_id: str) -> Container | None:
        self.gate.wait(10)
        return self.known.get(container_id)

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        yield RuntimeEvent("ready")
        stop.wait()

    def close(self) -> None:
        self.gate.set()


def ev(num: int, cid: str) -> Event:
    return Event(num=num, ts=num, type="execve", tid=num, res=0, proc=Process(pid=num), container=Container(id=cid))


@pytest.fixture
def stub() -> Iterator[tuple[StubRuntime, MetadataService]]:
    runtime = StubRuntime({A: Container(id=A, full_id=A * 5 + "aaaa", name="web", type="docker")})
    svc = MetadataService({}, lambda _line: None, clients=[runtime])
    svc.start()
    deadline = time.monotonic() + 5
    while not svc.stats.runtimes["docker"].up:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    yield runtime, svc
    svc.close()


def drain(hold: MetadataHold, until: int, timeout: float = 5.0) -> list[Event]:
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(out) < until:
        assert time.monotonic() < deadline, [e.num for e in out]
        out += hold.feed([])
        time.sleep(0.001)
    return out


def test_a_containers_events_wait_for_its_metadata_and_nothing_else_does(
    stub: tuple[StubRuntime, MetadataService],
) -> None:
    runtime, svc = stub
    runtime.gate.clear()  # the runtime is slow to answer
    hold = MetadataHold(svc, max_wait=10.0)
    out = hold.feed([ev(1, A), ev(2, "host"), ev(3, A), ev(4, B), ev(5, "host")])
    assert [e.num for e in out] == [2, 5]  # host events pass; A's wait; B (same runtime, pending too) waits
    assert hold.poll_timeout_ms(100) <= 5
    runtime.gate.set()
    rest = drain(hold, 3)
    by_num = {e.num: e for e in rest}
    assert [e.num for e in rest if e.container.id == A] == [1, 3]  # in order
    assert by_num[1].container.name == "web" and by_num[3].container.name == "web"
    assert by_num[4].container.name is None  # the runtime does not know B: released as soon as it said so
    assert hold.expired == 0 and hold.waited == 2
    # Known now: later events of A never wait.
    assert [e.container.name for e in hold.feed([ev(6, A)])] == ["web"]


def test_the_wait_is_bounded_and_counted(stub: tuple[StubRuntime, MetadataService]) -> None:
    runtime, svc = stub
    runtime.gate.clear()
    now = [100.0]
    hold = MetadataHold(svc, max_wait=0.5, clock=lambda: now[0])
    assert hold.feed([ev(1, A)]) == []
    now[0] = 100.49
    assert hold.feed([ev(2, "host")])[0].num == 2
    now[0] = 100.5
    out = hold.feed([])
    assert [e.num for e in out] == [1] and out[0].container.name is None
    assert hold.expired == 1
    runtime.gate.set()


def test_flush_releases_everything_held(stub: tuple[StubRuntime, MetadataService]) -> None:
    runtime, svc = stub
    runtime.gate.clear()
    hold = MetadataHold(svc, max_wait=10.0)
    hold.feed([ev(1, A), ev(2, A)])
    assert [e.num for e in hold.flush()] == [1, 2] and hold.held == 0
    runtime.gate.set()
