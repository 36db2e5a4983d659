"""The eBPF source: the sensor (falconet.sensor) behind the daemon's EventSource interface.

The sensor is imported only when this source is built, so `falconet run --source replay:...` and every
command's --help work without bcc. Root and the BPF capabilities are checked before the rules load (the
kind's preflight), so a daemon that cannot load the sensor says so at once rather than after the rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from falconet.model.event import Event
from falconet.model.prefilter import EventGate
from falconet.server.errors import DaemonError
from falconet.server.kernel_headers import headers_problem
from falconet.sensor.wakeup import DEFAULT_INTERVAL_MS
from falconet.server.source import EventSource, KernelFilter, OpenGate, SourceCounters, SourceKind, SourceRequest

if TYPE_CHECKING:
    from falconet.sensor import SensorStats

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


class SensorSource:
    """The eBPF sensor; it is its own kernel filter (syscall selection and open-path prefixes)."""

    name = "ebpf"

    def __init__(self, ring_buffer_bytes: int, syscalls: frozenset[str] | None, snaplen: int = 80,
                 poll_interval_ms: int = DEFAULT_INTERVAL_MS) -> None:
        from falconet.sensor import Sensor, SensorConfig, SensorError
        from falconet.sensor.sensor import ENV_BASE

        try:
            # No data buffer is copied until the rules say which they read (set_data_syscalls).
            self._sensor = Sensor(
                SensorConfig(ringbuf_bytes=ring_buffer_bytes, syscalls=None if syscalls is None else set(syscalls),
                             snaplen=snaplen, data_syscalls=set(), env_max=ENV_BASE, poll_interval_ms=poll_interval_ms)
            )
        except SensorError as exc:  # a bad setting: the same clear start-up error as a sensor that cannot load
            raise DaemonError(f"the eBPF sensor cannot start: {exc}") from None
        self._last: SensorStats | None = None  # the stats of the latest counters() call

    def start(self) -> None:
        from falconet.sensor import SensorError

        try:
            self._sensor.start()
        except SensorError as exc:
            raise DaemonError(f"the eBPF sensor cannot start: {exc}") from None

    def kernel_filter(self) -> KernelFilter | None:
        return self

    def set_syscalls(self, names: frozenset[str] | None) -> None:
        self._sensor.set_syscalls(names)

    def set_open_prefixes(self, prefixes: dict[str, list[str]] | None) -> None:
        self._sensor.set_open_prefixes(prefixes)
        if prefixes is None:  # the filter off (as during a reload): user space's open gate off too
            self.set_open_gate(None)

    def set_open_gate(self, gate: OpenGate | None) -> None:
        """The enricher's gates on opens (rules/open_gate.py) and on the fd types of other syscalls
        (rules/fd_type_gate.py): the Events no rule can match are not built (the fd table still takes their
        syscalls)."""
        enricher = self._sensor.enricher
        enricher.open_gate = gate.may_match if gate is not None else None
        enricher.fd_type_gate = gate.fd_type_may_match if gate is not None else None

    def set_data_syscalls(self, names: frozenset[str] | None) -> None:
        self._sensor.set_data_syscalls(names)

    def set_event_gates(self, gates: dict[str, EventGate] | None) -> None:
        self._sensor.set_event_gates(gates)

    def set_full_environment(self, full: bool) -> None:
        from falconet.sensor.sensor import ENV_BASE, ENV_MAX

        self._sensor.set_env_max(ENV_MAX if full else ENV_BASE)

    def poll(self, timeout_ms: int) -> list[Event] | None:
        return self._sensor.poll(timeout_ms)

    def counters(self) -> SourceCounters:
        stats = self._last = self._sensor.stats()
        return SourceCounters(int(stats.events), int(stats.kernel_drops), int(stats.decode_errors))

    def filtered_counts(self) -> dict[str, int]:
        """Events each filter kept from the engine by design, cumulative (the metrics' scrape thread reads it:
        the kernel's counts as of the engine thread's latest counters() call, the enricher's as they stand)."""
        last, enricher = self._last, self._sensor.enricher
        return {
            "kernel_open_filter": int(last.path_filtered) if last else 0,
            "kernel_event_gates": int(last.gated) if last else 0,
            "kernel_record_cuts": int(last.cut) if last else 0,
            "user_open_gate": int(enricher.gated_opens),
            "user_fd_type_gate": int(enricher.gated_fd_events),
        }

    def close(self) -> None:
        self._sensor.close()


def missing_bpf_capabilities(status: str | None = None) -> str | None:
    """None when the effective capabilities allow loading and attaching tracing BPF programs, else what is
    missing: CAP_BPF with CAP_PERFMON (kernel 5.8 and later), or CAP_SYS_ADMIN, which covers both."""
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return None  # cannot tell; let the sensor say what fails
    eff = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), None)
    if eff is None:
        return None
    if eff >> CAP_SYS_ADMIN & 1 or (eff >> CAP_BPF & 1 and eff >> CAP_PERFMON & 1):
        return None
    lacking = [name for bit, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")) if not eff >> bit & 1]
    return " and ".join(lacking) + " (or CAP_SYS_ADMIN)"


def _preflight() -> None:
    if os.geteuid() != 0:
        raise DaemonError(
            f"the eBPF sensor needs root (running as uid {os.geteuid()}); run as root, "
            "or replay a capture without root with --source replay:FILE"
        )
    headers = headers_problem()  # server/kernel_headers.py: the node requirement bcc brings
    if headers:
        raise DaemonError(headers)
    missing = missing_bpf_capabilities()
    if missing:
        raise DaemonError(
            f"the eBPF sensor needs {missing}, which this process does not have (root without them, e.g. in a "
            "restricted container or under a capability bounding set); grant them, "
            "or replay a capture with --source replay:FILE"
        )


def _open(request: SourceRequest) -> EventSource:
    _preflight()
    config = request.config
    return SensorSource(config.ring_buffer_bytes, request.syscalls, config.snaplen, config.poll_interval_ms)


KIND = SourceKind(name="ebpf", open=_open, preflight=_preflight)
