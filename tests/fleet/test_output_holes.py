"""After a failure, alerts JetStream did not store while it stored later ones (a stream leader change between
them can do that) are found by walking the stream from the last alert acknowledged in order, and published
again: each is then in the stream once (after the later ones, which is reported). The stream's state is made
by hand here, since no cluster failure produces it on demand."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from nats_servers import NatsServer

from falconet.model.alert import Alert, Priority
from falconet.server.fleet.connection import NatsConnection
from falconet.server.fleet.names import HEADER_EPOCH, HEADER_MSG_ID, HEADER_SEQ, alert_subject, msg_id
from falconet.server.fleet.output import REORDERED_RULE, NatsForwarder
from falconet.server.fleet.output_config import NatsOutputConfig
from falconet.server.fleet.output_stream import ensure_stream, stored_seqs
from falconet.server.hub import Hub

pytestmark = pytest.mark.nats


def test_holes_are_found_and_published_once(nats_server: NatsServer, tmp_path: Path) -> None:
    async def go() -> None:
        hub = Hub(hostname="holes-node")
        for i in range(10):
            hub.publish(Alert(time_ns=i + 1, rule="r", priority=Priority.WARNING, source="syscall", output=f"n={i}"))
        cfg = NatsOutputConfig(enabled=True, connection=NatsConnection(servers=(nats_server.url,)))
        subject = alert_subject("holes-node")
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_stream(js, cfg)
        acks = {}
        for e in hub.snapshot():
            if e.seq in (5, 6):  # "lost in the leader change"; 7.. stored
                continue
            headers = {HEADER_MSG_ID: msg_id(hub.epoch, e.seq), HEADER_EPOCH: hub.epoch, HEADER_SEQ: str(e.seq)}
            acks[e.seq] = await js.publish(subject, e.wire(), headers=headers)
        assert await stored_seqs(js, cfg.stream, subject, acks[4].seq, hub.epoch, 10, 100) == {7, 8, 9, 10}

        reports: list[Alert] = []
        fwd = NatsForwarder(cfg, hub, report=reports.append, log=lambda m: None)
        # As the forwarder would have it after the failure: 1..4 acknowledged in order, 5.. in flight.
        fwd.stats.forwarded_seq = 4
        fwd._frontier_ack = json.dumps({"stream": cfg.stream, "seq": acks[4].seq}).encode()
        fwd.start()
        deadline = asyncio.get_running_loop().time() + 30
        while (await js.stream_info(cfg.stream)).state.messages < 10:
            assert asyncio.get_running_loop().time() < deadline, "the holes were not published"
            await asyncio.sleep(0.05)  # polling a condition with a deadline
        await fwd.close()
        seqs = []
        for s in range(1, 11):
            m = await js.get_msg(cfg.stream, seq=s)
            assert m.headers is not None
            seqs.append(int(m.headers[HEADER_SEQ]))
        assert seqs[:8] == [1, 2, 3, 4, 7, 8, 9, 10] and sorted(seqs[8:]) == [5, 6]
        assert fwd.stats.reordered == 2 and fwd.stats.forwarded_seq >= 10
        assert [a.rule for a in reports] == [REORDERED_RULE]
        await nc.close()

    asyncio.run(go())
