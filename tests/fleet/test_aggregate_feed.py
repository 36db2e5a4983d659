"""The aggregator's live feed keeps following the stream when nats-py's own recovery of it does not.

The feed is a nats-py ordered consumer. nats-py recreates it after a gap or missed heartbeats from a background
task that ends at its first error, after which the feed is silent for good (issue 13's scenario saw it after
the stream's leader was killed). The aggregator's watchdog (StreamSource.watch_feed, run at each look at the
stream's state) starts a new feed after the newest sequence its hub holds. These tests run the aggregator in
this process, so they can break nats-py's recovery the way it breaks (its recovery raising) and look at the
feed; every alert goes to a real falco-client subscriber over the aggregator's UNIX socket, and must arrive
exactly once and in its host's order within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from aggregate_support import FALCO_CLIENT, REPO, ensure_stream, make_replicated_stream, numbers, publish_node
from aggregate_support import publish_retrying
from nats.aio.client import Client as NatsClient
from nats_servers import NatsCluster, NatsServer

from falconet.model.alert import Cursor
from falconet.server.fleet.aggregate import Aggregator
from falconet.server.fleet.aggregate_config import parse_aggregate
from falconet.server.fleet.aggregate_nodes import RECREATED_RULE
from falconet.server.fleet.aggregate_stream import StreamSource, _feed_tasks
from falconet.server.fleet.names import DEFAULT_STREAM

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

DEADLINE = 90.0
"""Seconds for a condition: the watchdog looks every 5 s and restarts a feed stalled for one look."""
HOSTS = ("feed-a", "feed.b.example")


async def until(pred: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)  # the polling interval of a condition with a deadline


@contextlib.asynccontextmanager
async def aggregator(tmp_path: Path, urls: list[str]) -> AsyncIterator[Aggregator]:
    """`falconet aggregate`'s Aggregator on a UNIX socket in this loop (no metrics listener, no console)."""
    conf = parse_aggregate(f"""aggregate:
  servers: [{', '.join(urls)}]
  hostname: agg-feed
  silence_timeout: 600
  grpc: {{bind_address: ["unix://{tmp_path / 'agg.sock'}"]}}
  webserver: {{enabled: false}}
  web_console: {{enabled: false}}
""", base_dir=tmp_path)
    agg = Aggregator(conf)
    try:
        await agg.start()
        yield agg
    finally:
        await agg.stop()


class Subscriber:
    """falco-client subscribed from the oldest alert over the aggregator's UNIX socket: (host, K) per alert, as
    it printed them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.got: list[tuple[str, int]] = []
        self.docs: list[dict[str, object]] = []
        self._pump = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, tmp_path: Path) -> Subscriber:
        proc = await asyncio.create_subprocess_exec(
            *FALCO_CLIENT, "--unix-socket", str(tmp_path / "agg.sock"), "subscribe", "--from", "oldest",
            "--output", "json", stdout=asyncio.subprocess.PIPE, cwd=REPO)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            doc = json.loads(line)
            self.docs.append(doc)
            self.got.extend(numbers([str(doc["output"])]))

    def count(self, host: str) -> int:
        return sum(1 for h, _ in self.got if h == host)

    async def expect(self, want: dict[str, int], what: str) -> None:
        """Until it has `want[host]` alerts of each host, then: exactly alerts 1..N of each, once, in order."""
        await until(lambda: all(self.count(h) >= n for h, n in want.items()) or self.proc.returncode is not None,
                    what)
        assert self.proc.returncode is None, f"falco-client ended ({self.proc.returncode})"
        for host, n in want.items():
            assert [k for h, k in self.got if h == host] == list(range(1, n + 1)), f"{what}: {host}"
        assert {h for h, _ in self.got} == set(want), what

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        await self._pump


def feed_of(source: StreamSource) -> object:
    """The live feed's subscription now (a new object after each restart)."""
    return source._sub


