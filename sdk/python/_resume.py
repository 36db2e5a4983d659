"""A subscription's state across reconnects, shared by the blocking and the asyncio client.

`Resume` holds the last cursor delivered, so the next stream starts right after it and nothing retained is
missed or repeated. `Reconnects` decides how long to wait before the next attempt and when to give up, and
says in the log what was lost and why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from falconet.rules.alert import Alert, Cursor
from falconet.sdk._models import Backoff
from falconet.sdk._query import Query
from falconet.sdk.errors import ConnectError

log = logging.getLogger("falconet.sdk")


@dataclass(slots=True)
class Resume:
    """The subscription's progress across reconnects."""

    query: Query
    last: Cursor | None = None
    delivered: int = field(default=0)

    def start_after(self) -> Cursor | None:
        return self.last

    def accept(self, alert: Alert) -> bool:
        """Records a received alert; False for one already delivered (a replay must never show twice)."""
        cur = alert.cursor
        if cur is not None:
            if self.last is not None and cur.epoch == self.last.epoch and cur.sequence <= self.last.sequence:
                return False
            self.last = cur
        self.delivered += 1
        return True

    @property
    def blind_spot(self) -> bool:
        """True while resuming could miss alerts: started at "now" and no cursor seen yet to resume after."""
        return self.last is None and self.query.start == "now"


class Reconnects:
    """Back-off bookkeeping: `delivered()` after each alert, `lost(reason)` when the stream breaks."""

    def __init__(self, backoff: Backoff, target: str, resume: Resume) -> None:
        self._backoff = backoff
        self._target = target
        self._resume = resume
        self._failures = 0
        self._delays: Iterator[float] = backoff.delays()

    def delivered(self) -> None:
        if self._failures:
            self._failures, self._delays = 0, self._backoff.delays()

    def lost(self, reason: str) -> float:
        """The delay before the next attempt; ConnectError once `max_attempts` consecutive attempts failed."""
        self._failures += 1
        limit = self._backoff.max_attempts
        if limit is not None and self._failures > limit:
            raise ConnectError(self._target, f"gave up after {limit} reconnect attempts; last: {reason}")
        delay = next(self._delays)
        last = self._resume.last
        log.warning(
            "subscription to %s lost (%s); reconnecting in %.1fs%s",
            self._target,
            reason,
            delay,
            f", resuming after {last}" if last else "",
        )
        if self._resume.blind_spot:
            log.warning("no alert received yet, so alerts published while disconnected may be missed")
        return delay
