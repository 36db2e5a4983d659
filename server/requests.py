"""Reading Falconet's request fields (filter, start position) into hub terms, refusing what cannot be honoured.

Everything is checked before the first alert is sent, so a client with a typo gets INVALID_ARGUMENT instead of
a stream that silently matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from falconet.model.alert import Cursor, Priority
from falconet.sdk.api.falconet.v1 import types_pb2
from falconet.server.hub import AlertFilter, Hub, StartResult


class RequestError(ValueError):
    """A request field the server cannot honour; becomes INVALID_ARGUMENT with this message."""


def parse_filter(msg: types_pb2.Filter) -> AlertFilter:
    min_priority: Priority | None = None
    if msg.HasField("min_priority"):
        try:
            min_priority = Priority(msg.min_priority)
        except ValueError:
            names = ", ".join(f"{p.value} ({p.name})" for p in Priority)
            raise RequestError(
                f"filter.min_priority {msg.min_priority} is not a priority; expected one of {names}"
            ) from None
    for label, values in (
        ("rules", msg.rules), ("tags", msg.tags), ("sources", msg.sources), ("hosts", msg.hosts)
    ):
        for i, value in enumerate(values):
            if not value or value != value.strip():
                raise RequestError(
                    f"filter.{label}[{i}] {value!r} must be a non-empty name without spaces around it"
                )
    return AlertFilter(
        min_priority, frozenset(msg.rules), frozenset(msg.tags), frozenset(msg.sources), frozenset(msg.hosts)
    )


@dataclass(frozen=True, slots=True)
class StartSpec:
    """A validated start position: 'oldest', 'now' or after a cursor."""

    position: str
    cursor: Cursor | None = None

    def resolve(self, hub: Hub) -> StartResult:
        """The hub position; raises RequestError for a cursor this hub cannot have issued."""
        if self.position == "oldest":
            return hub.start_oldest()
        if self.position == "now":
            return hub.start_now()
        assert self.cursor is not None
        try:
            return hub.start_after(self.cursor)
        except ValueError as exc:
            raise RequestError(f"start.after: {exc}") from None


def parse_start(msg: types_pb2.Start) -> StartSpec:
    which = msg.WhichOneof("at")
    if which == "after":
        if not msg.after.epoch:
            raise RequestError("start.after.epoch is empty; a cursor is EPOCH:SEQUENCE as the server sent it")
        # Sequence 0 is "before the run's first alert": the `falconet-position` a stream reports when nothing
        # had been published yet, which a client cut before its first alert resumes after.
        return StartSpec("after", Cursor(msg.after.epoch, msg.after.sequence))
    if which == "position":
        if msg.position == types_pb2.Start.POSITION_OLDEST:
            return StartSpec("oldest")
        if msg.position == types_pb2.Start.POSITION_NOW:
            return StartSpec("now")
        if msg.position == types_pb2.Start.POSITION_UNSPECIFIED:
            raise RequestError(
                "start.position is POSITION_UNSPECIFIED; use POSITION_OLDEST, POSITION_NOW or a cursor"
            )
        raise RequestError(f"start.position {msg.position} is not a known position (1 = OLDEST, 2 = NOW)")
    raise RequestError("start is present but empty; set start.position or start.after")