def test_feed_restarted_when_nats_py_stops_recovering_it(nats_server: NatsServer, tmp_path: Path) -> None:
    """nats-py's recovery of the feed is made to fail the way it fails for good (it raises) and the feed's
    consumer is deleted: without the watchdog the subscriber would never get another alert. Then nats-py's
    task is cancelled outright while the stream is quiet: the watchdog restarts the feed before anything is
    missed. Every alert arrives once and in order through both."""
    host = HOSTS[0]

    async def main() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            await ensure_stream(nc)
            await publish_node(nc, host, 1, 50)
            async with aggregator(tmp_path, [nats_server.url]) as agg:
                source = agg.source
                assert source is not None
                sub = await Subscriber.start(tmp_path)
                try:
                    await sub.expect({host: 50}, "the alerts before")
                    await broken_recovery_and_deleted_consumer(nc, source)
                    await publish_node(nc, host, 51, 50)
                    await sub.expect({host: 100}, "the alerts after the feed's consumer was deleted")
                    assert source.feed_restarts == 1

                    feed = feed_of(source)
                    assert feed is not None
                    for task in _feed_tasks(feed):  # type: ignore[arg-type]
                        task.cancel()
                    await until(lambda: source.feed_restarts == 2, "the watchdog to see nats-py's task ended")
                    assert feed_of(source) is not feed
                    await publish_node(nc, host, 101, 50)
                    await sub.expect({host: 150}, "the alerts after nats-py's task ended")
                finally:
                    await sub.stop()
        finally:
            await nc.close()

    asyncio.run(main())


async def broken_recovery_and_deleted_consumer(nc: NatsClient, source: StreamSource) -> None:
    """nats-py's recreation of the ordered consumer raises (its heartbeat task then ends: it catches only
    cancellation), and the consumer is deleted on the server, so the feed gets nothing more by itself."""
    feed = source._sub
    assert feed is not None
    jsi = feed._sub._jsi
    assert jsi is not None

    async def fails(sseq: int | None) -> bool:
        raise RuntimeError("injected: nats-py could not recreate the ordered consumer")

    jsi.reset_ordered_consumer = fails  # type: ignore[method-assign]
    await nc.jetstream().delete_consumer(DEFAULT_STREAM, feed._consumer)


