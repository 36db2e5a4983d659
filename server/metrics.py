"""Prometheus metrics for the daemon (prometheus_client, default http://127.0.0.1:9376/metrics).

`falco_events` is labelled exactly as falco-exporter labels it (rule, priority as its number, hostname, source,
tags as ",a,b,", k8s_ns_name, k8s_pod_name) and exposed under that very name, so dashboards and alerting
rules written for falco-exporter work unchanged. The rest says whether anything is lost and what evaluation
costs: events seen, kernel drops, alerts dropped per output and per gRPC subscriber, alerts held back by the
rate limiter, and rule evaluation time. Falco's own metric names (`falcosecurity_*`) are server/metrics_falco.py,
and the same listener answers the liveness and readiness probes (`/healthz`, `/readyz`: server/health.py).

Counts are plain integers updated by the thread that owns them and read at scrape time by a collector, so the
engine thread pays a dict update per alert, not a lock-protected prometheus_client child per label set.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app
from prometheus_client.metrics_core import Metric

from falconet.model.alert import Alert
from falconet.server.health import Health, with_probes

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from falconet.server.store import StoreStats

FALCO_EVENTS_LABELS = ("rule", "priority", "hostname", "source", "tags", "k8s_ns_name", "k8s_pod_name")


def falco_events_labels(alert: Alert) -> tuple[str, ...]:
    """falco-exporter's label values for an alert."""
    tags = "," + ",".join(sorted(alert.tags)) + "," if alert.tags else ""
    ns = alert.output_fields.get("k8s.ns.name")
    pod = alert.output_fields.get("k8s.pod.name")
    return (
        alert.rule,
        str(int(alert.priority)),
        alert.hostname,
        alert.source,
        tags,
        "" if ns is None else str(ns),
        "" if pod is None else str(pod),
    )


