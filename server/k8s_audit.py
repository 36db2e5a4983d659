"""The k8s audit endpoint: a kube-apiserver audit webhook posts Events/EventLists here; the engine evaluates them.

Role in the daemon: a second event source beside the sensor. The endpoint runs on the daemon's asyncio loop
(aiohttp, on its own listener, so the metrics and gRPC listeners are untouched); it authenticates the request,
bounds and decodes the body (model/audit.py, the same decoding as replay and `rules test`) and offers the
events to a bounded queue. The engine thread drains that queue between sensor polls (`MergedSource`), so
audit events meet the same engine, hub, outputs and metrics as syscall events, and one engine is only ever
touched by one thread.

The invariant: a request never waits for the engine or for any subscriber. When the queue cannot take a
request's events, the request gets 429 (the API server's webhook backend retries with back-off) and nothing
already accepted is lost. Every refusal has its status and its counter:

    401 no or wrong bearer token          413 body over webhookMaxBatchSize, or a lone event over maxEventSize
    404 another path, 405 another method   415 not application/json
    400 not JSON, not an audit Event/EventList, no stageTimestamp
    429 the queue is full (a flood, or an engine that cannot keep up)

An EventList item over maxEventSize is dropped alone and counted, as the k8saudit plugin drops it. Client
certificates are checked by TLS itself (a client without one never gets to send a request).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client.metrics_core import Metric

from falconet.model.audit import AuditDecodeError, AuditEvent, JsonValue, decode_audit_object
from falconet.model.event import Event
from falconet.server.k8s_audit_config import K8sAuditConfig
from falconet.server.source import EventSource, KernelFilter, SourceCounters, SourceKind

_OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are decoded on a worker thread, so a big batch does not stall the loop (and gRPC)."""


