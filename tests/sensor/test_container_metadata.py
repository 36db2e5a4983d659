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
from falconet.sensor.containers.registry import EngineSettings, RuntimeEvent, RuntimeUnavailable
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
    hold = MetadataHold(svc, max_wait=1.0)
    out = hold.feed([ev(1, A), ev(2, "host"), ev(3, A), ev(4, B), ev(5, "host")])
    assert [e.num for e in out] == [2, 5]  # host events pass; A's wait; B (same runtime, pending too) waits
    assert hold.poll_timeout_ms(100) <= 5
    runtime.gate.set()
    rest = drain(hold, 2)
    assert [e.num for e in rest] == [1, 3]  # A's, in order, as soon as its metadata is in
    assert rest[0].container.name == "web" and rest[1].container.name == "web"
    # The runtime does not know B: it waits out the bound (its events stream might still say something).
    (late,) = drain(hold, 1)
    assert late.num == 4 and late.container.name is None
    assert hold.expired == 1 and hold.waited == 2
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


def test_after_an_expiry_the_containers_later_events_carry_the_metadata_once_it_arrives(
    stub: tuple[StubRuntime, MetadataService],
) -> None:
    runtime, svc = stub
    runtime.gate.clear()  # the runtime answers after the wait
    hold = MetadataHold(svc, max_wait=0.0)
    (first,) = hold.feed([ev(1, A)])  # held and released by the zero deadline in the same call
    assert first.num == 1 and first.container.name is None and hold.expired == 1
    svc.arrived.clear()
    runtime.gate.set()
    assert svc.arrived.wait(5)  # the lookup the expired hold asked for is answered, and cached
    assert [(e.num, e.container.name) for e in hold.feed([ev(2, A)])] == [(2, "web")]
    assert hold.waited == 1  # the later event did not wait again


def test_a_container_unknown_at_first_is_asked_about_again_and_named_later(
    stub: tuple[StubRuntime, MetadataService], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A runtime that had not written the container yet says it does not know it: the hold expires, and a
    later event asks again (after UNKNOWN_RETRY) and the one after it carries the name."""
    from falconet.sensor.containers import service

    monkeypatch.setattr(service, "UNKNOWN_RETRY", 0.05)
    runtime, svc = stub
    hold = MetadataHold(svc, max_wait=0.0)
    svc.arrived.clear()
    out = hold.feed([ev(1, B)])
    assert svc.arrived.wait(5)  # "not known"
    out += drain(hold, 1 - len(out))
    assert [(e.num, e.container.name) for e in out] == [(1, None)]
    runtime.known[B] = Container(id=B, full_id=B * 5 + "bbbb", name="late", type="docker")
    deadline = time.monotonic() + 5
    while (got := svc.get(B)) is None:
        assert time.monotonic() < deadline
        for e in hold.feed([ev(2, B)]) + hold.feed([]):
            assert e.container.name in (None, "late")
        time.sleep(0.01)
    assert got.name == "late"
    assert [(e.num, e.container.name) for e in hold.feed([ev(3, B)])] == [(3, "late")]


class FlakyRuntime(StubRuntime):
    """Its first lookup times out (a loaded runtime's API); its events stream flows when `announce` is set."""

    def __init__(self, known: dict[str, Container]) -> None:
        super().__init__(known)
        self.failures = 1
        self.announce = threading.Event()

    def lookup(self, container_id: str) -> Container | None:
        if self.failures:
            self.failures -= 1
            raise RuntimeUnavailable("no answer within 2s")
        return super().lookup(container_id)

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        yield RuntimeEvent("ready")
        self.announce.wait(10)
        yield RuntimeEvent("start", B * 5 + "bbbb", Container(id=B, full_id=B * 5 + "bbbb", name="db", type="docker"))
        stop.wait()


def test_a_runtime_marked_down_by_a_failed_lookup_is_up_again_at_its_next_event() -> None:
    runtime = FlakyRuntime({A: Container(id=A, name="web", type="docker")})
    svc = MetadataService({}, lambda _line: None, clients=[runtime])
    svc.start()
    try:
        deadline = time.monotonic() + 5
        while not svc.stats.runtimes["docker"].up:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert svc.lookup(A) is None and svc.stats.runtimes["docker"].up is False  # the timeout
        assert not svc.can_wait_for(B, "docker")
        svc.arrived.clear()
        runtime.announce.set()  # the stream (never broken) says a container started
        assert svc.arrived.wait(5)
        assert svc.stats.runtimes["docker"].up is True and svc.can_wait_for(A, "docker")
        got = svc.get(B)
        assert got is not None and got.name == "db"
        assert svc.stats.runtimes["docker"].errors == 1
    finally:
        svc.close()


def test_flush_releases_everything_held(stub: tuple[StubRuntime, MetadataService]) -> None:
    runtime, svc = stub
    runtime.gate.clear()
    hold = MetadataHold(svc, max_wait=10.0)
    hold.feed([ev(1, A), ev(2, A)])
    assert [e.num for e in hold.flush()] == [1, 2] and hold.held == 0
    runtime.gate.set()


def test_a_network_namespace_address_is_read_from_the_kernel_table() -> None:
    import os

    # This process's own namespace: whatever the first non-loopback local address is, it is one.
    got = parse.netns_ipv4(os.getpid())
    assert got is None or (not got.startswith("127.") and got.count(".") == 3)
    assert parse.netns_ipv4(2**22 + 7) is None  # no such process


def test_what_an_event_said_is_replaced_by_the_full_record_and_never_replaces_one() -> None:
    store = ContainerStore()
    store.put(Container(id=A, name="web"), partial=True)
    store.put(Container(id=A, name="web", privileged=True), replace=False)
    got = store.get(A)
    assert got is not None and got.privileged is True
    store.put(Container(id=A, name="web"), partial=True)
    got = store.get(A)
    assert got is not None and got.privileged is True


def test_a_record_made_from_an_event_alone_is_completed_before_use(
    stub: tuple[StubRuntime, MetadataService],
) -> None:
    runtime, svc = stub
    svc.store.put(Container(id=A, name="web"), partial=True)  # what a create event said, before the bundle
    runtime.gate.clear()
    hold = MetadataHold(svc, max_wait=10.0)
    assert hold.feed([ev(1, A)]) == []  # waits for the full record
    runtime.gate.set()
    (got,) = drain(hold, 1)
    assert got.container.type == "docker" and got.container.full_id.startswith(A)
