"""Counts for the console's charts: alerts per minute by priority, and by rule and by host, for the last day.

One hub reader feeds them (from the oldest alert in memory when the console starts, then live), so the charts
count what the hub published, filters aside. An alert is counted in the minute of its own time; one whose
time is more than a day old or in the future (a replayed capture, a node with a wrong clock) is counted in
the minute it reached the console instead, so it is not missing from "the last hour". Memory is bounded:
1,440 minutes, each with at most MAX_KEYS rules and hosts (the rest add up under OTHER).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from falconet.model.alert import Alert, Priority
from falconet.server.hub import Hub

MINUTE_NS = 60 * 1_000_000_000
DAY_MINUTES = 24 * 60
MAX_KEYS = 500
OTHER = "(other)"
WINDOWS = {"hour": (60, 1), "day": (DAY_MINUTES, 15)}
"""Window name -> (minutes, minutes per chart bucket)."""
TOP = 10


@dataclass(slots=True)
class Minute:
    priorities: list[int] = field(default_factory=lambda: [0] * len(Priority))
    rules: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)


def _add(counter: Counter[str], key: str) -> None:
    if key in counter or len(counter) < MAX_KEYS:
        counter[key] += 1
    else:
        counter[OTHER] += 1


class AlertCounts:
    """Per-minute counts; `add` from the feeding task, `window` for the page (both on the event loop)."""

    def __init__(self) -> None:
        self.minutes: dict[int, Minute] = {}
        self.total = 0

    def add(self, alert: Alert, now_ns: int) -> None:
        t = alert.time_ns
        if not now_ns - DAY_MINUTES * MINUTE_NS < t <= now_ns + MINUTE_NS:
            t = now_ns
        key = t // MINUTE_NS
        minute = self.minutes.get(key)
        if minute is None:
            minute = self.minutes[key] = Minute()
            self._prune(now_ns // MINUTE_NS)
        minute.priorities[alert.priority] += 1
        _add(minute.rules, alert.rule)
        _add(minute.hosts, alert.hostname)
        self.total += 1

    def _prune(self, now_min: int) -> None:
        floor = now_min - DAY_MINUTES
        for key in [k for k in self.minutes if k <= floor]:
            del self.minutes[key]

    def window(self, name: str, now_ns: int) -> dict[str, object]:
        """The chart data of one window (`hour`, `day`): buckets oldest first, and the top rules and hosts."""
        minutes, per_bucket = WINDOWS[name]
        now_min = now_ns // MINUTE_NS
        first = now_min - minutes + 1
        first -= first % per_bucket
        count = (now_min - first) // per_bucket + 1
        buckets = [[0] * len(Priority) for _ in range(count)]
        rules: Counter[str] = Counter()
        hosts: Counter[str] = Counter()
        for key, minute in self.minutes.items():
            if first <= key <= now_min:
                row = buckets[(key - first) // per_bucket]
                for i, n in enumerate(minute.priorities):
                    row[i] += n
                rules.update(minute.rules)
                hosts.update(minute.hosts)
        return {
            "window": name,
            "bucket_seconds": per_bucket * 60,
            "start": first * 60,
            "priorities": [p.falco_name for p in Priority],
            "buckets": buckets,
            "top_rules": rules.most_common(TOP),
            "top_hosts": hosts.most_common(TOP),
            "total": sum(sum(row) for row in buckets),
        }


class CountsFeed:
    """The task that reads the hub into an AlertCounts (its own reader: it never takes from a page)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.counts = AlertCounts()
        self.lost = 0

    async def run(self) -> None:
        hub = self.hub
        reader = hub.reader(hub.ring_oldest, name="WebConsole charts", identity="web-console")
        try:
            while True:
                entries, lost = reader.take(4096)
                if reader.behind:
                    entries, lost = await reader.take_stored(4096)
                self.lost += lost
                if entries:
                    now = time.time_ns()
                    for entry in entries:
                        self.counts.add(entry.alert, now)
                    await asyncio.sleep(0)  # a large backlog must not hold the loop
                    continue
                await reader.wait()
        finally:
            reader.close()
