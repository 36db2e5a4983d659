"""The `nats` output of a node (`falconet serve --nats-output`): every alert in the stream once, in order, with
the contract's subject, message id, headers and payload, and the node's heartbeat in the nodes bucket."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats_servers import NatsServer
from output_support import ServeNode, check_host, heartbeat, nats_output_yaml, read_stream, stream_count, wait_until

from falconet.server.fleet.names import DEFAULT_SUBJECT_PREFIX, alert_subject

pytestmark = pytest.mark.nats


def test_every_alert_once_in_order_with_the_contract(nats_server: NatsServer, tmp_path: Path) -> None:
    host = "node-1.eu.example"  # dots must not add subject tokens
    node = ServeNode(tmp_path / "n1", host, nats_output_yaml([nats_server.url], max_in_flight=64))
    try:
        numbers = list(range(3000))
        for i in range(0, len(numbers), 500):
            node.publish(numbers[i:i + 500])
        wait_until(lambda: stream_count([nats_server.url]) >= 3000, "3000 alerts in the stream", 60)
        msgs = read_stream([nats_server.url])
        mine = check_host(msgs, host, numbers)
        assert len(mine) == 3000
        assert {m.number for m in mine} == set(numbers)
        # The payload is the node's serialized alert as its hub holds it: the cursor carries epoch and seq.
        held = {r.cursor.sequence: r for r in node.get_all()}
        for m in mine[:50] + mine[-50:]:
            assert m.data == held[m.seq].SerializeToString()
            assert held[m.seq].cursor.epoch == m.epoch
        assert alert_subject(host) == f"{DEFAULT_SUBJECT_PREFIX}.node-1=2Eeu=2Eexample"
        beat = wait_until(lambda: (b := heartbeat([nats_server.url], host)) and b.seq == mine[-1].seq and b,
                          "the heartbeat to record the newest forwarded alert", 30)
        assert beat.epoch == mine[-1].epoch and beat.host == host
        assert node.matching(r"nats_output: forwarding to") and not node.matching(r"failing|warning")
    finally:
        assert node.stop() == 0
