"""`Client` and `AsyncClient` against the real AlertServer (shared `alert_server` fixture), over the UNIX socket
and over mTLS: typed alerts with every field intact, server-side filters, start positions, batched streams,
resume after a cut, and reads that never consume the Falco cursor."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import grpc
import pytest
from sdk_support import Collector, make_alert, wait_until, without_cursor

from falconet.model.alert import Alert, Cursor, Priority
from falconet.sdk import (
    AsyncClient,
    Backoff,
    Client,
    ConfigError,
    ConnectError,
    InvalidArgument,
)
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc

FAST = Backoff(initial=0.02, maximum=0.2)


def unix_client(server: Any, **kw: Any) -> Client:
    return Client(unix_socket=server.unix_path, backoff=FAST, **kw)


def tls_kwargs(server: Any) -> dict[str, Any]:
    c = server.certs
    return {
        "host": server.tcp_host,
        "port": server.tcp_port,
        "ca": c / "ca.crt",
        "cert": c / "client.crt",
        "key": c / "client.key",
    }


@pytest.mark.parametrize("transport", ["unix", "mtls", "mtls-server-name"])
def test_version(alert_server: Any, transport: str) -> None:
    kw = {"unix_socket": alert_server.unix_target} if transport == "unix" else tls_kwargs(alert_server)
    if transport == "mtls-server-name":
        kw["server_name"] = "localhost"  # dial the address, verify the certificate's DNS name
    with Client(**kw) as client:
        v = client.version()
    assert v.version and v.engine_version
    assert (v.major, v.minor, v.patch) == tuple(int(x) for x in v.version.split("-")[0].split(".")[:3])


@pytest.mark.parametrize("transport", ["unix", "mtls"])
def test_subscribe_live_alerts_intact(alert_server: Any, transport: str) -> None:
    kw = {"unix_socket": alert_server.unix_path} if transport == "unix" else tls_kwargs(alert_server)
    sent = [make_alert(i) for i in range(50)]
    with Client(backoff=FAST, **kw) as client:
        stream = Collector(client.subscribe(start="now"))
        wait_until(lambda: len(alert_server.hub.stats().readers) == 1, what="the subscription")
        cursors = [alert_server.publish(a) for a in sent]
        got: list[Alert] = stream.take(len(sent))
    # close() ends the subscription being iterated in the other thread, quietly.
    stream.thread.join(10)
    assert not stream.thread.is_alive() and stream.error is None
    assert [without_cursor(a) for a in got] == [without_cursor(a) for a in sent]
    assert [a.cursor for a in got] == cursors
    assert isinstance(got[0].priority, Priority) and got[1].output_fields["proc.pid"] == 101


def test_get_filters_and_start(alert_server: Any) -> None:
    sent = [make_alert(i) for i in range(24)]
    cursors = [alert_server.publish(a) for a in sent]
    with unix_client(alert_server) as client:
        everything = client.get()
        assert [without_cursor(a) for a in everything] == [without_cursor(a) for a in sent]
        severe = client.get(min_priority="error")
        assert severe and all(a.priority <= Priority.ERROR for a in severe)
        assert len(severe) == sum(1 for a in sent if a.priority <= Priority.ERROR)
        assert {a.rule for a in client.get(rules="Rule 1")} == {"Rule 1"}
        assert all("t1" in a.tags for a in client.get(tags=["t1"]))
        assert {a.source for a in client.get(sources=["k8s_audit"])} == {"k8s_audit"}
        after = client.get(start=cursors[19])
        assert [a.cursor for a in after] == cursors[20:]
        assert client.get(start=str(cursors[22])) == everything[23:]
        assert client.get(start="now") == []


def test_bad_arguments_fail_before_connecting(tmp_path: Path) -> None:
    client = Client(unix_socket=tmp_path / "nothing.sock")
    with pytest.raises(ConfigError, match="unknown priority 'loud'"):
        client.subscribe(min_priority="loud")
    with pytest.raises(ConfigError, match="invalid start"):
        client.get(start="yesterday")


def test_server_validates_cursor(alert_server: Any) -> None:
    alert_server.publish(make_alert(1))
    epoch = alert_server.hub.epoch
    with unix_client(alert_server) as client:
        with pytest.raises(InvalidArgument, match="ahead of"):
            client.get(start=Cursor(epoch, 999))
        # A subscription reports it on the first next(), and does not retry what cannot succeed.
        stream = client.subscribe(start=Cursor(epoch, 999), batched=False)
        with pytest.raises(InvalidArgument, match="ahead of"):
            next(stream)
        with pytest.raises(InvalidArgument):
            next(client.subscribe(start=Cursor(epoch, 999), batched=True))


def test_refused_connection_says_what_and_why(tmp_path: Path) -> None:
    with pytest.raises(ConnectError) as info:
        Client(unix_socket=tmp_path / "none.sock").version()
    assert f"the UNIX socket {tmp_path / 'none.sock'}" in str(info.value)
    assert "does not exist" in info.value.reason


def test_subscribe_oldest_then_live_batched(alert_server: Any) -> None:
    first = [make_alert(i) for i in range(30)]
    for a in first:
        alert_server.publish(a)
    with unix_client(alert_server) as client:
        stream = Collector(client.subscribe(start="oldest", batched=True, tags="t0"))
        got = stream.take(15)
        later = [make_alert(i) for i in range(30, 40)]
        for a in later:
            alert_server.publish(a)
        got += stream.take(5)
    want = [a for a in first + later if "t0" in a.tags]
    assert [without_cursor(a) for a in got] == [without_cursor(a) for a in want]


def test_sdk_reads_leave_the_falco_cursor_alone(alert_server: Any) -> None:
    """Our reads always carry a start position, so a Falco client with the same identity still gets everything."""
    sent = [make_alert(i) for i in range(5)]
    for a in sent:
        alert_server.publish(a)
    with unix_client(alert_server) as client:
        assert len(client.get()) == 5
        stream = Collector(client.subscribe(start="oldest"))
        stream.take(5)
    with grpc.insecure_channel(alert_server.unix_target) as channel:
        falco = list(outputs_pb2_grpc.serviceStub(channel).get(outputs_pb2.request(), timeout=10))
    assert [r.rule for r in falco] == [a.rule for a in sent]


def test_resume_after_the_server_goes_away(
    alert_server: Any, certs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream is cut (server stopped); meanwhile alerts are published into the same hub; a new server on
    the same socket path serves that hub. The subscriber reconnects and resumes after its last cursor: every
    alert exactly once, in order."""
    from shared_server import start_server  # the shared fixture's own starter, to serve the same hub again

    hub = alert_server.hub
    link_dir = Path(tempfile.mkdtemp(prefix="fn-link-"))
    link = link_dir / "falconet.sock"
    os.symlink(alert_server.unix_path, link)
    sent = [make_alert(i) for i in range(9)]
    client = Client(unix_socket=link, backoff=FAST)
    stream = Collector(client.subscribe(start="oldest"))
    for a in sent[:3]:
        hub.publish(a)
    got = stream.take(3)
    alert_server.stop()
    for a in sent[3:6]:
        hub.publish(a)  # published while no server is up: retained, must not be lost
    second = start_server(certs_dir, hub=hub)
    try:
        tmp = link_dir / "new"
        os.symlink(second.unix_path, tmp)
        os.replace(tmp, link)  # the same path now leads to the new server
        got += stream.take(3)
        for a in sent[6:]:
            hub.publish(a)
        got += stream.take(3)
    finally:
        client.close()
        second.stop()
    assert [without_cursor(a) for a in got] == [without_cursor(a) for a in sent]
    assert [a.cursor.sequence for a in got if a.cursor] == list(range(1, 10))
    assert stream.items.empty()
    assert f"resuming after {hub.epoch}:3" in caplog.text


