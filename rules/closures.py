"""Closures: the predicates a compiled condition is made of, and the static cost model that orders chains.

Every check becomes a small closure over its extractor and its converted literal (value tests for one known
value, list-field tests, matcher tests for addresses and DNS names), and/or chains become short-circuit
closures with small arities unrolled. The generated code of codegen.py mirrors these forms exactly; these
are the reference semantics (see compiler.py's docstring for libsinsp's rules on unknown values).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .binding import BoundRef, Extractor, Predicate
from .errors import CompileError, RuleError
from .literals import PathPrefixes, ip_value
from .parser import Check, FieldValue, ListLiteral, Literal

ValueTest = Callable[[Any], bool]


def value_test(kind: str, op: str, rhs: Any, field: str) -> ValueTest:
    """A test of one known (non-None) value against the converted right-hand side."""
    if kind in ("ip", "net"):
        if op in ("=", "=="):
            net = rhs
            return lambda v: (a := ip_value(v)) is not None and a in net
        if op == "!=":
            net = rhs
            return lambda v: (a := ip_value(v)) is not None and a not in net
        nets = tuple(rhs)  # in / intersects
        return lambda v: (a := ip_value(v)) is not None and any(a in n for n in nets)
    if op in ("=", "=="):
        return lambda v: v == rhs
    if op == "!=":
        return lambda v: v != rhs
    if op == "<":
        return lambda v: v < rhs
    if op == "<=":
        return lambda v: v <= rhs
    if op == ">":
        return lambda v: v > rhs
    if op == ">=":
        return lambda v: v >= rhs
    if op in ("contains", "bcontains"):
        return lambda v: rhs in v
    if op == "icontains":
        low = rhs.lower()
        return lambda v: low in v.lower()
    if op in ("startswith", "bstartswith"):
        return lambda v: v.startswith(rhs)
    if op == "endswith":
        return lambda v: v.endswith(rhs)
    if op in ("glob", "iglob", "regex"):
        match = rhs.match  # compiled pattern; fnmatch.translate and our regex wrapper both anchor the end
        return lambda v: match(v) is not None
    if op in ("in", "intersects"):
        items = rhs
        return lambda v: v in items
    if op == "pmatch":
        assert isinstance(rhs, PathPrefixes)  # convert_rhs made it (load time only)
        return rhs
    raise CompileError(f"operator '{op}' is not implemented", None)


def own_semantics_check(check: Check, build: Callable[[str, tuple[str, ...]], Predicate]) -> Predicate:
    """A field that compares by its own semantics (the k8s_audit fields) gets the operator and literal texts."""
    value = check.value
    if isinstance(value, FieldValue):
        raise CompileError(f"'{check.field}' cannot be compared with another field", check.op_offset)
    texts: tuple[str, ...] = ()
    if isinstance(value, ListLiteral):
        texts = tuple(item.text for item in value.items)
    elif isinstance(value, Literal):
        texts = (value.text,)
    try:
        return build(check.op, texts)
    except RuleError as exc:
        if exc.offset is None:
            exc.offset = check.op_offset
        raise


def list_check(op: str, ex: Extractor, rhs: Any) -> Predicate:
    """True list fields (Falco's EPF_IS_LIST): `in` is a subset test, `intersects` a shared element."""
    if op == "in":
        return lambda e: bool(vs := ex(e)) and all(v in rhs for v in vs)
    return lambda e: bool(vs := ex(e)) and any(v in rhs for v in vs)


def matcher_test(
    op: str, value: Literal | ListLiteral, matcher: Callable[[str], Callable[[Any], bool]]
) -> ValueTest:
    """Checks through a field's literal matcher (addresses, networks, DNS names): =, != and in."""
    literals = value.items if isinstance(value, ListLiteral) else (value,)
    tests = []
    for lit in literals:
        try:
            tests.append(matcher(lit.text))
        except RuleError as exc:
            if exc.offset is None:
                exc.offset = lit.offset
            raise
    if op == "!=":
        one = tests[0]
        return lambda v: not one(v)
    if len(tests) == 1:
        return tests[0]
    ts = tuple(tests)
    return lambda v: any(t(v) for t in ts)


def memoized(test: ValueTest, limit: int = 4096) -> ValueTest:
    memo: dict[Any, bool] = {}

    def cached(v: Any) -> bool:
        try:
            return memo[v]
        except KeyError:
            pass
        except TypeError:  # an unhashable value: just test it
            return test(v)
        result = test(v)
        if len(memo) < limit:
            memo[v] = result
        return result

    return cached


def memoized_for(test: ValueTest, seconds: float, limit: int = 4096) -> ValueTest:
    memo: dict[Any, tuple[float, bool]] = {}
    clock = time.monotonic

    def cached(v: Any) -> bool:
        now = clock()
        try:
            expires, result = memo[v]
            if now < expires:
                return result
        except KeyError:
            pass
        except TypeError:  # an unhashable value: just test it
            return test(v)
        result = test(v)
        if len(memo) >= limit:
            memo.clear()
        memo[v] = (now + seconds, result)
        return result

    return cached


# --- combinators with constant folding ------------------------------------------------------------------------


def const(value: bool) -> Predicate:
    return (lambda e: True) if value else (lambda e: False)


def unconst(pred: Predicate | bool) -> Predicate:
    return const(pred) if isinstance(pred, bool) else pred


def chain(preds: list[Predicate], conj: bool) -> Predicate:
    """Short-circuit closures; small arities unrolled because a generator costs more than the checks."""
    n = len(preds)
    if n == 1:
        return preds[0]
    if n == 2:
        a, b = preds
        return (lambda e: a(e) and b(e)) if conj else (lambda e: a(e) or b(e))
    if n == 3:
        a, b, c = preds
        return (lambda e: a(e) and b(e) and c(e)) if conj else (lambda e: a(e) or b(e) or c(e))
    if n == 4:
        a, b, c, d = preds
        if conj:
            return lambda e: a(e) and b(e) and c(e) and d(e)
        return lambda e: a(e) or b(e) or c(e) or d(e)
    head = chain(preds[:4], conj)
    tail = chain(preds[4:], conj)
    return (lambda e: head(e) and tail(e)) if conj else (lambda e: head(e) or tail(e))


# --- the cost model: a static guess that orders and/or chains ----------------------------------------

SIMPLE_OPS = frozenset(
    {"=", "==", "in", "intersects", "!=", "startswith", "endswith", "contains", "<", "<=", ">", ">="}
)
MERGE_GROUPS = {"=": "eq", "==": "eq", "in": "eq", "intersects": "eq", "startswith": "startswith",
                 "endswith": "endswith"}  # fmt: skip
_CHEAP_OPS = frozenset(
    {"=", "==", "!=", "in", "intersects", "exists", "startswith", "endswith", "<", "<=", ">", ">="}
)


_RENDERED_FIELDS = ("evt.arg", "evt.args", "evt.info", "evt.res", "proc.args", "proc.cmdline", "proc.pcmdline",
                    "proc.acmdline", "thread.cap")  # fmt: skip


def check_chance(check: Check, bound: BoundRef) -> float:
    """A static guess of how often a check is true. Names and paths compared with literals rarely match;
    flags, ranges, inequalities, one-character codes (fd.typechar = f) and `exists` usually do."""
    op, value = check.op, check.value
    if op in ("!=", "exists", "<", "<=", ">", ">="):
        return 0.9
    if bound.kind == "bool":
        return 0.7
    if op in ("=", "==") and bound.kind == "str" and isinstance(value, Literal) and len(value.text) <= 1:
        return 0.8  # a one-character code: fd.typechar = f
    return 0.1


def check_cost(check: Check, bound: BoundRef) -> float:
    """A rough relative cost, to run cheap checks first: extraction plus the operator's work."""
    cost = 1.0 if bound.inline is not None else 2.0
    if bound.text.startswith(_RENDERED_FIELDS):
        cost += 2.0  # rendered from raw syscall arguments or joined from lists at each read
    cost += 0.0 if check.op in _CHEAP_OPS else 2.0
    if bound.any_of or bound.is_list:
        cost += 3
    if bound.matcher is not None:
        cost += 2 if bound.kind in ("ip", "net") else 4
    if isinstance(check.value, FieldValue):
        cost += 3
    return cost
