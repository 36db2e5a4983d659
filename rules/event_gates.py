"""Which events of a syscall can the loaded rules ever match? The event gates the kernel checks for syscalls
that have no state role (model/prefilter.py says what a gate is; the sensor decides which syscalls it applies
to and checks it in the kernel).

For one rule and one event type the condition is folded into an `EventGate`: a conjunction of bounds on the
result class, user.uid, proc.name, numeric arguments (evt.rawarg.NAME) and string arguments (evt.arg.NAME and
evt.rawarg.NAME of a path or string the kernel reads: prefix and suffix atoms) and bit tests on numeric
arguments rendered by bit name (evt.arg.NAME contains S_ISUID: a mask the value must share a bit with) that
every event matching the condition satisfies. The fold is sound,
never exact: `and` intersects per kind, `or` unions per kind (so `a or b` keeps every value either side
keeps), `not` is pushed down to the checks (De Morgan) where a check's complement is exact, and anything not
understood (another field, a transformer, a comparison between fields, a macro that cannot be resolved)
bounds nothing. An evt.type test that is false for the type makes its branch impossible.

Exactness is what makes `not` sound: `not proc.name in (sudo, su)` may only exclude sudo and su because
`proc.name in (sudo, su)` holds for exactly the events whose comm is one of them. Only checks that hold for
exactly the values their bound names are marked exact (`evt.rawres = 5` is bounded by "positive" but not
exactly, so `not evt.rawres = 5` bounds nothing).

A string argument is bounded only where its value is the string the kernel read: a path argument that is
absolute and lexically clean (user space resolves relative paths and folds `..`, which the kernel cannot), a
plain string always; the kernel judges only clean strings (model/prefilter.py's path_clean), so the atoms need
hold only for those. The tests of a path are open_prefixes.py's for fd.name (whose values the open filter
bounds on the same condition), plus one: `=`/`in` never holds for a clean value with an unclean operand.

The values are those user space sees: the Event's res is the kernel's result, user.uid the caller's real uid
and proc.name its comm (decoded from at most 15 bytes) at the syscall's exit, read from the same place the
kernel's check reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from falconet.model.prefilter import (
    EVERYTHING,
    NOTHING,
    RES_ANY,
    RES_NEG,
    RES_POS,
    RES_ZERO,
    EventGate,
    ValueSet,
    path_clean,
)

from falconet.model.syscalls import EVENT_PARAMS

from . import open_prefixes
from .macro_walk import MacroWalk
from .parser import And, Check, MacroRef, Node, Not, Or
from .syscalls import (
    AT_FLAGS,
    MEMFD_FLAGS,
    MODE_BITS,
    MOUNT_FLAGS,
    RENAME_FLAGS,
    RESOLVE_FLAGS,
    UMOUNT_FLAGS,
    Table,
    is_numeric_arg,
    kind_of,
)

COMM_MAX = 15
"""The kernel's comm holds at most 15 bytes (TASK_COMM_LEN - 1): a longer proc.name never matches."""

# (gate of the events the check holds for, gate of those it does not hold for); EVERYTHING when not exact.
Pair = tuple[EventGate, EventGate]
_UNKNOWN: Pair = (EVERYTHING, EVERYTHING)
_NEVER: Pair = (NOTHING, EVERYTHING)
_ALWAYS: Pair = (EVERYTHING, NOTHING)
_EQ_OPS = ("=", "==", "in")
_BIG = 1 << 70  # beyond any syscall result


