"""The NATS fixtures themselves: a stream created on one server, and a replicated one across the cluster."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import StreamConfig
from nats_servers import NatsCluster, NatsServer

pytestmark = pytest.mark.nats


def test_single_server_has_jetstream(nats_server: NatsServer) -> None:
    async def go() -> int:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="T", subjects=["t.>"]))
        ack = await js.publish("t.x", b"hello")
        await nc.close()
        return ack.seq

    assert asyncio.run(go()) == 1


def test_cluster_replicates_and_survives_one_server(nats_cluster: NatsCluster) -> None:
    async def publish(n: int) -> int:
        nc = await nats.connect(servers=nats_cluster.urls, max_reconnect_attempts=-1)
        js = nc.jetstream()
        last = 0
        for i in range(n):
            for _ in range(200):
                try:
                    last = (await js.publish("r.x", str(i).encode(), timeout=2)).seq
                    break
                except Exception:  # noqa: BLE001 - a leader election in progress: retried under a bound
                    await asyncio.sleep(0.05)
        await nc.close()
        return last

    async def setup() -> None:
        nc = await nats.connect(servers=nats_cluster.urls)
        js = nc.jetstream()
        for _ in range(200):
            try:
                await js.add_stream(StreamConfig(name="R", subjects=["r.>"], num_replicas=3))
                break
            except Exception:  # noqa: BLE001 - the meta group may still be electing
                await asyncio.sleep(0.1)
        await nc.close()

    asyncio.run(setup())
    assert asyncio.run(publish(10)) == 10
    nats_cluster.servers[0].kill()
    assert asyncio.run(publish(10)) == 20
