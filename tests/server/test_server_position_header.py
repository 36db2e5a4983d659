"""The `falconet-position` header: where a stream starts, sent before any alert, so a subscriber cut before its
first alert can resume from there (docs/server.md). Checked against the real server over real sockets: the
position is exactly the cursor before the first alert the stream then delivers, for every kind of start, on
both subscription RPCs; a Falco request without a start gets no such header; and `start.after` accepts the
sequence 0 the header can carry."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from server_support import falco_request, make_alert, mtls_credentials, start_after, start_oldest

from falconet.model.alert import Cursor
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, types_pb2
from falconet.sdk.convert import alert_from_proto
from falconet.server.hub import LOSS_RULE

HEADER = "falconet-position"
START_NOW = types_pb2.Start(position=types_pb2.Start.POSITION_NOW)


def _held_open(first: outputs_pb2.request, done: queue.Queue[None]) -> Iterator[outputs_pb2.request]:
    """Falco's `sub` request side: one request, then open until the test ends the call."""
    yield first
    done.get()


class Stream:
    """One open subscription (`sub` or batched `Subscribe`): its initial metadata, then its alerts one by one."""

    def __init__(self, channel: grpc.Channel, rpc: str, start: types_pb2.Start | None) -> None:
        self._done: queue.Queue[None] = queue.Queue()
        self._pending: list[Any] = []
        if rpc == "sub":
            req = outputs_pb2.request() if start is None else outputs_pb2.request(start=start)
            self.call = outputs_pb2_grpc.serviceStub(channel).sub(_held_open(req, self._done), timeout=30)
        else:
            breq = (
                alerts_pb2.SubscribeRequest() if start is None else alerts_pb2.SubscribeRequest(start=start)
            )
            self.call = alerts_pb2_grpc.AlertServiceStub(channel).Subscribe(breq, timeout=30)
        self.rpc = rpc

    def metadata(self) -> dict[str, str]:
        return dict(self.call.initial_metadata() or ())

    def next(self) -> Any:
        """The next alert as `falco.outputs.response` (batches are split)."""
        if self.rpc == "sub":
            return next(self.call)
        while not self._pending:
            self._pending = list(next(self.call).alerts)
        return self._pending.pop(0)

    def close(self) -> None:
        self._done.put(None)
        self.call.cancel()


@pytest.fixture
def open_stream(alert_server: Any) -> Iterator[Callable[..., Stream]]:
    channel = grpc.insecure_channel(alert_server.unix_target)
    streams: list[Stream] = []

    def make(rpc: str, start: types_pb2.Start | None) -> Stream:
        s = Stream(channel, rpc, start)
        streams.append(s)
        return s

    yield make
    for s in streams:
        s.close()
    channel.close()


def _cursor(resp: outputs_pb2.response) -> Cursor | None:
    return alert_from_proto(resp).cursor


@pytest.mark.parametrize("rpc", ["sub", "Subscribe"])
def test_now_on_an_empty_hub_is_sequence_zero_then_the_first_alert_follows_it(
    alert_server: Any, open_stream: Callable[..., Stream], rpc: str
) -> None:
    epoch = alert_server.hub.epoch
    stream = open_stream(rpc, START_NOW)
    assert stream.metadata()[HEADER] == f"{epoch}:0"
    alert_server.publish(make_alert(0))
    assert _cursor(stream.next()) == Cursor(epoch, 1)


@pytest.mark.parametrize("rpc", ["sub", "Subscribe"])
@pytest.mark.parametrize(
    ("start", "position", "first"),
    [
        ("now", 3, 4),
        ("oldest", 0, 1),
        ("after:2", 2, 3),
    ],
)
def test_position_is_the_cursor_before_the_first_alert_delivered(
    alert_server: Any, open_stream: Callable[..., Stream], rpc: str, start: str, position: int, first: int
) -> None:
    epoch = alert_server.hub.epoch
    for i in range(3):
        alert_server.publish(make_alert(i))
    msg = {"now": START_NOW, "oldest": start_oldest()}.get(start) or start_after(epoch, int(start[6:]))
    stream = open_stream(rpc, msg)
    assert stream.metadata()[HEADER] == f"{epoch}:{position}"
    alert_server.publish(make_alert(3))
    assert _cursor(stream.next()) == Cursor(epoch, first)


