"""`falconet aggregate`'s metrics and probes, against a real JetStream server and a real aggregator process:
/readyz says "not serving" until the stream exists and is caught up, then ok; the counters match what was
published (valid alerts, an invalid message, nodes, silent nodes); a NATS outage shows as
`falconet_aggregate_nats_connected 0` at once and, past the grace, as not ready; NATS back makes it ready again.
Every wait is on a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from aggregate_support import AggregatorProcess, ensure_stream, publish_node
from nats_servers import NatsServer
from output_support import wait_until

from falconet.server.fleet.aggregate_metrics import NATS_READY_GRACE

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]


def test_metrics_and_probes(nats_server: NatsServer, tmp_path: Path, certs_dir: Path) -> None:
    agg = AggregatorProcess(nats_server.url, tmp_path / "agg", certs_dir, name="agg-metrics",
                            extra=["--silence-timeout", "3"])
    agg.start(until_metrics=True)  # no stream yet: the aggregator waits for the nodes to create it
    try:
        assert agg.http("/healthz") == (200, "ok\n")
        status, body = agg.http("/readyz")
        assert status == 503 and "not serving yet" in body

        async def fill() -> None:
            nc = await nats.connect(nats_server.url)
            try:
                await ensure_stream(nc)
                await asyncio.gather(publish_node(nc, "m-1", 1, 40), publish_node(nc, "m-2", 1, 25))
                await nc.jetstream().publish("falconet.alerts.m-1", b"\xff not an alert")
            finally:
                await nc.close()

        asyncio.run(fill())
        wait_until(lambda: agg.http("/readyz")[0] == 200, "the aggregator ready once caught up")
        agg.wait_listening()  # its listening lines (printed once it serves)
        # Every stream message is taken in: the 65 alerts, the invalid one (refused), and the aggregator's own
        # bad-input report (written to the stream at once) once it is there. Waited for as a whole: a scrape reads
        # the counters while the feed moves, so one snapshot may sit between a message's count and its slot.
        def caught_up() -> dict[str, float] | None:
            x = agg.metrics()
            ok = (x["falconet_aggregate_alerts_ingested_total"] >= 65 and x["falconet_aggregate_stream_lag"] == 0
                  and x["falconet_aggregate_alerts_ingested_total"]
                  == x["falconet_aggregate_stream_last_sequence"] - x["falconet_aggregate_messages_invalid_total"])
            return x if ok else None

        m = wait_until(caught_up, "every stream message taken in, and no lag")
        assert m["falconet_aggregate_messages_invalid_total"] == 1
        assert m["falconet_aggregate_nats_connected"] == 1
        assert m["falconet_aggregate_nodes"] == 2
        # Published once, never again: both nodes fall silent after the silence timeout.
        wait_until(lambda: agg.metrics()["falconet_aggregate_nodes_silent"] == 2, "both nodes reported silent")
        wait_until(lambda: agg.metrics()["falconet_aggregate_internal_alerts_total"] >= 3,
                   "the silence alerts and the bad-input report written to the stream")

        # Taken before the stop: the aggregator may see the connection go (and start its grace) before stop()
        # returns, so a time taken after it can fall short of the grace by that much.
        down = time.monotonic()
        nats_server.stop()
        wait_until(lambda: agg.metrics()["falconet_aggregate_nats_connected"] == 0, "NATS seen as away")
        assert agg.http("/healthz")[0] == 200  # it still serves what it holds: alive
        status, body = wait_until(lambda: (r := agg.http("/readyz"))[0] == 503 and r, "not ready past the grace",
                                  timeout=NATS_READY_GRACE + 60)
        assert time.monotonic() - down > NATS_READY_GRACE and "NATS has been unreachable" in body
        nats_server.start()
        wait_until(lambda: agg.http("/readyz")[0] == 200, "ready again once NATS is back", timeout=90)
        assert agg.metrics()["falconet_aggregate_nats_connected"] == 1
    finally:
        agg.stop()
