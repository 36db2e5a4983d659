"""The aggregator's parts that need no NATS: its config block, the FleetHub's stream sequences with gaps, message
decoding (what is served, what is refused), and the host filter on a node's own server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aggregate_support import node_alert, node_message

from falconet.model.alert import Alert, Cursor, Priority
from falconet.sdk import Client
from falconet.sdk.convert import alert_to_wire
from falconet.server.errors import ConfigError
from falconet.server.fleet.aggregate_config import DEFAULT_AGGREGATE_LISTEN, parse_aggregate
from falconet.server.fleet.aggregate_hub import FleetHub, StreamItem
from falconet.server.fleet.aggregate_stream import Bad, decode
from falconet.server.hub import AlertFilter, Entry
from falconet.server.requests import RequestError, parse_filter
from falconet.sdk.api.falconet.v1 import types_pb2

PREFIX = "falconet.alerts"


# -- config -------------------------------------------------------------------------------------------------


def test_config_defaults_and_keys(tmp_path: Path) -> None:
    default = parse_aggregate("")
    assert default.stream == "FALCONET_ALERTS" and default.grpc.bind_address == (DEFAULT_AGGREGATE_LISTEN,)
    (tmp_path / "ca.crt").write_text("x")
    cfg = parse_aggregate(
        "rules_files: [x.yaml]\n"  # the node's keys are its own business
        "aggregate:\n  servers: [nats://n1:4222, tls://n2:4222]\n  stream: FLEET\n  subject_prefix: a.b\n"
        "  silence_timeout: 12.5\n  hostname: agg-0\n  tls: {ca: ca.crt}\n"
        "  grpc: {bind_address: [unix:///run/x.sock], retention: 50}\n",
        base_dir=tmp_path)
    assert cfg.nats.servers == ("nats://n1:4222", "tls://n2:4222") and cfg.nats.tls is not None
    assert (cfg.stream, cfg.subject_prefix, cfg.silence_timeout, cfg.hostname) == ("FLEET", "a.b", 12.5, "agg-0")
    server = cfg.server_config()
    assert server.listen == ("unix:///run/x.sock",) and server.retention == 50 and server.hostname == "agg-0"


def test_config_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_aggregate("aggregate:\n  servers: [http://x]\n  stream: 'a.b'\n  subject_prefix: 'a.*'\n"
                        "  silence_timeout: -1\n  bogus: 1\n  hostname: ' x'\n"
                        "  grpc: {bind_address: ['0.0.0.0:5060']}\n")
    text = "\n".join(info.value.problems)
    for part in ("servers holds 'http://x'", "aggregate.stream", "aggregate.subject_prefix",
                 "aggregate.silence_timeout", "'bogus' is not a known setting", "aggregate.hostname",
                 "mutual TLS"):
        assert part in text, part
    with pytest.raises(ConfigError):
        parse_aggregate("aggregate: [1, 2]\n")
    with pytest.raises(ConfigError):
        parse_aggregate("aggregate: {servers: nats://x:1\n")


def test_grpc_problems_name_the_aggregate_block() -> None:
    """The node's grpc reader serves the aggregator's block too: every problem names the key as written there."""
    with pytest.raises(ConfigError) as info:
        parse_aggregate("aggregate:\n  grpc:\n    bind_address: ['0.0.0.0:5060', 'unix://rel.sock']\n"
                        "    unix_socket_group: [1]\n    max_connections: 0\n    handshake_timeout: 0\n")
    problems = info.value.problems
    assert len(problems) >= 4, problems
    for problem in problems:
        assert "aggregate.grpc." in problem, problem
        assert "grpc." not in problem.replace("aggregate.grpc.", ""), problem


# -- the hub with stream sequences -----------------------------------------------------------------------------


def _entry(seq: int, host: str = "n1") -> Entry:
    alert = node_alert(host, seq)
    alert.cursor = Cursor("ep", seq)
    return Entry(seq, alert)


def _drain(hub: FleetHub, start: int, max_n: int = 100) -> list[int]:
    reader = hub.reader(start)
    entries, lost = reader.take(max_n)
    assert lost == 0
    return [e.seq for e in entries]


def test_new_epoch_starts_the_hub_over_and_moves_readers_and_waits() -> None:
    """A stream deleted and created again: the hub empties, its readers (one waiting for the old stream's next
    alert) move to the new stream's oldest, Falco cursors of the old epoch are forgotten, and an old cursor is
    another run's."""

    async def main() -> None:
        hub = FleetHub(8, "old", "agg", start_seq=1)
        hub.publish_at([(s, _entry(s)) for s in range(1, 6)])
        hub.advance_falco_cursor("id", 5)
        reader = hub.reader(6)
        waiting = asyncio.ensure_future(reader.wait())
        await asyncio.sleep(0)  # lets the waiter register: an ordering step, not a timed wait
        assert not waiting.done()
        hub.new_epoch("new", 1)
        await asyncio.wait_for(waiting, 10)
        assert (hub.epoch, hub.newest, reader.next_seq, hub.falco_cursor("id")) == ("new", 0, 1, 0)
        assert hub.snapshot() == [] and reader.take(10) == ([], 0)
        hub.publish_at([(1, _entry(1)), (2, _entry(2))])
        assert [e.seq for e in reader.take(10)[0]] == [1, 2]
        resumed = hub.start_after(Cursor("old", 5))
        assert resumed.next_seq == 1 and resumed.gap_alert is not None

    asyncio.run(main())


