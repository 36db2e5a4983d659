"""Values of the k8s_audit fields and Falco's comparisons over them (Falco 0.25's json_event_value semantics).

Every `ka.*`/`jevt.*` field yields a tuple of values, read from the audit object through JSON pointers; a field
that walks a list (every container's image, every volume's host path) yields one value per element. A field
that cannot be read (a missing key, an object where a list was expected) yields the single value `<NA>`, as
Falco 0.25 did, which is why Falco's own k8s_audit and PodSecurityPolicy rules write `in (..., "<NA>")`.

Each value is text parsed once into one of three kinds, as Falco's json_event_value: an integer (`8080`), an
integer range written `LO:HI` (`100:200`, in rules), or a string. An integer equals a range that contains it,
so `ka.req.pod.containers.host_port in (100:200)` means "every host port within 100..200". JSON values that
are not strings are compared as their compact JSON text (`true`, `{"a":1}`), as Falco printed them.

The operators (`FieldCheck.build`):
- `=`/`!=`: the set of distinct values equals (differs from) the set of literals;
- `in`: every value is one of the literals (a subset test); `intersects`: some value is;
- `pmatch`: every value other than `<NA>` lies at or below one of the literal paths (component-wise);
- `exists`: some value other than `<NA>`;
- every other operator (`startswith`, `contains`, `<`, `glob`, ...) needs exactly one value and one literal,
  and `<`/`<=`/`>`/`>=` need both of the same kind (two numbers, two strings).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeAlias

from falconet.model.audit import JsonValue

NA = "<NA>"
"""The value of a field that could not be read (Falco's no_value)."""

Value: TypeAlias = str | int | tuple[int, int]
"""One parsed field value: a string, an integer, or an integer range (lo, hi) inclusive (the model's
MemoValue, which AuditEvent.memo stores)."""


class HasMemo(Protocol):
    """What a check reads from an event: the audit object and the per-event memo of extracted values."""

    ts: int
    data: dict[str, JsonValue]
    memo: dict[str, tuple[Value, ...]]


Check = Callable[[HasMemo], bool]


def as_text(value: JsonValue) -> str:
    """A JSON value as Falco's fields print it: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _int(text: str) -> int | None:
    # std::stoll with a full-length check: optional blanks and sign, then digits only.
    body = text.lstrip(" \t\n\r\f\v")
    digits = body[1:] if body[:1] in "+-" else body
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(body)


def parse_value(text: str) -> Value:
    """Text -> range, integer or string, in that order of preference (as Falco's json_event_value)."""
    lo, sep, hi = text.partition(":")
    if sep:
        a, b = _int(lo), _int(hi)
        if a is not None and b is not None:
            return (a, b)
    n = _int(text)
    return text if n is None else n


def value_text(value: Value) -> str:
    """A parsed value as text again (a range prints LO:HI)."""
    if isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"
    return str(value) if isinstance(value, int) else value


class ValueSet:
    """A set of literals with Falco's membership: exact for strings, and an integer matches a range holding it
    (and a range matches an integer inside it)."""

    __slots__ = ("ints", "ranges", "exact")

    def __init__(self, values: Iterable[Value]) -> None:
        vals = list(values)
        self.exact: frozenset[Value] = frozenset(vals)
        self.ints = tuple(v for v in vals if isinstance(v, int))
        self.ranges = tuple(v for v in vals if isinstance(v, tuple))

    def __contains__(self, value: Value) -> bool:
        if value in self.exact:
            return True
        if isinstance(value, int):
            return any(lo <= value <= hi for lo, hi in self.ranges)
        if isinstance(value, tuple):
            return any(value[0] <= n <= value[1] for n in self.ints)
        return False


def _same(a: Value, b: Value) -> bool:
    return a in ValueSet((b,))


def _path_under(path: str, prefixes: Sequence[str]) -> bool:
    """pmatch: `path` equals one of the prefixes or lies below it, component by component."""
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if path == prefix or path == base or path.startswith(base + "/"):
            return True
    return False


def _single_string_test(op: str, literal: str) -> Callable[[str], bool] | None:
    """The string operators that compare one value with one literal; None for an operator not handled here."""
    if op == "startswith":
        return lambda v: v.startswith(literal)
    if op == "endswith":
        return lambda v: v.endswith(literal)
    if op == "contains":
        return lambda v: literal in v
    if op == "icontains":
        low = literal.lower()
        return lambda v: low in v.lower()
    if op == "glob":
        return re.compile(fnmatch.translate(literal), re.DOTALL).match  # type: ignore[return-value]
    if op == "iglob":
        pat = re.compile(fnmatch.translate(literal), re.DOTALL | re.IGNORECASE)
        return lambda v: pat.match(v) is not None
    if op == "regex":
        rx = re.compile(literal)
        return lambda v: rx.fullmatch(v) is not None
    return None


OrderKey = tuple[int, int, str]

_ORDER_OPS: dict[str, Callable[[OrderKey, OrderKey], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

SUPPORTED_OPS = frozenset(
    {"=", "==", "!=", "in", "intersects", "pmatch", "exists", "startswith", "endswith", "contains", "icontains",
     "glob", "iglob", "regex", "<", "<=", ">", ">="}
)  # fmt: skip


def _order_key(v: Value) -> OrderKey:
    if isinstance(v, tuple):
        return (v[0], v[1], "")
    return (v, v, "") if isinstance(v, int) else (0, 0, v)


def build_check(
    op: str, literals: Sequence[str], values: Callable[[HasMemo], tuple[Value, ...]], memo_key: str | None = None
) -> Check:
    """The predicate for `<field> <op> <literals>` over the field's parsed values. Raises ValueError with a
    sentence for an operator the k8s_audit fields do not support or a literal count it cannot take.

    `memo_key`: the key under which `values` memoizes in `e.memo`; the common checks then read the memo
    directly and call `values` only on its first use for an event (the engine's hot path)."""
    if op not in SUPPORTED_OPS:
        raise ValueError(f"operator '{op}' is not supported by k8s_audit fields")
    if op == "exists":

        def exists(e: HasMemo) -> bool:
            vs = values(e)
            return vs[0] != NA if len(vs) == 1 else any(v != NA for v in vs)

        return exists
    parsed = [parse_value(t) for t in literals]
    lits = ValueSet(parsed)
    fast = _fast_set_check(op, lits, values, memo_key)
    if fast is not None:
        return fast
    if op in ("=", "==", "!="):
        want = parsed
        negate = op == "!="

        def equal(e: HasMemo) -> bool:
            have = set(values(e))
            same = len(have) == len(set(want)) and all(v in lits for v in have)
            same = same and all(any(_same(v, w) for v in have) for w in want)
            return same != negate

        return equal
    if op == "in":
        return lambda e: all(v in lits for v in values(e))
    if op == "intersects":
        return lambda e: any(v in lits for v in values(e))
    if op == "pmatch":
        prefixes = tuple(literals)
        return lambda e: all(v == NA or _path_under(value_text(v), prefixes) for v in values(e))
    if len(parsed) != 1:
        raise ValueError(f"operator '{op}' takes one value, not a list")
    if op in _ORDER_OPS:
        cmp, want_v = _ORDER_OPS[op], parsed[0]

        def ordered(e: HasMemo) -> bool:
            vs = values(e)
            if len(vs) != 1 or type(vs[0]) is not type(want_v):
                return False
            return cmp(_order_key(vs[0]), _order_key(want_v))

        return ordered
    test = _single_string_test(op, literals[0])
    assert test is not None
    return lambda e: len(vs := values(e)) == 1 and bool(test(value_text(vs[0])))


def _fast_set_check(
    op: str, lits: ValueSet, read: Callable[[HasMemo], tuple[Value, ...]], memo_key: str | None
) -> Check | None:
    """The common shapes as plain set operations, for literals without ranges (most rules): the same answers
    as the general forms below, which a range among the extracted values still takes (a rare `LO:HI` text)."""
    if lits.ranges:
        return None
    exact = lits.exact
    key = memo_key or f"\0{id(read)}"  # a key no field uses: the memo then always misses, `read` answers

    if op in ("=", "==", "!=") and len(exact) == 1:
        (want,) = exact
        negate = op == "!="

        def equal(e: HasMemo) -> bool:
            vs = e.memo.get(key) or read(e)
            if len(vs) == 1 and type(vs[0]) is not tuple:
                return (vs[0] == want) != negate
            same = bool(vs) and all(v == want for v in vs)
            if not same and any(type(v) is tuple for v in vs):
                same = len(set(vs)) == 1 and vs[0] in lits
            return same != negate

        return equal
    if op == "in":

        def subset(e: HasMemo) -> bool:
            vs = e.memo.get(key) or read(e)
            return exact.issuperset(vs) or (any(type(v) is tuple for v in vs) and all(v in lits for v in vs))

        return subset
    if op == "intersects":

        def overlap(e: HasMemo) -> bool:
            vs = e.memo.get(key) or read(e)
            return not exact.isdisjoint(vs) or (any(type(v) is tuple for v in vs) and any(v in lits for v in vs))

        return overlap
    return None


def render(texts: Sequence[str]) -> str | None:
    """A field's value for outputs, as Falco 0.25 printed it: the value, `(a,b,...)` for several, None (printed
    `<NA>`) for none or the unreadable `<NA>`."""
    if not texts:
        return None
    if len(texts) == 1:
        return None if texts[0] == NA else texts[0]
    return "(" + ",".join(texts) + ")"
