"""`falconet aggregate`: the whole fleet's alerts, from the JetStream stream, through a node's own gRPC API.

Start-up: connect to NATS, wait for the stream (the nodes create it; an aggregator never shapes it), derive the
cursor epoch from it, fill the ring with the newest `retention` messages and follow the stream live (an ordered
consumer), and serve once caught up to what the stream held at start, so the first client never sees a hole
that later fills. Older alerts are read from the stream when asked for. Nothing the aggregator keeps is needed
by another: cursors are stream positions, Falco cursors live in CURSORS_BUCKET, node liveness is re-read from
NODES_BUCKET and the stream, and internal alerts are written into the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from falconet.server.console.app import WebConsole, mount_console
from falconet.server.console.fleet import settled_or_error
from falconet.server.fleet.aggregate_config import AggregateConfig
from falconet.server.fleet.aggregate_hub import FleetHub
from falconet.server.fleet.aggregate_metrics import TICK_SECONDS, AggregateCounts, AggregateEndpoint, AggregateHealth
from falconet.server.fleet.aggregate_nodes import NodeWatch
from falconet.server.fleet.aggregate_serve import FalcoCursors, FleetServer, cancel
from falconet.server.fleet.aggregate_stream import StreamSource, stream_epoch
from falconet.server.fleet.connection import connect
from falconet.server.fleet.names import CURSORS_BUCKET, NODES_BUCKET

log = logging.getLogger("falconet.aggregate")

REFRESH_SECONDS = 5.0
"""How often the stream's oldest sequence is re-read (its limits remove old messages)."""
RETRY_FIRST_SECONDS = 0.5
"""The first retry delay while the stream's state cannot be read; it doubles up to REFRESH_SECONDS."""
STREAM_RETRY_SECONDS = 1.0
NATS_LOG_SECONDS = 30.0


