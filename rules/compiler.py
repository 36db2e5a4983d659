"""The condition compiler: a parsed condition becomes Python closures, once, at load time.

Evaluation is the engine's hot loop, so everything that can be decided at load time is: fields are bound to
their extractors, literals are converted to the field's type (numbers, addresses and networks, byte strings,
compiled globs and regexes, path-prefix tables), operators are specialised per type, macros are expanded on
the AST (as Falco's filter_macro_resolver does) and compiled once per macro, and constant checks such as the
deprecated `evt.dir` fold away.

Three forms of the same compiled condition, each checked against the others by the tests:
- `compile()`: one closure per AST node, valid for every event type (the reference form; tools use it);
- `specialize(ast, type)`: the condition for events of one type, with every `evt.type` check a constant, so
  type macros and branches for other types vanish; and/or chains are flattened and reordered (positive
  checks before exclusions, cheapest first: and/or of side-effect-free checks commute);
- `dispatch(...)`: the engine's fast path, one generated Python function per event type holding all its
  candidate rules inline (each check's inline form mirrors its closure exactly), so an event costs one call
  plus its extractor calls, and a field read by several rules is extracted once.

Semantics follow libsinsp:
- a field whose value is unknown (extractor returns None) makes every check on it false, `!=` included;
  only `not` turns that into true, and `exists` asks exactly that question;
- a field that stands for several values (`any_of`, e.g. proc.aname without index) satisfies a check when
  any value does; a true list field (`is_list`) supports `in` (every value in the set), `intersects` (one
  is) and `exists`;
- `pmatch` is a component-wise path-prefix match (globs allowed per component), `glob`/`iglob` are
  fnmatch(3) matches of the whole value, `regex` is a full match;
- each rule also gets the set of event types it can match, computed on the AST with macros expanded, negation
  pushed down (De Morgan), `evt.type` checks giving their sets and every other check giving "all", so the
  engine runs only candidate rules for an event.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import CompileError, Msg, RuleError
from .parser import And, Check, FieldRef, FieldValue, ListLiteral, Literal, MacroRef, Node, Not, Or

Predicate = Callable[[Any], bool]
Extractor = Callable[[Any], Any]
WarnFn = Callable[[str, int, "str | None"], None]
"""Called with (message, offset, macro) for deprecations found while compiling (e.g. evt.dir); `macro` names
the macro whose text `offset` points into, None for the rule's own condition."""

MAX_COMPILE_DEPTH = 400
"""Macro expansion can nest ASTs beyond the parser's own limit; past this depth we raise our error."""


# --- event-type sets: finite or co-finite, closed under union, intersection and complement ------------------


@dataclass(frozen=True, slots=True)
class TypeSet:
    """A set of event types: `names` when finite, or every type except `names` when `cofinite`."""

    names: frozenset[str]
    cofinite: bool = False

    @staticmethod
    def all() -> TypeSet:
        return _ALL

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


_ALL = TypeSet(frozenset(), True)
_NONE = TypeSet(frozenset())


# --- macros as the compiler sees them ------------------------------------------------------------------------


@dataclass(slots=True)
class MacroInfo:
    """A parsed macro. As in Falco's loader, `index` is where the name was first defined and `visibility` the
    load order of its latest definition or append: a macro may use a macro whose index is below its own
    visibility (so redefining a macro in a later file does not hide it from earlier macros)."""

    name: str
    ast: Node
    visibility: int
    index: int = -1
    used: bool = False
    # Filled lazily, once per macro, shared by every rule that uses it.
    predicate: Predicate | None = None
    types: dict[bool, TypeSet] | None = None
    # Called to decorate errors raised inside this macro with its position and context (set by the loader).
    wrap_error: Callable[[RuleError], RuleError] | None = None


@dataclass(frozen=True, slots=True)
class Compiled:
    predicate: Predicate
    types: TypeSet


# --- field binding (the only place that talks to fields.py) -------------------------------------------------

_NUM_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "RELTIME", "ABSTIME",
              "DOUBLE", "PORT", "FD", "PID", "ERRNO", "UID", "GID", "SYSCALLID", "SIGTYPE", "MODE", "FLAGS8",
              "FLAGS16", "FLAGS32", "ENUMFLAGS8", "ENUMFLAGS16", "ENUMFLAGS32", "SOCKFAMILY", "BOOL_NUM",
              "L4PROTO", "UINT", "INT", "NUMBER", "NUMERIC", "FLOAT"}  # fmt: skip
_IP_TYPES = {"IPADDR", "IPV4ADDR", "IPV6ADDR", "IP"}
_NET_TYPES = {"IPNET", "IPV4NET", "IPV6NET", "NET"}
_BUF_TYPES = {"BYTEBUF", "BUFFER", "BYTES"}
_BOOL_TYPES = {"BOOL", "BOOLEAN"}

