"""The engine thread's pipeline: events from the source, through the rule engine, to the hub and the outputs.

Invariant: nothing downstream can slow the engine. `Hub.publish` and `Output.submit` never block (the hub
keeps a ring, each output a bounded queue that drops and counts when full). The configuration, the engine,
the outputs and the rate limiters that go together are one `Running` set, which a reload replaces with one
reference assignment under the emit lock: the engine reads it once per batch, so a batch is evaluated by
one rule set and its alerts go to that set's outputs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from falconet.model.alert import Alert
from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.model.prefilter import EventGate
from falconet.server.daemon_config import DaemonConfig
from falconet.server.hub import Hub
from falconet.server.metrics import DaemonMetrics
from falconet.server.outputs import Output, TokenBucket
from falconet.server.source import EventSource, KernelFilter, Log, OpenGate, OpenGateSink, SourceCounters

TICK_SECONDS = 1.0
POLL_MS = 100


class LoadReport(Protocol):
    @property
    def warnings(self) -> Sequence[object]:
        """What loading the rules found that does not stop them (each renders itself with its position)."""


class RuleEngine(Protocol):
    """What the daemon needs of the rule engine (falconet.rules.engine.Engine is one)."""

    @property
    def event_types(self) -> frozenset[str] | None:
        """The event types any enabled rule can match; None when some rule can match every type."""

    @property
    def load_result(self) -> LoadReport: ...

    @property
    def enabled_rules(self) -> Sequence[object]:
        """The rules that can alert (the daemon is not ready with none: server/health.py)."""

    def process(self, event: Event | AuditEvent) -> list[Alert]: ...

    def open_path_prefixes(self) -> dict[str, list[str]] | None:
        """The open paths the rules may match, as KernelFilter.set_open_prefixes takes them; None = any."""

    def open_path_blockers(self) -> list[str]:
        """The rules that keep open_path_prefixes() at None, to tell the user why the filter is off."""

    def buffer_event_types(self) -> frozenset[str] | None:
        """The event types whose data buffer (evt.buffer) some rule reads; None = any."""

    def event_gates(self, names: Iterable[str]) -> dict[str, EventGate]:
        """For each event type, the gate every event a rule can match passes (model/prefilter.py)."""

    def reads_environment(self) -> bool:
        """Whether some rule reads a process's environment (proc.env), which may be long."""


@runtime_checkable
class GatedEngine(Protocol):
    """An engine that gives user space's gate on opens (rules/open_gate.py)."""

    def open_gate(self) -> OpenGate: ...


EngineBuilder = Callable[[DaemonConfig, str], RuleEngine]
"""(configuration, host name) -> a loaded engine; raises ConfigError or the engine's load error."""


def load_warnings(engine: RuleEngine) -> list[str]:
    return [str(w) for w in engine.load_result.warnings]


def apply_open_filter(kernel: KernelFilter, engine: RuleEngine, enabled: bool, log: Log) -> None:
    """The kernel-side open filter from the rules' prefixes, or off when some rule (or the config, with
    `enabled` false) says every open may matter; and the data buffers copied only for the event types whose
    rules read them, and the whole environment of an exec only when a rule reads it."""
    kernel.set_data_syscalls(engine.buffer_event_types())
    kernel.set_full_environment(engine.reads_environment())
    prefixes = engine.open_path_prefixes() if enabled else None
    if enabled and prefixes is None:
        blockers = engine.open_path_blockers()
        log(
            "open path filter off: these rules may match an open of any path: " + ", ".join(blockers)
            if blockers else "open path filter off: the rules may match an open of any path"
        )
    elif prefixes is not None:
        log(f"open path filter on: {len(prefixes)} path prefixes from the rules")
    kernel.set_open_prefixes(prefixes)
    if isinstance(kernel, OpenGateSink):  # user space's gate on opens (rules/open_gate.py), same switch
        kernel.set_open_gate(engine.open_gate() if enabled and isinstance(engine, GatedEngine) else None)
    apply_event_gates(kernel, engine, enabled, log)


