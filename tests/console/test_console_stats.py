"""The charts' counts: minutes by priority, top rules and hosts, the hour and day windows, bounded memory."""

from __future__ import annotations

from typing import Any

from console_support import make_alert

from falconet.model.alert import Alert, Priority
from falconet.server.console.stats import DAY_MINUTES, MAX_KEYS, MINUTE_NS, OTHER, AlertCounts

NOW = 1_800_000_000 * 1_000_000_000  # a minute boundary far from 0


def at(minutes_ago: float, **kw: Any) -> Alert:
    alert = make_alert(0, **kw)
    alert.time_ns = NOW - int(minutes_ago * MINUTE_NS)
    return alert


def test_hour_and_day_windows_count_by_priority() -> None:
    counts = AlertCounts()
    for minutes_ago, priority in ((0, Priority.ERROR), (0.5, Priority.ERROR), (30, Priority.WARNING),
                                  (90, Priority.NOTICE), (23 * 60, Priority.DEBUG)):  # fmt: skip
        counts.add(at(minutes_ago, priority=priority), NOW)
    hour = counts.window("hour", NOW)
    assert hour["total"] == 3 and hour["bucket_seconds"] == 60
    buckets = hour["buckets"]
    assert isinstance(buckets, list) and len(buckets) == 60
    assert buckets[-1][Priority.ERROR] == 1 and buckets[-2][Priority.ERROR] == 1  # 0 and 0.5 minutes ago
    day = counts.window("day", NOW)
    assert day["total"] == 5 and day["bucket_seconds"] == 900
    day_buckets = day["buckets"]
    assert isinstance(day_buckets, list) and sum(row[Priority.DEBUG] for row in day_buckets) == 1


def test_times_out_of_the_day_count_when_they_arrive() -> None:
    counts = AlertCounts()
    counts.add(at(3 * DAY_MINUTES), NOW)  # a replayed capture's old alert
    counts.add(at(-120), NOW)  # a node whose clock is two hours ahead
    buckets = counts.window("hour", NOW)["buckets"]
    assert isinstance(buckets, list) and buckets[-1][Priority.WARNING] == 2


def test_old_minutes_are_dropped_and_keys_are_capped() -> None:
    counts = AlertCounts()
    counts.add(at(DAY_MINUTES - 1), NOW - 10 * MINUTE_NS)
    counts.add(at(0), NOW)
    counts.add(at(-20), NOW + 20 * MINUTE_NS)  # a new minute prunes those older than a day
    assert min(counts.minutes) > (NOW + 20 * MINUTE_NS) // MINUTE_NS - DAY_MINUTES
    for i in range(MAX_KEYS + 10):
        counts.add(at(0, rule=f"rule-{i}", host=f"host-{i}"), NOW)
    minute = counts.minutes[NOW // MINUTE_NS]
    assert len(minute.rules) == MAX_KEYS + 1 and minute.rules[OTHER] >= 10
    top = counts.window("hour", NOW)["top_hosts"]
    assert isinstance(top, list) and len(top) == 10
