"""Building, the last phase of a load: collected definitions to compiled rules (conditions to predicates).

Lists expand textually first (Falco's resolve_list, keeping for every character of the result the offset it
came from), exceptions fold into the condition text (rule_exceptions.py), then each condition is parsed,
macros are expanded on the AST and the compiler (compiler.py) turns it into a predicate with its event
types; the output is compiled too. A failure is a diagnostic positioned in the file through the origin map,
never an exception: the rule is left out and the others still build.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from falconet.model.alert import Priority

from .compiler import Compiled, Compiler, MacroInfo, TypeSet, bind_field
from .definitions import ListDef, MacroDef, RuleDef
from .errors import (
    Code,
    ConditionSyntaxError,
    Context,
    LoadResult,
    Msg,
    Position,
    RuleError,
    UnknownFieldError,
)
from .parser import Node, parse_condition
from .reader import Piece, Text
from .rule_exceptions import exception_text, quote_item
from .sources import KNOWN_SOURCES as KNOWN_SOURCES  # re-exported for the loader
from .sources import SYSCALL, scoped_bind

# KNOWN_SOURCES (re-exported for the loader) lives in sources.py with the field scoping by source.

MAX_EVTTYPES = 100
"""Falco warns (LOAD_NO_EVTTYPE) when a rule can match more event types than this."""


@dataclass(slots=True)
class CompiledRule:
    """A rule ready to evaluate: its predicate, its event types, and its compiled output."""

    name: str
    index: int
    desc: str
    priority: Priority
    tags: tuple[str, ...]
    source: str
    enabled: bool
    predicate: Callable[[Any], bool]
    types: TypeSet
    output: str
    formatter: Any  # falconet.rules.output.OutputFormat
    position: Position
    capture: bool = False
    capture_duration: int | None = None
    # The condition compiled for one event type (evt.type checks folded): the engine's per-type fast path.
    specialize: Callable[[str], Callable[[Any], bool] | bool] | None = None
    # The same as inline Python source (or a constant), for the engine's per-type dispatch function.
    condition_source: Callable[[str], str | bool] | None = None
    # The parsed condition (lists expanded, exceptions folded in, macros as references) and the macros it
    # may refer to: for static analyses such as Engine.open_path_prefixes.
    condition_ast: Node | None = None
    macro_asts: Mapping[str, Node] | None = None


@dataclass(slots=True)
class Ruleset:
    """The outcome of a load: compiled rules in evaluation order, and every diagnostic."""

    rules: list[CompiledRule]
    result: LoadResult
    lists: dict[str, list[str]]
    macros: list[str]
    # Builds one function evaluating several rules for an event type (Compiler.dispatch), if available.
    dispatch: Callable[..., Callable[[Any], Sequence[int]]] | None = None


# --- the builder --------------------------------------------------------------------------------------------


class Builder:
    """Compiles what a Collector gathered; one instance per load. Diagnostics go to the collector's result."""

    def __init__(
        self,
        result: LoadResult,
        lists: Mapping[str, ListDef],
        macros: Mapping[str, MacroDef],
        rules: Mapping[str, RuleDef],
        missing_plugins: Mapping[str, list[str]],
    ) -> None:
        self.result = result
        self.lists = lists
        self.macros = macros
        self.rules = rules
        self._missing_plugins = missing_plugins
        self._asts: dict[str, Node] = {}
        self._macro_texts: dict[str, tuple[MacroDef, Text, list[int]]] = {}
        self._current: list[tuple[RuleDef, Text, list[int]]] = []

    def build(
        self,
        *,
        resolvers: Any = None,
        compile_output: Callable[[str], Any] | None = None,
        bind: Callable[[Any], Any] | None = None,
    ) -> Ruleset:
        """Expands lists, parses macros, compiles every rule and its output; diagnostics go to `result`.

        `bind` replaces the compiler's field binding (the benchmark wraps extractors to measure them)."""
        lists = sorted(self.lists.values(), key=lambda item: item.index)
        for lst in lists:
            lst.expanded = self._expand_list_items(lst)
        macro_infos = self._parse_macros()
        if compile_output is None:
            from .output import compile_output as default_compile_output

            compile_output = default_compile_output
        compiler, compilers = _source_compilers(macro_infos, resolvers, bind, self._warn)
        macro_asts = {name: info.ast for name, info in macro_infos.items()}
        compiled: list[CompiledRule] = []
        for rule in sorted(self.rules.values(), key=lambda item: item.index):
            built = self._build_rule(rule, compilers.get(rule.source, compiler), compile_output, macro_asts)
            if built is not None:
                compiled.append(built)
        for other in compilers.values():  # a macro used by any source's rules is used
            for name, info in other.macros.items():
                if info.used and name in macro_infos:
                    macro_infos[name].used = True
        self._report_unused(macro_infos)
        return Ruleset(
            compiled,
            self.result,
            {name: list(lst.expanded or []) for name, lst in self.lists.items()},
            list(self.macros),
            compiler.dispatch,
        )

    def _parse_macros(self) -> dict[str, MacroInfo]:
        """Every macro's condition, lists expanded, parsed (once; rules expand them on the AST)."""
        macro_infos: dict[str, MacroInfo] = {}
        for mdef in sorted(self.macros.values(), key=lambda item: item.index):
            text, origin = self._expand_lists(mdef.condition.value)
            ctx = (Context(f"macro '{mdef.name}'", mdef.position),)
            self._macro_texts[mdef.name] = (mdef, mdef.condition, origin)
            try:
                ast = parse_condition(text)
            except ConditionSyntaxError as exc:
                self.result.add(
                    Code.ERR_COMPILE_CONDITION,
                    exc.message,
                    locate(mdef.condition, origin, exc.offset),
                    (*ctx, Context("condition")),
                )
                continue
            info = MacroInfo(mdef.name, ast, mdef.visibility, mdef.index)
            info.wrap_error = _macro_wrapper(mdef, mdef.condition, origin)
            macro_infos[mdef.name] = info
        return macro_infos

    def _warn(self, message: str, offset: int, macro: str | None) -> None:
        """The compiler's warnings (deprecated fields), placed in the rule being built or its macro."""
        rule, text, origin = self._current[-1]
        ctx: tuple[Context, ...] = (Context(f"rule '{rule.name}'", rule.position),)
        if macro is not None and macro in self._macro_texts:
            mdef, mtext, morigin = self._macro_texts[macro]
            ctx = (*ctx, Context(f"macro '{macro}'", mdef.position))
            position = locate(mtext, morigin, offset)
        else:
            position = locate(text, origin, offset)
        self.result.add(Code.DEPRECATED_ITEM, message, position, ctx)

    def _build_rule(
        self,
        rule: RuleDef,
        compiler: Compiler,
        compile_output: Callable[[str], Any],
        macro_asts: Mapping[str, Node],
    ) -> CompiledRule | None:
        ctx = (Context(f"rule '{rule.name}'", rule.position),)
        if rule.source not in KNOWN_SOURCES:
            self.result.add(
                Code.UNKNOWN_SOURCE, Msg.UNKNOWN_SOURCE.format(source=rule.source), rule.position, ctx
            )
            return None
        full = self._with_exceptions(rule)
        text, origin = self._expand_lists(full.value)
        self._current.append((rule, full, origin))
        result = self._compile_rule(rule, full, text, origin, compiler, ctx)
        if result is None:
            return None
        formatter = self._compile_rule_output(rule, compile_output, ctx)
        if formatter is None:
            return None
        syscall = rule.source == SYSCALL
        if syscall and rule.warn_evttypes and (result.types.cofinite or len(result.types.names) > MAX_EVTTYPES):
            self.result.add(Code.NO_EVTTYPE, Msg.TOO_MANY_EVTTYPES, rule.position, ctx)
        ast = self._asts[rule.name]
        return CompiledRule(
            name=rule.name,
            index=rule.index,
            desc=rule.desc,
            priority=rule.priority,
            tags=tuple(rule.tags),
            source=rule.source,
            enabled=rule.enabled,
            predicate=result.predicate,
            types=result.types,
            output=rule.output,
            formatter=formatter,
            position=rule.position,
            capture=rule.capture,
            capture_duration=rule.capture_duration,
            # The engine specialises and generates code per event type for syscall rules only.
            specialize=functools.partial(compiler.specialize, ast) if syscall else None,
            condition_source=functools.partial(compiler.condition_source, ast) if syscall else None,
            condition_ast=ast,
            macro_asts=macro_asts,
        )

    def _report_unused(self, macro_infos: Mapping[str, MacroInfo]) -> None:
        for mdef in self.macros.values():
            minfo = macro_infos.get(mdef.name)
            if minfo is not None and not minfo.used:
                self.result.add(
                    Code.UNUSED_MACRO,
                    Msg.UNUSED_MACRO,
                    mdef.position,
                    (Context(f"macro '{mdef.name}'", mdef.position),),
                )
        for lst in self.lists.values():
            if not lst.used:
                self.result.add(
                    Code.UNUSED_LIST,
                    Msg.UNUSED_LIST,
                    lst.position,
                    (Context(f"list '{lst.name}'", lst.position),),
                )

    def _compile_rule(
        self,
        rule: RuleDef,
        full: Text,
        text: str,
        origin: list[int],
        compiler: Compiler,
        ctx: tuple[Context, ...],
    ) -> Compiled | None:
        try:
            ast: Node = parse_condition(text)
            compiled = compiler.compile(ast)
            self._asts[rule.name] = ast
            return compiled
        except RuleError as exc:
            # A rule that fails still refers to its macros: do not also call them unused.
            _mark_referenced(text, compiler.macros, self.macros)
            position = exc.position or locate(full, origin, exc.offset)
            contexts = (*ctx, *exc.contexts) if exc.contexts else (*ctx, Context("condition"))
            skippable = isinstance(exc, UnknownFieldError) and (
                rule.skip_if_unknown_filter or rule.source_file in self._missing_plugins
            )
            if skippable:
                reason = exc.message
                if rule.source_file in self._missing_plugins and not rule.skip_if_unknown_filter:
                    reason += f" (needs plugin {', '.join(self._missing_plugins[rule.source_file])})"
                self.result.add(
                    Code.UNKNOWN_FILTER, Msg.UNKNOWN_FILTER_SKIPPED.format(reason=reason), position, contexts
                )
            else:
                self.result.add(Code.ERR_COMPILE_CONDITION, exc.message, position, contexts)
            return None

    def _compile_rule_output(
        self, rule: RuleDef, compile_output: Callable[[str], Any], ctx: tuple[Context, ...]
    ) -> Any | None:
        try:
            formatter = compile_output(rule.output)
        except RuleError as exc:
            position = rule.output_position
            if exc.offset is not None and rule.output_node is not None and rule.output_source is not None:
                lead = len(rule.output_node.value) - len(rule.output_node.value.lstrip())
                position = rule.output_source.scalar_position(rule.output_node, exc.offset + lead)
            contexts = (*ctx, Context("output", rule.output_position))
            if isinstance(exc, UnknownFieldError) and rule.skip_if_unknown_filter:
                self.result.add(
                    Code.UNKNOWN_FILTER,
                    Msg.UNKNOWN_FILTER_SKIPPED.format(reason=exc.message),
                    position,
                    contexts,
                )
            else:
                self.result.add(Code.ERR_COMPILE_OUTPUT, exc.message, position, contexts)
            return None
        for message in getattr(formatter, "warnings", ()):
            self.result.add(Code.DEPRECATED_ITEM, message, rule.output_position, (*ctx, Context("output")))
        return formatter

    # -- lists: textual expansion with an origin map --

    def _expand_list_items(self, lst: ListDef) -> list[str]:
        out: list[str] = []
        for item in lst.items:
            other = self.lists.get(item)
            if other is not None and other is not lst and other.index < lst.visibility:
                other.used = True
                out.extend(other.expanded if other.expanded is not None else other.items)
            else:
                out.append(item)
        return out

    def _expand_lists(self, cond: str) -> tuple[str, list[int]]:
        """Falco's resolve_list: each list name delimited by blanks or ( ) , = (or the ends) becomes its items
        joined by ", " (items with a space are quoted); an empty list also takes a neighbouring comma.

        Returns the text and, for each of its characters, the offset in `cond` it came from.
        """
        if not self.lists:
            return cond, list(range(len(cond) + 1))
        out: list[str] = []
        origin: list[int] = []
        n = len(cond)
        i = 0
        for match in _TOKEN.finditer(cond):
            lst = self.lists.get(match.group())
            if lst is None:
                continue
            start, end = match.start(), match.end()
            lst.used = True
            items = lst.expanded if lst.expanded is not None else lst.items
            sub = ", ".join(quote_item(v) for v in items)
            # Consume the blanks around the name, as Falco does.
            while start > i and cond[start - 1] in _BLANK_CHARS:
                start -= 1
            while end < n and cond[end] in _BLANK_CHARS:
                end += 1
            if not sub:
                if start > i and cond[start - 1] == ",":
                    start -= 1
                elif end < n and cond[end] == ",":
                    end += 1
            out.append(cond[i:start])
            origin.extend(range(i, start))
            piece = (" " if start > 0 else "") + sub + " "
            out.append(piece)
            origin.extend([match.start()] * len(piece))
            i = end
        out.append(cond[i:])
        origin.extend(range(i, n))
        origin.append(n)
        return "".join(out), origin

    # -- exceptions as condition text --

    def _with_exceptions(self, rule: RuleDef) -> Text:
        clauses = [c for c in (exception_text(e) for e in rule.exceptions) if c]
        if not clauses:
            return rule.condition
        where = rule.exceptions_position or rule.position
        return rule.condition.wrapped(
            Piece("(", position=rule.condition.pieces[0].position if rule.condition.pieces else where),
            Piece(") and not (" + " or ".join(clauses) + ")", position=where),
        )


