"""A subscription's state across reconnects, shared by the blocking and the asyncio client.

`Resume` holds the last cursor delivered, so the next stream starts right after it and nothing retained is
missed or repeated. Before the first alert it holds the position the server reported in the stream's
`falconet-position` header, so a subscription started at "now" that is cut before any alert arrives still
resumes where it started rather than at a new "now". `Reconnects` decides how long to wait before the next attempt and when to give up, and
says in the log what was lost and why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from falconet.model.alert import Alert, Cursor
from falconet.sdk._models import Backoff
from falconet.sdk._query import Query
from falconet.sdk.errors import ConnectError

log = logging.getLogger("falconet.sdk")

POSITION_HEADER = "falconet-position"
"""Initial-metadata key of a stream's start position (docs/server.md): `EPOCH:SEQ`, SEQ >= 0."""


def parse_position(value: str | bytes) -> Cursor | None:
    """The `falconet-position` value as a Cursor; None (with a warning) if it is malformed.

    Unlike an alert's cursor, SEQ may be 0: the position before the first alert of a run.
    """
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    epoch, sep, seq = text.rpartition(":")
    if not sep or not epoch or not seq.isascii() or not seq.isdigit():
        log.warning("ignoring malformed %s header %r; expected EPOCH:SEQ", POSITION_HEADER, text)
        return None
    return Cursor(epoch, int(seq))


def position_of(metadata: object) -> Cursor | None:
    """The `falconet-position` in a call's initial metadata (a sequence of key/value pairs), if present."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == POSITION_HEADER:
            return parse_position(value)
    return None


@dataclass(slots=True)
class Resume:
    """The subscription's progress across reconnects."""

    query: Query
    last: Cursor | None = None
    delivered: int = field(default=0)
    answered: int = field(default=0)
    """Streams the server answered (sent its position header or an alert): proof that the connection, and for
    mTLS our certificate, were accepted, so a break afterwards is the server going away, not a refusal."""

    def start_after(self) -> Cursor | None:
        return self.last

    def started_at(self, position: Cursor | None) -> None:
        """Records the position a new stream starts at (its `falconet-position` header, None if absent).

        It is where that stream's first alert follows, so it is the resume point until an alert's cursor
        supersedes it. A position behind the last cursor of the same run is ignored (resuming never goes back).
        """
        last = self.last
        if position is None:
            return
        self.answered += 1
        if last is not None and last.epoch == position.epoch and position.sequence < last.sequence:
            return
        self.last = position

    def accept(self, alert: Alert) -> bool:
        """Records a received alert; False for one already delivered (a replay must never show twice)."""
        cur = alert.cursor
        if cur is not None:
            if self.last is not None and cur.epoch == self.last.epoch and cur.sequence <= self.last.sequence:
                return False
            self.last = cur
        self.delivered += 1
        self.answered += 1
        return True

    @property
    def blind_spot(self) -> bool:
        """True while resuming could miss alerts: started at "now" with no cursor to resume after (neither an
        alert's nor a `falconet-position`; a server without that header, such as Falco, leaves this gap)."""
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
