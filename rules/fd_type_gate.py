"""Which fd types can some rule match an event of a given type on: user space need not build the Event of a
syscall whose fd no rule's fd.type test accepts.

A build dup2()s pipes and files onto its standard streams thousands of times; the one default rule on the dup
family wants a network socket there (`fd.type in (ipv4, ipv6)`). Like rules/open_gate.py, each rule's
condition for an event type is pruned, here to its `fd.type` and `fd.typechar` tests by `=`/`in` with the
`and`/`or` structure kept (every other test, every negation and anything not understood read "may hold"), so
the pruned condition is an over-approximation of the rule: when it is false for the event's fd type, no rule
can match that event. The enricher asks it only for an event whose fd it knows (the same Fd object the Event
would carry, whose type is what fd.type reads), after the fd table has taken the syscall's effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .macro_walk import MacroWalk
from .open_prefixes import _check, literal_values
from .parser import And, Check, MacroRef, Node, Or
from .syscalls import FD_TYPECHARS

NO_FD = ""
"""The fd type to ask with for an event that carries no fd, or an fd of no known type: its fd.type is missing, which
no `=`/`in` test accepts, so only rules that may hold without an fd.type (or with a literal "") keep it."""

RuleSpec = tuple[Node | None, Mapping[str, Node] | None, Callable[[str], bool]]
"""A rule as the gates read it (here and rules/open_gate.py): its condition AST (None when there is none to
read), its macros, and "is this event type a candidate"."""

# Never judged here: the open family (rules/open_gate.py judges its paths) and types whose event may carry no
# fd or another one than the record's (exec).
_SKIP = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at", "execve", "execveat"})


class _Prune(MacroWalk):
    """May the condition hold for an event of this type whose fd has this type (only fd.type, fd.typechar and
    evt.type tests are read)?"""

    def holds(self, node: Node, event_type: str, fd_type: str) -> bool:
        if isinstance(node, And):
            return all(self.holds(c, event_type, fd_type) for c in node.children)
        if isinstance(node, Or):
            return any(self.holds(c, event_type, fd_type) for c in node.children)
        if isinstance(node, MacroRef):
            return self.through_macro(node.name, lambda ast: self.holds(ast, event_type, fd_type), True)
        if isinstance(node, Check):
            ref = node.field
            if ref.name == "evt.type":
                return _check(node, event_type).kinds != 0  # a type test false for this type: impossible
            if ref.name in ("fd.type", "fd.typechar") and not ref.transformers and ref.arg is None and (
                    node.op in ("=", "==", "in")):
                values = literal_values(node)
                if values is not None:
                    # fd.typechar of an fd of no known type is "o", of no fd missing: "o" keeps both (NO_FD)
                    value = fd_type if ref.name == "fd.type" else FD_TYPECHARS.get(fd_type, "o")
                    return value in values
        return True  # Not, and every other test: may hold


class FdTypeGate:
    """`may_match(event type, fd type)`: False only when no enabled rule can match an event of this type whose
    fd has this type. Decided per pair once, then memoised (fd types are few)."""

    def __init__(self, rules: Iterable[RuleSpec]) -> None:
        self._rules = list(rules)
        self._memo: dict[tuple[str, str], bool] = {}

    def may_match(self, event_type: str, fd_type: str) -> bool:
        key = (event_type, fd_type)
        got = self._memo.get(key)
        if got is None:
            got = event_type in _SKIP or any(
                ast is None or _Prune(macros).holds(ast, event_type, fd_type)
                for ast, macros, candidate in self._rules if candidate(event_type))
            if len(self._memo) >= 4096:
                self._memo.clear()
            self._memo[key] = got
        return got