class GateAnalysis(MacroWalk):
    """Folds conditions into EventGates for one event type, resolving macros by name (a cycle or an unknown
    macro bounds nothing)."""

    def __init__(self, macros: Mapping[str, Node] | None, event_type: str) -> None:
        super().__init__(macros)
        self.event_type = event_type

    def gate(self, node: Node, negated: bool = False) -> EventGate:
        """The gate of the events for which `node` holds (or, negated, does not hold)."""
        conj = isinstance(node, And) != negated  # not (a or b) = not a and not b
        if isinstance(node, (And, Or)):
            parts = [self.gate(child, negated) for child in node.children]
            out = EVERYTHING if conj else NOTHING
            for part in parts:
                out = out.intersection(part) if conj else out.union(part)
            return out
        if isinstance(node, Not):
            return self.gate(node.child, not negated)
        if isinstance(node, MacroRef):
            return self.through_macro(node.name, lambda ast: self.gate(ast, negated), EVERYTHING)
        if isinstance(node, Check):
            holds, fails = _check(node, self.event_type)
            return fails if negated else holds
        return EVERYTHING


def rule_gate(condition: Node, macros: Mapping[str, Node] | None, event_type: str) -> EventGate:
    """The gate of one rule's condition for one event type."""
    return _normal(GateAnalysis(macros, event_type).gate(condition))


def union(gates: Iterable[EventGate]) -> EventGate:
    """The gate of a syscall whose candidate rules have these gates (NOTHING for none)."""
    out = NOTHING
    for g in gates:
        out = out.union(_normal(g))
    return _normal(out)


def _normal(g: EventGate) -> EventGate:
    """One empty kind empties the conjunction: say so in every kind, so unions stay tight."""
    return NOTHING if g.keeps_none else g


def _check(check: Check, event_type: str) -> Pair:
    ref = check.field
    if ref.transformers or ref.arg is not None:
        return _UNKNOWN
    values = open_prefixes.literal_values(check)
    if values is None:
        return _UNKNOWN
    name, op = ref.name, check.op
    if name == "evt.type":
        if op in _EQ_OPS:
            return _ALWAYS if event_type in values else _NEVER
        if op == "!=" and len(values) == 1:
            return _NEVER if event_type in values else _ALWAYS
        return _UNKNOWN
    if name == "evt.rawres":
        return _result_check(op, values)
    if name == "fd.num" and event_type in _OPEN_FD_TYPES:
        return _open_fd_num_check(op, values)
    if name == "evt.failed" and op in ("=", "==") and len(values) == 1:
        t = values[0].strip().lower()
        if t in ("true", "1", "false", "0"):
            fails = t in ("true", "1")
            return _result_pair(RES_NEG if fails else RES_ZERO | RES_POS, exact=True)
        return _UNKNOWN
    if name == "evt.res" and op in ("=", "==", "!=") and len(values) == 1:
        # "SUCCESS" exactly for a non-negative result, an errno name (or number) otherwise (render_res).
        ok = values[0] == "SUCCESS"
        mask, exact = (RES_ZERO | RES_POS, True) if ok else (RES_NEG, False)
        if op == "!=":
            return _result_pair(RES_NEG, exact=True) if ok else _UNKNOWN
        return _result_pair(mask, exact)
    if name == "user.uid":
        return _uid_check(op, values)
    if name == "proc.name":
        return _comm_check(op, values)
    if name.startswith(("evt.arg.", "evt.rawarg.")) and _absent(event_type, name.split(".", 2)[2]):
        return _NEVER  # the event has no such parameter: every comparison with a missing value is false
    if name.startswith("evt.rawarg.") and is_numeric_arg(name[len("evt.rawarg."):]):
        return _arg_check(name[len("evt.rawarg."):], op, values)
    if name.startswith(("evt.arg.", "evt.rawarg.")):
        param = name.split(".", 2)[2]
        if param in string_params(event_type):
            return _path_check(param, op, values)
        if name.startswith("evt.arg.") and op == "contains" and len(values) == 1:
            return _bits_check(event_type, param, values[0])
    return _UNKNOWN


# Parameter kinds rendered as set bits by name joined with '|', the leftover bits as a decimal number, and no
# bit as "0" (rules/syscalls.py render_bits).
_BIT_TABLES: dict[str, Table] = {
    "mode": MODE_BITS, "mount_flags": MOUNT_FLAGS, "umount_flags": UMOUNT_FLAGS, "at_flags": AT_FLAGS,
    "rename_flags": RENAME_FLAGS, "memfd_flags": MEMFD_FLAGS, "resolve_flags": RESOLVE_FLAGS,
}  # fmt: skip


