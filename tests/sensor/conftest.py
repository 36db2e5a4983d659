"""The live sensor for tests: the real BPF program in the real kernel, loaded once per module.

When CI=true a sensor that cannot load FAILS the test (never skips): CI runs as root on this kernel, so a
load failure there is a defect, not a missing capability.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from falconet.rules.event import Event
from falconet.sensor import Sensor, SensorConfig, SensorError


def start_or_skip(config: SensorConfig) -> Sensor:
    sensor = Sensor(config)
    try:
        sensor.start()
    except SensorError as exc:
        if os.environ.get("CI") == "true" or os.geteuid() == 0:
            pytest.fail(f"the sensor could not start: {exc}")
        pytest.skip(f"the sensor needs root here: {exc}")
    return sensor


@pytest.fixture(scope="module")
def sensor() -> Iterator[Sensor]:
    s = start_or_skip(SensorConfig())
    try:
        yield s
    finally:
        s.close()


def collect(sensor: Sensor, keep: Callable[[Event], bool], done: Callable[[list[Event]], bool],
            timeout: float = 20.0) -> list[Event]:
    """Polls until `done(kept events)`; fails at the deadline showing what did arrive."""
    kept: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kept.extend(e for e in sensor.poll(100) if keep(e))
        if done(kept):
            return kept
    summary = "\n".join(f"{e.type} res={e.res} pid={e.proc.pid} fd={e.fd.name if e.fd else None} args={e.args}"
                        for e in kept[-30:])
    pytest.fail(f"timed out after {timeout}s; kept {len(kept)} events:\n{summary}")


PY = sys.executable
