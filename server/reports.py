"""Reports: what the daemon lost or could not do, turned into metrics and internal alerts once a second.

Nothing is lost silently. Kernel drops become Falco's "Falco internal: syscall event drop" alert (with
Falco's fields, at Falco's syscall_event_drops rate); alerts the rate limiter held back, outputs that dropped
alerts, events the engine failed on and failed reloads each become a `Falconet internal: ...` alert of source
`internal`, which skips the rate limiter. Counters are cumulative where they are counted and turned into
per-tick deltas here; the scrape-time figures (output drops with outputs retired by reloads, hub and
subscriber totals) are read from here too, so they never go back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from falconet.model.alert import Alert, OutputValue, Priority
from falconet.server.hub import Hub
from falconet.server.metrics import DaemonMetrics
from falconet.server.outputs import Output
from falconet.server.pipeline import Pipeline
from falconet.server.source import Log, SourceCounters

DROP_RULE = "Falco internal: syscall event drop"
RELOAD_RULE = "Falconet internal: reload failed"
OUTPUT_DROP_RULE = "Falconet internal: output dropped alerts"
RATE_LIMIT_RULE = "Falconet internal: alerts rate-limited"
ENGINE_ERROR_RULE = "Falconet internal: rule evaluation failed"
INTERNAL_SOURCE = "internal"

@dataclass
class _Reported:
    """Cumulative counters as last reported, to turn them into per-tick deltas."""

    events: int = 0
    drops: int = 0
    undecoded: int = 0
    rate_limited: int = 0
    engine_errors: int = 0


class Reporter:
    """Owns the per-tick reports and the counters that outlive a reload."""

    def __init__(self, pipeline: Pipeline, metrics: DaemonMetrics, log: Log, request_exit: Callable[[], None]):
        self._pipeline = pipeline
        self._metrics = metrics
        self._log = log
        self._request_exit = request_exit
        self._reported = _Reported()
        self._output_reported: dict[int, int] = {}
        self._retired_drops: dict[str, tuple[int, int]] = {}

    def report(self, rule: str, priority: Priority, output: str, fields: Mapping[str, OutputValue],
               *, skip: Output | None = None) -> None:
        """Raises an internal alert (never rate-limited) to the hub and every output but `skip`."""
        alert = Alert(
            time_ns=time.time_ns(),
            rule=rule,
            priority=priority,
            source=INTERNAL_SOURCE,
            output=output,
            output_fields=dict(fields),
            tags=[],
            hostname=self._pipeline.hostname,
        )
        self._pipeline.emit(alert, internal=True, skip=skip)

    # -- once a second, on the engine thread ------------------------------------------------------------

    def tick(self, counters: SourceCounters) -> None:
        """Kernel drops, rate limiting, engine failures and output losses since the last tick."""
        events, drops, undecoded = counters
        d_events, d_drops = events - self._reported.events, drops - self._reported.drops
        d_bug = undecoded - self._reported.undecoded
        self._reported.events, self._reported.drops, self._reported.undecoded = events, drops, undecoded
        if d_drops > 0 or d_bug > 0:
            self._metrics.kernel_drops += d_drops
            self._metrics.undecoded_records += d_bug
            self._kernel_drops(d_events, d_drops, d_bug)
        self._rate_limited()
        self._engine_errors()
        for out in self._pipeline.running.outputs:
            self._output_losses(out)

    def _kernel_drops(self, n_evts: int, n_buffer: int, n_bug: int) -> None:
        """Falco's drop report; records user space could not decode count as its `n_drops_bug`."""
        running = self._pipeline.running
        actions = running.config.syscall_event_drops.actions
        n_drops = n_buffer + n_bug
        message = f"{DROP_RULE}. {n_drops} system calls dropped in last second."
        if "log" in actions:
            self._log(message)
        if "alert" in actions and running.drop_limiter.take():
            # Falco's counters, as strings, as Falco sends them: the ring buffer, or a record user space could
            # not decode (Falco's "bug" class).
            fields: dict[str, OutputValue] = {
                "n_evts": str(n_evts + n_drops),
                "n_drops": str(n_drops),
                "n_drops_buffer_total": str(n_buffer),
                "n_drops_scratch_map": "0",
                "n_drops_page_faults": "0",
                "n_drops_bug": str(n_bug),
                "ebpf_enabled": "1",
            }
            self.report(DROP_RULE, Priority.DEBUG, message, fields)
        if "exit" in actions:
            self._log("exiting: syscall_event_drops.actions includes exit")
            self._request_exit()

    def _rate_limited(self) -> None:
        limited = self._metrics.alerts_rate_limited
        if limited <= self._reported.rate_limited:
            return
        n = limited - self._reported.rate_limited
        self._reported.rate_limited = limited
        config = self._pipeline.running.config
        self.report(
            RATE_LIMIT_RULE,
            Priority.WARNING,
            f"Falconet internal: {n} alerts were rate-limited (outputs.rate={config.outputs_rate:g}/s, "
            f"outputs.max_burst={config.outputs_max_burst}) and sent to no output",
            {"n_rate_limited": n, "n_rate_limited_total": limited},
        )

    def _engine_errors(self) -> None:
        errors = self._metrics.engine_errors
        if errors <= self._reported.engine_errors:
            return
        n = errors - self._reported.engine_errors
        self._reported.engine_errors = errors
        last = self._pipeline.last_engine_error
        self._log(f"the engine failed on {n} events; last: {last}")
        self.report(
            ENGINE_ERROR_RULE,
            Priority.ERROR,
            f"Falconet internal: the rule engine failed on {n} events, which raised no alert; last error: {last}",
            {"n_failed": n, "n_failed_total": errors, "last_error": last},
        )

    def _output_losses(self, out: Output) -> None:
        before = self._output_reported.get(id(out), 0)
        now = out.dropped
        if now <= before:
            return
        self._output_reported[id(out)] = now
        self.report(
            OUTPUT_DROP_RULE,
            Priority.ERROR,
            f"Falconet internal: the {out.kind} output dropped {now - before} alerts "
            f"({out.dropped_queue_full} queue full, {out.errors} failed writes in total)"
            + (f"; last error: {out.last_error}" if out.last_error else ""),
            {
                "output": out.kind,
                "n_dropped": now - before,
                "n_dropped_queue_full": out.dropped_queue_full,
                "n_failed_writes": out.errors,
                "last_error": out.last_error,
            },
            skip=out,  # a stuck output would only drop its own report again
        )

    # -- read at scrape time -----------------------------------------------------------------------------

    def retire(self, outputs: Iterable[Output]) -> None:
        """Keeps the losses of outputs a reload closed, so the per-kind counters never go back."""
        for o in outputs:
            full, failed = self._retired_drops.get(o.kind, (0, 0))
            self._retired_drops[o.kind] = (full + o.dropped_queue_full + o.abandoned, failed + o.errors)

    def output_drop_counts(self) -> dict[str, tuple[int, int]]:
        """(queue full or abandoned at close, failed writes) per output kind, retired outputs included."""
        out = dict(self._retired_drops)
        for o in self._pipeline.running.outputs:
            full, failed = out.get(o.kind, (0, 0))
            out[o.kind] = (full + o.dropped_queue_full + o.abandoned, failed + o.errors)
        return out

    def hub_totals(self) -> tuple[int, int, int]:
        hub = self._pipeline.hub
        if hub is None:
            return 0, 0, 0
        stats = hub.stats()
        return stats.published, stats.delivered_total, stats.dropped_total

    def subscriber_drop_counts(self) -> dict[str, int]:
        return subscriber_drop_counts(self._pipeline.hub)


def subscriber_drop_counts(hub: Hub | None) -> dict[str, int]:
    """Alerts each gRPC subscriber lost, by the client's identity (certificate CN, or UNIX peer) and the kind of
    stream; streams that share both are summed."""
    if hub is None:
        return {}
    counts: dict[str, int] = {}
    for r in hub.stats().readers:
        name = f"{r.identity or '?'} {r.name or 'stream'}"
        counts[name] = counts.get(name, 0) + r.dropped
    return counts