def _bits_check(event_type: str, param: str, text: str) -> Pair:
    """`evt.arg.NAME contains TEXT` of a parameter rendered by bit names: with TEXT holding no '|' and some
    character no number has, it can only be found inside a name, and a name is rendered only when all its bits
    are set, so the value shares a bit with the names holding TEXT (none: the check never holds)."""
    table = _BIT_TABLES.get(kind_of(event_type, param)) if event_type in EVENT_PARAMS else None
    if table is None or not text or "|" in text or all(c in "0123456789-" for c in text):
        return _UNKNOWN
    if all(p.name != param for p in EVENT_PARAMS[event_type]):
        return _UNKNOWN
    mask = 0
    for bit_name, bit in table:
        if text in bit_name:
            mask |= bit
    if not mask:
        return _NEVER
    return EventGate(bits=((param, mask),)), EVERYTHING


def string_params(event_type: str) -> frozenset[str]:
    """The event type's parameters whose value is a string the kernel reads (source s0/s1: as passed; p0/p1:
    a path, resolved by user space), by name."""
    found = _STRING_PARAMS.get(event_type)
    if found is None:
        found = _STRING_PARAMS[event_type] = frozenset(
            p.name for p in EVENT_PARAMS.get(event_type, ()) if p.source[:2] in ("s0", "s1", "p0", "p1")
            and p.kind in ("str", "path") and not is_numeric_arg(p.name))
    return found


_STRING_PARAMS: dict[str, frozenset[str]] = {}
# Event types whose parameters the engine derives beyond the table (rules/syscalls.py raw_arg).
_DERIVED_TYPES = frozenset({"execve", "execveat", "clone", "clone3", "fork", "vfork"})


def _absent(event_type: str, param: str) -> bool:
    """Is evt.arg.PARAM / evt.rawarg.PARAM missing from every event of the type (not one of its parameters)?"""
    params = EVENT_PARAMS.get(event_type)
    if params is None or event_type in _DERIVED_TYPES or param.isdigit():
        return False
    return all(p.name != param for p in params)


def _path_check(param: str, op: str, values: list[str]) -> Pair:
    """A test of a string argument, for the clean absolute values the kernel judges (where the value is the
    string as read): the atoms one of which each such value the test accepts satisfies; never exact."""
    if op in _EQ_OPS:
        values = [v for v in values if path_clean(v.encode("utf-8", "surrogateescape"))]
    bound = open_prefixes.path_check("fd.name", op, values)
    if bound.paths is None:
        return _UNKNOWN
    return EventGate(paths=((param, frozenset(bound.paths)),)), EVERYTHING


def _result_pair(mask: int, exact: bool) -> Pair:
    return EventGate(result=mask), EventGate(result=RES_ANY & ~mask) if exact else EVERYTHING


# The open family's event carries the fd the open made: fd.num is the result when it is a new fd and -1 for a
# failed open (sensor/enricher.py's _open), or missing when the path was unreadable.
_OPEN_FD_TYPES = frozenset({"open", "openat", "openat2", "creat"})


def _open_fd_num_check(op: str, values: list[str]) -> Pair:
    """fd.num of an open compared with numbers, bounding the result class: a failed open's fd.num is -1 (or
    missing, which no comparison but `!=` can be true of), so the negative class is kept only when the check
    holds for -1 (or is `!=`). Not exact (the non-negative classes are kept whole), so `not` bounds nothing."""
    nums = [_number(v) for v in values]
    if not nums or any(n is None for n in nums):
        return _UNKNOWN
    ints = [n for n in nums if n is not None]
    if op in _EQ_OPS:
        neg = -1 in ints
    elif op in ("<", "<=", ">", ">=") and len(ints) == 1:
        n = ints[0]
        neg = {"<": -1 < n, "<=": -1 <= n, ">": -1 > n, ">=": -1 >= n}[op]
    elif op == "!=":
        neg = True
    else:
        return _UNKNOWN
    return EventGate(result=(RES_NEG if neg else 0) | RES_ZERO | RES_POS), EVERYTHING


