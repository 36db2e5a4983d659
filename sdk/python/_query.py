"""What a client asks for, built once and validated before any connection: filters, start position, resume.

Every request the SDK sends carries a Falconet start position. That makes our reads non-destructive: they
never advance the per-identity "Falco cursor" that a Falco client sharing our certificate relies on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from falconet.model.alert import Cursor, Priority
from falconet.sdk._models import StartPosition
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, types_pb2
from falconet.sdk.errors import ConfigError


def parse_priority(value: Priority | str | int | None) -> Priority | None:
    if value is None or isinstance(value, Priority):
        return value
    if isinstance(value, int):
        try:
            return Priority(value)
        except ValueError:
            raise ConfigError(
                f"unknown priority number {value}; expected 0 (Emergency) to 7 (Debug)"
            ) from None
    try:
        return Priority.parse(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_start(value: StartPosition) -> str | Cursor:
    """Returns "oldest", "now" or a Cursor; ConfigError for anything else."""
    if isinstance(value, Cursor):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"invalid start {value!r}: expected 'oldest', 'now' or a cursor EPOCH:SEQUENCE")
    text = value.strip().lower()
    if text in ("oldest", "now"):
        return text
    try:
        return Cursor.parse(value.strip())
    except ValueError as exc:
        raise ConfigError(f"invalid start {value!r}: expected 'oldest', 'now' or a cursor ({exc})") from None


def _names(kind: str, values: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)  # a lone string is one name, not its characters
    out = tuple(values)
    for v in out:
        if not isinstance(v, str) or not v:
            raise ConfigError(f"invalid {kind} {v!r}: expected a non-empty string")
    return out


@dataclass(frozen=True, slots=True)
class Query:
    """A validated read: which alerts, starting where."""

    min_priority: Priority | None = None
    rules: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    start: str | Cursor = "now"

    @classmethod
    def build(
        cls,
        *,
        min_priority: Priority | str | int | None,
        rules: Iterable[str] | str,
        tags: Iterable[str] | str,
        sources: Iterable[str] | str,
        start: StartPosition,
        hosts: Iterable[str] | str = (),
    ) -> Query:
        return cls(
            min_priority=parse_priority(min_priority),
            rules=_names("rule name", rules),
            tags=_names("tag", tags),
            sources=_names("source", sources),
            hosts=_names("host name", hosts),
            start=parse_start(start),
        )

    def filter_proto(self) -> types_pb2.Filter | None:
        if self.min_priority is None and not (self.rules or self.tags or self.sources or self.hosts):
            return None
        f = types_pb2.Filter(rules=self.rules, tags=self.tags, sources=self.sources, hosts=self.hosts)
        if self.min_priority is not None:
            f.min_priority = int(self.min_priority)  # type: ignore[assignment]
        return f

    def start_proto(self, after: Cursor | None = None) -> types_pb2.Start:
        """The start position: just after `after` when resuming, else the query's own start."""
        at = after if after is not None else self.start
        if isinstance(at, Cursor):
            return types_pb2.Start(after=types_pb2.Cursor(epoch=at.epoch, sequence=at.sequence))
        pos = types_pb2.Start.POSITION_OLDEST if at == "oldest" else types_pb2.Start.POSITION_NOW
        return types_pb2.Start(position=pos)

    def falco_request(self, after: Cursor | None = None) -> outputs_pb2.request:
        req = outputs_pb2.request(start=self.start_proto(after))
        f = self.filter_proto()
        if f is not None:
            req.filter.CopyFrom(f)
        return req

    def batched_request(self, after: Cursor | None = None) -> alerts_pb2.SubscribeRequest:
        req = alerts_pb2.SubscribeRequest(start=self.start_proto(after))
        f = self.filter_proto()
        if f is not None:
            req.filter.CopyFrom(f)
        return req
