"""The engine thread's CPU priority (opt-in, `sensor.engine_nice`): it yields to the machine's workload while it
keeps up, and competes as an equal as soon as it falls behind.

Why: on a small machine the daemon's engine thread wakes about once per poll interval while events keep coming
(sensor.Sensor.poll, sensor/wakeup.py) and runs for tens to hundreds of microseconds each time. A fork+exec
loop measured on 2 cores spent its extra wall time (1.28x the no-op floor, against 1.12x in CPU time) waiting
in the run queue: its parent and children woke on the core the engine thread held and waited for its slice
(bench.daemon_overhead's run-queue section charges each wait to the task that ran meanwhile). A thread with a
higher nice value gets a smaller share when a CPU is contended, so the workload's tasks run first and the
engine finishes its batch right after.

Why not for ever: a thread that yields can fall behind a workload that saturates every core, and a sensor
behind its kernel ring buffer loses events (kernel drops) and delays alerts. So the engine's own lag decides:
once the oldest event of a poll's batch is older than BEHIND_NS, or a poll takes BEHIND_EVENTS or more, the
thread goes back to nice 0 (the default every other thread keeps); it yields again only when a batch shows it
has caught up (first event younger than CAUGHT_UP_NS and a small batch). The age compares the event's time
(the kernel's monotonic clock turned to wall-clock time once, at start) with the wall clock now: a clock stepped
forward makes every batch look late (the thread competes: safe); stepped back, batch sizes still bring it back. Nothing is deferred or skipped: every
event is processed in order, only the order in which the kernel runs threads changes. The latency target (p99
at most 10 ms at 10,000 alerts/s) sits above BEHIND_NS, the point at which the engine stops yielding.

Per-thread nice is Linux's (setpriority on a thread id); lowering it back to 0 needs CAP_SYS_NICE (or an
RLIMIT_NICE of 20), which the eBPF daemon has as root. Without it the thread never yields (it could not compete
again): nothing else changes.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from falconet.model.event import Event

BEHIND_NS = 4_000_000
"""A batch whose first event is older than this (wall clock) means the engine is behind: stop yielding."""
CAUGHT_UP_NS = 2_000_000
"""...and it yields again once a batch's first event is younger than this,"""
BEHIND_EVENTS = 1024
"""...or (whatever the ages) a poll that returns this many events or more: a backlog."""
CAUGHT_UP_EVENTS = 256
"""...and at most this many."""
YIELD_NICE = 10
"""The nice value measured (weight 110 against a normal task's 1,024), for `sensor.engine_nice: 10`."""
DEFAULT_NICE = 0
"""sensor.engine_nice's default: off. Yielding made the exec loop wait behind the engine thread less often, but a
build that saturated both cores (bench.build_workload, load 8) then had kernel drops where nice 0 had none:
a thread that yields can be descheduled long enough for an exec-heavy burst to fill the ring buffer, and no
rule on its own lag can act while it is not running (bench/RESULTS.md, execwall)."""


CAP_SYS_NICE = 23


def may_return_to_nice_0(status: str | None = None) -> bool:
    """Whether this process may lower a thread's nice value back to 0 once it raised it: CAP_SYS_NICE, or an
    RLIMIT_NICE of 20 or more (the kernel's ceiling is 20 - rlimit). `status`: /proc/self/status's text."""
    soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    if soft == resource.RLIM_INFINITY or soft >= 20:
        return True
    try:
        text = status if status is not None else Path("/proc/self/status").read_text()
    except OSError:
        return False
    eff = next((int(line.split()[1], 16) for line in text.splitlines() if line.startswith("CapEff:")), 0)
    return bool(eff >> CAP_SYS_NICE & 1)


class EngineNice:
    """Owned by the engine thread: `start()` in that thread, then `after_poll(events)` after each poll."""

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self._tid = 0
        self._yielding = False
        self.switches = 0  # how many times the thread changed between yielding and competing

    def start(self) -> None:
        """Makes the calling thread (the engine thread) yield, if a nice value above 0 is configured."""
        self._tid = threading.get_native_id()
        if self.nice > 0 and not may_return_to_nice_0():
            self.nice = 0  # it could not compete again once behind: never yield
        if self.nice > 0:
            self._set(True)

    def after_poll(self, events: Sequence[object]) -> None:
        """Yields or competes according to how far behind this batch shows the engine to be."""
        if self.nice <= 0 or not events:
            return
        first = events[0]
        lag = time.time_ns() - first.ts if isinstance(first, Event) else 0
        if self._yielding:
            if lag > BEHIND_NS or len(events) >= BEHIND_EVENTS:
                self._set(False)
        elif lag < CAUGHT_UP_NS and len(events) <= CAUGHT_UP_EVENTS:
            self._set(True)

    @property
    def yielding(self) -> bool:
        return self._yielding

    def _set(self, yielding: bool) -> bool:
        try:
            os.setpriority(os.PRIO_PROCESS, self._tid, self.nice if yielding else 0)
        except OSError:  # not expected after may_return_to_nice_0(); stay as we are
            return False
        if yielding != self._yielding:
            self.switches += 1
        self._yielding = yielding
        return True