def test_gaps_are_stepped_over_not_lost() -> None:
    hub = FleetHub(8, "ep", "agg", start_seq=1)
    items: list[StreamItem] = [(1, _entry(1)), (2, None), (3, _entry(3)), (5, _entry(5)), (6, None)]
    hub.publish_at(items)
    assert hub.newest == 6 and _drain(hub, 1) == [1, 3, 5]
    reader = hub.reader(2)
    assert [e.seq for e in reader.take(2)[0]] == [3] and reader.next_seq == 4
    assert [e.seq for e in hub.snapshot()] == [1, 3, 5]
    # A gap longer than the ring empties it: nothing stale is served.
    hub.publish_at([(40, _entry(40))])
    assert [e.seq for e in hub.snapshot()] == [40]
    assert hub.ring_oldest == 33


def test_reader_behind_the_ring_reads_the_stream() -> None:
    class Reads:
        first_seq = 3

        async def read(self, first: int, max_n: int) -> list[StreamItem]:
            stored: list[StreamItem] = [(3, _entry(3)), (4, None), (5, _entry(5)), (6, _entry(6))]
            return [i for i in stored if i[0] >= first][:max_n]

    hub = FleetHub(2, "ep", "agg", start_seq=7)
    hub.reads = Reads()
    hub.publish_at([(7, _entry(7)), (8, _entry(8))])
    assert hub.oldest == 3
    reader = hub.reader(1)
    assert reader.take(10) == ([], 0) and reader.behind
    entries, lost = asyncio.run(reader.take_stored(2))
    assert [e.seq for e in entries] == [3] and lost == 2  # 1 and 2 are gone from the stream
    entries, lost = asyncio.run(reader.take_stored(10))
    assert [e.seq for e in entries] == [5, 6] and lost == 0
    assert [e.seq for e in reader.take(10)[0]] == [7, 8]


def test_cursor_ahead_within_the_stream_waits_other_epoch_is_reported() -> None:
    hub = FleetHub(8, "ep", "agg", start_seq=1)
    hub.publish_at([(1, _entry(1))])
    hub.known_last = 5  # another aggregator already served up to 5
    assert hub.start_after(Cursor("ep", 4)).next_seq == 5
    with pytest.raises(ValueError):
        hub.start_after(Cursor("ep", 6))
    other = hub.start_after(Cursor("old-stream", 3))
    assert other.gap_alert is not None and other.next_seq == 1


def test_falco_cursors_listed_for_the_bucket_never_back() -> None:
    hub = FleetHub(8, "ep", "agg", start_seq=1)
    hub.advance_falco_cursor("mtls:alice", 4)
    hub.advance_falco_cursor("mtls:alice", 2)
    assert hub.falco_cursors() == {"mtls:alice": 4}
    hub.load_falco_cursor("mtls:alice", 9)  # read from the bucket: taken when ahead
    hub.load_falco_cursor("mtls:alice", 3)
    assert hub.falco_cursor("mtls:alice") == 9 and hub.falco_cursors() == {"mtls:alice": 9}


# -- decoding --------------------------------------------------------------------------------------------------


def test_decode_takes_the_subjects_host_and_the_streams_cursor() -> None:
    alert = node_alert("node-1.example", 3)
    subject, payload, _ = node_message(alert, "node-epoch", 77)
    got = decode(subject, payload, 12, "stream-ep", PREFIX)
    assert isinstance(got, Entry) and got.alert.cursor == Cursor("stream-ep", 12)
    assert got.alert.hostname == "node-1.example" and "n=node-1.example/3" in got.alert.output
    # A payload naming another host is served under its subject's host (the one NATS authorised).
    liar = node_alert("someone-else", 1)
    got = decode("falconet.alerts.node-2", alert_to_wire(liar), 13, "stream-ep", PREFIX)
    assert isinstance(got, Entry) and got.alert.hostname == "node-2"
    # A node's own internal alerts are forwarded and served.
    own = Alert(time_ns=1, rule="Falconet internal: alert store failure", priority=Priority.ERROR,
                source="internal", output="store", hostname="node-2")
    got = decode("falconet.alerts.node-2", alert_to_wire(own), 14, "stream-ep", PREFIX)
    assert isinstance(got, Entry) and got.alert.source == "internal"


