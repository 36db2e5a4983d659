"""The live sensor for tests: the real BPF program in the real kernel, loaded once per module.

When CI=true a sensor that cannot load FAILS the test (never skips): CI runs as root on this kernel, so a
load failure there is a defect, not a missing capability.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from falconet.model.event import Event
from falconet.sensor import Sensor, SensorConfig, SensorError

T = TypeVar("T")


def start_or_skip(config: SensorConfig) -> Sensor:
    sensor = Sensor(config)
    try:
        sensor.start()
    except SensorError as exc:
        if os.environ.get("CI") == "true" or os.geteuid() == 0:
            pytest.fail(f"the sensor could not start: {exc}")
        pytest.skip(f"the sensor needs root here: {exc}")
    return sensor


# The event types the live tests assert on; delivering only these keeps user space fast when the machine is
# busy (state-keeping syscalls still flow, as in the daemon).
LIVE_TYPES = {"openat", "openat2", "open", "close", "execve", "connect", "ptrace", "symlinkat", "unlinkat", "mkdir",
              "mkdirat"}


class LiveSensor:
    """A started Sensor drained by a background thread, so a busy machine cannot fill its ring buffer while a
    test runs its workload; tests take events from here."""

    def __init__(self, sensor: Sensor) -> None:
        self.sensor = sensor
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._drain, name="sensor-drain", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop:
            got = self.sensor.poll(50)
            if got:
                with self._cond:
                    self._events.extend(got)
                    self._cond.notify_all()

    def take(self) -> list[Event]:
        with self._cond:
            self._cond.wait(0.1)
            out, self._events = self._events, []
        return out

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)
        self.sensor.close()


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A fresh directory with a short absolute path, for tests whose rules hold prefixes of it.

    The kernel matches open prefixes on their first PREFIX_MAX (64) bytes; pytest's tmp_path grows with its run
    counter and the test's name (/tmp/pytest-of-root/pytest-1042/test_open_prefix_filter_is_con0/keep/ is
    already longer), and a prefix cut short is rightly widened by the filter, which breaks such a test's exact
    expectations. Removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fn-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sensor() -> Iterator[LiveSensor]:
    live = LiveSensor(start_or_skip(SensorConfig(ringbuf_bytes=64 << 20, syscalls=set(LIVE_TYPES))))
    try:
        yield live
    finally:
        live.close()


def collect(live: LiveSensor, workload: Callable[[], T], keep: Callable[[T, Event], bool],
            done: Callable[[list[Event]], bool], timeout: float = 30.0, attempts: int = 3) -> tuple[T, list[Event]]:
    """Runs `workload` and takes the events `keep` selects until `done(kept)`.

    Fails at the deadline showing what did arrive, unless the kernel counted drops meanwhile (a busy machine
    can overflow the ring buffer; that is reported, not a sensor defect): then the workload runs again, up to
    `attempts` times. Events missing WITHOUT drops always fail."""
    stats = live.sensor.stats()
    for _attempt in range(attempts):
        drops = live.sensor.stats().kernel_drops
        live.take()  # what arrived before this workload is not about it
        ctx = workload()
        kept: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kept.extend(e for e in live.take() if keep(ctx, e))
            if done(kept):
                return ctx, kept
        stats = live.sensor.stats()
        if stats.kernel_drops == drops:
            break
    summary = "\n".join(f"{e.type} res={e.res} pid={e.proc.pid} fd={e.fd.name if e.fd else None} args={e.args}"
                        for e in kept[-30:])
    pytest.fail(f"timed out after {timeout}s; kept {len(kept)} events; {stats}:\n{summary}")


PY = sys.executable