def test_feed_follows_the_stream_when_its_leader_is_killed(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """A stream of 3 replicas; the aggregator's feed is placed on the server leading the stream, which is
    killed while two nodes publish (retrying what is not acknowledged, as forwarders do): the subscriber gets
    every alert of both hosts once, in order."""
    urls = nats_cluster.urls
    first, total = 100, 600

    async def main() -> None:
        await make_replicated_stream(urls[0])
        nc = await nats.connect(servers=urls, max_reconnect_attempts=-1)
        try:
            await asyncio.gather(*(publish_retrying(nc, h, 1, first) for h in HOSTS))
            async with aggregator(tmp_path, urls) as agg:
                source = agg.source
                assert source is not None
                sub = await Subscriber.start(tmp_path)
                try:
                    await sub.expect(dict.fromkeys(HOSTS, first), "the alerts before")
                    leader = await feed_on_stream_leader(nc, source)
                    publishers = asyncio.gather(*(publish_retrying(nc, h, first + 1, total - first) for h in HOSTS))
                    await until(lambda: min(sub.count(h) for h in HOSTS) >= first + 50, "alerts flowing")
                    victim = next(s for s in nats_cluster.servers if s.name == leader)
                    await asyncio.to_thread(victim.kill)
                    await publishers
                    await sub.expect(dict.fromkeys(HOSTS, total), "the alerts after the leader was killed")
                finally:
                    await sub.stop()
        finally:
            await nc.close()

    asyncio.run(main())


async def feed_on_stream_leader(nc: NatsClient, source: StreamSource) -> str:
    """The stream leader's name, once the feed's consumer (one replica, placed by the cluster) is on it: the
    feed is started again until it is, so that killing the leader takes the feed's consumer with it."""
    js = nc.jetstream()
    for _ in range(40):
        leader = (await js.stream_info(DEFAULT_STREAM)).cluster
        feed = source._sub
        assert leader is not None and leader.leader and feed is not None
        placed = (await feed.consumer_info()).cluster
        if placed is not None and placed.leader == leader.leader:
            return leader.leader
        await source.restart_feed()
    raise AssertionError("the feed's consumer never landed on the stream's leader")


def test_stream_deleted_and_created_again(nats_server: NatsServer, tmp_path: Path) -> None:
    """The stream is deleted and created again while the aggregator serves a subscriber: the aggregator follows
    the new stream (a new epoch) without a restart, the subscriber gets the new stream's alerts from its oldest
    after the old ones, and one internal alert says so, in the stream and to the subscriber; a cursor of the
    old epoch resumes at the new stream's oldest."""
    host = HOSTS[1]

    async def main() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            await ensure_stream(nc)
            await publish_node(nc, host, 1, 30)
            async with aggregator(tmp_path, [nats_server.url]) as agg:
                source, hub = agg.source, agg.hub
                assert source is not None and hub is not None
                old = source.epoch
                sub = await Subscriber.start(tmp_path)
                try:
                    await sub.expect({host: 30}, "the old stream's alerts")
                    await nc.jetstream().delete_stream(DEFAULT_STREAM)
                    await ensure_stream(nc)
                    await publish_node(nc, host, 31, 20, epoch="ep-after")
                    await sub.expect({host: 50}, "the new stream's alerts")
                    assert source.epoch != old and hub.epoch == source.epoch
                    await until(lambda: any(d.get("rule") == RECREATED_RULE for d in sub.docs),
                                "the internal alert")
                    said = [d for d in sub.docs if d.get("rule") == RECREATED_RULE]
                    assert len(said) == 1 and old in str(said[0]["output"]), said
                    assert f"{source.epoch}:1" in str(said[0]["output"])
                    resumed = hub.start_after(Cursor(old, 30))
                    assert resumed.next_seq == 1 and resumed.gap_alert is not None
                finally:
                    await sub.stop()
            info = await nc.jetstream().stream_info(DEFAULT_STREAM)
            assert info.state.messages == 21  # the node's 20 and the one internal alert
        finally:
            await nc.close()

    asyncio.run(main())


def test_reads_behind_the_ring_keep_their_consumer_while_they_continue(nats_server: NatsServer,
                                                                        tmp_path: Path) -> None:
    """A reader catching up reads on through the same pull consumer (no new consumer, a cluster-wide operation,
    per batch); a read elsewhere gets its own; all are deleted at the end."""
    host = HOSTS[0]

    async def main() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            await ensure_stream(nc)
            await publish_node(nc, host, 1, 100)
            async with aggregator(tmp_path, [nats_server.url]) as agg:
                source = agg.source
                assert source is not None
                first = await source.read(1, 30)
                assert [s for s, _ in first] == list(range(1, 31)) and all(e is not None for _, e in first)
                (kept,) = source._pulls.values()
                second = await source.read(31, 30)
                assert [s for s, _ in second] == list(range(31, 61))
                assert list(source._pulls) == [61] and source._pulls[61] is kept
                elsewhere = await source.read(5, 10)
                assert [s for s, _ in elsewhere] == list(range(5, 15)) and sorted(source._pulls) == [15, 61]
                info = await nc.jetstream().stream_info(DEFAULT_STREAM)
                assert info.state.consumer_count == 3  # the live feed's and the two kept
                await source.close_reads()
                assert not source._pulls
                info = await nc.jetstream().stream_info(DEFAULT_STREAM)
                assert info.state.consumer_count == 1
        finally:
            await nc.close()

    asyncio.run(main())