def test_served_bytes_are_the_nodes_with_the_streams_cursor() -> None:
    """The node's bytes are served as sent, cursor replaced; they decode to exactly the alert the filters saw."""
    from falconet.sdk.api.falco import outputs_pb2
    from falconet.sdk.convert import alert_to_proto

    alert = node_alert("n1", 4)
    _, payload, _ = node_message(alert, "node-epoch", 4)
    for subject in ("falconet.alerts.n1", "falconet.alerts.other-host"):  # as sent / hostname rewritten
        got = decode(subject, payload, 9, "stream-ep", PREFIX)
        assert isinstance(got, Entry)
        served = outputs_pb2.response.FromString(got.wire())
        assert served == alert_to_proto(got.alert)
        assert (served.cursor.epoch, served.cursor.sequence) == ("stream-ep", 9)


@pytest.mark.parametrize(("subject", "payload"), [
    ("falconet.alerts.node-1", b"\xff\xfe"),
    ("falconet.alerts.=41", alert_to_wire(node_alert("x", 1))),
    ("falconet.alerts.=fleet", alert_to_wire(node_alert("", 1))),
    ("other.subject", alert_to_wire(node_alert("x", 1))),
    ("falconet.alerts.node-1", alert_to_wire(Alert(time_ns=1, rule="", priority=Priority.ERROR, source="s",
                                                  output="o"))),
])
def test_decode_refuses(subject: str, payload: bytes) -> None:
    got = decode(subject, payload, 5, "ep", PREFIX)
    assert isinstance(got, Bad) and got.seq == 5 and got.reason


# -- the host filter on a node ---------------------------------------------------------------------------------


def test_host_filter_request_and_match() -> None:
    flt = parse_filter(types_pb2.Filter(hosts=["a", "b"]))
    assert flt.hosts == frozenset({"a", "b"}) and not flt.is_empty
    assert flt.matches(node_alert("a", 1)) and not flt.matches(node_alert("c", 1))
    with pytest.raises(RequestError, match="filter.hosts"):
        parse_filter(types_pb2.Filter(hosts=[" a"]))
    assert AlertFilter().is_empty


def test_node_matches_only_its_own_name(alert_server: Any) -> None:
    own = alert_server.hub.hostname
    for k in range(3):
        alert_server.publish(Alert(time_ns=1, rule="r", priority=Priority.WARNING, source="syscall",
                                   output=f"k={k}"))
    with Client(unix_socket=alert_server.unix_path) as client:
        assert [a.output for a in client.get(hosts=own)] == ["k=0", "k=1", "k=2"]
        assert client.get(hosts=["not-" + own]) == []


def test_ack_fields_read_the_reply_as_nats_py_does() -> None:
    """The feed's own reading of a delivery's reply subject gives what nats-py's `Msg.metadata` gives."""
    from nats.aio.msg import Msg

    from falconet.server.fleet.aggregate_stream import ack_fields

    for reply in ("$JS.ACK.FALCONET_ALERTS.abc.1.4242.17.1733480000123456789.9",
                  "$JS.ACK.hub.ACCHASH.FALCONET_ALERTS.abc.1.4242.17.1733480000123456789.9.rnd"):
        meta = Msg.Metadata._from_reply(reply)
        assert ack_fields(reply) == (meta.sequence.stream, 1733480000123456789, meta.num_pending) == (
            4242, 1733480000123456789, 9)


def test_unknown_fields_of_a_node_payload_are_not_served() -> None:
    """A payload with fields this version does not know (at the top and inside a map entry) is served without
    them: a Go or Rust client would read a map entry's unknown field as an entry. (Python's protobuf keeps such a
    map entry whole as an unknown field of the response, so the entry goes with it.)"""
    from google.protobuf.unknown_fields import UnknownFieldSet

    from falconet.sdk.api.falco import outputs_pb2

    payload = alert_to_wire(node_alert("node-1", 3))
    unknown = b"\xf8\x06\x01"  # field 111, varint 1
    entry_with_unknown = b"\x0a\x01k\x12\x01v" + unknown  # output_fields entry {"k": "v"} plus field 111
    tampered = payload + unknown + b"\x32" + bytes([len(entry_with_unknown)]) + entry_with_unknown
    got = decode("falconet.alerts.node-1", tampered, 21, "stream-ep", PREFIX)
    assert isinstance(got, Entry)
    served = outputs_pb2.response.FromString(got.wire())
    assert len(UnknownFieldSet(served)) == 0 and "k" not in served.output_fields
    assert served.output_fields["proc.name"] == "sh"
    assert b"\xf8\x06" not in got.wire()
    assert (served.cursor.epoch, served.cursor.sequence, served.hostname) == ("stream-ep", 21, "node-1")
