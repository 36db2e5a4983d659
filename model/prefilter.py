"""What the rules let the kernel keep back of a syscall that has no state role: the event gates.

rules/event_gates.py derives one `EventGate` per event type from the loaded rules (a sound over-approximation
of what any of them can match); the sensor writes it into the kernel (sensor/eventgate.py,
sensor/probe_eventgate.h), which drops an event that fails it before building its record. Pure data shared by
the two stages: the rules never import the sensor, and the sensor never parses a rule.

A gate is a conjunction of per-kind bounds, each checked on a value the kernel holds exactly as user space
will see it: the syscall's result class (evt.rawres, evt.res, evt.failed), the caller's real uid (user.uid),
its comm (proc.name), numeric arguments by name (evt.rawarg.NAME: the sensor checks those it reads straight
from a register) and string arguments by name (evt.arg.NAME of a path or string the kernel reads: prefix and
suffix atoms, as the open filter has them, binding only absolute, lexically clean values) and bit sets of
numeric arguments rendered by bit name (`evt.arg.mode contains S_ISUID`: the register must have one of the
bits whose names hold the text). A gate derived from
several rules is the per-kind union of their gates, which is sound: an event one rule matches satisfies every
kind of that rule's gate, so every kind of the union.

A path bound says less than the other kinds: it bounds the argument only when the string the kernel read is
absolute and lexically clean (model: `path_clean`); any other string (relative, with `..`, `.` or `//`, long,
unreadable) passes whatever the atoms say, because user space may resolve it against a directory the kernel
does not know. So an empty atom set means "no clean value", never "no event".
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
    paths: tuple[tuple[str, frozenset[str]], ...] = ()
    """(parameter name, atoms) sorted by name: a clean absolute value of string parameter NAME starts with one of
    the prefix atoms or ends with one of the suffix atoms (written with a leading `*`); not listed: any value."""
    bits: tuple[tuple[str, int], ...] = ()
    """(parameter name, mask) sorted by name: the value of numeric parameter NAME has at least one bit of the
    mask (never 0); not listed: any value."""

    @property
    def keeps_all(self) -> bool:
        return (self.result == RES_ANY and self.uid.is_any and self.comm.is_any and not self.args
                and not self.paths and not self.bits)

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
        mp, tp = dict(self.paths), dict(other.paths)
        paths = {n: a | tp[n] for n, a in mp.items() if n in tp}
        mb, tb = dict(self.bits), dict(other.bits)
        bits = tuple(sorted((n, m | tb[n]) for n, m in mb.items() if n in tb))
        return EventGate(self.result | other.result, self.uid.union(other.uid), self.comm.union(other.comm),
                         _args(args), _paths(paths), bits)

    def intersection(self, other: EventGate) -> EventGate:
        args = dict(self.args)
        for n, v in other.args:
            args[n] = args[n].intersection(v) if n in args else v
        paths = dict(self.paths)
        for n, a in other.paths:
            # Either side's atoms bound the conjunction: keep the tighter (fewer atoms, then the smaller set).
            paths[n] = min(paths[n], a, key=lambda x: (len(x), sorted(x))) if n in paths else a
        bits = dict(self.bits)
        for n, m in other.bits:
            # Either mask bounds the conjunction: keep the one with fewer bits.
            bits[n] = min(bits[n], m, key=lambda x: (x.bit_count(), x)) if n in bits else m
        return EventGate(self.result & other.result, self.uid.intersection(other.uid),
                         self.comm.intersection(other.comm), _args(args), _paths(paths), tuple(sorted(bits.items())))


def _args(args: dict[str, ValueSet[int]]) -> tuple[tuple[str, ValueSet[int]], ...]:
    return tuple(sorted((n, v) for n, v in args.items() if not v.is_any))


def _paths(paths: dict[str, frozenset[str]]) -> tuple[tuple[str, frozenset[str]], ...]:
    """Sorted, without bounds that hold every clean path (a prefix "" or "/", a suffix "")."""
    return tuple(sorted((n, a) for n, a in paths.items() if not a & PATH_ANY_ATOMS))


PATH_ANY_ATOMS = frozenset({"", "/", "*"})
"""Atoms every absolute path satisfies."""
PREFIX_MAX = 64
"""The kernel compares prefix atoms on their first PREFIX_MAX bytes..."""
SUFFIX_MAX = 32
"""... and suffix atoms on their last SUFFIX_MAX bytes (a cut atom holds more paths: it only keeps more)."""
PATH_SCAN_MAX = 256
"""Strings of PATH_SCAN_MAX - 3 bytes or more (with their NUL) are never judged clean."""


def path_clean(path: bytes) -> bool:
    """The kernel's path_clean (sensor/probe_openfilter.h): absolute, no `//`, `/./`, `../`, not ending in `/`,
    `/.` or `/..`, short enough to scan. Only for such a string is the value user space makes of a path
    argument the string itself (resolving it changes nothing), which is what makes path atoms sound."""
    if len(path) < 2 or len(path) + 1 > PATH_SCAN_MAX - 3 or not path.startswith(b"/") or path.endswith(b"/"):
        return False
    return not (b"//" in path or b"/./" in path or b"../" in path or path.endswith(b"/.") or path.endswith(b"/.."))


NOTHING = EventGate(0, ValueSet(False, frozenset()), ValueSet(False, frozenset()))
"""The gate no event passes (no rule of the type can match)."""
EVERYTHING = EventGate()


def result_class(res: int) -> int:
    """The RES_* bit of a syscall result."""
    return RES_NEG if res < 0 else RES_ZERO if res == 0 else RES_POS