class Aggregator:
    """One aggregator: `start()` returns the bound addresses; `stop()` ends everything it started."""

    def __init__(self, config: AggregateConfig) -> None:
        self.config = config
        self.server_config = config.server_config()
        self.server_config.validate()  # a bad listen address or TLS file is reported before NATS is tried
        g = config.grpc  # the web console (on by default): checked before NATS is tried too
        self.console_config, self.console_notes = settled_or_error(
            config.web_console, explicit=config.web_console_explicit, ca=g.root_certs, cert=g.cert_chain,
            key=g.private_key,
        )
        self.console: WebConsole | None = None
        self.nc: NatsClient | None = None
        self.source: StreamSource | None = None
        self.hub: FleetHub | None = None
        self.nodes: NodeWatch | None = None
        self.cursors: FalcoCursors | None = None
        self.server: FleetServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._logged: dict[str, float] = {}
        self._closing = False
        self.health = AggregateHealth()
        self.endpoint = AggregateEndpoint(self.counts, self.health)
        self.metrics_url: str | None = None
        self._ticker: asyncio.Task[None] | None = None

    def serve_endpoint(self) -> str | None:
        """Starts /metrics, /healthz and /readyz (if configured and not yet started): the metrics URL. Called
        before `start` by the command, so that the probes answer while the aggregator connects and catches up.
        OSError when it cannot listen."""
        m = self.config.metrics
        if m.enabled and self.metrics_url is None:
            try:
                host, port = self.endpoint.serve(m.listen_address, m.listen_port)
            except OSError as exc:
                raise OSError(exc.errno, f"the metrics endpoint cannot listen on {m.listen_address}:"
                              f"{m.listen_port}: {exc.strerror}") from None
            shown = f"[{host}]" if ":" in host else host
            self.metrics_url = f"http://{shown}:{port}/metrics"
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())
        return self.metrics_url

    async def _tick(self) -> None:
        while True:
            self.health.tick()
            await asyncio.sleep(TICK_SECONDS)  # the liveness tick's period

    def counts(self) -> AggregateCounts:
        """The metrics' values now (read from the HTTP thread: plain reads of counters owned by the loop)."""
        source, hub, nodes, nc = self.source, self.hub, self.nodes, self.nc
        stats = hub.stats() if hub is not None else None
        return AggregateCounts(
            ingested=source.ingested if source is not None else 0,
            invalid_messages=source.bad_messages if source is not None else 0,
            invalid_heartbeats=nodes.bad.heartbeats if nodes is not None else 0,
            nodes=len(nodes.nodes) if nodes is not None else 0,
            silent_nodes=nodes.silent_count() if nodes is not None else 0,
            nats_connected=nc is not None and nc.is_connected,
            stream_last=max(source.last_seq, hub.known_last) if source is not None and hub is not None else 0,
            served_last=stats.published if stats is not None else 0,
            subscribers=len(stats.readers) if stats is not None else 0,
            delivered=stats.delivered_total if stats is not None else 0,
            dropped=stats.dropped_total if stats is not None else 0,
            cursor_errors=self.cursors.errors if self.cursors is not None else 0,
            internal_alerts=len(nodes.raised) if nodes is not None else 0,
            feed_restarts=source.feed_restarts if source is not None else 0,
        )

    async def start(self) -> list[str]:
        cfg = self.config
        self.serve_endpoint()
        self.nc = await connect(cfg.nats, error_cb=self._nats_error, disconnected_cb=self._disconnected,
                                reconnected_cb=self._reconnected)
        nc = self.nc
        self.health.connected = lambda: nc.is_connected
        js = self.nc.jetstream()
        source = self.source = await self._open_stream(js)
        retention = self.server_config.retention
        start_seq = max(source.first_seq, source.last_seq - retention + 1, 1)
        hub = self.hub = FleetHub(retention, source.epoch, cfg.hostname, start_seq=start_seq)
        hub.known_last = source.last_seq
        hub.reads = source
        replicas = await self._replicas(js)
        nodes = self.nodes = NodeWatch(js, cfg.subject_prefix, cfg.silence_timeout, cfg.hostname)
        source.listener = nodes
        cursors_kv = await _bucket(js, CURSORS_BUCKET, replicas)
        nodes_kv = await _bucket(js, NODES_BUCKET, replicas)
        self.cursors = FalcoCursors(hub, cursors_kv)
        await source.start_feed(hub, start_seq)
        await hub.wait_for(source.last_seq)  # caught up with what the stream held at start
        log.info("stream %s (epoch %s): serving from sequence %d, ring from %d, newest %d", cfg.stream,
                 source.epoch, source.first_seq, start_seq, source.last_seq)
        self.server = FleetServer(self.server_config, hub, self.cursors)
        addresses = await self.server.start()
        for note in self.console_notes:
            log.warning("%s", note)
        self.console = await mount_console(self.console_config, hub, kind="fleet", log_to=log.info)
        self.health.serving = True
        period = min(1.0, cfg.silence_timeout / 4)
        self._tasks = [asyncio.ensure_future(nodes.run(nodes_kv, period)),
                       asyncio.ensure_future(self.cursors.run()),
                       asyncio.ensure_future(self._refresh())]
        return addresses

    async def _nats_error(self, exc: Exception) -> None:
        """One line per kind of error per NATS_LOG_SECONDS (nats-py retries for ever; its default prints a
        traceback per attempt)."""
        now = time.monotonic()
        kind = type(exc).__name__
        if now - self._logged.get(kind, -NATS_LOG_SECONDS) >= NATS_LOG_SECONDS:
            self._logged[kind] = now
            log.warning("NATS %s: %s (retrying)", self.config.nats.describe(), exc or kind)

    async def _disconnected(self) -> None:
        if self._closing:
            return
        if self.health.disconnected_since is None:
            self.health.disconnected_since = time.monotonic()
        log.warning("disconnected from NATS %s; serving what is held, reconnecting", self.config.nats.describe())

    async def _reconnected(self) -> None:
        self.health.disconnected_since = None
        log.info("reconnected to NATS %s", self.config.nats.describe())

    async def _open_stream(self, js: JetStreamContext) -> StreamSource:
        """The stream, waiting (one log line) until the nodes have created it."""
        said = False
        while True:
            try:
                return await StreamSource.open(js, self.config.stream, self.config.subject_prefix)
            except NotFoundError:
                if not said:
                    log.warning("stream %s does not exist yet on %s; waiting for the nodes to create it",
                                self.config.stream, self.config.nats.describe())
                    said = True
            await asyncio.sleep(STREAM_RETRY_SECONDS)  # retry period of a condition, not synchronisation

    async def _replicas(self, js: JetStreamContext) -> int:
        info = await js.stream_info(self.config.stream)
        return info.config.num_replicas or 1

    async def _refresh(self) -> None:
        """Looks at the stream's state every REFRESH_SECONDS and keeps the live feed following it (the feed's
        watchdog, StreamSource.watch_feed). While JetStream does not answer (no connection, no stream leader
        elected yet) it asks again with a growing delay up to REFRESH_SECONDS, logging once per outage; it
        never gives up."""
        assert self.source is not None
        source = self.source
        delay, backoff, failing_since = REFRESH_SECONDS, 0.0, None
        while True:
            await asyncio.sleep(delay)  # the refresh period, or the retry delay of an outage
            try:
                info = await source.refresh()
                if stream_epoch(info) != source.epoch:
                    await self._follow_new_epoch(source, info)
                restarted = await source.watch_feed(info.state.last_seq)
            except Exception as exc:  # noqa: BLE001 - NATS away or no leader yet: ask again, never give up
                if isinstance(exc, NotFoundError):  # deleted: no feed that nats-py could move to a new stream
                    await source.stop_feed()
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("cannot read stream %s's state or follow it: %s (retrying)", self.config.stream,
                                exc or type(exc).__name__)
                delay = backoff = min(REFRESH_SECONDS, backoff * 2 or RETRY_FIRST_SECONDS)
                continue
            if failing_since is not None:
                log.info("stream %s answers again (after %.1f s)", self.config.stream,
                         time.monotonic() - failing_since)
                failing_since = None
            if restarted:
                log.warning("stream %s: %s", self.config.stream, restarted)
            delay, backoff = REFRESH_SECONDS, 0.0

    async def _follow_new_epoch(self, source: StreamSource, info: api.StreamInfo) -> None:
        """The stream was deleted and created again: serve the new one from its oldest alert, with one internal
        alert saying so (StreamSource.new_epoch, FleetHub.new_epoch)."""
        old, new = source.epoch, stream_epoch(info)
        oldest = info.state.first_seq if info.state.messages else info.state.last_seq + 1
        log.warning("stream %s was deleted and created again (epoch %s, was %s): serving the new one from its "
                    "oldest sequence, %d", self.config.stream, new, old, oldest)
        if self.cursors is not None:
            self.cursors.written.clear()
        if self.nodes is not None:
            self.nodes.stream_recreated(self.config.stream, old, new, oldest)
        await source.new_epoch(info)

    async def stop(self, grace: float = 1.0) -> None:
        self._closing = True
        self.health.stopping = True
        if self.console is not None:
            await self.console.stop()
        if self.server is not None:
            await self.server.stop(grace)
        for task in self._tasks:
            await cancel(task)
        self._tasks = []
        if self.cursors is not None:
            with contextlib.suppress(Exception):
                await self.cursors.flush()
        if self.nodes is not None:
            self.nodes.flush_bad(force=True)
            with contextlib.suppress(Exception):
                await self.nodes.send()
        if self.source is not None:
            await self.source.stop_feed()
            await self.source.close_reads()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await cancel(self._ticker)
        self._ticker = None
        self.endpoint.close()


async def _bucket(js: JetStreamContext, name: str, replicas: int) -> KeyValue:
    """A key-value bucket, created (one value per key) if nobody has yet."""
    try:
        return await js.key_value(name)
    except (BucketNotFoundError, NotFoundError):
        pass
    try:
        return await js.create_key_value(api.KeyValueConfig(bucket=name, history=1, replicas=replicas))
    except Exception:  # noqa: BLE001 - another component created it meanwhile (with its own settings)
        return await js.key_value(name)
