"""What the rules let the kernel keep back of a syscall that has no state role: the event gates.

rules/event_gates.py derives one `EventGate` per event type from the loaded rules (a sound over-approximation
of what any of them can match); the sensor writes it into the kernel (sensor/eventgate.py,
sensor/probe_eventgate.h), which drops an event that fails it before building its record. Pure data shared by
the two stages: the rules never import the sensor, and the sensor never parses a rule.

A gate is a conjunction of per-kind bounds, each checked on a value the kernel holds exactly as user space
will see it: the syscall's result class (evt.rawres, evt.res, evt.failed), the caller's real uid (user.uid),
its comm (proc.name) and numeric arguments by name (evt.rawarg.NAME: the sensor checks those it reads straight
from a register). A gate derived from several rules is the per-kind union of their gates, which is
sound: an event one rule matches satisfies every kind of that rule's gate, so every kind of the union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T", int, str)

RES_NEG = 1
"""Result classes (EventGate.result bits): a negative result (an error)..."""
RES_ZERO = 2
"""... zero ..."""
RES_POS = 4
"""... a positive result."""
RES_ANY = RES_NEG | RES_ZERO | RES_POS


@dataclass(frozen=True, slots=True)
class ValueSet(Generic[T]):
    """A finite set of values (`cofinite` false) or the complement of one (true: every value but `items`)."""

    cofinite: bool
    items: frozenset[T]

    def __contains__(self, value: T) -> bool:
        return (value in self.items) != self.cofinite

    @property
    def is_any(self) -> bool:
        return self.cofinite and not self.items

    @property
    def is_empty(self) -> bool:
        return not self.cofinite and not self.items

    def union(self, other: ValueSet[T]) -> ValueSet[T]:
        if not self.cofinite and not other.cofinite:
            return ValueSet(False, self.items | other.items)
        if self.cofinite and other.cofinite:
            return ValueSet(True, self.items & other.items)
        finite, co = (self, other) if not self.cofinite else (other, self)
        return ValueSet(True, co.items - finite.items)

    def intersection(self, other: ValueSet[T]) -> ValueSet[T]:
        return self.complement().union(other.complement()).complement()

    def complement(self) -> ValueSet[T]:
        return ValueSet(not self.cofinite, self.items)


def any_value() -> ValueSet[T]:
    return ValueSet(True, frozenset())


def no_value() -> ValueSet[T]:
    return ValueSet(False, frozenset())


@dataclass(frozen=True, slots=True)
class EventGate:
    """An event of the type may match some rule only if its result class is in `result` (RES_* bits), its
    user.uid in `uid` and its proc.name in `comm`. The widest gate (every kind any) keeps everything."""

    result: int = RES_ANY
    uid: ValueSet[int] = ValueSet(True, frozenset())
    comm: ValueSet[str] = ValueSet(True, frozenset())
    args: tuple[tuple[str, ValueSet[int]], ...] = ()
    """(parameter name, the values evt.rawarg.NAME may have), sorted by name; a name not listed: any value."""

    @property
    def keeps_all(self) -> bool:
        return self.result == RES_ANY and self.uid.is_any and self.comm.is_any and not self.args

    @property
    def keeps_none(self) -> bool:
        return not self.result or self.uid.is_empty or self.comm.is_empty or any(v.is_empty for _, v in self.args)

    def union(self, other: EventGate) -> EventGate:
        if self.keeps_none:  # (a kind's bottom is not every kind's: an empty side must add nothing)
            return other
        if other.keeps_none:
            return self
        mine, theirs = dict(self.args), dict(other.args)
        args = {n: v.union(theirs[n]) for n, v in mine.items() if n in theirs}
        return EventGate(self.result | other.result, self.uid.union(other.uid), self.comm.union(other.comm),
                         _args(args))

    def intersection(self, other: EventGate) -> EventGate:
        args = dict(self.args)
        for n, v in other.args:
            args[n] = args[n].intersection(v) if n in args else v
        return EventGate(self.result & other.result, self.uid.intersection(other.uid),
                         self.comm.intersection(other.comm), _args(args))


def _args(args: dict[str, ValueSet[int]]) -> tuple[tuple[str, ValueSet[int]], ...]:
    return tuple(sorted((n, v) for n, v in args.items() if not v.is_any))


NOTHING = EventGate(0, ValueSet(False, frozenset()), ValueSet(False, frozenset()))
"""The gate no event passes (no rule of the type can match)."""
EVERYTHING = EventGate()


def result_class(res: int) -> int:
    """The RES_* bit of a syscall result."""
    return RES_NEG if res < 0 else RES_ZERO if res == 0 else RES_POS
