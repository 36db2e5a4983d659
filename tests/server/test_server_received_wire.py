"""The input service's fast path gives exactly what the slow path gave.

Slow path (what the hub did before): decode the received message strictly into an alert, fill the hostname,
assign the cursor, convert the alert to a new message and serialize it. Fast path: keep the received message,
normalised in place (`received_alert`), and append the cursor the hub assigns (`Hub.publish_received`). For
any message a stranger can send, both refuse it with the same words or both accept it, and then the alerts
are equal and the wire forms decode to equal messages of equal length with no unknown field left: nothing a
sender adds passes on to subscribers. Messages are hypothesis-drawn over every field's whole wire range, with
raw bytes appended that protobuf keeps as unknown fields (at the top, in the time, and inside map entries,
which protobuf's Python runtime keeps whole as unknown fields while Go and Rust would read them as entries),
non-canonical typed values ("1e2", "-0", " 5"), unsorted and repeated `output_fields_json` lists, cursors, and
fields repeated (a later occurrence wins). Over real sockets, the same holds for what a subscriber and the store
receive.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import pytest
from fuzz_support import TEXT, wire_alerts
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from server_support import make_alert
from shared_server import ServerFactory
from test_server_convert_properties import alerts

from falconet.model.alert import Alert, Cursor
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import inputs_pb2, inputs_pb2_grpc, types_pb2
from falconet.sdk.convert import (
    alert_from_proto,
    alert_to_proto,
    alert_to_wire,
    decode_received,
    received_wire,
)
from falconet.server.alert_input import alert_from_input, received_alert
from falconet.server.entries import CursorField
from falconet.server.hub import Hub, encode_varint
from falconet.server.store_schema import StoreConfig
from google.protobuf.unknown_fields import UnknownFieldSet

HUB_HOST = "hub-host"
EPOCH = "0123456789ab"


def _len(data: bytes) -> bytes:
    return encode_varint(len(data)) + data


def _string(field: int, text: str) -> bytes:
    return encode_varint(field << 3 | 2) + _len(text.encode())


_unknown = st.one_of(
    st.tuples(st.integers(min_value=12, max_value=2**29 - 1), st.integers(min_value=0, max_value=2**64 - 1)).map(
        lambda t: encode_varint(t[0] << 3) + encode_varint(t[1])  # an unknown varint field
    ),
    st.tuples(st.integers(min_value=12, max_value=2**29 - 1), st.binary(max_size=8)).map(
        lambda t: encode_varint(t[0] << 3 | 2) + _len(t[1])  # an unknown length-delimited field
    ),
    st.sampled_from([
        b"\x20\x01",  # rule (a string) sent as a varint: protobuf keeps it as unknown, Rust's prost refuses it
        b"\x5d\x00\x00\x00\x00",  # output_fields_json as a fixed32
        b"\x52\x02\x18\x07",  # a cursor holding an unknown field
    ]),
)
_typed_values = st.sampled_from(["1e2", "-0", " 5", "5 ", "1.0", "1E+2", "0.1", "100", "true", "null", "-1",
                                 "18446744073709551615", "2.5e-3", "1" * 19])


@st.composite
def received_bytes(draw: st.DrawFn) -> bytes:
    """What a publisher could put in `PublishRequest.alerts`: a valid-looking message with hostile extras."""
    msg = draw(wire_alerts())
    if draw(st.booleans()):  # mostly publishable, so the accepted path is exercised as much as the refused one
        msg.priority = draw(st.integers(min_value=0, max_value=7))  # type: ignore[assignment]
        msg.rule = draw(st.text(min_size=1, max_size=8).filter(str.strip))
        msg.source = draw(st.sampled_from(["syscall", "k8s_audit", "aws_cloudtrail", ""]))
        msg.source_deprecated = draw(st.integers(min_value=0, max_value=5))  # type: ignore[assignment]
        if draw(st.booleans()):
            msg.time.seconds = draw(st.integers(min_value=0, max_value=2**34))
            msg.time.nanos = draw(st.integers(min_value=0, max_value=999_999_999))
        typed = draw(st.dictionaries(TEXT, _typed_values, max_size=4))
        for key, value in typed.items():
            msg.output_fields[key] = value
        listed = draw(st.lists(st.sampled_from(sorted(typed)), max_size=6)) if typed else []
        del msg.output_fields_json[:]
        msg.output_fields_json.extend(listed)
    data = msg.SerializeToString()
    extras = draw(st.lists(st.one_of(
        _unknown,
        _unknown.map(lambda u: b"\x0a" + _len(u)),  # inside the time
        st.tuples(TEXT, TEXT, _unknown).map(  # inside a map entry
            lambda t: b"\x32" + _len(_string(1, t[0]) + _string(2, t[1]) + t[2])
        ),
        st.tuples(st.sampled_from([4, 5, 7, 9]), TEXT).map(lambda t: _string(*t)),  # a string field again
        st.tuples(TEXT, _typed_values).map(lambda t: b"\x32" + _len(_string(1, t[0]) + _string(2, t[1]))),
        TEXT.map(lambda t: _string(11, t)),  # another output_fields_json entry
    ), max_size=4))
    return data + b"".join(extras)


def _slow(data: bytes, seq: int, hostname: str = HUB_HOST, epoch: str = EPOCH) -> Alert | str:
    """The slow path: the alert with hostname and cursor, or the refusal's words."""
    try:
        alert = alert_from_input(outputs_pb2.response.FromString(data))
    except ValueError as exc:
        return str(exc)
    if not alert.hostname:
        alert.hostname = hostname
    alert.cursor = Cursor(epoch, seq)
    return alert


