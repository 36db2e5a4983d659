"""What an event source is to the daemon: the one interface the engine thread reads events through.

A source delivers `falconet.model.event.Event`s in batches and counts what it read and what it lost before
user space; the engine thread polls it, and once a second the reports turn its counters into metrics and
drop alerts (server/reports.py). A source whose events are filtered in the kernel (the eBPF sensor) also
hands out a `KernelFilter`, through which the daemon narrows it to what the loaded rules can match.

Adding a source (an HTTP endpoint for Kubernetes audit events, a ptrace tracer) is one module that defines
the source and a `SourceKind` describing it, and one line in server/sources.py that registers the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.model.prefilter import EventGate
from falconet.server.daemon_config import DaemonConfig

Log = Callable[[str], None]
"""Where the daemon's log lines go (stderr, prefixed `falconet:`)."""


class SourceCounters(NamedTuple):
    """Cumulative counts since the source started; the reports turn them into per-second deltas."""

    events: int
    dropped: int
    """Events lost before user space (for the sensor: ring-buffer reserve failures)."""
    undecoded: int = 0
    """Records that reached user space but could not be decoded (malformed): lost too, and reported as Falco's
    `n_drops_bug` so such a loss is never silent."""


class OpenGate(Protocol):
    def may_match(self, event_type: str, path: str, need: int) -> bool:
        """May some rule match an open of this type, resolved absolute path and kind set (rules/open_gate.py)?"""

    def fd_type_may_match(self, event_type: str, fd_type: str) -> bool:
        """May some rule match an event of this (non-open) type on an fd of this type (rules/fd_type_gate.py)?"""


@runtime_checkable
class OpenGateSink(Protocol):
    """A source that can skip building the Events of opens the gate rules out (the eBPF sensor's enricher)."""

    def set_open_gate(self, gate: OpenGate | None) -> None: ...


class KernelFilter(Protocol):
    """The kernel-side selection of a source that has one. Both calls are hints: the engine still matches
    only what its rules say, so a source that ignores them (or has none) only costs more events."""

    def set_syscalls(self, names: frozenset[str] | None) -> None:
        """The syscalls any loaded rule can match; None = every syscall."""

    def set_open_prefixes(self, prefixes: dict[str, list[str]] | None) -> None:
        """The open paths the rules may match (prefix -> kinds among read/write/other); None = every open."""

    def set_data_syscalls(self, names: frozenset[str] | None) -> None:
        """The event types whose data buffer (evt.buffer) a rule reads; None = every one that has one."""

    def set_event_gates(self, gates: dict[str, EventGate] | None) -> None:
        """Per event type, the result classes, uids and comms a rule may match (model/prefilter.py); the
        source keeps back what fails them where it can prove no state depends on it. None = no gates."""

    def set_full_environment(self, full: bool) -> None:
        """Whether an exec's whole environment is read (a rule looks for a variable) or its first entries."""


class EventSource(Protocol):
    """What the engine thread reads: the eBPF sensor, a replayed capture, and any source registered later."""

    @property
    def name(self) -> str:
        """Short and stable (`ebpf`, `replay`): it appears in logs."""

    def start(self) -> None:
        """Acquires what the source reads from; raises DaemonError saying why it cannot."""

    def poll(self, timeout_ms: int) -> Sequence[Event | AuditEvent] | None:
        """Events (possibly none) within the timeout; None once the source is exhausted (the daemon stops).
        Syscall events, or Kubernetes audit events (a replayed audit file, the k8s audit endpoint)."""

    def counters(self) -> SourceCounters: ...

    def kernel_filter(self) -> KernelFilter | None:
        """The source's kernel-side filter, or None when it has none (its events arrive as they are)."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """What a source may use to build itself."""

    argument: str
    """What follows `NAME:` in --source (for `replay:capture.jsonl`, `capture.jsonl`); "" when nothing does."""
    config: DaemonConfig
    syscalls: frozenset[str] | None
    """The syscalls the loaded rules can match (None: every one), for a source that can select in advance."""
    log: Log


def _always_ready() -> None:
    """The preflight of a source that needs nothing from the machine."""


@dataclass(frozen=True, slots=True)
class SourceKind:
    """One kind of source, as --source names it; registered in server/sources.py."""

    name: str
    open: Callable[[SourceRequest], EventSource]
    """Builds the source (not started); raises DaemonError for a bad argument."""
    argument: str = ""
    """The argument's placeholder for usage texts (`FILE` gives `replay:FILE`); "" = takes none."""
    preflight: Callable[[], None] = _always_ready
    """Checks the machine (root, capabilities) before the rules load, so that a source that cannot run fails
    at once and says why; raises DaemonError."""

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name
