"""The daemon and CPython's cyclic garbage collector: why the heap is frozen once the daemon is ready.

A full (generation 2) collection stops every Python thread while it walks every tracked object. At 10,000
alerts/s (`python -m bench.daemon_latency`) one ran every 0.5-2 s on the engine thread and took 33-55 ms: the
rules engine, bcc's objects and the tables loaded at start-up (about 80,000 objects) plus the hub's ring of
recent alerts. Those walks were the syscall-to-subscriber latency's periodic stall (p50 0.5 ms, p99 18-37 ms;
bench/RESULTS.md, "latloss"), and almost pure waste: what the daemon allocates once it runs rarely forms a
reference cycle (a full collection frees a few dozen objects), so reference counting frees nearly everything.

So, once the daemon is ready (and again after a reload swapped in new rules): one collection, then
`gc.freeze()`, which moves every object alive into a permanent generation that no collection walks; and full
collections only after FULL_EVERY younger ones (CPython's default is 10). Young collections keep their
default pace: they walk only objects allocated since, so they stay short (a few ms at worst).

The price: cyclic garbage among frozen objects is never collected. `settle` unfreezes before it collects, so
what a reload leaves behind (the old rules, if they hold cycles) is freed at the next settle rather than kept
for ever; `release` undoes both settings when the daemon stops (tests run many daemons in one process).
"""

from __future__ import annotations

import gc

FULL_EVERY = 1000
"""Generation-1 collections between two full ones (CPython's default: 10). At 10,000 alerts/s a young
collection runs about 50 times a second, so a full one comes every few minutes instead of every second."""


def settle() -> tuple[int, int, int]:
    """Collects everything unreachable, freezes what is left and spaces full collections out; returns the
    thresholds before, for `release`. Call it when the heap holds what the daemon will keep (ready, reloaded):
    it pauses every thread for one full collection (tens of ms), once."""
    before = gc.get_threshold()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(before[0], before[1], max(before[2], FULL_EVERY))
    return before


def release(before: tuple[int, int, int]) -> None:
    """Undoes `settle`: the frozen objects are collectable again and the thresholds are as they were."""
    gc.unfreeze()
    gc.set_threshold(*before)