def _no_unknown_fields(msg: outputs_pb2.response) -> bool:
    return len(UnknownFieldSet(msg)) == 0 and len(UnknownFieldSet(msg.time)) == 0 and len(
        UnknownFieldSet(msg.cursor)
    ) == 0


def assert_same(fast: bytes, fast_alert: Alert, slow_alert: Alert, in_order: bool = True) -> None:
    slow = alert_to_wire(slow_alert)
    got, want = outputs_pb2.response.FromString(fast), outputs_pb2.response.FromString(slow)
    assert got == want
    assert len(fast) == len(slow)  # nothing more in the bytes than in the message (no unknown field hides)
    if in_order:  # protobuf's field order: the cursor, then output_fields_json, the last field
        listed = b"".join(b"Z" + _len(key.encode()) for key in got.output_fields_json)
        assert fast.endswith(CursorField(got.cursor.epoch)(got.cursor.sequence) + listed)
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
    assert _no_unknown_fields(got)
    assert fast_alert == slow_alert
    assert alert_from_proto(got) == slow_alert
    assert {k: type(v) for k, v in fast_alert.output_fields.items()} == {
        k: type(v) for k, v in slow_alert.output_fields.items()
    }


def assert_serialized_once(data: bytes) -> None:
    """A message needing no normalising: the serialization the size check made is the wire form kept."""
    resp = outputs_pb2.response.FromString(data)
    serialized = resp.SerializeToString()
    decoded, canonical = decode_received(resp)
    assert canonical
    assert received_wire(resp, decoded, serialized, canonical) is serialized


def assert_published_as_the_slow_path(data: bytes, hostname: str = HUB_HOST, in_order: bool = True) -> None:
    """`data` received (with `hostname` as the receiver's) and published through a hub: its entry's wire form
    is what the slow path makes."""
    alert, body, tail = received_alert(outputs_pb2.response.FromString(data), hostname)
    hub = Hub(4, epoch=EPOCH, hostname=HUB_HOST)
    hub.publish_received([(alert, body, tail)])
    slow = _slow(data, 1)
    assert not isinstance(slow, str)
    assert_same(hub.snapshot()[0].wire(), alert, slow, in_order=in_order)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(received_bytes(), st.integers(min_value=1, max_value=2**40))
def test_fast_path_equals_slow_path(data: bytes, seq: int) -> None:
    try:
        outputs_pb2.response.FromString(data)
    except Exception:  # not a message at all: gRPC refuses the request before the service sees it
        return
    slow = _slow(data, seq)
    hub = Hub(4, epoch=EPOCH, hostname=HUB_HOST, head=seq - 1)
    try:
        alert, body, tail = received_alert(outputs_pb2.response.FromString(data), HUB_HOST)
    except ValueError as exc:
        assert slow == str(exc)
        event("refused")
        return
    assert not isinstance(slow, str), slow
    event("normalised" if outputs_pb2.response.FromString(data) != outputs_pb2.response.FromString(body)
          else "as received")
    cursor = hub.publish_received([(alert, body, tail)])
    assert cursor == Cursor(EPOCH, seq)
    (entry,) = hub.snapshot()
    assert_same(entry.wire(), entry.alert, slow)
    assert entry.framed().endswith(entry.wire())


def test_a_canonical_message_is_serialized_once() -> None:
    """What our own SDK sends needs no normalising: the size check's serialization is the wire form kept."""
    data = alert_to_proto(make_alert(7)).SerializeToString()
    assert_serialized_once(data)
    assert_published_as_the_slow_path(data)