class DaemonMetrics:
    """Everything the daemon counts, in its own registry (so several daemons can live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._falco_events: dict[tuple[str, ...], int] = {}
        self.events_seen = 0
        self.kernel_drops = 0
        self.undecoded_records = 0
        self.alerts_rate_limited = 0
        self.start_ns = time.time_ns()
        self.reload_ns = self.start_ns
        """When the running rules were loaded: at start, then at each successful reload."""
        self._rules_reloads = 0
        self.source_counters: tuple[int, int] | None = None
        """(events read, events lost) of the event source, as of the engine thread's latest report."""
        self.health = Health()
        self.rules_reload_failures = 0
        self.engine_errors = 0
        # Sources read at scrape time, set by the daemon: output kind -> (dropped queue full, failed writes),
        # and subscriber name -> dropped alerts.
        self.output_drops: Callable[[], Mapping[str, tuple[int, int]]] = dict
        self.subscriber_drops: Callable[[], Mapping[str, int]] = dict
        # (published, delivered, dropped) of the hub since it was made, closed subscribers included.
        self.hub_totals: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        # Events each filter kept from the engine by design (filter -> count; server/source_ebpf.py).
        self.filtered: Callable[[], Mapping[str, int]] = dict
        # The persistent alert store's counters (None: no store).
        self.store_stats: Callable[[], StoreStats | None] = lambda: None
        self.rule_eval_seconds = Histogram(
            "falconet_rule_evaluation_seconds",
            "Time the rule engine spent per event, observed per batch of events as the batch's mean.",
            buckets=(1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3, 1e-2),
            registry=self.registry,
        )
        self.registry.register(_Collector(self))
        self._listener = HttpListener()

    @property
    def rules_reloads(self) -> int:
        return self._rules_reloads

    @rules_reloads.setter
    def rules_reloads(self, value: int) -> None:
        """A successful reload counts here (server/reload.py), which is also when the new rules took over."""
        self._rules_reloads = value
        self.reload_ns = time.time_ns()

    def engine_report(self, events: int, dropped: int) -> None:
        """The engine thread's once-a-second report: the source's counters, and a sign of life."""
        self.source_counters = (events, dropped)
        self.health.engine_pass()

    def count_alert(self, alert: Alert) -> None:
        key = falco_events_labels(alert)
        with self._lock:
            self._falco_events[key] = self._falco_events.get(key, 0) + 1

    def falco_events(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return dict(self._falco_events)

    def observe_batch(self, events: int, seconds: float) -> None:
        if events:
            self.events_seen += events
            self.rule_eval_seconds.observe(seconds / events)

    def serve(self, address: str, port: int) -> tuple[str, int]:
        """Starts the HTTP endpoint (/metrics, /healthz, /readyz) in a background thread; returns the bound
        (address, port). Raises OSError when it cannot listen."""
        return self._listener.serve(with_probes(make_wsgi_app(self.registry), self.health), address, port)

    def close(self) -> None:
        self._listener.close()


class HttpListener:
    """A WSGI app (metrics and probes) served from a background thread until `close`; the daemon's endpoint
    and `falconet aggregate`'s (server/fleet/aggregate_metrics.py) are one each."""

    def __init__(self) -> None:
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, app: WSGIApplication, address: str, port: int) -> tuple[str, int]:
        """Starts serving `app`; the bound (address, port). Raises OSError when it cannot listen."""
        family, addr = _best_family(address, port)

        class Server(ThreadingWSGIServer):
            address_family = family

        server = make_server(addr, port, app, Server, handler_class=_SilentHandler)
        thread = threading.Thread(target=server.serve_forever, name="falconet-metrics", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        host, bound = server.server_address[:2]
        return str(host), int(bound)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def _best_family(address: str, port: int) -> tuple[socket.AddressFamily, str]:
    """IPv4 or IPv6, as the address says (the WSGI server binds IPv4 only unless told)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return family, str(sockaddr[0])


class _Collector:
    def __init__(self, metrics: DaemonMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.m
        # Exposed as plain `falco_events`, the name falco-exporter's users query. prometheus_client would render a
        # counter family as falco_events_total, so the family is untyped; its value still only ever grows.
        fe = Metric("falco_events", "Alerts raised (a count), labelled as falco-exporter labels them.", "unknown")
        for labels, value in sorted(m.falco_events().items()):
            fe.add_sample("falco_events", dict(zip(FALCO_EVENTS_LABELS, labels, strict=True)), value)
        yield fe
        for name, doc, value in (
            ("falconet_events", "Events the rule engine evaluated.", m.events_seen),
            ("falconet_kernel_drops", "Events the kernel dropped (ring buffer full), all CPUs.", m.kernel_drops),
            ("falconet_undecoded_records", "Records read from the kernel that could not be decoded (lost).",
             m.undecoded_records),
            (
                "falconet_alerts_rate_limited",
                "Alerts held back by outputs.rate/outputs.max_burst (sent to no output).",
                m.alerts_rate_limited,
            ),
            ("falconet_rules_reloads", "Successful SIGHUP reloads.", m.rules_reloads),
            ("falconet_engine_errors", "Events the rule engine failed to evaluate (no alert raised).",
             m.engine_errors),
            ("falconet_rules_reload_failures", "SIGHUP reloads that failed and kept the old set.",
             m.rules_reload_failures),
        ):
            c = Metric(name, doc, "counter")
            c.add_sample(name + "_total", {}, value)
            yield c
        od = Metric(
            "falconet_output_alerts_dropped", "Alerts an output lost: its queue was full, or the write failed.",
            "counter",
        )
        for kind, (full, failed) in sorted(m.output_drops().items()):
            od.add_sample("falconet_output_alerts_dropped_total", {"output": kind, "reason": "queue_full"}, full)
            od.add_sample("falconet_output_alerts_dropped_total", {"output": kind, "reason": "write_failed"}, failed)
        yield od
        published, delivered, dropped = m.hub_totals()
        for name, doc, value in (
            ("falconet_hub_alerts_published", "Alerts published to the gRPC hub.", published),
            ("falconet_subscribers_alerts_delivered", "Alerts delivered to gRPC subscribers, all of them.", delivered),
            ("falconet_subscribers_alerts_dropped",
             "Alerts gRPC subscribers lost by falling behind the hub, closed subscribers included.", dropped),
        ):
            c = Metric(name, doc, "counter")
            c.add_sample(name + "_total", {}, value)
            yield c
        sd = Metric(
            "falconet_subscriber_alerts_dropped",
            "Alerts each open gRPC subscriber lost by falling behind the hub (see the _subscribers_ total too).",
            "counter",
        )
        for name, dropped in sorted(m.subscriber_drops().items()):
            sd.add_sample("falconet_subscriber_alerts_dropped_total", {"subscriber": name}, dropped)
        yield sd
        ef = Metric(
            "falconet_events_filtered",
            "Events a filter kept from the rule engine by design, no rule being able to match them (and, in the "
            "kernel, no table needing them): the kernel's open filter, event gates and record cuts, and user "
            "space's open and fd-type gates.",
            "counter",
        )
        for name, value in sorted(m.filtered().items()):
            ef.add_sample("falconet_events_filtered_total", {"filter": name}, value)
        yield ef
        yield from _store_metrics(m.store_stats())


def _store_metrics(st: StoreStats | None) -> Iterator[Metric]:
    """The alert store: whether it is written (else alerts are in memory only), its failures and its size."""
    if st is None:
        return
    for name, doc, kind, value in (
        ("falconet_store_healthy", "1 while the alert store is written; 0: alerts are not durable.", "gauge",
         int(st.healthy)),
        ("falconet_store_failures", "Alert store commits or opens that failed.", "counter", st.failures),
        ("falconet_store_set_aside", "Corrupt alert store files moved aside.", "counter", st.set_aside),
        ("falconet_store_damaged_records", "Stored records found damaged when read (not served).", "counter",
         st.damaged),
        ("falconet_store_alerts_committed", "Alerts committed to the alert store.", "counter", st.committed),
        ("falconet_store_alerts", "Alerts in the alert store.", "gauge", st.count),
        ("falconet_store_bytes", "Wire bytes of the alerts in the alert store.", "gauge", st.payload_bytes),
    ):
        g = Metric(name, doc, kind)
        g.add_sample(name + ("_total" if kind == "counter" else ""), {}, value)
        yield g
