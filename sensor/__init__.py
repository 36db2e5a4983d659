"""Falconet's eBPF sensor: real syscalls from the kernel in, enriched `falconet.model.event.Event`s out.

Importing this package does not import bcc (only `Sensor.start()` does), so the daemon's replay mode and the
CLI's help work without root.
"""

from falconet.sensor.sensor import Enricher, Sensor, SensorConfig, SensorError, SensorStats, program_text

__all__ = ["Enricher", "Sensor", "SensorConfig", "SensorError", "SensorStats", "program_text"]