_OPS_BY_KIND: dict[str, frozenset[str]] = {
    "num": frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"}),
    "bool": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "ip": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "net": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "buf": frozenset(
        {
            "=",
            "==",
            "!=",
            "contains",
            "in",
            "exists",
            "startswith",
            "endswith",
            "intersects",
            "bcontains",
            "bstartswith",
        }
    ),  # fmt: skip
    "str": frozenset(
        {
            "=",
            "==",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "contains",
            "icontains",
            "startswith",
            "endswith",
            "glob",
            "iglob",
            "in",
            "intersects",
            "pmatch",
            "exists",
            "regex",
        }
    ),  # fmt: skip
}
_MATCHER_OPS = frozenset({"=", "==", "!=", "in", "intersects"})
_KIND_NAMES = {"num": "numeric", "bool": "boolean", "ip": "ip address", "net": "ip network", "buf": "buffer",
               "str": "string"}  # fmt: skip


def _type_name(ftype: Any) -> str:
    name = getattr(ftype, "name", None) or str(ftype)
    return name.rsplit(".", 1)[-1].upper()


def _kind_of(ftype: Any) -> str:
    name = _type_name(ftype)
    if name in _BOOL_TYPES:
        return "bool"
    if name in _IP_TYPES:
        return "ip"
    if name in _NET_TYPES:
        return "net"
    if name in _BUF_TYPES:
        return "buf"
    if name in _NUM_TYPES or name.startswith(("INT", "UINT")):
        return "num"
    return "str"


@dataclass(frozen=True, slots=True)
class BoundRef:
    """A field reference bound to its extractor, after transformers: what a check reads, and how.

    `any_of`: the extractor returns a list and a check holds when it holds for any element (proc.aname);
    `is_list`: a true list field (in = subset, intersects, exists); `matcher`: builds, per literal, the
    equality predicate for fields whose equality is not `==` on the text (addresses, networks, DNS names).
    """

    extract: Extractor
    kind: str
    is_list: bool
    text: str
    any_of: bool = False
    matcher: Callable[[str], Callable[[Any], bool]] | None = None
    deprecated: str | None = None
    inline: str | None = None  # BoundField.inline: exact Python source over `e` for the value, if any
    check: Callable[[str, tuple[str, ...]], Predicate] | None = None  # BoundField.check (k8s_audit fields)


def bind_field(ref: FieldRef, resolvers: Any = None) -> BoundRef:
    """Binds `ref` through fields.resolve and transformers; errors carry `ref`'s offset."""
    from . import fields  # imported here: fields imports the event model only, never the compiler

    try:
        bound = fields.resolve(ref.name, ref.arg, resolvers)
    except RuleError as exc:
        if exc.offset is None:
            exc.offset = ref.offset
        raise
    extract: Extractor = bound.extract
    ftype: Any = bound.type
    is_list = bool(getattr(bound, "is_list", False))
    any_of = bool(getattr(bound, "any_of", False))
    matcher = getattr(bound, "literal_matcher", None)
    if ref.transformers:
        from . import transformers

        # Innermost first: tolower(b64(x)) decodes, then lowers. A transformed value is compared as text
        # (or as a number after len), so the field's own literal matcher no longer applies.
        matcher = None
        for name in reversed(ref.transformers):
            try:
                extract, ftype, is_list, any_of = transformers.apply(name, extract, ftype, is_list, any_of)
            except RuleError as exc:
                if exc.offset is None:
                    exc.offset = ref.offset
                raise
    # A transformed value is no longer the field's, so its inline form only applies untransformed.
    inline = None if ref.transformers else getattr(bound, "inline", None)
    return BoundRef(
        extract,
        _kind_of(ftype),
        is_list,
        str(ref),
        any_of,
        matcher,
        getattr(bound, "deprecated", None),
        inline,
        None if ref.transformers else getattr(bound, "check", None),
    )


# --- literal conversion -------------------------------------------------------------------------------------


def _to_num(text: str, field: str, offset: int) -> int | float:
    t = text.strip()
    try:
        if t.lower().startswith(("0x", "-0x", "+0x")):
            return int(t, 16)
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise CompileError(Msg.BAD_NUMBER.format(value=text, field=field), offset) from None


def _to_bool(text: str, field: str, offset: int) -> bool:
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise CompileError(Msg.BAD_BOOL.format(value=text, field=field), offset)