def test_reconnect_gives_up_after_max_attempts(alert_server: Any) -> None:
    client = Client(
        unix_socket=alert_server.unix_path, backoff=Backoff(initial=0.01, maximum=0.02, max_attempts=2)
    )
    stream = Collector(client.subscribe())
    wait_until(lambda: len(alert_server.hub.stats().readers) == 1, what="the subscription")
    alert_server.stop()
    stream.thread.join(30)
    assert isinstance(stream.error, ConnectError)
    assert "gave up after 2 reconnect attempts" in str(stream.error)
    client.close()


def test_async_client(alert_server: Any) -> None:
    sent = [make_alert(i) for i in range(20)]

    async def main() -> tuple[list[Alert], list[Alert], str]:
        async with AsyncClient(unix_socket=alert_server.unix_path, backoff=FAST) as client:
            version = (await client.version()).version
            for a in sent[:10]:
                alert_server.publish(a)
            got: list[Alert] = []
            async for alert in await client.subscribe(start="oldest"):
                got.append(alert)
                if len(got) == 10:
                    for a in sent[10:]:
                        alert_server.publish(a)
                if len(got) == 20:
                    break
            batched: list[Alert] = []
            resume = got[14].cursor
            assert resume is not None
            async for alert in await client.subscribe(start=resume, batched=True):
                batched.append(alert)
                if len(batched) == 5:
                    break
            gotten = await client.get(min_priority=Priority.WARNING)
            assert all(a.priority <= Priority.WARNING for a in gotten)
            return got, batched, version

    got, batched, version = asyncio.run(asyncio.wait_for(main(), 60))
    assert version
    assert [without_cursor(a) for a in got] == [without_cursor(a) for a in sent]
    assert batched == got[15:]


def test_async_client_over_mtls(alert_server: Any) -> None:
    async def main() -> list[Alert]:
        async with AsyncClient(**tls_kwargs(alert_server)) as client:
            alert_server.publish(make_alert(7))
            return await client.get()

    got = asyncio.run(asyncio.wait_for(main(), 60))
    assert [a.rule for a in got] == [make_alert(7).rule]


def test_async_resume_after_the_server_goes_away(
    alert_server: Any, certs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The asyncio client's reconnect path: a fresh channel, resuming after the last cursor, nothing repeated."""
    from shared_server import start_server

    hub = alert_server.hub
    link_dir = Path(tempfile.mkdtemp(prefix="fn-alink-"))
    link = link_dir / "falconet.sock"
    os.symlink(alert_server.unix_path, link)
    sent = [make_alert(i) for i in range(9)]
    servers = [alert_server]

    async def main() -> list[Alert]:
        async with AsyncClient(unix_socket=link, backoff=FAST) as client:
            stream = await client.subscribe(start="oldest")
            for a in sent[:3]:
                hub.publish(a)
            got = [await anext(stream) for _ in range(3)]
            await asyncio.to_thread(alert_server.stop)
            for a in sent[3:6]:
                hub.publish(a)
            second = await asyncio.to_thread(start_server, certs_dir, hub=hub)
            servers.append(second)
            os.symlink(second.unix_path, link_dir / "new")
            os.replace(link_dir / "new", link)
            got += [await anext(stream) for _ in range(3)]
            for a in sent[6:]:
                hub.publish(a)
            got += [await anext(stream) for _ in range(3)]
            await stream.aclose()
            return got

    try:
        got = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        for s in servers:
            s.stop()
    assert [without_cursor(a) for a in got] == [without_cursor(a) for a in sent]
    assert f"resuming after {hub.epoch}:3" in caplog.text