class AuditQueue:
    """Bounded hand-off from the endpoint (event loop) to the engine thread. `offer` never blocks."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[list[AuditEvent]] = deque()
        self._size = 0
        self._cond = threading.Condition()

    def offer(self, events: list[AuditEvent]) -> bool:
        """Queues all of `events`, or none of them when they do not fit."""
        with self._cond:
            if self._size + len(events) > self.capacity:
                return False
            self._items.append(events)
            self._size += len(events)
            self._cond.notify()
            return True

    def drain(self, timeout: float = 0.0) -> list[AuditEvent]:
        """Everything queued, waiting up to `timeout` seconds for something when empty."""
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait(timeout)
            out = [ev for batch in self._items for ev in batch]
            self._items.clear()
            self._size = 0
            return out

    def __len__(self) -> int:
        return self._size


class MergedSource:
    """The daemon's source with the audit queue merged in: what the engine thread polls (an EventSource).

    Audit events come first and never wait behind a sensor poll: when some are queued the sensor is polled
    without blocking. With `--source none` (no syscall source) the poll waits on the audit queue instead.
    The capture ending (a finished replay) still ends the run."""

    def __init__(self, inner: EventSource, queue: AuditQueue) -> None:
        self._inner = inner
        self._queue = queue

    @property
    def name(self) -> str:
        return self._inner.name

    def start(self) -> None:
        self._inner.start()

    def kernel_filter(self) -> KernelFilter | None:
        return self._inner.kernel_filter()

    def poll(self, timeout_ms: int) -> Sequence[Event | AuditEvent] | None:
        audit: list[Event | AuditEvent] = list(self._queue.drain())
        if audit:
            more = self._inner.poll(0)
            return audit if not more else [*audit, *more]
        if isinstance(self._inner, IdleSource):
            return list(self._queue.drain(timeout_ms / 1000))
        return self._inner.poll(timeout_ms)

    def counters(self) -> SourceCounters:
        return self._inner.counters()

    def close(self) -> None:
        self._inner.close()


class IdleSource:
    """`--source none`: no syscall events (an audit-only daemon, which needs no root)."""

    name = "none"

    def start(self) -> None:
        pass

    def kernel_filter(self) -> KernelFilter | None:
        return None

    def poll(self, timeout_ms: int) -> list[Event | AuditEvent] | None:
        threading.Event().wait(timeout_ms / 1000)  # only reached without an endpoint: nothing ever arrives
        return []

    def counters(self) -> SourceCounters:
        return SourceCounters(0, 0)

    def close(self) -> None:
        pass


NONE_KIND = SourceKind(name="none", open=lambda _request: IdleSource())
"""`--source none`, registered in server/sources.py."""


class EndpointStats:
    """Counters of the endpoint, updated on the event loop and read at scrape time."""

    def __init__(self) -> None:
        self.responses: dict[int, int] = {}
        self.events_accepted = 0
        self.events_too_large = 0
        self.events_refused_queue_full = 0

    def count(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1


class _Collector:
    def __init__(self, stats: EndpointStats, queue: AuditQueue) -> None:
        self.stats, self.queue = stats, queue

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        req = Metric("falconet_k8s_audit_requests", "Requests to the k8s audit endpoint, by HTTP status.", "counter")
        for code, n in sorted(dict(s.responses).items()):
            req.add_sample("falconet_k8s_audit_requests_total", {"code": str(code)}, n)
        yield req
        ev = Metric("falconet_k8s_audit_events", "Audit events received, by what became of them.", "counter")
        for outcome, n in (("accepted", s.events_accepted), ("dropped_too_large", s.events_too_large),
                           ("refused_queue_full", s.events_refused_queue_full)):  # fmt: skip
            ev.add_sample("falconet_k8s_audit_events_total", {"outcome": outcome}, n)
        yield ev
        q = Metric("falconet_k8s_audit_queue_events", "Audit events waiting for the engine.", "gauge")
        q.add_sample("falconet_k8s_audit_queue_events", {}, len(self.queue))
        yield q


class K8sAuditEndpoint:
    """The HTTP(S) listener. `start()` returns the URL it serves (with the real port when configured as 0)."""

    def __init__(self, config: K8sAuditConfig, log: Callable[[str], None]) -> None:
        self.config = config
        self.queue = AuditQueue(config.queue_size)
        self.stats = EndpointStats()
        self._log = log
        self._token = (
            config.token_file.read_text(encoding="utf-8").strip().encode() if config.token_file else None
        )
        self._runner: web.AppRunner | None = None
        self._num = 0

    def wrap(self, source: EventSource) -> MergedSource:
        """The daemon's source with this endpoint's events merged in (what the engine thread polls)."""
        return MergedSource(source, self.queue)

    def collector(self) -> _Collector:
        """The endpoint's metrics, for the daemon's Prometheus registry."""
        return _Collector(self.stats, self.queue)

    def ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.tls_pem is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cfg.tls_pem))  # one PEM with the key and the certificate, as Falco's
        if cfg.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(cfg.client_ca))
        return ctx

    async def start(self) -> str:
        cfg = self.config
        app = web.Application(client_max_size=cfg.max_batch_size)
        app.router.add_post(cfg.path, self._handle)
        app.router.add_route("*", cfg.path, self._wrong_method)  # answered (and counted) here, not by aiohttp
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.listen_address, cfg.port, ssl_context=self.ssl_context())
        await site.start()
        addresses = self._runner.addresses  # the bound (host, port, ...) tuples: the real port when configured 0
        port = int(addresses[0][1]) if addresses else cfg.port
        scheme = "https" if cfg.tls_pem else "http"
        return f"{scheme}://{cfg.listen_address}:{port}{cfg.path}"

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Closes the listener, then gives the engine thread up to `drain_seconds` to take the events already
        accepted (a 200 was a promise to evaluate them)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_seconds
        while len(self.queue) and loop.time() < deadline:
            await asyncio.sleep(0.01)

    # -- the request -----------------------------------------------------------------------------------------

    def _reply(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        self.stats.count(status)
        return web.json_response({"status": status, "message": message}, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.Response:
        cfg = self.config
        if self._token is not None and not self._authorized(request.headers.get("Authorization", "")):
            return self._reply(401, "a bearer token is required", {"WWW-Authenticate": 'Bearer realm="k8s-audit"'})
        if request.content_type != "application/json":
            return self._reply(415, "the body must be application/json")
        if request.content_length is not None and request.content_length > cfg.max_batch_size:
            return self._reply(413, f"the body is over webhookMaxBatchSize ({cfg.max_batch_size} bytes)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reply(413, f"the body is over webhookMaxBatchSize ({cfg.max_batch_size} bytes)")
        if len(body) > _OFFLOAD_BYTES:
            decoded = await asyncio.get_running_loop().run_in_executor(None, self._decode, body)
        else:
            decoded = self._decode(body)
        if isinstance(decoded, web.Response):
            return decoded
        if not decoded:
            return self._reply(200, "no events")
        for ev in decoded:  # numbered here, on the loop, in arrival order
            self._num += 1
            ev.num = self._num
        if not self.queue.offer(decoded):
            self.stats.events_refused_queue_full += len(decoded)
            return self._reply(429, "the engine is behind; retry later", {"Retry-After": "1"})
        self.stats.events_accepted += len(decoded)
        return self._reply(200, f"{len(decoded)} events accepted")

    async def _wrong_method(self, request: web.Request) -> web.Response:
        return self._reply(405, f"{_clean(request.method)} is not allowed; POST audit events", {"Allow": "POST"})

    async def _not_found(self, _request: web.Request) -> web.Response:
        return self._reply(404, f"audit events go to {self.config.path}")

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        assert self._token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token)

    def _decode(self, body: bytes) -> list[AuditEvent] | web.Response:
        """The body's events (oversized list items dropped and counted), or the error response."""
        try:
            obj: JsonValue = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._reply(400, f"the body is not JSON: {_clean(str(exc))}")
        except RecursionError:  # a hostile body nested deeper than the parser goes
            return self._reply(400, "the body is nested too deeply to be an audit event")
        try:
            events = decode_audit_object(obj)
        except AuditDecodeError as exc:
            return self._reply(400, _clean(str(exc)))
        limit = self.config.max_event_size
        if len(body) > limit:
            if isinstance(obj, dict) and obj.get("kind") == "Event":
                return self._reply(413, f"the event is over maxEventSize ({limit} bytes)")
            kept = [ev for ev in events if len(json.dumps(ev.data, separators=(",", ":"))) <= limit]
            self.stats.events_too_large += len(events) - len(kept)
            events = kept
        return events


def _clean(text: str) -> str:
    """An error text that may quote the request: printable, bounded."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 200 else text[:197] + "..."