def _to_net(text: str, field: str, offset: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise CompileError(Msg.BAD_NET.format(value=text, field=field), offset) from None


def _to_hex(text: str, op: str, offset: int) -> bytes:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise CompileError(Msg.BAD_HEX.format(value=text, op=op), offset) from None


@lru_cache(maxsize=4096)
def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An extracted address as an ipaddress object (extractors may hand over text); None if unparsable."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _convert(kind: str, lit: Literal, field: str, op: str) -> Any:
    """A literal in the field's kind (for equality, ordering and sets)."""
    if kind == "num":
        return _to_num(lit.text, field, lit.offset)
    if kind == "bool":
        return _to_bool(lit.text, field, lit.offset)
    if kind in ("ip", "net"):
        return _to_net(lit.text, field, lit.offset)
    if kind == "buf":
        return _to_hex(lit.text, op, lit.offset) if op.startswith("b") else lit.text.encode()
    return lit.text


# --- value tests: one function per operator family, testing a single known value -----------------------------

ValueTest = Callable[[Any], bool]


def _glob_re(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # fnmatch(3) without FNM_PATHNAME: '*' also matches '/', as in libsinsp's glob.
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


class _PathPrefixes:
    """pmatch: does a path equal, or lie below, one of the prefixes? Component-wise, globs per component."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.exact: set[tuple[str, ...]] = set()
        self.globs: list[tuple[str, ...]] = []
        for p in prefixes:
            parts = tuple(c for c in p.split("/") if c)
            if any(ch in p for ch in "*?["):
                self.globs.append(parts)
            else:
                self.exact.add(parts)

    def __call__(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        parts = tuple(c for c in value.split("/") if c)
        exact = self.exact
        if exact:
            for n in range(len(parts) + 1):
                if parts[:n] in exact:
                    return True
        for g in self.globs:
            if len(g) <= len(parts) and all(fnmatch.fnmatchcase(parts[i], g[i]) for i in range(len(g))):
                return True
        return False


def _value_test(kind: str, op: str, rhs: Any, field: str) -> ValueTest:
    """A test of one known (non-None) value against the converted right-hand side."""
    if kind in ("ip", "net"):
        if op in ("=", "=="):
            net = rhs
            return lambda v: (a := _ip(v)) is not None and a in net
        if op == "!=":
            net = rhs
            return lambda v: (a := _ip(v)) is not None and a not in net
        nets = tuple(rhs)  # in / intersects
        return lambda v: (a := _ip(v)) is not None and any(a in n for n in nets)
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
        return rhs  # a _PathPrefixes
    raise CompileError(f"operator '{op}' is not implemented", None)


def _rhs(kind: str, op: str, value: Literal | ListLiteral, field: str) -> Any:
    """Converts the right-hand side once, at load time, to what _value_test expects."""
    if isinstance(value, ListLiteral):
        items = value.items
        if op == "pmatch":
            return _PathPrefixes(i.text for i in items)
        converted = [_convert(kind, i, field, op) for i in items]
        if kind in ("ip", "net"):
            return converted
        return frozenset(converted)
    if op in ("glob", "iglob"):
        return _glob_re(value.text, op == "iglob")
    if op == "regex":
        try:
            # Falco uses RE2 with a full match; \Z anchors the end as fullmatch would.
            return re.compile(f"(?:{value.text})\\Z", re.DOTALL)
        except re.error as exc:
            raise CompileError(Msg.BAD_REGEX.format(value=value.text, reason=exc), value.offset) from None
    if op == "icontains" and kind == "str":
        return value.text
    return _convert(kind, value, field, op)


# --- the compiler --------------------------------------------------------------------------------------------


class Compiler:
    """Compiles condition ASTs against a set of macros. One instance per load; macros compile once.

    `bind` binds a field reference (fields.resolve plus transformers); tests may inject their own.
    """

    def __init__(
        self,
        macros: Mapping[str, MacroInfo],
        *,
        resolvers: Any = None,
        bind: Callable[[FieldRef], BoundRef] | None = None,
        warn: WarnFn | None = None,
        optimize: bool = True,
    ) -> None:
        self.macros = macros
        # False keeps and/or chains as written (no reordering or merging): the tests' reference form.
        self.optimize = optimize
        self.bind: Callable[[FieldRef], BoundRef] = bind or (lambda ref: bind_field(ref, resolvers))
        self._warn = warn
        self._depth = 0
        self._compiling: list[str] = []
        # The event type being specialised for (None: generic); evt.type checks fold to constants under it.
        self._etype: str | None = None
        self._mute = False
        self._macro_preds: dict[tuple[str, str | None], Predicate | bool] = {}
        # Per compiled predicate (kept alive here, keyed by id): estimated cost, and for and/or chains their
        # parts, so an enclosing chain of the same kind can splice them in and reorder the whole.
        self._meta: dict[
            int, tuple[Predicate, float, str, tuple[Predicate, ...], str | None, Any, float]
        ] = {}
        # Code generation: the objects generated functions refer to, by name (this dict is their globals).
        self._globals: dict[str, Any] = {"__builtins__": {"bool": bool}}
        self._names: dict[int, str] = {}
        self._last_expr: str | None = None
        self._last_simple: tuple[str, str, Any, BoundRef] | None = None
        self._extractor_names: set[str] = set()

    def warn(self, message: str, offset: int) -> None:
        if self._warn is not None and not self._mute:
            self._warn(message, offset, self._compiling[-1] if self._compiling else None)

    # -- public --

    def compile(self, ast: Node, *, visibility: int | None = None) -> Compiled:
        """Compiles a rule's condition (visibility None: every macro is visible, as for rules)."""
        pred = self._node(ast, visibility)
        types = self.types(ast, False, visibility)
        return Compiled(_unconst(pred), types)

    def specialize(self, ast: Node, event_type: str) -> Predicate | bool:
        """The condition compiled for events of one type: every evt.type check is a constant, so type
        macros and branches for other types vanish. A constant result means the rule's value for every
        event of that type is known. Warnings were reported by compile() and are not repeated."""
        saved = self._etype, self._mute
        self._etype, self._mute = event_type, True
        try:
            return self.generate(self._node(ast, None))
        finally:
            self._etype, self._mute = saved

    def condition_source(self, ast: Node, event_type: str) -> str | bool:
        """The specialised condition as inline Python source over `e` (or a constant), for dispatch()."""
        saved = self._etype, self._mute
        self._etype, self._mute = event_type, True
        try:
            pred = self._node(ast, None)
        finally:
            self._etype, self._mute = saved
        return pred if isinstance(pred, bool) else self._expr(pred)

    def dispatch(
        self,
        sources: Sequence[str | bool | Predicate],
        *,
        first: bool,
        on_error: Callable[[int], None],
    ) -> Callable[[Any], Sequence[int]]:
        """One generated function evaluating several rules' conditions for one event type, in order.

        A source is inline condition source, a constant, or a predicate to call (for a condition too
        deeply nested to inline). It returns the positions of the matching rules (only the first with
        `first`). Each field is
        extracted at most once per event however many rules read it (extractors are pure), and each rule
        runs in its own try block, so a rule that raises is reported through `on_error(position)` and the
        others still run."""
        counts: dict[str, int] = {}
        for src in sources:
            if isinstance(src, str):
                for name in _CALL_RE.findall(src):
                    if name in self._extractor_names:
                        counts[name] = counts.get(name, 0) + 1
        shared = {name: f"_c{i}" for i, name in enumerate(n for n, c in counts.items() if c > 1)}

        def share(match: re.Match[str]) -> str:
            local = shared.get(match.group(1))
            if local is None:
                return match.group(0)
            return f"({local} if {local} is not _U else ({local} := {match.group(1)}(e)))"

        lines = ["def _dispatch(e):"]
        if shared:
            lines.append("    " + " = ".join(shared.values()) + " = _U")
        if not first:
            lines.append("    hits = []")
        for i, src in enumerate(sources):
            if src is False:
                continue
            if src is True:
                cond = "True"
            elif isinstance(src, str) and nesting_depth(src) <= MAX_INLINE_NESTING:
                cond = _CALL_RE.sub(share, src)
            else:
                pred = src if callable(src) else self._compile_source(src)
                cond = f"{self._name(pred)}(e)"
            hit = f"return ({i},)" if first else f"hits.append({i})"
            lines += [
                "    try:",
                f"        if {cond}:",
                f"            {hit}",
                "    except Exception:",
                f"        _err({i})",
            ]
        lines.append("    return ()" if first else "    return hits")
        namespace = dict(self._globals)
        namespace["__builtins__"] = {"bool": bool, "Exception": Exception}
        namespace["_U"] = _UNSET
        namespace["_err"] = on_error
        exec(compile("\n".join(lines) + "\n", "<falconet dispatch>", "exec"), namespace)  # noqa: S102
        fn: Callable[[Any], Sequence[int]] = namespace["_dispatch"]
        return fn

    def types(self, node: Node, negated: bool, visibility: int | None = None) -> TypeSet:
        """The event types `node` can match (with `negated`: the types its negation can match)."""
        if isinstance(node, And | Or):
            # De Morgan: under negation, 'and' unions and 'or' intersects.
            conj = isinstance(node, And) != negated
            result: TypeSet | None = None
            for child in node.children:
                t = self.types(child, negated, visibility)
                result = t if result is None else (result.intersection(t) if conj else result.union(t))
            return result if result is not None else _ALL
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

    # -- event types of one check --

    def _check_types(self, check: Check, negated: bool) -> TypeSet:
        f = check.field
        if f.name == "evt.dir" and f.arg is None and not f.transformers:
            try:
                const = _evt_dir_value(check)
            except CompileError:
                return _ALL
            # A check that never holds matches no type; one that always holds does not restrict.
            return _ALL if const != negated else _NONE
        if f.name != "evt.type" or f.arg is not None or f.transformers:
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

    # -- nodes --

    def _enter(self, offset: int) -> None:
        self._depth += 1
        if self._depth > MAX_COMPILE_DEPTH:
            self._depth = 0
            raise CompileError(Msg.MAX_DEPTH.format(limit=MAX_COMPILE_DEPTH), offset)

    def _node(self, node: Node, visibility: int | None) -> Predicate | bool:
        """A predicate, or a constant bool when the node's value is known at load time."""
        self._enter(node.offset)
        try:
            if isinstance(node, And):
                return self._chain([self._node(c, visibility) for c in node.children], "and")
            if isinstance(node, Or):
                return self._chain([self._node(c, visibility) for c in node.children], "or")
            if isinstance(node, Not):
                inner = self._node(node.child, visibility)
                if isinstance(inner, bool):
                    return not inner
                return self._note(
                    lambda e: not inner(e),
                    self._cost(inner) + 0.2,
                    "not",
                    expr=f"(not {self._expr(inner)})",
                    p=1.0 - self._p(inner),
                )
            if isinstance(node, MacroRef):
                return self._macro_predicate(node, visibility)
            return self._check(node)
        finally:
            self._depth -= 1

    def _macro(self, ref: MacroRef, visibility: int | None) -> MacroInfo:
        macro = self.macros.get(ref.name)
        if macro is None:
            raise CompileError(Msg.UNDEFINED_MACRO.format(name=ref.name), ref.offset)
        index = macro.index if macro.index >= 0 else macro.visibility
        if visibility is not None and index >= visibility:
            raise CompileError(Msg.MACRO_NOT_VISIBLE.format(name=ref.name), ref.offset)
        macro.used = True
        return macro

    # -- costs, and/or chains --

    def _note(
        self,
        pred: Predicate,
        cost: float,
        kind: str = "",
        parts: tuple[Predicate, ...] = (),
        *,
        expr: str | None = None,
        simple: tuple[str, str, Any, BoundRef] | None = None,
        p: float = 0.5,
    ) -> Predicate:
        """Records what chains need about `pred`: its expected cost, its estimated chance of being true
        (`p`), its and/or parts, its inline source, and (for simple checks) what an 'or' can merge."""
        self._meta[id(pred)] = (pred, cost, kind, parts, expr, simple, p)
        return pred

    # -- code generation: a whole condition as one Python function --

    def _name(self, obj: Any) -> str:
        """A global name for `obj` in generated code (the dict keeps it alive, so ids stay unique)."""
        key = id(obj)
        name = self._names.get(key)
        if name is None:
            name = f"_o{len(self._names)}"
            self._names[key] = name
            self._globals[name] = obj
        return name

    def _expr(self, pred: Predicate) -> str:
        """Python source evaluating `pred` on `e`: its inline form when known, else a call."""
        meta = self._meta.get(id(pred))
        if meta is not None and meta[4] is not None:
            return meta[4]
        return f"{self._name(pred)}(e)"

    def _compile_source(self, source: str) -> Predicate:
        """A predicate for inline source that is too deep to paste into a bigger function: the source
        with every nested chain call-able on its own is not available here, so it is compiled as is when
        the parser allows it, else evaluated through the closures it came from."""
        try:
            code = compile(f"def _generated(e):\n    return bool({source})\n", "<falconet condition>", "exec")
        except (SyntaxError, RecursionError, MemoryError):
            raise ValueError("condition too deeply nested to generate") from None
        exec(code, self._globals)  # noqa: S102 - our own generated source over our own objects
        fn: Predicate = self._globals.pop("_generated")
        return fn

    def _value_source(self, bound: BoundRef) -> str:
        """Source for a field's value: the field's own inline expression when it has one (an attribute walk,
        exact by the fields module's contract), else a call of its extractor (shareable by dispatch())."""
        if bound.inline is not None:
            return f"({bound.inline})"
        name = self._name(bound.extract)
        self._extractor_names.add(name)
        return f"{name}(e)"

    def generate(self, pred: Predicate | bool) -> Predicate | bool:
        """One generated function for a compiled condition: the checks inline, in the chains' order, so an
        event costs one call plus its extractor calls instead of a closure call per node. Semantics are
        those of the closures (each inline form mirrors its closure); very deep or huge conditions keep the
        closures."""
        if isinstance(pred, bool):
            return pred
        source = self._expr(pred)
        if len(source) > 200_000 or nesting_depth(source) > MAX_INLINE_NESTING:
            return pred
        code = compile(f"def _generated(e):\n    return bool({source})\n", "<falconet condition>", "exec")
        exec(code, self._globals)  # noqa: S102 - our own generated source over our own objects
        fn: Predicate = self._globals.pop("_generated")
        return fn

    def _cost(self, pred: Predicate) -> float:
        meta = self._meta.get(id(pred))
        return meta[1] if meta is not None else 3.0

    def _p(self, pred: Predicate) -> float:
        meta = self._meta.get(id(pred))
        return meta[6] if meta is not None else 0.5

    def _chain(self, parts: list[Predicate | bool], kind: str) -> Predicate | bool:
        """An and/or chain: constants fold, nested chains of the same kind are spliced in, duplicates go,
        and the parts run cheapest first (and/or of side-effect-free checks commute, so only speed changes)."""
        absorbing = kind == "or"  # True absorbs an 'or', False an 'and'
        flat: list[Predicate] = []
        for part in parts:
            if isinstance(part, bool):
                if part == absorbing:
                    return absorbing
                continue
            meta = self._meta.get(id(part))
            inner = meta[3] if meta is not None and meta[2] == kind else (part,)
            for p in inner:
                if not any(p is q for q in flat):
                    flat.append(p)
        if not flat:
            return not absorbing
        if kind == "or" and self.optimize:
            flat = self._merge_or(flat)
        if len(flat) == 1:
            return flat[0]
        # In an 'and', positive checks usually fail (they say what the rule is about) and negated ones
        # usually pass (exclusions): positives first, each group cheapest first, author's order on ties.
        # The classic order for short-circuit chains of independent tests: an 'and' runs first what is
        # cheap and likely false (cost / P(false)), an 'or' what is cheap and likely true (cost / P(true)).
        # P is a static guess (a name or path compared with literals rarely matches; a flag, a range or an
        # exclusion usually does), so this only reorders, never changes a result: and/or of side-effect-free
        # checks commute.
        if not self.optimize:
            pass
        elif kind == "and":
            flat.sort(key=lambda q: self._cost(q) / max(1.0 - self._p(q), 0.01))
        else:
            flat.sort(key=lambda q: self._cost(q) / max(self._p(q), 0.01))
        pred = _chain(flat, conj=kind == "and")
        joiner = " and " if kind == "and" else " or "
        expr = "(" + joiner.join(self._expr(p) for p in flat) + ")"
        # Expected cost and chance of the chain as ordered.
        cost, reach, chance = 0.0, 1.0, 1.0 if kind == "and" else 0.0
        for q in flat:
            cost += reach * self._cost(q)
            pq = self._p(q)
            if kind == "and":
                reach *= pq
                chance *= pq
            else:
                reach *= 1.0 - pq
                chance = 1.0 - (1.0 - chance) * (1.0 - pq)
        return self._note(pred, cost, kind, tuple(flat), expr=expr, p=chance)

    def _macro_predicate(self, ref: MacroRef, visibility: int | None) -> Predicate | bool:
        macro = self._macro(ref, visibility)
        key = (macro.name, self._etype)
        if key not in self._macro_preds:
            if macro.name in self._compiling:
                raise CompileError(Msg.MACRO_CYCLE.format(name=macro.name), ref.offset)
            self._compiling.append(macro.name)
            try:
                pred = self._node(macro.ast, macro.visibility)
            except RuleError as exc:
                # Errors inside the macro point into the macro's own text; the loader locates them.
                # Each macro level adds its context (outermost ends up first); only the innermost sets the position.
                if macro.wrap_error is not None:
                    exc = macro.wrap_error(exc)
                raise exc from None
            finally:
                self._compiling.pop()
            self._macro_preds[key] = pred
            if self._etype is None:
                macro.predicate = _unconst(pred)
        return self._macro_preds[key]

    def _check(self, check: Check) -> Predicate | bool:
        ref = check.field
        if ref.name == "evt.dir" and ref.arg is None and not ref.transformers:
            return self._evt_dir(check)
        if ref.name == "evt.type" and ref.arg is None and not ref.transformers:
            fast = self._evt_type(check)
            if fast is not None:
                return fast
        bound = self.bind(ref)
        self._last_expr = self._last_simple = None
        pred = self._bound_check(check, bound)
        expr, simple = self._last_expr, self._last_simple
        self._last_expr = self._last_simple = None
        return self._note(
            pred, _check_cost(check, bound), expr=expr, simple=simple, p=_check_chance(check, bound)
        )

    def _evt_dir(self, check: Check) -> bool:
        """Falco 0.42 dropped enter events: evt.dir='>' matches nothing, evt.dir='<' everything."""
        self.warn(Msg.EVT_DIR_DEPRECATED, check.offset)
        return _evt_dir_value(check)

    def _evt_type(self, check: Check) -> Predicate | bool | None:
        """evt.type reads the event's own name: no extractor needed; a constant when specialising."""
        val = check.value
        etype = self._etype
        if check.op in ("=", "==") and isinstance(val, Literal):
            name = val.text
            if etype is not None:
                return etype == name
            return self._note(lambda e: e.type == name, 1, expr=f"(e.type == {self._name(name)})", p=0.2)
        if check.op == "!=" and isinstance(val, Literal):
            name = val.text
            if etype is not None:
                return etype != name
            return self._note(lambda e: e.type != name, 1, expr=f"(e.type != {self._name(name)})", p=0.8)
        if check.op in ("in", "intersects") and isinstance(val, ListLiteral):
            names = frozenset(i.text for i in val.items)
            if etype is not None:
                return etype in names
            return self._note(lambda e: e.type in names, 1, expr=f"(e.type in {self._name(names)})", p=0.3)
        return None

    def _bound_check(self, check: Check, bound: BoundRef) -> Predicate:
        op, kind, ex, field = check.op, bound.kind, bound.extract, bound.text
        if bound.deprecated:
            self.warn(bound.deprecated, check.field.offset)
        if bound.check is not None:
            return _own_semantics_check(check, bound.check)
        if op == "exists":
            if bound.is_list or bound.any_of:
                return lambda e: bool(ex(e))
            return lambda e: ex(e) is not None
        if bound.is_list and op not in ("in", "intersects"):
            raise CompileError(Msg.LIST_FIELD_OPS.format(field=field), check.op_offset)
        allowed = _OPS_BY_KIND[kind]
        if bound.matcher is not None and kind == "str":
            allowed = _MATCHER_OPS  # DNS-name fields: Falco allows only =, != and in
        if op not in allowed:
            raise CompileError(
                Msg.OP_NOT_SUPPORTED.format(op=op, kind=_KIND_NAMES[kind], field=field), check.op_offset
            )
        value = check.value
        assert value is not None
        if isinstance(value, FieldValue):
            return self._field_to_field(check, bound, self.bind(value.field))
        if bound.matcher is not None:
            test = _matcher_test(op, value, bound.matcher)  # type: ignore[arg-type]
            if kind in ("ip", "net"):
                test = _memoized(test)  # address matching is pure; the same addresses recur
            else:
                # DNS-name matching depends on the resolver's answers, which Falco itself refreshes only
                # every 10 s or more: a one-second memo per address keeps that meaning and spares asking
                # every listed domain's address set for every event.
                test = _memoized_for(test, 1.0)
        else:
            rhs = _rhs(kind, op, value, field)  # type: ignore[arg-type]
            if bound.is_list:
                return _list_check(op, ex, rhs)
            if not bound.any_of and kind in ("str", "num", "bool", "buf") and op in _SIMPLE_OPS:
                return self._simple(bound, op, rhs)
            test = _value_test(kind, op, rhs, field)
        if not bound.any_of:
            self._last_expr = f"((v := {self._value_source(bound)}) is not None and {self._name(test)}(v))"
        if bound.any_of:

            def any_value(e: Any) -> bool:
                values = ex(e)
                if values:
                    for v in values:
                        if v is not None and test(v):
                            return True
                return False

            return any_value
        return lambda e: (v := ex(e)) is not None and test(v)

    def _simple(self, bound: BoundRef, op: str, rhs: Any) -> Predicate:
        """The common shapes: one closure with the None test folded in, an inline form for generated code
        that means exactly the same, and a description an 'or' chain can merge with its siblings."""
        ex = bound.extract
        x, r = self._value_source(bound), self._name(rhs)
        self._last_expr = {
            "=": f"({x} == {r})",
            "==": f"({x} == {r})",
            "in": f"({x} in {r})",
            "intersects": f"({x} in {r})",
            "!=": f"((v := {x}) is not None and v != {r})",
            "startswith": f"((v := {x}) is not None and v.startswith({r}))",
            "endswith": f"((v := {x}) is not None and v.endswith({r}))",
            "contains": f"((v := {x}) is not None and {r} in v)",
            "<": f"((v := {x}) is not None and v < {r})",
            "<=": f"((v := {x}) is not None and v <= {r})",
            ">": f"((v := {x}) is not None and v > {r})",
            ">=": f"((v := {x}) is not None and v >= {r})",
        }[op]
        group = _MERGE_GROUPS.get(op)
        if group is not None:
            self._last_simple = (bound.text, group, rhs, bound)
        if op in ("=", "=="):
            return lambda e: ex(e) == rhs  # None never equals a converted literal
        if op in ("in", "intersects"):
            return lambda e: ex(e) in rhs  # the set never holds None
        if op == "!=":
            return lambda e: (v := ex(e)) is not None and v != rhs
        if op == "startswith":
            return lambda e: (v := ex(e)) is not None and v.startswith(rhs)
        if op == "endswith":
            return lambda e: (v := ex(e)) is not None and v.endswith(rhs)
        if op == "<":
            return lambda e: (v := ex(e)) is not None and v < rhs
        if op == "<=":
            return lambda e: (v := ex(e)) is not None and v <= rhs
        if op == ">":
            return lambda e: (v := ex(e)) is not None and v > rhs
        if op == ">=":
            return lambda e: (v := ex(e)) is not None and v >= rhs
        return lambda e: (v := ex(e)) is not None and rhs in v  # contains

    def _merge_or(self, flat: list[Predicate]) -> list[Predicate]:
        """In an 'or', checks of one field with =/in, startswith or endswith become one check each:
        `f = a or f in (b, c)` is `f in {a, b, c}`, `f endswith x or f endswith y` is one endswith(tuple)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(flat):
            meta = self._meta.get(id(p))
            simple = meta[5] if meta is not None else None
            if simple is not None:
                groups.setdefault((simple[0], simple[1]), []).append(i)
        merged: dict[int, Predicate] = {}
        dropped: set[int] = set()
        for (_field, group), idxs in groups.items():
            if len(idxs) < 2:
                continue
            simples = [self._meta[id(flat[i])][5] for i in idxs]
            bound = simples[0][3]
            if group == "eq":
                values: set[Any] = set()
                for _f, _g, rhs, _b in simples:
                    values |= rhs if isinstance(rhs, frozenset) else {rhs}
                self._last_expr = self._last_simple = None
                pred = self._simple(bound, "in", frozenset(values))
            else:
                parts: list[Any] = []
                for _f, _g, rhs, _b in simples:
                    parts.extend(rhs if isinstance(rhs, tuple) else (rhs,))
                self._last_expr = self._last_simple = None
                pred = self._simple(bound, group, tuple(parts))
            expr, simple = self._last_expr, self._last_simple
            self._last_expr = self._last_simple = None
            cost = min(self._cost(flat[i]) for i in idxs) + 0.5
            chance = 1.0
            for i in idxs:
                chance *= 1.0 - self._p(flat[i])
            merged[idxs[0]] = self._note(pred, cost, expr=expr, simple=simple, p=1.0 - chance)
            dropped.update(idxs[1:])
        if not merged:
            return flat
        return [merged.get(i, p) for i, p in enumerate(flat) if i not in dropped]

    def _field_to_field(self, check: Check, left: BoundRef, right: BoundRef) -> Predicate:
        """`f op val(g)` / `f op transformer(g)`: compare two extracted values (either unknown: false)."""
        op, lex, rex = check.op, left.extract, right.extract
        if op in ("in", "intersects", "pmatch", "glob", "iglob", "regex", "bcontains", "bstartswith"):
            raise CompileError(
                Msg.OP_NOT_SUPPORTED.format(op=op, kind="field-to-field", field=left.text), check.op_offset
            )
        if op == "icontains":
            return (
                lambda e: (a := lex(e)) is not None
                and (b := rex(e)) is not None
                and str(b).lower() in str(a).lower()
            )
        if left.kind in ("ip", "net") or right.kind in ("ip", "net"):
            eq: Callable[[Any, Any], bool] = lambda a, b: _ip(a) == _ip(b)  # noqa: E731
        else:
            eq = lambda a, b: a == b  # noqa: E731
        binary: dict[str, Callable[[Any, Any], bool]] = {
            "=": eq,
            "==": eq,
            "!=": lambda a, b: not eq(a, b),
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "contains": lambda a, b: b in a,
            "startswith": lambda a, b: a.startswith(b),
            "endswith": lambda a, b: a.endswith(b),
        }
        fn = binary[op]

        def pred(e: Any) -> bool:
            a = lex(e)
            if a is None:
                return False
            b = rex(e)
            if b is None:
                return False
            try:
                return fn(a, b)
            except TypeError:  # values of different kinds are simply unequal
                return False

        return pred


_SIMPLE_OPS = frozenset(
    {"=", "==", "in", "intersects", "!=", "startswith", "endswith", "contains", "<", "<=", ">", ">="}
)
# Operators whose checks on one field an 'or' can merge (=/in into one set, prefixes and suffixes into tuples).
_MERGE_GROUPS = {"=": "eq", "==": "eq", "in": "eq", "intersects": "eq", "startswith": "startswith",
                 "endswith": "endswith"}  # fmt: skip
_CHEAP_OPS = frozenset(
    {"=", "==", "!=", "in", "intersects", "exists", "startswith", "endswith", "<", "<=", ">", ">="}
)


_RENDERED_FIELDS = ("evt.arg", "evt.args", "evt.info", "evt.res", "proc.args", "proc.cmdline", "proc.pcmdline",
                    "proc.acmdline", "thread.cap")  # fmt: skip


def _check_chance(check: Check, bound: BoundRef) -> float:
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


def _check_cost(check: Check, bound: BoundRef) -> float:
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


def _memoized(test: ValueTest, limit: int = 4096) -> ValueTest:
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


MAX_INLINE_NESTING = 60
"""Deeper generated expressions stay closures: CPython's parser refuses about 200 nested parentheses."""
_CALL_RE = re.compile(r"\b(_o\d+)\(e\)")
_UNSET = object()


def nesting_depth(source: str) -> int:
    depth = deepest = 0
    for ch in source:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def _memoized_for(test: ValueTest, seconds: float, limit: int = 4096) -> ValueTest:
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


def _evt_dir_value(check: Check) -> bool:
    """The constant an evt.dir check has now that every event is an exit event."""
    if check.op == "exists":
        return True
    val = check.value
    texts = (
        [i.text for i in val.items]
        if isinstance(val, ListLiteral)
        else [val.text]
        if isinstance(val, Literal)
        else None
    )
    if texts is None or any(t not in ("<", ">") for t in texts) or check.op not in ("=", "==", "!=", "in"):
        raise CompileError(Msg.BAD_EVT_DIR, check.op_offset)
    exit_matches = "<" in texts
    return (not exit_matches) if check.op == "!=" else exit_matches


def _own_semantics_check(check: Check, build: Callable[[str, tuple[str, ...]], Predicate]) -> Predicate:
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


def _list_check(op: str, ex: Extractor, rhs: Any) -> Predicate:
    """True list fields (Falco's EPF_IS_LIST): `in` is a subset test, `intersects` a shared element."""
    if op == "in":
        return lambda e: bool(vs := ex(e)) and all(v in rhs for v in vs)
    return lambda e: bool(vs := ex(e)) and any(v in rhs for v in vs)


def _matcher_test(
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


# --- combinators with constant folding ----------------------------------------------------------------------


def _const(value: bool) -> Predicate:
    return (lambda e: True) if value else (lambda e: False)


def _unconst(pred: Predicate | bool) -> Predicate:
    return _const(pred) if isinstance(pred, bool) else pred


def _chain(preds: list[Predicate], conj: bool) -> Predicate:
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
    head = _chain(preds[:4], conj)
    tail = _chain(preds[4:], conj)
    return (lambda e: head(e) and tail(e)) if conj else (lambda e: head(e) or tail(e))