@pytest.mark.parametrize(
    ("listed", "values"),
    [
        (["user.uid", "proc.pid"], ["0", "4003"]),  # unsorted, each value as the conversion spells it
        (["proc.pid", "proc.pid"], ["4003"]),  # listed twice
        (["proc.pid", "zz.absent"], ["4003"]),  # listed without a field
        (["proc.pid"], ["4.003e3"]),  # a value the conversion spells otherwise
        (["proc.pid"], ["-0"]),
    ],
)
def test_typed_fields_are_respelled_as_the_conversion_writes_them(listed: list[str], values: list[str]) -> None:
    resp = alert_to_proto(make_alert(3))
    del resp.output_fields_json[:]
    resp.output_fields_json.extend(listed)
    for key, value in zip(listed, values):
        resp.output_fields[key] = value
    data = resp.SerializeToString()
    _alert, canonical = decode_received(outputs_pb2.response.FromString(data))
    assert not canonical
    assert_published_as_the_slow_path(data)


def test_the_hub_fills_an_empty_hostname_in_the_bytes_too() -> None:
    """A caller that leaves the hostname empty still gets the hub's, in the alert and on the wire."""
    resp = alert_to_proto(make_alert(3))
    resp.hostname = ""
    data = resp.SerializeToString()
    assert received_alert(outputs_pb2.response.FromString(data), "")[0].hostname == ""
    assert_published_as_the_slow_path(data, "", in_order=False)  # the hostname appended last


def _hostile_request() -> tuple[list[bytes], inputs_pb2.PublishRequest]:
    """Alerts with a forged cursor, unknown fields at each depth, non-canonical typed values, an empty hostname."""
    raws: list[bytes] = []
    for i in range(6):
        resp = alert_to_proto(make_alert(i))
        resp.output_fields["n"] = ["1e2", "-0", " 5", "7"][i % 4]
        resp.output_fields_json.extend(["n", "n"] if i % 2 else ["n"])
        resp.cursor.epoch, resp.cursor.sequence = "forged", 99
        if i % 3 == 0:
            resp.hostname = ""
        raws.append(
            resp.SerializeToString()
            + b"\x78\x05"  # field 15
            + b"\x0a\x02\x78\x01"  # field 15 inside the time
            + b"\x32" + _len(_string(1, "hidden") + _string(2, "x") + b"\x18\x07")  # inside a map entry
            + b"\x20\x01"  # rule as a varint
        )
    request = inputs_pb2.PublishRequest()
    request.alerts.extend(outputs_pb2.response.FromString(r) for r in raws)
    return raws, request


def test_what_subscribers_and_the_store_receive_is_the_slow_paths(alert_server_factory: ServerFactory) -> None:
    """Over a real UNIX socket with a real store: the bytes a Falco `get` receives and the bytes the store
    committed are what the slow path made, with nothing the sender added."""
    raws, request = _hostile_request()
    with tempfile.TemporaryDirectory(prefix="fn-store-") as tmp:
        server = alert_server_factory(retention=2, store=StoreConfig(path=Path(tmp) / "alerts.db"))
        hub = server.hub
        with grpc.insecure_channel(server.unix_target) as channel:
            reply = inputs_pb2_grpc.InputServiceStub(channel).Publish(iter([request]), timeout=30)
            assert reply.accepted == len(raws)
            got: list[bytes] = list(channel.unary_stream(  # Falco's get, raw bytes: no client library in between
                "/falco.outputs.service/get", request_serializer=outputs_pb2.request.SerializeToString,
                response_deserializer=None,
            )(outputs_pb2.request(), timeout=30))
        store = server.server.store
        assert store is not None
        stored = store.read(1, 100)
        assert [seq for seq, _ in stored] == list(range(1, len(raws) + 1))
        assert len(got) == len(raws)  # retention 2: most of them were read back from the store
        for i, (raw, wire, (seq, stored_wire)) in enumerate(zip(raws, got, stored)):
            slow = _slow(raw, seq, hub.hostname, hub.epoch)
            assert not isinstance(slow, str), slow
            alert = alert_from_proto(outputs_pb2.response.FromString(wire))
            assert_same(wire, alert, slow)
            assert stored_wire == wire, i


@settings(max_examples=300, deadline=None)
@given(alerts)
def test_messages_needing_no_normalising_keep_their_serialization(alert: Alert) -> None:
    """Any publishable alert as our SDK sends it (no cursor, a hostname, a source): the serialization made for
    the size check is kept, and it is what the slow path gives."""
    alert.cursor = None
    alert.hostname = alert.hostname or HUB_HOST
    alert.source = alert.source if alert.source != "internal" else "syscall"
    alert.rule = alert.rule if alert.rule.strip() else "r"
    data = alert_to_proto(alert).SerializeToString()
    assert_serialized_once(data)
    assert_published_as_the_slow_path(data)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.one_of(st.integers(min_value=1, max_value=2**22), st.integers(min_value=1, max_value=2**64 - 1)))
def test_the_cursor_field_is_protobufs_byte_for_byte(epoch: str, seq: int) -> None:
    want = outputs_pb2.response(cursor=types_pb2.Cursor(epoch=epoch, sequence=seq)).SerializeToString()
    assert CursorField(epoch)(seq) == want
