"""The node's store is the spool: a NATS outage longer than the stream's duplicate window, a `kill -9` of the
node, or both, and afterwards every alert the node acknowledged is in the stream exactly once, in order.

The outage here is 5 s against a duplicate window of 2 s (the issue's 30 s outage makes the same point more
slowly: what matters is that the outage outlasts the window, so JetStream's id de-duplication cannot be what
prevents duplicates; resuming from the stream's last message is)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nats_servers import NatsServer
from output_support import Publisher, ServeNode, check_host, host_numbers, nats_output_yaml, read_stream, stream_count, wait_until

pytestmark = pytest.mark.nats

DUPLICATE_WINDOW_S = 2.0
OUTAGE_S = 5.0


def _yaml(server: NatsServer) -> str:
    return nats_output_yaml([server.url], duplicate_window=DUPLICATE_WINDOW_S, ack_timeout=1, max_in_flight=256)


def _test_numbers_in_stream(server: NatsServer, host: str) -> int:
    return host_numbers([server.url], host)


def test_outage_longer_than_the_duplicate_window(nats_server: NatsServer, tmp_path: Path) -> None:
    host = "outage-node"
    node = ServeNode(tmp_path / "n", host, _yaml(nats_server))
    try:
        pub = Publisher(node, 0, rate=400).start()
        wait_until(lambda: stream_count([nats_server.url]) >= 300, "forwarding to start", 60)
        nats_server.stop()
        down_at = time.monotonic()
        node.wait_for_line(r"nats_output: (disconnected|cannot connect|alert \d+ not acknowledged)")
        acked_before = len(pub.acked)
        # The outage lasts while the node keeps taking alerts locally (its publishes are acknowledged).
        wait_until(lambda: time.monotonic() - down_at >= OUTAGE_S, "the outage to last", OUTAGE_S + 5)
        assert len(pub.acked) > acked_before + 500, "the node stopped serving locally during the outage"
        nats_server.start()
        node.wait_for_line(r"nats_output: recovered: forwarding to .* after the stream's last message")
        acked = pub.stop()
        wait_until(lambda: _test_numbers_in_stream(nats_server, host) >= len(acked), "the backlog forwarded", 60)
        mine = check_host(read_stream([nats_server.url]), host, acked)
        assert {m.number for m in mine if m.number is not None} == set(acked)
        # One log line for the outage, however many reconnects were refused meanwhile.
        assert len(node.matching(r"nats_output: .*alerts stay in the local store")) == 1, node.lines
        rules = {m.rule for m in mine if m.number is None}
        assert "Falconet internal: NATS output failing" in rules
        assert "Falconet internal: NATS output recovered" in rules
    finally:
        assert node.stop() == 0


def test_kill_9_of_the_node_while_forwarding_and_during_an_outage(nats_server: NatsServer, tmp_path: Path) -> None:
    """kill -9 while forwarding; then NATS down, alerts taken, kill -9, NATS up, node up: all forwarded once."""
    host = "crash-node"
    workdir = tmp_path / "n"
    node = ServeNode(workdir, host, _yaml(nats_server))
    pub = Publisher(node, 0, rate=800).start()
    wait_until(lambda: stream_count([nats_server.url]) >= 500, "forwarding to start", 60)
    node.kill()
    acked = pub.stop_after_kill()
    node = ServeNode(workdir, host, _yaml(nats_server))
    node.wait_for_line(r"forwarding to .* after the stream's last message")
    node.publish(list(range(100_000, 100_500)))
    acked += list(range(100_000, 100_500))
    nats_server.stop()
    node.publish(list(range(200_000, 201_000)))  # taken while NATS is away: only in the node's store
    acked += list(range(200_000, 201_000))
    node.kill()
    nats_server.start()
    node = ServeNode(workdir, host, _yaml(nats_server))
    try:
        wait_until(lambda: _test_numbers_in_stream(nats_server, host) >= len(acked), "everything forwarded", 60)
        mine = check_host(read_stream([nats_server.url]), host, acked)
        assert len({m.epoch for m in mine}) == 1, "the node's store epoch changed across kill -9"
    finally:
        assert node.stop() == 0
