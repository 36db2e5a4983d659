"""Which open paths can the loaded rules ever match? A conservative static analysis for the sensor's filter.

The sensor can keep opens of absolute, lexically clean paths in the kernel unless they fall under a prefix
(Sensor.set_open_prefixes). That is only safe if no enabled rule could have matched the dropped event, and no
later event on the dropped fd could have matched a rule through the fd table. This module proves it from the
rules' parsed conditions, or gives up: every doubt answers "unbounded", and one unbounded rule turns the whole
filter off (None).

For one rule and one event type the condition is folded into a `Bound`: the path prefixes (each with the open
kinds it can need) that fd.name of any matching event lies under, or None when it cannot be bounded.
`and` intersects (either side's bound suffices), `or` unions (both sides must be bounded), `not` and anything
not understood are unbounded, and an evt.type test that is false for the type makes its branch impossible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .parser import And, Check, FieldValue, ListLiteral, Literal, MacroRef, Node, Not, Or

# Event types that create an fd from a path (the sensor filters open, openat, openat2 and creat).
OPEN_FAMILY = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})
# Syscalls whose fd.* fields the sensor builds from the syscall's own socket data when the fd is unknown:
# a kept-back fd is a file, on which these fail with ENOTSOCK, so they cannot lose an alert to the filter.
SOCKET_TYPES = frozenset({"connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg",
                          "recvmsg"})  # fmt: skip

READ, WRITE, OTHER = 1, 2, 4  # the sensor's open kinds (sensor.OPEN_KINDS)
ALL = READ | WRITE | OTHER
KIND_NAMES = ((READ, "read"), (WRITE, "write"), (OTHER, "other"))

# Fields whose value for an open event proves fd.name lies under a derived prefix (fd.directory of a file is
# fd.name up to its last '/', of a directory fd.name itself).
_PATH_FIELDS = frozenset({"fd.name", "fd.directory"})
_PATH_OPS = frozenset({"=", "==", "in", "startswith", "glob", "pmatch"})
_WILDCARDS = "*?[\\"
# fd fields that do not come from the fd table (the syscall's own argument).
_FD_SAFE = frozenset({"fd.num"})
# fd types a kept-back fd never has when the fd table knows it (it is a file or a directory).
_FILE_TYPES = frozenset({"file", "directory"})
_FILE_TYPECHARS = frozenset({"f", "d"})
_SOCKET_ONLY_FIELDS = frozenset({"fd.l4proto", "fd.sockfamily"})

Paths = dict[str, int]


@dataclass(frozen=True, slots=True)
class Bound:
    """fd.name of any matching event lies under one of `paths` (prefix -> open kinds it can need); None =
    unbounded. `kinds`: the open kinds a matching event can have (narrowed by evt.is_open_read/write)."""

    paths: Paths | None
    kinds: int = ALL
    socket_only: bool = False  # the event's fd must be a socket (so it can never be a kept-back file fd)


UNBOUNDED = Bound(None)
IMPOSSIBLE = Bound({}, 0)


class Analysis:
    """Folds conditions into Bounds, resolving macros by name (a cycle or unknown macro is unbounded)."""

    def __init__(self, macros: Mapping[str, Node] | None) -> None:
        self.macros = macros or {}
        self._stack: list[str] = []

    def bound(self, node: Node, event_type: str | None) -> Bound:
        if isinstance(node, And):
            out = Bound(None)
            for child in node.children:
                out = _and(out, self.bound(child, event_type))
            return out
        if isinstance(node, Or):
            parts = [self.bound(child, event_type) for child in node.children]
            out = IMPOSSIBLE
            for part in parts:
                out = _or(out, part)
            return out
        if isinstance(node, Not):
            return UNBOUNDED
        if isinstance(node, MacroRef):
            ast = self.macros.get(node.name)
            if ast is None or node.name in self._stack:
                return UNBOUNDED
            self._stack.append(node.name)
            try:
                return self.bound(ast, event_type)
            finally:
                self._stack.pop()
        if isinstance(node, Check):
            return _check(node, event_type)
        return UNBOUNDED

    def fd_fields(self, node: Node, event_type: str | None) -> set[str]:
        """The fd-table fields the condition reads (negated or not) in the branches events of this type can
        take: a conjunction with a branch impossible for the type reads nothing."""
        if isinstance(node, Check):
            names = [node.field.name]
            if isinstance(node.value, FieldValue):
                names.append(node.value.field.name)
            return {n for n in names if _reads_fd_table(n)}
        if isinstance(node, Not):
            return self.fd_fields(node.child, event_type)
        if isinstance(node, MacroRef):
            ast = self.macros.get(node.name)
            if ast is None or node.name in self._stack:
                return {"?"}  # unknown: assume the worst
            self._stack.append(node.name)
            try:
                return self.fd_fields(ast, event_type)
            finally:
                self._stack.pop()
        if isinstance(node, And) and any(self.bound(c, event_type) == IMPOSSIBLE for c in node.children):
            return set()
        if isinstance(node, (And, Or)):
            out: set[str] = set()
            for child in node.children:
                out |= self.fd_fields(child, event_type)
            return out
        return {"?"}


def _reads_fd_table(name: str) -> bool:
    if name.startswith("fd."):
        return name not in _FD_SAFE
    # evt.args and evt.arg[N] render fd arguments with their names; so do fd-valued named arguments.
    return name in ("evt.args", "evt.arg") or (name.startswith("evt.arg.") and name.endswith("fd"))


def _and(a: Bound, b: Bound) -> Bound:
    kinds = a.kinds & b.kinds
    socket_only = a.socket_only or b.socket_only
    if a.paths is None and b.paths is None:
        return Bound(None, kinds, socket_only)
    if a.paths is None:
        paths = dict(b.paths or {})
    elif b.paths is None:
        paths = dict(a.paths)
    else:
        paths = _intersect(a.paths, b.paths)
    paths = {p: m & kinds for p, m in paths.items() if m & kinds}
    return Bound(paths, kinds, socket_only)


def _or(a: Bound, b: Bound) -> Bound:
    kinds = a.kinds | b.kinds
    # An impossible branch (kinds 0) adds nothing, so it cannot weaken socket_only either.
    socket_only = (a.socket_only or a.kinds == 0) and (b.socket_only or b.kinds == 0)
    if a.paths is None or b.paths is None:
        return Bound(None, kinds, socket_only)
    paths = dict(a.paths)
    for p, m in b.paths.items():
        paths[p] = paths.get(p, 0) | m
    return Bound(paths, kinds, socket_only)


def _intersect(a: Paths, b: Paths) -> Paths:
    """Paths under some prefix of a AND under some prefix of b: the longer of each nested pair."""
    out: Paths = {}
    for p, pm in a.items():
        for q, qm in b.items():
            if p.startswith(q):
                out[p] = out.get(p, 0) | (pm & qm)
            elif q.startswith(p):
                out[q] = out.get(q, 0) | (pm & qm)
    return out


def _values(check: Check) -> list[str] | None:
    value = check.value
    if isinstance(value, Literal):
        return [value.text]
    if isinstance(value, ListLiteral):
        return [item.text for item in value.items]
    return None


def _check(check: Check, event_type: str | None) -> Bound:
    ref = check.field
    if ref.transformers or ref.arg is not None:
        return UNBOUNDED
    values = _values(check)
    if values is None:
        return UNBOUNDED
    name, op = ref.name, check.op
    if name == "evt.type":
        if event_type is None:
            return UNBOUNDED
        if op in ("=", "==", "in"):
            return UNBOUNDED if event_type in values else IMPOSSIBLE
        if op == "!=":
            return IMPOSSIBLE if event_type in values else UNBOUNDED
        return UNBOUNDED
    if name in ("evt.is_open_read", "evt.is_open_write") and op in ("=", "==") and len(values) == 1:
        if values[0].lower() == "true":
            return Bound(None, READ if name == "evt.is_open_read" else WRITE)
        return UNBOUNDED
    if op in ("=", "==", "in"):
        if name == "fd.type" and not _FILE_TYPES.intersection(values):
            return Bound(None, socket_only=True)
        if name == "fd.typechar" and not _FILE_TYPECHARS.intersection(values):
            return Bound(None, socket_only=True)
        if name in _SOCKET_ONLY_FIELDS:
            return Bound(None, socket_only=True)
    if name in _PATH_FIELDS and op in _PATH_OPS:
        return Bound({_prefix(v, op): ALL for v in values})
    return UNBOUNDED


def _prefix(value: str, op: str) -> str:
    """The literal start every path the operator accepts for this value shares."""
    if op == "pmatch":
        # pmatch compares components and ignores empty ones; the clean absolute paths the filter drops
        # start with '/' + the components joined.
        value = "/" + "/".join(c for c in value.split("/") if c)
    if op in ("glob", "pmatch"):
        cut = min((i for i in (value.find(w) for w in _WILDCARDS) if i >= 0), default=len(value))
        value = value[:cut]
    return value


def rule_prefixes(
    condition: Node, macros: Mapping[str, Node] | None, event_types: Iterable[str], cofinite: bool
) -> Paths | None:
    """The prefixes one rule needs kept (prefix -> kinds), or None if it cannot be bounded."""
    analysis = Analysis(macros)
    types = set(event_types)
    out: Paths = {}
    checks: list[str] = sorted(types & OPEN_FAMILY) if not cofinite else sorted(OPEN_FAMILY)
    for etype in checks:
        b = analysis.bound(condition, etype)
        if b.paths is None:
            return None
        _merge(out, {p: m & b.kinds for p, m in b.paths.items()})
    others: Sequence[str | None] = [None] if cofinite else sorted(types - OPEN_FAMILY)
    for other in others:
        if other in SOCKET_TYPES or not analysis.fd_fields(condition, other):
            continue
        # fds outlive their open: a later event on a kept-back fd finds it unknown to the fd table.
        b = analysis.bound(condition, other)
        if b.socket_only:
            continue
        if b.paths is None:
            return None
        _merge(out, {p: ALL for p in b.paths})
    return out


def _merge(out: Paths, paths: Paths) -> None:
    for p, m in paths.items():
        out[p] = out.get(p, 0) | m


def as_sensor_argument(paths: Paths) -> dict[str, list[str]]:
    """prefix -> kind names, as Sensor.set_open_prefixes takes them."""
    return {p: [n for bit, n in KIND_NAMES if m & bit] for p, m in sorted(paths.items()) if m}