_TOKEN = re.compile(r"[^ \t\n\r(),=]+")
_BLANK_CHARS = " \t\n\r"


def locate(text: Text, origin: list[int], offset: int | None) -> Position | None:
    if offset is None:
        return text.locate(0)
    offset = min(max(offset, 0), len(origin) - 1)
    return text.locate(origin[offset])


def _mark_referenced(text: str, infos: Mapping[str, MacroInfo], defs: Mapping[str, MacroDef]) -> None:
    """Marks the macros named in `text` (and, transitively, in their conditions) as used."""
    todo = [text]
    while todo:
        for name in _IDENT.findall(todo.pop()):
            info = infos.get(name)
            if info is not None and not info.used:
                info.used = True
                if name in defs:
                    todo.append(defs[name].condition.value)


_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _macro_wrapper(mdef: MacroDef, text: Text, origin: list[int]) -> Callable[[RuleError], RuleError]:
    def wrap(exc: RuleError) -> RuleError:
        if exc.position is None:
            exc.position = locate(text, origin, exc.offset)
            exc.contexts = (
                Context(f"macro '{mdef.name}'", mdef.position),
                Context("condition"),
                *exc.contexts,
            )
        else:
            exc.contexts = (Context(f"macro '{mdef.name}'", mdef.position), *exc.contexts)
        return exc

    return wrap


def _source_compilers(
    macro_infos: dict[str, MacroInfo], resolvers: Any, bind: Callable[[Any], Any] | None, warn: Any
) -> tuple[Compiler, dict[str, Compiler]]:
    """One compiler per event source, each binding only its source's fields (rules/sources.py) and holding its
    own copies of the macros, so a macro is compiled (and its fields checked) for each source that uses it.
    Returns the syscall compiler (whose dispatch the engine uses) and all of them by source."""
    base = bind or (lambda ref: bind_field(ref, resolvers))
    out: dict[str, Compiler] = {}
    for source in sorted(KNOWN_SOURCES):
        infos = macro_infos if source == SYSCALL else {
            name: dataclasses.replace(info, predicate=None, types=None, used=False)
            for name, info in macro_infos.items()
        }  # fmt: skip
        out[source] = Compiler(infos, resolvers=resolvers, bind=scoped_bind(source, base), warn=warn)
    return out[SYSCALL], out
