"""Converting the kernel's clocks to wall-clock time, measured so that a busy machine does not skew it.

The kernel stamps events with CLOCK_MONOTONIC (or BOOTTIME); alerts carry wall-clock time. The offset between
the two is read once, at start. Read naively (one realtime read, then one monotonic read), a preemption between
the two reads goes straight into every event time of the run: on a loaded host that was tens of milliseconds,
and two sensors on the same syscalls disagreed by as much. So the offset is sampled several times, each sample
bracketed by two reads of the kernel clock, and the tightest bracket wins.
"""

from __future__ import annotations

import time

SAMPLES = 16


def wall_minus(clock: int = time.CLOCK_MONOTONIC, samples: int = SAMPLES) -> int:
    """Wall-clock ns minus `clock`'s ns, from the sample whose two `clock` reads were closest together."""
    best_width = -1
    best = 0
    for _ in range(samples):
        before = time.clock_gettime_ns(clock)
        wall = time.time_ns()
        after = time.clock_gettime_ns(clock)
        width = after - before
        if best_width < 0 or width < best_width:
            best_width, best = width, wall - (before + after) // 2
    return best