def test_batched_subscribe_without_a_start_reports_now(
    alert_server: Any, open_stream: Callable[..., Stream]
) -> None:
    epoch = alert_server.hub.epoch
    alert_server.publish(make_alert(0))
    stream = open_stream("Subscribe", None)
    assert stream.metadata()[HEADER] == f"{epoch}:1"
    alert_server.publish(make_alert(1))
    assert _cursor(stream.next()) == Cursor(epoch, 2)


def test_falco_sub_without_a_start_has_no_position(
    alert_server: Any, open_stream: Callable[..., Stream]
) -> None:
    alert_server.publish(make_alert(0))
    stream = open_stream("sub", None)
    assert _cursor(stream.next()) == Cursor(alert_server.hub.epoch, 1)  # Falco's backlog: the stream is live
    assert HEADER not in stream.metadata()


@pytest.mark.parametrize("rpc", ["sub", "Subscribe"])
def test_a_stale_cursor_reports_where_the_stream_really_starts(
    alert_server_factory: Callable[..., Any], rpc: str
) -> None:
    """Another run's cursor, or one no longer retained: the position is in this run, after the loss alert."""
    server = alert_server_factory(retention=2)
    epoch = server.hub.epoch
    for i in range(5):
        server.publish(make_alert(i))  # retains 4 and 5
    with grpc.insecure_channel(server.unix_target) as channel:
        for start in (start_after("another-run", 9), start_after(epoch, 1)):
            stream = Stream(channel, rpc, start)
            try:
                assert stream.metadata()[HEADER] == f"{epoch}:3"
                assert alert_from_proto(stream.next()).rule == LOSS_RULE
                assert _cursor(stream.next()) == Cursor(epoch, 4)
            finally:
                stream.close()


def test_position_over_mtls(alert_server: Any) -> None:
    creds = mtls_credentials(alert_server.certs)
    with grpc.secure_channel(alert_server.tcp_target, creds) as channel:
        stream = Stream(channel, "sub", START_NOW)
        try:
            assert stream.metadata()[HEADER] == f"{alert_server.hub.epoch}:0"
        finally:
            stream.close()


def test_start_after_sequence_zero_reads_the_whole_run(alert_server_factory: Callable[..., Any]) -> None:
    """Resuming after `EPOCH:0` (a position from a stream that began before any alert) gets every alert of the
    run; if the ring has overwritten some, the loss is reported, not silent."""
    server = alert_server_factory(retention=3)
    epoch = server.hub.epoch
    with grpc.insecure_channel(server.unix_target) as channel:
        stub = outputs_pb2_grpc.serviceStub(channel)
        for i in range(3):
            server.publish(make_alert(i))
        got = list(stub.get(outputs_pb2.request(start=start_after(epoch, 0)), timeout=30))
        assert [_cursor(r) for r in got] == [Cursor(epoch, s) for s in (1, 2, 3)]
        server.publish(make_alert(3))
        got = list(stub.get(outputs_pb2.request(start=start_after(epoch, 0)), timeout=30))
        loss = alert_from_proto(got[0])
        assert loss.rule == LOSS_RULE and loss.output_fields["falconet.lost"] == 1
        assert [_cursor(r) for r in got[1:]] == [Cursor(epoch, s) for s in (2, 3, 4)]
        # The Falco request still gets Falco's semantics, untouched by any of this.
        assert [_cursor(r) for r in stub.get(falco_request(), timeout=30)] == [
            Cursor(epoch, s) for s in (2, 3, 4)
        ]
