"""Falconet's eBPF sensor: real syscalls from the kernel in, enriched `falconet.model.event.Event`s out.

Importing this package does not import bcc (only `Sensor.start()` does), so the daemon's replay mode and the
CLI's help work without root.
"""

from falconet.sensor.sensor import (
    RINGBUF_MIN_BYTES,
    Enricher,
    Sensor,
    SensorConfig,
    SensorError,
    SensorStats,
    program_text,
    ringbuf_bytes_valid,
)

__all__ = [
    "RINGBUF_MIN_BYTES",
    "Enricher",
    "Sensor",
    "SensorConfig",
    "SensorError",
    "SensorStats",
    "program_text",
    "ringbuf_bytes_valid",
]
