"""`falconet aggregate`'s HTTP endpoint: Prometheus metrics and the node's probe paths (`/healthz`, `/readyz`).

The same listener code as the node's (server/metrics.py `HttpListener`, server/health.py `with_probes`), its own
questions:

- Live: the aggregator's event loop still runs (a tick every second; the HTTP server is a thread of its own,
  so it answers when the loop is stuck, and says so). A stall of STALL_SECONDS means restart it.
- Ready: it has caught up with what the stream held at start and its gRPC server listens, and it is not
  stopping, and NATS has not been away for more than NATS_READY_GRACE seconds. While NATS is away the aggregator
  still serves what it holds, so a short reconnect does not take it out of its Service; a longer one sends
  clients to another aggregator that can reach the stream (if every aggregator lost NATS, all are unready: the
  fleet's stream is gone for everyone, which is what an operator must see).

Metrics are read at scrape time from a snapshot the aggregator builds (`AggregateCounts`), so the feed pays an
integer increment per message, not a prometheus_client child. Other HTTP parts (the web console) can be put in
front of `app` by whoever serves them: `AggregateEndpoint.app` is a plain WSGI application.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import make_wsgi_app
from prometheus_client.metrics_core import Metric

from falconet.server.health import STALL_SECONDS, with_probes
from falconet.server.metrics import HttpListener

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

NATS_READY_GRACE = 10.0
"""Seconds without NATS before the aggregator stops counting as ready (see the module docstring)."""
TICK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class AggregateCounts:
    """What the aggregator counts, as of one scrape."""

    ingested: int = 0
    """Stream messages served as alerts (the aggregators' own internal alerts included)."""
    invalid_messages: int = 0
    invalid_heartbeats: int = 0
    nodes: int = 0
    silent_nodes: int = 0
    nats_connected: bool = False
    stream_last: int = 0
    """The newest stream sequence known to exist."""
    served_last: int = 0
    """The newest stream sequence this aggregator has taken in."""
    subscribers: int = 0
    delivered: int = 0
    dropped: int = 0
    cursor_errors: int = 0
    internal_alerts: int = 0
    feed_restarts: int = 0
    """Live feeds the watchdog started again (StreamSource.watch_feed) or a stream created again moved."""


class AggregateHealth:
    """The probes' answers (see the module docstring); the aggregator sets the fields as its parts come up."""

    def __init__(self) -> None:
        self.created = time.monotonic()
        self.last_tick: float | None = None
        self.serving = False
        self.stopping = False
        self.connected: Callable[[], bool] = lambda: False
        self.disconnected_since: float | None = None
        """time.monotonic() when NATS went away (None: connected, or never connected yet)."""

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def not_live(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        since = self.created if self.last_tick is None else self.last_tick
        if now - since > STALL_SECONDS:
            return [f"the aggregator's event loop has not run for {now - since:.0f} s"]
        return []

    def not_ready(self) -> list[str]:
        if self.stopping:
            return ["the aggregator is stopping"]
        problems = []
        if not self.serving:
            problems.append("not serving yet (connecting to NATS, waiting for the stream or catching up with it)")
        away = self.disconnected_since
        if away is not None and not self.connected() and time.monotonic() - away > NATS_READY_GRACE:
            problems.append(f"NATS has been unreachable for {time.monotonic() - away:.0f} s")
        return problems + self.not_live()


class AggregateEndpoint:
    """The aggregator's registry and its HTTP listener (metrics and probes)."""

    def __init__(self, counts: Callable[[], AggregateCounts], health: AggregateHealth) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(counts))
        self.health = health
        self.app: WSGIApplication = with_probes(make_wsgi_app(self.registry), health)
        self._listener = HttpListener()

    def serve(self, address: str, port: int) -> tuple[str, int]:
        """Starts listening; the bound (address, port). OSError when it cannot."""
        return self._listener.serve(self.app, address, port)

    def close(self) -> None:
        self._listener.close()


class _Collector:
    def __init__(self, counts: Callable[[], AggregateCounts]) -> None:
        self.counts = counts

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        c = self.counts()
        for name, doc, kind, value in (
            ("falconet_aggregate_alerts_ingested", "Stream messages taken in and served as alerts.", "counter",
             c.ingested),
            ("falconet_aggregate_messages_invalid", "Stream messages refused (not a valid alert, or a subject that "
             "names no host); never served.", "counter", c.invalid_messages),
            ("falconet_aggregate_heartbeats_invalid", "Node heartbeats refused (not one, or under another node's "
             "key).", "counter", c.invalid_heartbeats),
            ("falconet_aggregate_nodes", "Nodes seen publishing (alerts or heartbeats).", "gauge", c.nodes),
            ("falconet_aggregate_nodes_silent", "Nodes that published and then fell silent (no alert and no "
             "heartbeat for the silence timeout).", "gauge", c.silent_nodes),
            ("falconet_aggregate_nats_connected", "1 while connected to NATS.", "gauge", int(c.nats_connected)),
            ("falconet_aggregate_stream_last_sequence", "The newest stream sequence known to exist.", "gauge",
             c.stream_last),
            ("falconet_aggregate_stream_lag", "Stream messages stored and not yet taken in by this aggregator.",
             "gauge", max(0, c.stream_last - c.served_last)),
            ("falconet_aggregate_subscribers", "Open gRPC streams reading alerts.", "gauge", c.subscribers),
            ("falconet_subscribers_alerts_delivered", "Alerts delivered to gRPC subscribers, all of them.", "counter",
             c.delivered),
            ("falconet_subscribers_alerts_dropped", "Alerts gRPC subscribers lost by falling behind, closed "
             "subscribers included.", "counter", c.dropped),
            ("falconet_aggregate_cursor_errors", "Falco cursor reads or writes the key-value bucket refused or did "
             "not answer (retried).", "counter", c.cursor_errors),
            ("falconet_aggregate_internal_alerts", "Internal alerts this aggregator wrote to the stream (silent "
             "nodes, nodes back, bad input).", "counter", c.internal_alerts),
            ("falconet_aggregate_feed_restarts", "Times the live feed from the stream was started again because "
             "it had stalled or the NATS client's recovery of it had ended.", "counter", c.feed_restarts),
        ):
            m = Metric(name, doc, kind)
            m.add_sample(name + ("_total" if kind == "counter" else ""), {}, value)
            yield m
