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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .binding import KIND_NAMES, MATCHER_OPS, OPS_BY_KIND, BoundRef, Extractor, Predicate, bind_field
from .closures import (
    MERGE_GROUPS,
    SIMPLE_OPS,
    chain,
    check_chance,
    check_cost,
    list_check,
    own_semantics_check,
    matcher_test,
    memoized,
    memoized_for,
    unconst,
    value_test,
)
from .codegen import MAX_INLINE_NESTING, CodeGen, nesting_depth
from .errors import CompileError, Msg, RuleError
from .evttypes import TypeInference, TypeSet
from .literals import convert_rhs, evt_dir_value, ip_value
from .parser import And, Check, FieldRef, FieldValue, ListLiteral, Literal, MacroRef, Node, Not, Or

# What other modules import from here (some of it defined in the compiler's parts, re-exported).
__all__ = [
    "MAX_COMPILE_DEPTH",
    "MAX_INLINE_NESTING",
    "BoundRef",
    "Compiled",
    "Compiler",
    "Extractor",
    "MacroInfo",
    "Predicate",
    "TypeSet",
    "WarnFn",
    "bind_field",
    "nesting_depth",
]

WarnFn = Callable[[str, int, "str | None"], None]
"""Called with (message, offset, macro) for deprecations found while compiling (e.g. evt.dir); `macro` names
the macro whose text `offset` points into, None for the rule's own condition."""

MAX_COMPILE_DEPTH = 400
"""Macro expansion can nest ASTs beyond the parser's own limit; past this depth we raise our error."""


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


# --- the compiler --------------------------------------------------------------------------------------------


class Compiler(TypeInference, CodeGen):
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
        return Compiled(unconst(pred), types)

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
        pred = chain(flat, conj=kind == "and")
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
                macro.predicate = unconst(pred)
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
            pred, check_cost(check, bound), expr=expr, simple=simple, p=check_chance(check, bound)
        )

    def _evt_dir(self, check: Check) -> bool:
        """Falco 0.42 dropped enter events: evt.dir='>' matches nothing, evt.dir='<' everything."""
        self.warn(Msg.EVT_DIR_DEPRECATED, check.offset)
        return evt_dir_value(check)

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
        if bound.check is not None:  # k8s_audit fields compare by their own semantics
            return own_semantics_check(check, bound.check)
        if op == "exists":
            if bound.is_list or bound.any_of:
                return lambda e: bool(ex(e))
            return lambda e: ex(e) is not None
        if bound.is_list and op not in ("in", "intersects"):
            raise CompileError(Msg.LIST_FIELD_OPS.format(field=field), check.op_offset)
        allowed = OPS_BY_KIND[kind]
        if bound.matcher is not None and kind == "str":
            allowed = MATCHER_OPS  # DNS-name fields: Falco allows only =, != and in
        if op not in allowed:
            raise CompileError(
                Msg.OP_NOT_SUPPORTED.format(op=op, kind=KIND_NAMES[kind], field=field), check.op_offset
            )
        value = check.value
        assert value is not None
        if isinstance(value, FieldValue):
            return self._field_to_field(check, bound, self.bind(value.field))
        if bound.matcher is not None:
            test = matcher_test(op, value, bound.matcher)
            if kind in ("ip", "net"):
                test = memoized(test)  # address matching is pure; the same addresses recur
            else:
                # DNS-name matching depends on the resolver's answers, which Falco itself refreshes only
                # every 10 s or more: a one-second memo per address keeps that meaning and spares asking
                # every listed domain's address set for every event.
                test = memoized_for(test, 1.0)
        else:
            rhs = convert_rhs(kind, op, value, field)
            if bound.is_list:
                return list_check(op, ex, rhs)
            if not bound.any_of and kind in ("str", "num", "bool", "buf") and op in SIMPLE_OPS:
                return self._simple(bound, op, rhs)
            test = value_test(kind, op, rhs, field)
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
        group = MERGE_GROUPS.get(op)
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
            eq: Callable[[Any, Any], bool] = lambda a, b: ip_value(a) == ip_value(b)  # noqa: E731
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
