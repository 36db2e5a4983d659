"""The `nats` output's Prometheus metrics, read from the forwarder's counters at scrape time (the daemon
registers this collector in its registry, so server/metrics.py needs no knowledge of NATS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric

from falconet.server.fleet.output import ForwarderStats

FAILURE_REASONS = ("unreachable", "auth", "permission", "timeout", "disconnected", "no_stream", "rejected",
                   "publish", "heartbeat", "error")


class ForwarderCollector:
    """falconet_nats_output_*: whether the output is connected, what it forwarded, lost, and why it failed."""

    def __init__(self, snapshot: Callable[[], ForwarderStats]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        st = self._snapshot()
        for name, doc, kind, value in (
            ("falconet_nats_output_connected", "1 while the NATS output is connected and forwarding.", "gauge",
             int(st.connected)),
            ("falconet_nats_output_backlog", "Alerts in the hub not yet acknowledged by JetStream.", "gauge",
             st.backlog),
            ("falconet_nats_output_alerts_forwarded", "Alerts JetStream acknowledged as stored.", "counter",
             st.forwarded),
            ("falconet_nats_output_alerts_duplicate", "Alerts JetStream acknowledged as duplicates of stored ones.",
             "counter", st.duplicates),
            ("falconet_nats_output_alerts_unforwarded",
             "Alerts the node's store dropped (retention) before they could be forwarded.", "counter",
             st.unforwarded),
            ("falconet_nats_output_alerts_reordered",
             "Alerts published again after later ones were stored without them (each stored once).", "counter",
             st.reordered),
            ("falconet_nats_output_sessions", "Connections that resumed forwarding (the first one included).",
             "counter", st.resumes),
        ):
            m = Metric(name, doc, kind)
            m.add_sample(name + ("_total" if kind == "counter" else ""), {}, value)
            yield m
        f = Metric("falconet_nats_output_failures", "NATS output failures, by reason.", "counter")
        for reason in sorted(set(FAILURE_REASONS) | set(st.failures)):
            f.add_sample("falconet_nats_output_failures_total", {"reason": reason}, st.failures.get(reason, 0))
        yield f
