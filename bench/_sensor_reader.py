"""A loaded sensor read as the daemon reads it, shared by the sensor benches (bench.sensor_overhead,
bench.sensor_gates, bench.sensor_kernel_time).

Why a reader at all: a bench measures what the BPF programs cost the traced workload, and those programs behave
as in production only while something empties the ring buffer (unread, it fills and every later record is a
drop, which is cheaper than a delivery and would flatter the figures).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from falconet.sensor import Sensor


@contextmanager
def reading(sensor: Sensor) -> Iterator[Sensor]:
    """`sensor` (started by the caller) polled on a thread of its own until the block ends; the thread has
    stopped when the block is left, so the caller may read the sensor's final stats and close it."""
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            sensor.poll(50)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        yield sensor
    finally:
        stop.set()
        t.join()
