"""Which k8s_audit rules an audit event can match, from its verb and target resource: the audit counterpart of
the engine's index of syscall rules by event type.

Nearly every k8s_audit rule names the verbs (`kcreate`, `ka.verb in (...)`) and resources
(`ka.target.resource=pods`) it is about. For each rule the set of `ka.verb` values and the set of
`ka.target.resource` values under which its condition can hold are computed on the AST, macros expanded, with
the same finite/co-finite sets and De Morgan rules as the event-type index (compiler.TypeSet): a check of the
field with =, in or intersects gives its literals, != their complement, anything else "every value". An event
then runs only the rules whose two sets hold its verb and resource.

Verbs and resources no rule names behave alike for every rule (a set holds such a value exactly when it is
co-finite), so they share one key: the cache of candidate lists is bounded by the values the rules name, not
by what a client sends. An event whose verb or resource is not one plain string (a hostile array) runs every
rule, so the index never changes an answer, only how fast it comes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .compiler import TypeSet
from .parser import And, Check, ListLiteral, Literal, MacroRef, Node, Not, Or

INDEXED = (("ka.verb", ("verb",)), ("ka.target.resource", ("objectRef", "resource")))
_OTHER = "\0other"
_ALL = TypeSet(frozenset(), True)
_MAX_DEPTH = 200


def field_values(node: Node, field: str, macros: Mapping[str, Node], negated: bool = False, depth: int = 0) -> TypeSet:
    """The values of `field` under which `node` (with `negated`: its negation) can hold."""
    if depth > _MAX_DEPTH:
        return _ALL
    if isinstance(node, And | Or):
        conj = isinstance(node, And) != negated
        result: TypeSet | None = None
        for child in node.children:
            t = field_values(child, field, macros, negated, depth + 1)
            result = t if result is None else (result.intersection(t) if conj else result.union(t))
        return result if result is not None else _ALL
    if isinstance(node, Not):
        return field_values(node.child, field, macros, not negated, depth + 1)
    if isinstance(node, MacroRef):
        ast = macros.get(node.name)
        return _ALL if ast is None else field_values(ast, field, macros, negated, depth + 1)
    return _check(node, field, negated)


def _check(check: Check, field: str, negated: bool) -> TypeSet:
    f = check.field
    if f.name != field or f.arg is not None or f.transformers:
        return _ALL
    val = check.value
    if check.op in ("=", "==") and isinstance(val, Literal):
        s = TypeSet(frozenset({val.text}))
    elif check.op == "!=" and isinstance(val, Literal):
        s = TypeSet(frozenset({val.text}), True)
    elif check.op in ("in", "intersects") and isinstance(val, ListLiteral):
        s = TypeSet(frozenset(i.text for i in val.items))
    else:
        return _ALL
    return s.complement() if negated else s


class AuditRuleIndex:
    """Candidate rules (their positions in `rules`' order) per (verb, resource) of an event."""

    def __init__(self, conditions: Sequence[tuple[Node | None, Mapping[str, Node]]]) -> None:
        self._sets: list[tuple[TypeSet, ...]] = []
        named: list[set[str]] = [set() for _ in INDEXED]
        for ast, macros in conditions:
            sets = tuple(_ALL if ast is None else field_values(ast, name, macros) for name, _ in INDEXED)
            self._sets.append(sets)
            for i, s in enumerate(sets):
                named[i] |= s.names
        for i, names in enumerate(named):
            if any(_numeric(n) for n in names):  # compared as numbers by the checks: no text index for it
                self._sets = [(*sets[:i], _ALL, *sets[i + 1 :]) for sets in self._sets]
                names.clear()
        self._named = [frozenset(n) for n in named]
        self._every = tuple(range(len(conditions)))
        self._cache: dict[tuple[str, ...], tuple[int, ...]] = {}

    def candidates(self, data: Mapping[str, object]) -> tuple[int, ...]:
        key: list[str] = []
        for i, (_name, path) in enumerate(INDEXED):
            value: object = data
            for part in path:
                value = value.get(part, "<NA>") if isinstance(value, dict) else "<NA>"
            if not isinstance(value, str):
                return self._every
            key.append(value if value in self._named[i] else _OTHER)
        k = tuple(key)
        found = self._cache.get(k)
        if found is None:
            found = self._cache[k] = tuple(
                n for n, sets in enumerate(self._sets)
                if all(_holds(s, v) for s, v in zip(sets, k, strict=True))
            )  # fmt: skip
        return found


def _numeric(text: str) -> bool:
    body = text.strip().lstrip("+-")
    return body.isdigit() or ":" in text


def _holds(s: TypeSet, value: str) -> bool:
    return s.cofinite if value == _OTHER else value in s
