"""Which open paths can the loaded rules ever match? A conservative static analysis for the sensor's filter.

The sensor can keep opens of absolute, lexically clean paths in the kernel unless they fall under a prefix
(Sensor.set_open_prefixes). That is only safe if no enabled rule could have matched the dropped event, and no
later event on the dropped fd could have matched a rule through the fd table. This module proves it from the
rules' parsed conditions, or gives up: every doubt answers "unbounded", and one unbounded rule turns the whole
filter off (None).

For one rule and one event type the condition is folded into a `Bound`: the path atoms (each with the open
kinds it can need) one of which fd.name of any matching event satisfies, or None when it cannot be bounded.
An atom is a prefix (`/etc/`: the path starts with it) or a suffix, written with a leading `*` (`*/shadow`:
the path ends with `/shadow`, so its base name is `shadow`; `*release_agent`: it ends with `release_agent`).
A condition that only holds for lexically unclean paths (`fd.nameraw contains '../'`) needs no atom at all:
the kernel never keeps such a path back. `and` intersects (either side's bound suffices), `or` unions (both
sides must be bounded), `not` and anything not understood are unbounded, and an evt.type test that is false
for the type makes its branch impossible. Open flags tested by name (`evt.arg.flags contains O_TRUNC`) narrow
the open kinds as evt.is_open_read/write do.

Only absolute, lexically clean paths are ever kept back (sensor/probe_openfilter.h): no `//`, `/./`, `../`, no
trailing `/`; for those fd.name and fd.nameraw are the path as given, which is what makes these atoms sound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .macro_walk import MacroWalk
from .parser import And, Check, FieldValue, ListLiteral, Literal, MacroRef, Node, Not, Or

# Event types that create an fd from a path.
OPEN_FAMILY = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})
# Those the kernel ever keeps back (openat2's flags are out of its reach: it always emits them).
FILTERED_OPENS = frozenset({"open", "openat", "creat"})
# Syscalls whose fd.* fields the sensor builds from the syscall's own socket data when the fd is unknown:
# a kept-back fd is a file, on which these fail with ENOTSOCK, so they cannot lose an alert to the filter.
SOCKET_TYPES = frozenset({"connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg",
                          "recvmsg"})  # fmt: skip

READ, WRITE, OTHER = 1, 2, 4  # the sensor's open kinds (sensor.OPEN_KINDS)
KIND_NAMES = ((READ, "read"), (WRITE, "write"), (OTHER, "other"))
# An open needs a SET of kinds (O_RDWR: read and write; O_WRONLY|O_TRUNC: write and other), and the kernel
# keeps it back when that set misses the atom's kinds. So what the analysis tracks is a "needset": which
# of the 7 possible kind sets (bit v for the set v, 1..7) a matching event can need. `and` intersects needsets
# (sound: the event's set is in both), `or` unions them; as_sensor_argument picks kinds that meet every set left.
ALL = 0xFE


def needs_with(kind: int) -> int:
    """The needset of events whose kind set includes `kind` (evt.is_open_read=true: READ)."""
    return sum(1 << v for v in range(1, 8) if v & kind)

# Fields whose value for an open event proves fd.name lies under a derived prefix (fd.directory of a file is
# fd.name up to its last '/', of a directory fd.name itself). For the paths the kernel keeps back (absolute and
# clean) fd.nameraw is fd.name.
_PATH_FIELDS = frozenset({"fd.name", "fd.directory", "fd.nameraw"})
_NAME_FIELDS = frozenset({"fd.name", "fd.nameraw"})
_PATH_OPS = frozenset({"=", "==", "in", "startswith", "glob", "pmatch"})
_WILDCARDS = "*?[\\"
_GLOB_SPECIALS = "*?[]\\"
# Substrings no path the kernel keeps back contains (it always emits a path with one of them).
_UNCLEAN = ("../", "/./", "//")
SUFFIX = "*"  # an atom starting with this is a suffix of the path, not a prefix
# Open flags that leave an open's kind "read"/"write" (the sensor's OPEN_QUIET_FLAGS); any other named flag
# makes it "other".
_QUIET_FLAGS = 0o4000 | 0o100000 | 0o200000 | 0o400000 | 0o400 | 0o1000000 | 0o2000000
# fd fields that do not come from the fd table. None: even fd.num is the table's (an fd unknown to user space
# has no Fd, so its fd.num is absent, not the argument).
_FD_SAFE: frozenset[str] = frozenset()
# fd types a kept-back fd never has when the fd table knows it (it is a file or a directory).
_FILE_TYPES = frozenset({"file", "directory"})
_FILE_TYPECHARS = frozenset({"f", "d"})
_SOCKET_ONLY_FIELDS = frozenset({"fd.l4proto", "fd.sockfamily"})

Paths = dict[str, int]


@dataclass(frozen=True, slots=True)
class Bound:
    """fd.name of any matching event satisfies one of the atoms `paths` (atom -> needset of the events it
    holds); None = unbounded. `kinds`: the needset of matching events (narrowed by evt.is_open_read/write and
    named flags); 0 = no event of this type matches."""

    paths: Paths | None
    kinds: int = ALL
    socket_only: bool = False  # the event's fd must be a socket (so it can never be a kept-back file fd)


UNBOUNDED = Bound(None)
IMPOSSIBLE = Bound({}, 0)


class Analysis(MacroWalk):
    """Folds conditions into Bounds, resolving macros by name (a cycle or unknown macro is unbounded)."""

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
            return self.through_macro(node.name, lambda ast: self.bound(ast, event_type), UNBOUNDED)
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
            # unknown: assume the worst
            return self.through_macro(node.name, lambda ast: self.fd_fields(ast, event_type), {"?"})
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
    elif _all_prefixes(a.paths) and _all_prefixes(b.paths):
        paths = _intersect(a.paths, b.paths)
    else:
        # Either side alone bounds the conjunction: keep the one the kernel checks more cheaply and tightly.
        paths = dict(a.paths if _weight(a.paths) <= _weight(b.paths) else b.paths)
    paths = {p: m & kinds for p, m in paths.items() if m & kinds}
    return Bound(paths, kinds, socket_only)


def _all_prefixes(paths: Paths) -> bool:
    return not any(p.startswith(SUFFIX) for p in paths)


def _weight(paths: Paths) -> int:
    """How loose a bound is: a prefix that covers every path is worst, then each suffix (a lookup each)."""
    loose = any(p in ("", "/") for p in paths)
    return 1000 * loose + sum(p.startswith(SUFFIX) for p in paths)


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


def literal_values(check: Check) -> list[str] | None:
    """The check's operand as strings when it is a literal or a list of literals; None for anything else (a
    field, a macro list), which no kernel bound can be derived from."""
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
    values = literal_values(check)
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
            return Bound(None, needs_with(READ if name == "evt.is_open_read" else WRITE))
        return UNBOUNDED
    if name == "evt.arg.flags" and op == "contains" and len(values) == 1 and event_type in _FLAG_TYPES:
        return Bound(None, flag_kinds(values[0]))
    if op in ("=", "==", "in"):
        if name == "fd.type" and not _FILE_TYPES.intersection(values):
            return Bound(None, socket_only=True)
        if name == "fd.typechar" and not _FILE_TYPECHARS.intersection(values):
            return Bound(None, socket_only=True)
        if name in _SOCKET_ONLY_FIELDS:
            return Bound(None, socket_only=True)
    return path_check(name, op, values)


def path_check(name: str, op: str, values: list[str]) -> Bound:
    """A test of the path itself: prefixes, suffixes, or "only unclean paths" (no atom)."""
    if name in _NAME_FIELDS and op in ("contains", "glob") and all(_only_unclean(v, op) for v in values):
        return Bound({})
    if name in _PATH_FIELDS and op in _PATH_OPS:
        paths: Paths = {}
        for v in values:
            atom = _atom(v, op)
            if atom.startswith(SUFFIX) or atom.startswith("/") or atom == "":
                paths[atom] = ALL  # (any other prefix cannot start an absolute path)
        return Bound(paths)
    if name in _NAME_FIELDS and op == "endswith" and all(values):
        return Bound({SUFFIX + v: ALL for v in values})
    if name == "fd.filename" and op in ("=", "==", "in") and all(values):
        # The base name: fd.name ends with '/' + it (a name holding '/' never matches: no atom).
        return Bound({SUFFIX + "/" + v: ALL for v in values if "/" not in v})
    if name == "fd.filename" and op == "endswith" and all(values):
        return Bound({SUFFIX + v: ALL for v in values})
    if name == "fd.filename" and op == "glob":
        tails = [_glob_tail(v) for v in values]
        if all(tails):
            return Bound({SUFFIX + t: ALL for t in tails})
    return UNBOUNDED


def _only_unclean(value: str, op: str) -> bool:
    """Does every path the test accepts hold `../`, `/./` or `//` (which the kernel never keeps back)?"""
    parts = [value] if op == "contains" else _glob_literals(value)
    return any(u in part for part in parts for u in _UNCLEAN)


def _glob_literals(pattern: str) -> list[str]:
    """The runs of a glob pattern that every match contains as they are (a bracket or escape ends a run)."""
    out, run, i = [], "", 0
    while i < len(pattern):
        c = pattern[i]
        if c in _GLOB_SPECIALS:
            out.append(run)
            run = ""
            if c == "[":
                close = pattern.find("]", i + 2)
                i = len(pattern) if close < 0 else close
            elif c == "\\":
                i += 1
        else:
            run += c
        i += 1
    out.append(run)
    return [r for r in out if r]


def _glob_tail(pattern: str) -> str:
    """The literal end every match of the glob pattern shares."""
    cut = max((pattern.rfind(w) for w in _GLOB_SPECIALS), default=-1)
    return pattern[cut + 1:]


_FLAG_TYPES = frozenset({"open", "openat", "creat"})


def flag_kinds(text: str) -> int:
    """The needset of opens whose rendered flags (O_RDONLY|O_CREAT|...) contain `text`: any that includes
    "other" (a flag beyond the quiet ones makes an open "other" whatever its access mode), and the kind set of
    each quiet rendering that contains it."""
    from .syscalls import render_open_flags

    kinds = needs_with(OTHER)
    quiet = [bit for bit in range(23) if _QUIET_FLAGS >> bit & 1]
    for combo in range(1 << len(quiet)):
        flags = sum(1 << bit for i, bit in enumerate(quiet) if combo >> i & 1)
        for acc in range(4):
            if text in render_open_flags(flags | acc):
                kinds |= 1 << {0: READ, 1: WRITE, 2: READ | WRITE, 3: OTHER}[acc]
    return kinds


def _atom(value: str, op: str) -> str:
    """The literal start every path the operator accepts for this value shares; for a glob that starts with
    a wildcard, its literal end as a suffix atom when it has one."""
    if op == "pmatch":
        # pmatch compares components and ignores empty ones; the clean absolute paths the filter drops
        # start with '/' + the components joined.
        value = "/" + "/".join(c for c in value.split("/") if c)
    if op in ("glob", "pmatch"):
        cut = min((i for i in (value.find(w) for w in _WILDCARDS) if i >= 0), default=len(value))
        if op == "glob" and value[:cut] in ("", "/") and cut < len(value):
            tail = _glob_tail(value)
            if tail:
                return SUFFIX + tail
        value = value[:cut]
    return value


def rule_prefixes(
    condition: Node, macros: Mapping[str, Node] | None, event_types: Iterable[str], cofinite: bool
) -> Paths | None:
    """The prefixes one rule needs kept (prefix -> kinds), or None if it cannot be bounded."""
    analysis = Analysis(macros)
    types = set(event_types)
    out: Paths = {}
    checks: list[str] = sorted(types & FILTERED_OPENS) if not cofinite else sorted(FILTERED_OPENS)
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
    out: dict[str, list[str]] = {}
    for p, needs in sorted(paths.items()):
        kinds = hitting_kinds(needs)
        if kinds:
            out[p] = [n for bit, n in KIND_NAMES if kinds & bit]
    return out


def hitting_kinds(needs: int) -> int:
    """Kinds that meet every kind set of the needset (so the kernel keeps each such open), few as can be:
    greedily the kind most sets hold, "other" first on a tie (quiet opens are the common ones)."""
    left = [v for v in range(1, 8) if needs >> v & 1]
    kinds = 0
    while left:
        best = max((OTHER, WRITE, READ), key=lambda k: sum(1 for v in left if v & k))
        kinds |= best
        left = [v for v in left if not v & best]
    return kinds
