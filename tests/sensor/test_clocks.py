"""The kernel-clock to wall-clock offset: taken from the tightest of several bracketed samples."""

from __future__ import annotations

import time

import pytest

from falconet.sensor import clocks


def test_offset_agrees_with_a_direct_reading() -> None:
    direct = time.time_ns() - time.monotonic_ns()
    assert abs(clocks.wall_minus(time.CLOCK_MONOTONIC) - direct) < 50_000_000


def test_a_preempted_sample_loses_to_a_tight_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two samples: the first was preempted between its reads (a 40 ms bracket), the second was not.
    reads = iter([1_000, 40_001_000, 50_000_000, 50_000_100])
    walls = iter([9_000_000_000, 9_050_000_000])
    monkeypatch.setattr(time, "clock_gettime_ns", lambda _c: next(reads))
    monkeypatch.setattr(time, "time_ns", lambda: next(walls))
    assert clocks.wall_minus(time.CLOCK_MONOTONIC, samples=2) == 9_050_000_000 - 50_000_050
