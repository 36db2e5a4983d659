"""Event-type inference: which event types a condition can match, so the engine runs only candidate rules.

Computed on the AST with macros expanded: negation is pushed down (De Morgan), `evt.type` checks give their
sets and every other check gives "all". A TypeSet is finite (these names) or cofinite (all but these).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import CompileError
from .literals import evt_dir_value
from .parser import And, Check, ListLiteral, Literal, MacroRef, Node, Not, Or

if TYPE_CHECKING:
    from .compiler import MacroInfo


@dataclass(frozen=True, slots=True)
class TypeSet:
    """A set of event types: `names` when finite, or every type except `names` when `cofinite`."""

    names: frozenset[str]
    cofinite: bool = False

    @staticmethod
    def all() -> TypeSet:
        return ALL_TYPES

    def union(self, other: TypeSet) -> TypeSet:
        if not self.cofinite and not other.cofinite:
            return TypeSet(self.names | other.names)
        if self.cofinite and other.cofinite:
            return TypeSet(self.names & other.names, True)
        fin, cof = (self, other) if other.cofinite else (other, self)
        return TypeSet(cof.names - fin.names, True)

    def intersection(self, other: TypeSet) -> TypeSet:
        if not self.cofinite and not other.cofinite:
            return TypeSet(self.names & other.names)
        if self.cofinite and other.cofinite:
            return TypeSet(self.names | other.names, True)
        fin, cof = (self, other) if other.cofinite else (other, self)
        return TypeSet(fin.names - cof.names)

    def complement(self) -> TypeSet:
        return TypeSet(self.names, not self.cofinite)

    def __contains__(self, name: object) -> bool:
        return (name not in self.names) if self.cofinite else (name in self.names)

    def __str__(self) -> str:
        if self.cofinite:
            return "all" if not self.names else "all except " + ", ".join(sorted(self.names))
        return ", ".join(sorted(self.names)) or "none"


ALL_TYPES = TypeSet(frozenset(), True)

NO_TYPES = TypeSet(frozenset())


class TypeInference:
    """The compiler's event-type half (a mixin of Compiler, which resolves macros for it)."""

    def _macro(self, ref: MacroRef, visibility: int | None) -> MacroInfo:
        raise NotImplementedError

    def types(self, node: Node, negated: bool, visibility: int | None = None) -> TypeSet:
        """The event types `node` can match (with `negated`: the types its negation can match)."""
        if isinstance(node, And | Or):
            # De Morgan: under negation, 'and' unions and 'or' intersects.
            conj = isinstance(node, And) != negated
            result: TypeSet | None = None
            for child in node.children:
                t = self.types(child, negated, visibility)
                result = t if result is None else (result.intersection(t) if conj else result.union(t))
            return result if result is not None else ALL_TYPES
        if isinstance(node, Not):
            return self.types(node.child, not negated, visibility)
        if isinstance(node, MacroRef):
            macro = self._macro(node, visibility)
            if macro.types is None:
                macro.types = {}
            if negated not in macro.types:
                macro.types[negated] = self.types(macro.ast, negated, macro.visibility)
            return macro.types[negated]
        return self._check_types(node, negated)

    def _check_types(self, check: Check, negated: bool) -> TypeSet:
        f = check.field
        if f.name == "evt.dir" and f.arg is None and not f.transformers:
            try:
                const = evt_dir_value(check)
            except CompileError:
                return ALL_TYPES
            # A check that never holds matches no type; one that always holds does not restrict.
            return ALL_TYPES if const != negated else NO_TYPES
        if f.name != "evt.type" or f.arg is not None or f.transformers:
            return ALL_TYPES
        val = check.value
        if check.op in ("=", "==") and isinstance(val, Literal):
            s = TypeSet(frozenset({val.text}))
        elif check.op == "!=" and isinstance(val, Literal):
            s = TypeSet(frozenset({val.text}), True)
        elif check.op in ("in", "intersects") and isinstance(val, ListLiteral):
            s = TypeSet(frozenset(i.text for i in val.items))
        else:
            return ALL_TYPES
        return s.complement() if negated else s