def apply_event_gates(kernel: KernelFilter, engine: RuleEngine, enabled: bool, log: Log) -> None:
    """The kernel's event gates from the rules (the syscalls without a state role: their result, the
    caller's uid and comm, an argument), under the same switch as the open filter; off when some rule's event
    types are open-ended (the engine names no types to gate then)."""
    types = engine.event_types
    gates = engine.event_gates(sorted(types)) if enabled and types is not None else None
    if gates is not None:
        bounded = sorted(name for name, gate in gates.items() if not gate.keeps_all)
        log(f"event gates on: {len(bounded)} event types bounded by the rules")
    kernel.set_event_gates(gates)


@dataclass(frozen=True, slots=True)
class Running:
    """The set a reload replaces whole: never half of one configuration and half of another."""

    config: DaemonConfig
    engine: RuleEngine
    outputs: tuple[Output, ...]
    limiter: TokenBucket
    """Falco's outputs.rate/outputs.max_burst, in front of every output."""
    drop_limiter: TokenBucket
    """syscall_event_drops.rate/max_burst: how often a kernel drop may raise its alert."""

    @classmethod
    def of(cls, config: DaemonConfig, engine: RuleEngine, outputs: Sequence[Output]) -> Running:
        drops = config.syscall_event_drops
        return cls(
            config=config,
            engine=engine,
            outputs=tuple(outputs),
            limiter=TokenBucket(config.outputs_rate, config.outputs_max_burst),
            drop_limiter=TokenBucket(drops.rate, drops.max_burst),
        )


class Pipeline:
    """Alerts from the engine (and internal alerts from any thread) to the hub and the running outputs."""

    def __init__(self, running: Running, metrics: DaemonMetrics, hostname: str) -> None:
        self.running = running
        self.metrics = metrics
        self.hostname = hostname
        self.hub: Hub | None = None
        """Set once the server side is up; alerts before that go to the outputs only."""
        self.last_engine_error: str | None = None
        self._emit_lock = threading.Lock()

    def swap(self, running: Running) -> Running:
        """Puts a new set in place between two alerts; returns the old one (its outputs still to close)."""
        with self._emit_lock:
            old, self.running = self.running, running
        return old

    def process(self, events: Sequence[Event | AuditEvent]) -> None:
        engine = self.running.engine  # one read per batch: a reload swaps the set, never mutates the engine
        clock = time.perf_counter
        spent = 0.0
        for ev in events:
            t0 = clock()
            try:
                alerts = engine.process(ev)
            except Exception as exc:  # one event the engine cannot evaluate must not stop the daemon: counted
                self.metrics.engine_errors += 1
                self.last_engine_error = f"{type(exc).__name__}: {exc} (event {ev.num}, {ev.type})"
                alerts = []
            spent += clock() - t0
            for alert in alerts:  # at once, not after the batch: a big batch must not delay its first alerts
                self.emit(alert)
        self.metrics.observe_batch(len(events), spent)

    def emit(self, alert: Alert, *, internal: bool = False, skip: Output | None = None) -> None:
        """Hands an alert to the hub and every output; rate-limited unless internal. Never blocks."""
        if not internal and not self.running.limiter.take():
            self.metrics.alerts_rate_limited += 1
            return
        if not alert.hostname:
            alert.hostname = self.hostname
        with self._emit_lock:  # internal alerts come from other threads too (reload); keep hub order = output order
            running = self.running
            self.metrics.count_alert(alert)
            if running.config.grpc_output and self.hub is not None:
                self.hub.publish(alert)
            for out in running.outputs:
                if out is not skip:
                    out.submit(alert)


def engine_loop(
    source: EventSource, pipeline: Pipeline, tick: Callable[[SourceCounters], None], stop: threading.Event,
    after_poll: Callable[[Sequence[Event | AuditEvent]], None] | None = None,
) -> None:
    """The engine thread: poll, evaluate, and once a second report (`tick`) until `stop` or the source ends.
    The last tick runs after the last batch, so a replay's losses are reported before the daemon stops.
    `after_poll` sees each non-empty batch first (server/daemon_sched.py: the thread's priority follows its lag)."""
    next_tick = time.monotonic() + TICK_SECONDS
    while not stop.is_set():
        events = source.poll(POLL_MS)
        if events is None:
            break
        if events:
            if after_poll is not None:
                after_poll(events)
            pipeline.process(events)
        if time.monotonic() >= next_tick:
            next_tick = time.monotonic() + TICK_SECONDS
            tick(source.counters())
    tick(source.counters())