def _number(text: str) -> int | None:
    """An integer literal as the engine converts it (rules/literals.py), None for anything else (a float,
    which an int may equal, makes the check unknown)."""
    t = text.strip()
    try:
        if t.lower().startswith(("0x", "-0x", "+0x")):
            return int(t, 16)
        return int(t)
    except ValueError:
        return None


_CLASSES = ((RES_NEG, -_BIG, -1), (RES_ZERO, 0, 0), (RES_POS, 1, _BIG))


def _result_check(op: str, values: list[str]) -> Pair:
    """A comparison of evt.rawres with numbers: the classes some value of which it accepts; exact when it
    accepts every value of each class it touches."""
    nums = [_number(v) for v in values]
    if any(n is None for n in nums) or not nums:
        return _UNKNOWN
    ints = [n for n in nums if n is not None]
    if op in _EQ_OPS:
        spans = [(n, n) for n in ints]
    elif op in ("<", "<=", ">", ">=") and len(ints) == 1:
        n = ints[0]
        spans = [{"<": (-_BIG, n - 1), "<=": (-_BIG, n), ">": (n + 1, _BIG), ">=": (n, _BIG)}[op]]
    elif op == "!=" and len(ints) == 1:
        holds, fails = _result_check("=", values)
        return fails, holds
    else:
        return _UNKNOWN
    mask, exact = 0, True
    for bit, lo, hi in _CLASSES:
        covered = [(max(lo, a), min(hi, b)) for a, b in spans if max(lo, a) <= min(hi, b)]
        if covered:
            mask |= bit
            whole = any(a == lo and b == hi for a, b in covered)
            exact = exact and whole
    return _result_pair(mask, exact)


def _uid_check(op: str, values: list[str]) -> Pair:
    nums = [_number(v) for v in values]
    if not nums or any(n is None for n in nums):
        return _UNKNOWN
    items = frozenset(n for n in nums if n is not None)
    if op in _EQ_OPS:
        return EventGate(uid=ValueSet(False, items)), EventGate(uid=ValueSet(True, items))
    if op == "!=" and len(items) == 1:
        return EventGate(uid=ValueSet(True, items)), EventGate(uid=ValueSet(False, items))
    return _UNKNOWN


def _arg_check(param: str, op: str, values: list[str]) -> Pair:
    """evt.rawarg.NAME of a numeric parameter compared with integers. The sensor checks it only where the
    parameter is a register's value (so never missing); elsewhere it ignores the bound."""
    nums = [_number(v) for v in values]
    if not nums or any(n is None for n in nums):
        return _UNKNOWN
    items = frozenset(n for n in nums if n is not None)
    finite, cofinite = ((param, ValueSet(False, items)),), ((param, ValueSet(True, items)),)
    if op in _EQ_OPS:
        return EventGate(args=finite), EventGate(args=cofinite)
    if op == "!=" and len(items) == 1:
        return EventGate(args=cofinite), EventGate(args=finite)
    return _UNKNOWN


def _comm_check(op: str, values: list[str]) -> Pair:
    """proc.name is the comm: at most COMM_MAX bytes, no NUL. A name that cannot be one never matches; a
    name holding U+FFFD may be the decoding of several byte strings, so it makes the check unknown. An empty
    comm is a missing proc.name, whose comparisons the engine may answer either way: every bound keeps it."""
    if any("\ufffd" in v for v in values):
        return _UNKNOWN
    items = frozenset(v for v in values if "\0" not in v and len(v.encode("utf-8")) <= COMM_MAX) | {""}
    if op in _EQ_OPS:
        return EventGate(comm=ValueSet(False, items)), EventGate(comm=ValueSet(True, items - {""}))
    if op == "!=" and len(values) == 1:
        return EventGate(comm=ValueSet(True, items - {""})), EventGate(comm=ValueSet(False, items))
    return _UNKNOWN
