"""Two nodes forward to a three-server JetStream cluster with a replicated stream (replicas 3) at about 1,000
alerts/s each; the server leading the stream is killed (SIGKILL) meanwhile. Afterwards every alert of each node
is in the stream exactly once, in per-host order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats_servers import NatsCluster
from output_support import Publisher, ServeNode, check_host, host_numbers, nats_output_yaml, read_stream, stream_count, wait_until

from falconet.server.fleet.names import DEFAULT_STREAM

pytestmark = pytest.mark.nats


def _leader(urls: list[str]) -> str:
    async def go() -> str:
        nc = await nats.connect(servers=urls, connect_timeout=5)
        try:
            info = await nc.jetstream(timeout=10).stream_info(DEFAULT_STREAM)
            assert info.cluster is not None and info.cluster.leader
            assert info.config.num_replicas == 3
            return str(info.cluster.leader)
        finally:
            await nc.close()
    return asyncio.run(go())


def test_killing_the_stream_leader_loses_and_duplicates_nothing(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    urls = nats_cluster.urls
    conf = nats_output_yaml(urls, replicas=3, duplicate_window=30, ack_timeout=2, max_in_flight=256)
    nodes = [ServeNode(tmp_path / h, h, conf) for h in ("cluster-a", "cluster-b")]
    try:
        pubs = [Publisher(node, 0, rate=1000).start() for node in nodes]
        wait_until(lambda: stream_count(urls) >= 2000, "both nodes forwarding", 60)
        leader = _leader(urls)
        victim = next(s for s in nats_cluster.servers if s.name == leader)
        victim.kill()
        rest = [s.url for s in nats_cluster.servers if s is not victim]
        before = stream_count(rest)
        wait_until(lambda: stream_count(rest) >= before + 2000, "forwarding to go on after the kill", 90)
        acked = [p.stop() for p in pubs]
        for node, numbers in zip(nodes, acked, strict=True):
            wait_until(lambda n=node, a=numbers: host_numbers(rest, n.host) >= len(a),  # type: ignore[misc]
                       f"{node.host}'s alerts all forwarded", 90)
        msgs = read_stream(rest)
        for node, numbers in zip(nodes, acked, strict=True):
            mine = check_host(msgs, node.host, numbers)
            assert {m.number for m in mine if m.number is not None} == set(numbers)
    finally:
        for node in nodes:
            assert node.stop() == 0
