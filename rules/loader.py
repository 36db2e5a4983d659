"""The rules loader: Falco rules YAML in, compiled rules and a LoadResult out.

Loading follows Falco's two phases. Collection reads every file in order (items `rule`, `macro`, `list`,
`required_engine_version`, `required_plugin_versions`), applies `append`/`override` and redefinitions (a
later definition replaces an earlier one in place, keeping its position in the evaluation order), and
remembers where every piece of text came from. Compilation then expands lists textually (Falco's
resolve_list), builds exception clauses as text, parses, expands macros on the AST and compiles each rule to
a closure with its event types, and compiles its output.

Nothing stops at the first problem: every error and warning becomes a Diagnostic with a stable code and a
file:line:column, the line and a caret, and its contexts outside-in (rule, then macro, then the spot). A
position inside a condition is mapped back through list expansion, appends and YAML folding to the file.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .alert import Priority
from .compiler import Compiled, Compiler, MacroInfo, TypeSet, bind_field
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
from .parser import ALL_OPS, LIST_OPS, Node, parse_condition
from .sources import KNOWN_SOURCES, NATIVE_PLUGINS, SYSCALL, scoped_bind

ENGINE_VERSION: tuple[int, int, int] = (0, 57, 0)
"""The Falco engine version whose rules language this engine implements (Falco 0.42's)."""
ENGINE_VERSION_TEXT = ".".join(map(str, ENGINE_VERSION))

# KNOWN_SOURCES and NATIVE_PLUGINS (container, k8saudit, json) live in rules/sources.py.

MAX_EVTTYPES = 100
"""Falco warns (LOAD_NO_EVTTYPE) when a rule can match more event types than this."""

_MACRO_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*\Z")
_LIST_NAME = re.compile(r"[^()\"'\s=,]+\Z")
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)\Z")

_RULE_KEYS = frozenset({
    "rule", "condition", "output", "desc", "priority", "source", "enabled", "tags", "exceptions",
    "warn_evttypes", "skip-if-unknown-filter", "capture", "capture_duration", "append", "override",
})  # fmt: skip
_RULE_APPENDABLE = frozenset({"condition", "output", "desc", "tags", "exceptions"})
_RULE_REPLACEABLE = frozenset({
    "condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "warn_evttypes",
    "skip-if-unknown-filter", "capture", "capture_duration",
})  # fmt: skip
_MACRO_KEYS = frozenset({"macro", "condition", "append", "override"})
_LIST_KEYS = frozenset({"list", "items", "append", "override"})
_EXC_KEYS = frozenset({"name", "fields", "comps", "values"})
_EXC_SINGLE_COMPS = frozenset(LIST_OPS)


# --- where text came from -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Source:
    """One rules file's text, with line starts for turning offsets into line:column."""

    name: str
    text: str
    line_starts: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = self.text.split("\n")
        starts = [0]
        for line in self.lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        self.line_starts = starts

    def position(self, line0: int, col0: int) -> Position:
        if line0 >= len(self.lines):
            # The YAML parser's end-of-stream mark lies past the last line: point at the end of the text.
            line0 = len(self.lines) - 1
            col0 = len(self.lines[line0])
        line0 = max(line0, 0)
        text = self.lines[line0] if self.lines else ""
        return Position(self.name, line0 + 1, max(col0, 0) + 1, text.rstrip("\r"))

    def node_position(self, node: yaml.Node) -> Position:
        return self.position(node.start_mark.line, node.start_mark.column)

    def scalar_position(self, node: yaml.ScalarNode, offset: int) -> Position:
        """The file position of character `offset` of a scalar's value.

        Walks the value and the raw YAML text side by side, matching non-blank characters, so folded and
        block scalars (where YAML rewrote line breaks and indentation) still map to the right spot.
        """
        start = self.line_starts[node.start_mark.line] + node.start_mark.column
        end_line = min(node.end_mark.line, len(self.line_starts) - 1)
        end = self.line_starts[end_line] + node.end_mark.column
        raw = self.text[start:end]
        value: str = node.value
        j = 0
        if node.style in ("|", ">"):
            nl = raw.find("\n")
            j = nl + 1 if nl >= 0 else len(raw)
        elif node.style in ('"', "'"):
            j = 1
        target = None
        for i, ch in enumerate(value):
            if ch.isspace():
                continue
            k = raw.find(ch, j)
            if k < 0:
                break
            if i >= offset:
                target = k
                break
            j = k + 1
        if target is None:
            target = min(j, len(raw))
        absolute = start + target
        line0 = bisect.bisect_right(self.line_starts, absolute) - 1
        return self.position(line0, absolute - self.line_starts[line0])


@dataclass(slots=True)
class Piece:
    """A run of condition text: from a YAML scalar (node set) or synthesized (placed at `position`)."""

    text: str
    source: Source | None = None
    node: yaml.ScalarNode | None = None
    position: Position | None = None


class Text:
    """Condition text assembled from pieces (a definition and its appends), each locatable in its file."""

    def __init__(self, pieces: Sequence[Piece] = ()) -> None:
        self.pieces: list[Piece] = list(pieces)

    def appended(self, piece: Piece) -> Text:
        """Falco's append: the texts joined with a single space, no parentheses added."""
        return Text([*self.pieces, Piece(" ", position=piece.position), piece])

    def wrapped(self, before: Piece, after: Piece) -> Text:
        return Text([before, *self.pieces, after])

    @property
    def value(self) -> str:
        return "".join(p.text for p in self.pieces)

    def locate(self, offset: int) -> Position | None:
        if not self.pieces:
            return None
        pos = 0
        for piece in self.pieces:
            n = len(piece.text)
            if offset < pos + n:
                return _piece_position(piece, offset - pos)
            pos += n
        last = self.pieces[-1]
        return _piece_position(last, len(last.text))


def _piece_position(piece: Piece, rel: int) -> Position | None:
    if piece.node is not None and piece.source is not None:
        return piece.source.scalar_position(piece.node, rel)
    return piece.position


# --- collected definitions ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ListDef:
    name: str
    items: list[str]
    index: int
    visibility: int
    position: Position
    used: bool = False
    expanded: list[str] | None = None


@dataclass(slots=True)
class MacroDef:
    name: str
    condition: Text
    index: int
    visibility: int
    position: Position


@dataclass(slots=True)
class ExceptionDef:
    name: str
    fields: list[str] | str
    comps: list[str] | str
    values: list[Any]
    position: Position


@dataclass(slots=True)
class RuleDef:
    name: str
    index: int
    position: Position
    source_file: str
    condition: Text
    output: str
    output_position: Position | None
    desc: str
    priority: Priority
    output_node: yaml.ScalarNode | None = None
    output_source: Source | None = None
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    source: str = "syscall"
    exceptions: list[ExceptionDef] = field(default_factory=list)
    exceptions_position: Position | None = None
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False
    capture: bool = False
    capture_duration: int | None = None


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


# --- the loader ---------------------------------------------------------------------------------------------


class _ItemError(Exception):
    """Aborts one item (already reported)."""


class Loader:
    """Collects several rules files in order, then compiles them: `add_file`/`add_text`, then `compile()`."""

    def __init__(self) -> None:
        self.result = LoadResult()
        self.lists: dict[str, ListDef] = {}
        self.macros: dict[str, MacroDef] = {}
        self.rules: dict[str, RuleDef] = {}
        self._counter = 0
        self._asts: dict[str, Node] = {}
        self._missing_plugins: dict[str, list[str]] = {}  # file -> plugins it needs that we lack

    # -- reading --

    def add_file(self, path: str | Path) -> None:
        name = str(path)
        self.result.files.append(name)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.result.add(Code.ERR_FILE_READ, Msg.FILE_READ.format(reason=reason), Position(name, 1, 1))
            return
        self._add(Source(name, text))

    def add_text(self, name: str, text: str) -> None:
        self.result.files.append(name)
        self._add(Source(name, text))

    def _add(self, src: Source) -> None:
        loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            docs = list(yaml.compose_all(src.text, Loader=loader_cls))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            pos = src.position(mark.line, mark.column) if mark else Position(src.name, 1, 1)
            reason = exc.problem or str(exc)
            self.result.add(Code.ERR_YAML_PARSE, Msg.YAML_PARSE.format(reason=reason), pos)
            return
        except yaml.YAMLError as exc:
            self.result.add(Code.ERR_YAML_PARSE, Msg.YAML_PARSE.format(reason=exc), Position(src.name, 1, 1))
            return
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, yaml.SequenceNode):
                self.result.add(Code.ERR_YAML_VALIDATE, Msg.NOT_ARRAY, src.node_position(doc))
                continue
            for item in doc.value:
                try:
                    self._item(src, item)
                except _ItemError:
                    pass

    def _item(self, src: Source, item: yaml.Node) -> None:
        pos = src.node_position(item)
        if not isinstance(item, yaml.MappingNode):
            self.result.add(Code.ERR_YAML_VALIDATE, Msg.NOT_MAPPING, pos)
            return
        keys = _mapping(item)
        if "required_engine_version" in keys:
            self._engine_version(src, keys, pos)
        elif "required_plugin_versions" in keys:
            self._plugin_versions(src, keys, pos)
        elif "list" in keys:
            self._list(src, keys, pos)
        elif "macro" in keys:
            self._macro(src, keys, pos)
        elif "rule" in keys:
            self._rule(src, keys, pos)
        else:
            self.result.add(Code.UNKNOWN_ITEM, Msg.UNKNOWN_ITEM, pos)

    # -- scalar helpers (each reports and raises _ItemError) --

    def _err(
        self, code: Code, message: str, position: Position | None, ctx: tuple[Context, ...]
    ) -> _ItemError:
        self.result.add(code, message, position, ctx)
        return _ItemError()

    def _scalar(
        self, src: Source, node: yaml.Node, ctx: tuple[Context, ...], *, non_empty: bool = True
    ) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.NOT_SCALAR, src.node_position(node), ctx)
        if node.tag.endswith(":null"):
            value = ""
        else:
            value = str(node.value)
        if non_empty and value == "":
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.NON_EMPTY, src.node_position(node), ctx)
        return value

    def _bool(self, src: Source, node: yaml.Node, ctx: tuple[Context, ...]) -> bool:
        if isinstance(node, yaml.ScalarNode):
            value = _construct(node)
            if isinstance(value, bool):
                return value
        raise self._err(Code.ERR_YAML_VALIDATE, Msg.NOT_BOOL, src.node_position(node), ctx)

    def _str_seq(self, src: Source, node: yaml.Node, ctx: tuple[Context, ...]) -> list[str]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.NOT_SEQUENCE, src.node_position(node), ctx)
        out = []
        for child in node.value:
            if not isinstance(child, yaml.ScalarNode):
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.LIST_ITEM_SCALAR, src.node_position(child), ctx)
            out.append(str(child.value))
        return out

    def _unknown_keys(
        self,
        src: Source,
        keys: dict[str, tuple[yaml.Node, yaml.Node]],
        allowed: frozenset[str],
        ctx: tuple[Context, ...],
    ) -> None:
        for key, (knode, _v) in keys.items():
            if key not in allowed:
                self.result.add(
                    Code.UNKNOWN_KEY, Msg.UNKNOWN_KEY.format(key=key), src.node_position(knode), ctx
                )

    def _next_id(self) -> int:
        self._counter += 1
        return self._counter

    # -- required_engine_version / required_plugin_versions --

    def _engine_version(
        self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], pos: Position
    ) -> None:
        node = keys["required_engine_version"][1]
        ctx = (Context("required_engine_version", pos),)
        text = self._scalar(src, node, ctx)
        version = _parse_version(text)
        if version is None:
            raise self._err(
                Code.ERR_YAML_VALIDATE,
                Msg.ENGINE_VERSION_PARSE.format(value=text),
                src.node_position(node),
                ctx,
            )
        if version > ENGINE_VERSION:
            self.result.add(
                Code.ERR_VALIDATE,
                Msg.ENGINE_VERSION_TOO_OLD.format(
                    file=src.name, need=".".join(map(str, version)), have=ENGINE_VERSION_TEXT
                ),
                src.node_position(node),
                ctx,
            )

    def _plugin_versions(
        self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], pos: Position
    ) -> None:
        node = keys["required_plugin_versions"][1]
        ctx = (Context("required_plugin_versions", pos),)
        if not isinstance(node, yaml.SequenceNode):
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.PLUGIN_VERSIONS_SEQ, src.node_position(node), ctx)
        for entry in node.value:
            if not isinstance(entry, yaml.MappingNode):
                self.result.add(
                    Code.ERR_YAML_VALIDATE, Msg.PLUGIN_VERSION_MAPPING, src.node_position(entry), ctx
                )
                continue
            ekeys = _mapping(entry)
            try:
                names = [self._plugin_requirement(src, ekeys, entry, ctx)]
                if "alternatives" in ekeys:
                    alts = ekeys["alternatives"][1]
                    if not isinstance(alts, yaml.SequenceNode):
                        raise self._err(
                            Code.ERR_YAML_VALIDATE, Msg.NOT_SEQUENCE, src.node_position(alts), ctx
                        )
                    for alt in alts.value:
                        if not isinstance(alt, yaml.MappingNode):
                            raise self._err(
                                Code.ERR_YAML_VALIDATE,
                                Msg.PLUGIN_VERSION_MAPPING,
                                src.node_position(alt),
                                ctx,
                            )
                        names.append(self._plugin_requirement(src, _mapping(alt), alt, ctx))
            except _ItemError:
                continue
            if not any(name in NATIVE_PLUGINS for name, _ in names):
                name, version = names[0]
                self._missing_plugins.setdefault(src.name, []).append(name)
                self.result.add(
                    Code.WARNING_EXTENSION,
                    Msg.PLUGIN_NOT_LOADED.format(name=name, version=version),
                    src.node_position(entry),
                    ctx,
                )

    def _plugin_requirement(
        self,
        src: Source,
        keys: dict[str, tuple[yaml.Node, yaml.Node]],
        node: yaml.Node,
        ctx: tuple[Context, ...],
    ) -> tuple[str, str]:
        for key in ("name", "version"):
            if key not in keys:
                raise self._err(
                    Code.ERR_YAML_VALIDATE, Msg.NO_MAPPING.format(key=key), src.node_position(node), ctx
                )
        name = self._scalar(src, keys["name"][1], ctx)
        version = self._scalar(src, keys["version"][1], ctx)
        if _parse_version(version) is None:
            raise self._err(
                Code.ERR_YAML_VALIDATE,
                Msg.PLUGIN_VERSION_INVALID.format(version=version, name=name),
                src.node_position(keys["version"][1]),
                ctx,
            )
        return name, version

    # -- override / append --

    def _override(
        self,
        src: Source,
        keys: dict[str, tuple[yaml.Node, yaml.Node]],
        ctx: tuple[Context, ...],
        appendable: frozenset[str],
        replaceable: frozenset[str],
        identity: str,
    ) -> tuple[dict[str, str], bool]:
        """Reads `override:` and `append:`; returns ({key: 'append'|'replace'}, append_flag)."""
        append = False
        if "append" in keys:
            append = self._bool(src, keys["append"][1], ctx)
            if append:
                self.result.add(
                    Code.DEPRECATED_ITEM, Msg.APPEND_DEPRECATED, src.node_position(keys["append"][0]), ctx
                )
        ops: dict[str, str] = {}
        if "override" not in keys:
            return ops, append
        onode = keys["override"][1]
        if append:
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.OVERRIDE_AND_APPEND, src.node_position(onode), ctx)
        if not isinstance(onode, yaml.MappingNode):
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.OVERRIDE_NOT_MAPPING, src.node_position(onode), ctx)
        for key, (knode, vnode) in _mapping(onode).items():
            op = self._scalar(src, vnode, ctx)
            if op not in ("append", "replace"):
                raise self._err(
                    Code.ERR_YAML_VALIDATE,
                    Msg.OVERRIDE_BAD_OP.format(key=key, op=op),
                    src.node_position(vnode),
                    ctx,
                )
            if op == "append" and key not in appendable:
                raise self._err(
                    Code.ERR_YAML_VALIDATE,
                    Msg.OVERRIDE_CANT_APPEND.format(key=key),
                    src.node_position(knode),
                    ctx,
                )
            if op == "replace" and key not in replaceable:
                raise self._err(
                    Code.ERR_YAML_VALIDATE,
                    Msg.OVERRIDE_CANT_REPLACE.format(key=key),
                    src.node_position(knode),
                    ctx,
                )
            if key not in keys:
                raise self._err(
                    Code.ERR_YAML_VALIDATE,
                    Msg.OVERRIDE_MISSING_KEY.format(op=op, key=key),
                    src.node_position(knode),
                    ctx,
                )
            ops[key] = op
        for key, (knode, _v) in keys.items():
            if key in (identity, "override") or key not in (appendable | replaceable):
                continue
            if key not in ops:
                raise self._err(
                    Code.ERR_YAML_VALIDATE,
                    Msg.OVERRIDE_UNEXPECTED_KEY.format(key=key),
                    src.node_position(knode),
                    ctx,
                )
        return ops, append

    # -- list --

    def _list(self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], pos: Position) -> None:
        ctx0 = (Context("list", pos),)
        name = self._scalar(src, keys["list"][1], ctx0)
        ctx = (Context(f"list '{name}'", pos),)
        self._unknown_keys(src, keys, _LIST_KEYS, ctx)
        if not _LIST_NAME.match(name):
            self.result.add(Code.INVALID_LIST_NAME, Msg.INVALID_LIST_NAME.format(name=name), pos, ctx)
        ops, append = self._override(src, keys, ctx, frozenset({"items"}), frozenset({"items"}), "list")
        if "items" not in keys:
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.NO_MAPPING.format(key="items"), pos, ctx)
        items = self._str_seq(src, keys["items"][1], ctx)
        vid = self._next_id()
        prev = self.lists.get(name)
        if append or ops.get("items") == "append":
            if prev is None:
                raise self._err(Code.ERR_VALIDATE, Msg.NO_PREVIOUS_LIST, pos, ctx)
            prev.items.extend(items)
            prev.visibility = vid
            return
        if prev is not None:
            prev.items, prev.visibility, prev.position = items, vid, pos
            return
        if ops.get("items") == "replace":
            raise self._err(Code.ERR_VALIDATE, Msg.NO_PREVIOUS_LIST_REPLACE, pos, ctx)
        self.lists[name] = ListDef(name, items, vid, vid, pos)

    # -- macro --

    def _macro(self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], pos: Position) -> None:
        ctx0 = (Context("macro", pos),)
        name = self._scalar(src, keys["macro"][1], ctx0)
        ctx = (Context(f"macro '{name}'", pos),)
        self._unknown_keys(src, keys, _MACRO_KEYS, ctx)
        if not _MACRO_NAME.match(name):
            self.result.add(Code.INVALID_MACRO_NAME, Msg.INVALID_MACRO_NAME.format(name=name), pos, ctx)
        ops, append = self._override(
            src, keys, ctx, frozenset({"condition"}), frozenset({"condition"}), "macro"
        )
        if "condition" not in keys:
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.NO_MAPPING.format(key="condition"), pos, ctx)
        cnode = keys["condition"][1]
        cond = self._scalar(src, cnode, ctx)
        piece = Piece(cond, src, cnode, src.node_position(cnode))  # type: ignore[arg-type]
        vid = self._next_id()
        prev = self.macros.get(name)
        if append or ops.get("condition") == "append":
            if prev is None:
                raise self._err(Code.ERR_VALIDATE, Msg.NO_PREVIOUS_MACRO, pos, ctx)
            prev.condition = prev.condition.appended(piece)
            prev.visibility = vid
            return
        if prev is not None:
            prev.condition, prev.visibility, prev.position = Text([piece]), vid, pos
            return
        if ops.get("condition") == "replace":
            raise self._err(Code.ERR_VALIDATE, Msg.NO_PREVIOUS_MACRO_REPLACE, pos, ctx)
        self.macros[name] = MacroDef(name, Text([piece]), vid, vid, pos)

    # -- rule --

    def _rule(self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], pos: Position) -> None:
        ctx0 = (Context("rule", pos),)
        name = self._scalar(src, keys["rule"][1], ctx0)
        ctx = (Context(f"rule '{name}'", pos),)
        self._unknown_keys(src, keys, _RULE_KEYS, ctx)
        ops, append = self._override(src, keys, ctx, _RULE_APPENDABLE, _RULE_REPLACEABLE, "rule")
        prev = self.rules.get(name)
        vid = self._next_id()
        if ops:
            if prev is None:
                raise self._err(Code.ERR_VALIDATE, Msg.NO_PREVIOUS_RULE, pos, ctx)
            self._rule_override(src, keys, ops, prev, ctx)
            return
        if append:
            if prev is None:
                raise self._err(Code.ERR_VALIDATE, Msg.NO_PREVIOUS_RULE, pos, ctx)
            if "condition" not in keys and "exceptions" not in keys:
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.APPEND_NEEDS_COND, pos, ctx)
            if "condition" in keys:
                prev.condition = prev.condition.appended(self._cond_piece(src, keys, ctx))
            if "exceptions" in keys:
                self._append_exceptions(src, keys, prev, ctx)
            return
        if not any(k in keys for k in ("condition", "output", "desc", "priority")):
            # An enable-only item toggles an earlier rule (deprecated form).
            if "enabled" not in keys:
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.NO_MAPPING.format(key="condition"), pos, ctx)
            self.result.add(Code.DEPRECATED_ITEM, Msg.ENABLED_DEPRECATED, pos, ctx)
            if prev is None:
                raise self._err(Code.ERR_VALIDATE, Msg.NO_PREVIOUS_RULE_ENABLE, pos, ctx)
            prev.enabled = self._bool(src, keys["enabled"][1], ctx)
            return
        for key in ("condition", "output", "desc", "priority"):
            if key not in keys:
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.NO_MAPPING.format(key=key), pos, ctx)
        rule = RuleDef(
            name=name,
            index=prev.index if prev is not None else vid,
            position=pos,
            source_file=src.name,
            condition=Text([self._cond_piece(src, keys, ctx)]),
            output=self._scalar(src, keys["output"][1], ctx).strip(),
            output_position=src.node_position(keys["output"][1]),
            output_node=keys["output"][1],  # type: ignore[arg-type]
            output_source=src,
            desc=self._scalar(src, keys["desc"][1], ctx, non_empty=False),
            priority=self._priority(src, keys["priority"][1], ctx),
        )
        self._rule_options(src, keys, rule, ctx)
        if "source" in keys:
            rule.source = self._scalar(src, keys["source"][1], ctx)
        if prev is not None and prev.source != rule.source:
            raise self._err(Code.ERR_VALIDATE, Msg.SOURCE_CHANGED, pos, ctx)
        if "exceptions" in keys:
            rule.exceptions = self._exceptions(src, keys["exceptions"][1], ctx, require_full=True)
            rule.exceptions_position = src.node_position(keys["exceptions"][0])
        self.rules[name] = rule

    def _cond_piece(
        self, src: Source, keys: dict[str, tuple[yaml.Node, yaml.Node]], ctx: tuple[Context, ...]
    ) -> Piece:
        cnode = keys["condition"][1]
        return Piece(self._scalar(src, cnode, ctx), src, cnode, src.node_position(cnode))  # type: ignore[arg-type]

    def _priority(self, src: Source, node: yaml.Node, ctx: tuple[Context, ...]) -> Priority:
        text = self._scalar(src, node, ctx)
        try:
            return Priority.parse(text)
        except ValueError:
            raise self._err(
                Code.ERR_YAML_VALIDATE, Msg.INVALID_PRIORITY.format(value=text), src.node_position(node), ctx
            ) from None

    def _rule_options(
        self,
        src: Source,
        keys: dict[str, tuple[yaml.Node, yaml.Node]],
        rule: RuleDef,
        ctx: tuple[Context, ...],
    ) -> None:
        """The optional keys, read the same way for a definition and for `override: replace`."""
        if "tags" in keys:
            rule.tags = self._str_seq(src, keys["tags"][1], ctx)
        if "enabled" in keys:
            rule.enabled = self._bool(src, keys["enabled"][1], ctx)
        if "warn_evttypes" in keys:
            rule.warn_evttypes = self._bool(src, keys["warn_evttypes"][1], ctx)
        if "skip-if-unknown-filter" in keys:
            rule.skip_if_unknown_filter = self._bool(src, keys["skip-if-unknown-filter"][1], ctx)
        if "capture" in keys:
            rule.capture = self._bool(src, keys["capture"][1], ctx)
        if "capture_duration" in keys:
            node = keys["capture_duration"][1]
            value = _construct(node) if isinstance(node, yaml.ScalarNode) else None
            if not isinstance(value, int) or isinstance(value, bool):
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.NOT_BOOL, src.node_position(node), ctx)
            rule.capture_duration = value

    def _rule_override(
        self,
        src: Source,
        keys: dict[str, tuple[yaml.Node, yaml.Node]],
        ops: dict[str, str],
        prev: RuleDef,
        ctx: tuple[Context, ...],
    ) -> None:
        if not any(op == "replace" for op in ops.values()) and not any(op == "append" for op in ops.values()):
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.NOTHING_TO_REPLACE, None, ctx)
        for key, op in ops.items():
            node = keys[key][1]
            if key == "condition":
                piece = self._cond_piece(src, keys, ctx)
                prev.condition = prev.condition.appended(piece) if op == "append" else Text([piece])
            elif key == "output":
                text = self._scalar(src, node, ctx).strip()
                prev.output = f"{prev.output} {text}" if op == "append" else text
                prev.output_position = src.node_position(node)
                # An appended output no longer maps onto one scalar; replace keeps the mapping.
                prev.output_node = node if op == "replace" else None  # type: ignore[assignment]
                prev.output_source = src
            elif key == "desc":
                text = self._scalar(src, node, ctx, non_empty=False)
                prev.desc = f"{prev.desc} {text}" if op == "append" else text
            elif key == "priority":
                prev.priority = self._priority(src, node, ctx)
            elif key == "tags":
                tags = self._str_seq(src, node, ctx)
                prev.tags = prev.tags + [t for t in tags if t not in prev.tags] if op == "append" else tags
            elif key == "exceptions":
                if op == "append":
                    self._append_exceptions(src, keys, prev, ctx)
                else:
                    prev.exceptions = self._exceptions(src, node, ctx, require_full=True)
                    prev.exceptions_position = src.node_position(keys["exceptions"][0])
            else:
                self._rule_options(src, {key: keys[key]}, prev, ctx)

    # -- exceptions --

    def _exceptions(
        self, src: Source, node: yaml.Node, ctx: tuple[Context, ...], *, require_full: bool
    ) -> list[ExceptionDef]:
        if not isinstance(node, yaml.SequenceNode):
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_SEQUENCE, src.node_position(node), ctx)
        out: list[ExceptionDef] = []
        seen: set[str] = set()
        for enode in node.value:
            epos = src.node_position(enode)
            if not isinstance(enode, yaml.MappingNode):
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_MAPPING, epos, ctx)
            ek = _mapping(enode)
            if "name" not in ek:
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_NO_NAME, epos, ctx)
            name = self._scalar(src, ek["name"][1], ctx)
            ectx = (*ctx, Context(f"exception '{name}'", epos))
            self._unknown_keys(src, ek, _EXC_KEYS, ectx)
            if name in seen:
                self.result.add(
                    Code.EXCEPTION_NAME_NOT_UNIQUE, Msg.EXC_NOT_UNIQUE.format(name=name), epos, ectx
                )
            seen.add(name)
            out.append(self._exception(src, ek, name, epos, ectx, require_full=require_full))
        return out

    def _exception(
        self,
        src: Source,
        ek: dict[str, tuple[yaml.Node, yaml.Node]],
        name: str,
        epos: Position,
        ctx: tuple[Context, ...],
        *,
        require_full: bool,
    ) -> ExceptionDef:
        fields: list[str] | str = []
        comps: list[str] | str = []
        if "fields" in ek:
            fnode = ek["fields"][1]
            if isinstance(fnode, yaml.SequenceNode):
                fields = self._str_seq(src, fnode, ctx)
            else:
                fields = self._scalar(src, fnode, ctx)
        elif require_full:
            raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_NO_FIELDS, epos, ctx)
        if "comps" in ek:
            cnode = ek["comps"][1]
            if isinstance(fields, str):
                if not isinstance(cnode, yaml.ScalarNode):
                    raise self._err(
                        Code.ERR_YAML_VALIDATE, Msg.EXC_BOTH_STRINGS, src.node_position(cnode), ctx
                    )
                comps = self._scalar(src, cnode, ctx)
            else:
                if not isinstance(cnode, yaml.SequenceNode):
                    raise self._err(
                        Code.ERR_YAML_VALIDATE, Msg.EXC_BOTH_STRINGS, src.node_position(cnode), ctx
                    )
                comps = self._str_seq(src, cnode, ctx)
        else:
            comps = "in" if isinstance(fields, str) else ["="] * len(fields)
        if isinstance(fields, str):
            if comps not in _EXC_SINGLE_COMPS:
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_SINGLE_COMP, epos, ctx)
        else:
            assert isinstance(comps, list)
            if len(comps) != len(fields):
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_COMPS_LEN, epos, ctx)
            for comp in comps:
                if comp not in ALL_OPS or comp == "exists":
                    raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_BAD_COMP.format(comp=comp), epos, ctx)
        values: list[Any] = []
        if "values" in ek:
            vnode = ek["values"][1]
            if not isinstance(vnode, yaml.SequenceNode):
                raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_VALUES_SEQ, src.node_position(vnode), ctx)
            raw = _construct_deep(vnode)
            if isinstance(fields, list) and (fields or "fields" in ek):
                for tup in raw:
                    if not isinstance(tup, list):
                        raise self._err(
                            Code.ERR_YAML_VALIDATE, Msg.EXC_VALUES_LISTS, src.node_position(vnode), ctx
                        )
                    if len(tup) != len(fields):
                        raise self._err(
                            Code.ERR_YAML_VALIDATE, Msg.EXC_VALUES_LEN, src.node_position(vnode), ctx
                        )
            values = raw
        return ExceptionDef(name, fields, comps, values, epos)

    def _append_exceptions(
        self,
        src: Source,
        keys: dict[str, tuple[yaml.Node, yaml.Node]],
        prev: RuleDef,
        ctx: tuple[Context, ...],
    ) -> None:
        """Appending: a known exception name may only add values; a new name must be complete."""
        for exc in self._exceptions(src, keys["exceptions"][1], ctx, require_full=False):
            existing = next((e for e in prev.exceptions if e.name == exc.name), None)
            ectx = (*ctx, Context(f"exception '{exc.name}'", exc.position))
            if existing is not None:
                if exc.fields:
                    raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_APPEND_FIELDS, exc.position, ectx)
                if not exc.values:
                    self.result.add(Code.APPEND_NO_VALUES, Msg.EXC_NO_VALUES, exc.position, ectx)
                if isinstance(existing.fields, list):
                    for tup in exc.values:
                        if not isinstance(tup, list) or len(tup) != len(existing.fields):
                            raise self._err(Code.ERR_YAML_VALIDATE, Msg.EXC_VALUES_LEN, exc.position, ectx)
                existing.values.extend(exc.values)
            else:
                if not exc.fields or not exc.values:
                    raise self._err(
                        Code.ERR_YAML_VALIDATE, Msg.EXC_APPEND_NEW.format(name=exc.name), exc.position, ectx
                    )
                prev.exceptions.append(exc)
        if prev.exceptions_position is None:
            prev.exceptions_position = src.node_position(keys["exceptions"][0])

    # -- compiling --

    def compile(
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
        macro_infos: dict[str, MacroInfo] = {}
        macro_texts: dict[str, tuple[MacroDef, Text, list[int]]] = {}
        for mdef in sorted(self.macros.values(), key=lambda item: item.index):
            text, origin = self._expand_lists(mdef.condition.value)
            ctx = (Context(f"macro '{mdef.name}'", mdef.position),)
            macro_texts[mdef.name] = (mdef, mdef.condition, origin)
            try:
                ast = parse_condition(text)
            except ConditionSyntaxError as exc:
                self.result.add(
                    Code.ERR_COMPILE_CONDITION,
                    exc.message,
                    _locate(mdef.condition, origin, exc.offset),
                    (*ctx, Context("condition")),
                )
                continue
            info = MacroInfo(mdef.name, ast, mdef.visibility, mdef.index)
            info.wrap_error = _macro_wrapper(mdef, mdef.condition, origin)
            macro_infos[mdef.name] = info

        if compile_output is None:
            from .output import compile_output as default_compile_output

            compile_output = default_compile_output

        current: list[tuple[RuleDef, Text, list[int]]] = []

        def warn(message: str, offset: int, macro: str | None) -> None:
            rule, text, origin = current[-1]
            ctx: tuple[Context, ...] = (Context(f"rule '{rule.name}'", rule.position),)
            if macro is not None and macro in macro_texts:
                mdef, mtext, morigin = macro_texts[macro]
                ctx = (*ctx, Context(f"macro '{macro}'", mdef.position))
                position = _locate(mtext, morigin, offset)
            else:
                position = _locate(text, origin, offset)
            self.result.add(Code.DEPRECATED_ITEM, message, position, ctx)

        compiler, compilers = _source_compilers(macro_infos, resolvers, bind, warn)
        macro_asts = {name: info.ast for name, info in macro_infos.items()}
        compiled: list[CompiledRule] = []
        for rule in sorted(self.rules.values(), key=lambda item: item.index):
            ctx = (Context(f"rule '{rule.name}'", rule.position),)
            if rule.source not in KNOWN_SOURCES:
                self.result.add(
                    Code.UNKNOWN_SOURCE, Msg.UNKNOWN_SOURCE.format(source=rule.source), rule.position, ctx
                )
                continue
            full = self._with_exceptions(rule)
            text, origin = self._expand_lists(full.value)
            current.append((rule, full, origin))
            rule_compiler = compilers[rule.source]
            syscall = rule.source == SYSCALL
            result = self._compile_rule(rule, full, text, origin, rule_compiler, ctx)
            if result is None:
                continue
            formatter = self._compile_rule_output(rule, compile_output, ctx)
            if formatter is None:
                continue
            if syscall and rule.warn_evttypes and (result.types.cofinite or len(result.types.names) > MAX_EVTTYPES):
                self.result.add(Code.NO_EVTTYPE, Msg.TOO_MANY_EVTTYPES, rule.position, ctx)
            compiled.append(
                CompiledRule(
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
                    specialize=functools.partial(compiler.specialize, self._asts[rule.name]) if syscall else None,
                    condition_source=(
                        functools.partial(compiler.condition_source, self._asts[rule.name]) if syscall else None
                    ),
                    condition_ast=self._asts[rule.name],
                    macro_asts=macro_asts,
                )
            )
        for other in compilers.values():  # a macro used by any source's rules is used
            for name, info in other.macros.items():
                if info.used and name in macro_infos:
                    macro_infos[name].used = True
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
        return Ruleset(
            compiled,
            self.result,
            {name: list(lst.expanded or []) for name, lst in self.lists.items()},
            list(self.macros),
            compiler.dispatch,
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
            position = exc.position or _locate(full, origin, exc.offset)
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
            sub = ", ".join(_quote_item(v) for v in items)
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
        clauses = [c for c in (_exception_text(e) for e in rule.exceptions) if c]
        if not clauses:
            return rule.condition
        where = rule.exceptions_position or rule.position
        return rule.condition.wrapped(
            Piece("(", position=rule.condition.pieces[0].position if rule.condition.pieces else where),
            Piece(") and not (" + " or ".join(clauses) + ")", position=where),
        )


_TOKEN = re.compile(r"[^ \t\n\r(),=]+")
_BLANK_CHARS = " \t\n\r"


def _quote_item(item: str) -> str:
    """Falco's quote_item: an item with a space is wrapped in double quotes unless already quoted."""
    if " " in item and not item.startswith(('"', "'")):
        return f'"{item}"'
    return item


def _paren_item(item: str) -> str:
    return item if item.startswith("(") else f"({item})"


def _exception_value(comp: str, value: Any) -> str:
    if comp in LIST_OPS:
        if isinstance(value, list):
            return "(" + ", ".join(_quote_item(str(v)) for v in value) + ")"
        return _paren_item(str(value))
    if isinstance(value, list):
        return "(" + ", ".join(_quote_item(str(v)) for v in value) + ")"
    return _quote_item(_scalar_text(value))


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _exception_text(exc: ExceptionDef) -> str:
    """An exception as Falco builds it: list form `(f1 c1 v1 and f2 c2 v2) or (...)`; single form
    `f c (v1, v2)`. No values: no clause."""
    if not exc.values:
        return ""
    if isinstance(exc.fields, str):
        assert isinstance(exc.comps, str)
        return f"{exc.fields} {exc.comps} ({', '.join(_quote_item(_scalar_text(v)) for v in exc.values)})"
    assert isinstance(exc.comps, list)
    tuples = []
    for tup in exc.values:
        parts = [
            f"{f} {c} {_exception_value(c, v)}" for f, c, v in zip(exc.fields, exc.comps, tup, strict=True)
        ]
        tuples.append("(" + " and ".join(parts) + ")")
    return " or ".join(tuples)


def _locate(text: Text, origin: list[int], offset: int | None) -> Position | None:
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
            exc.position = _locate(text, origin, exc.offset)
            exc.contexts = (
                Context(f"macro '{mdef.name}'", mdef.position),
                Context("condition"),
                *exc.contexts,
            )
        else:
            exc.contexts = (Context(f"macro '{mdef.name}'", mdef.position), *exc.contexts)
        return exc

    return wrap


# --- YAML helpers -------------------------------------------------------------------------------------------

_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _construct(node: yaml.ScalarNode) -> Any:
    return _CONSTRUCTOR.construct_object(node, deep=True)


def _construct_deep(node: yaml.Node) -> Any:
    value = _CONSTRUCTOR.construct_object(node, deep=True)
    return value


def _mapping(node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for knode, vnode in node.value:
        key = str(knode.value) if isinstance(knode, yaml.ScalarNode) else repr(knode)
        out[key] = (knode, vnode)
    return out


def _parse_version(text: str) -> tuple[int, int, int] | None:
    """Falco's engine versions: a semver string, or an integer N meaning 0.N.0."""
    t = text.strip()
    if t.isdigit():
        return (0, int(t), 0)
    m = _SEMVER.match(t)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def load_files(
    paths: Iterable[str | Path],
    *,
    resolvers: Any = None,
    compile_output: Callable[[str], Any] | None = None,
) -> Ruleset:
    """Loads several rules files in order (later definitions win) and compiles them."""
    loader = Loader()
    for path in paths:
        loader.add_file(path)
    return loader.compile(resolvers=resolvers, compile_output=compile_output)


def load_texts(
    texts: Iterable[tuple[str, str]],
    *,
    resolvers: Any = None,
    compile_output: Callable[[str], Any] | None = None,
) -> Ruleset:
    """Like load_files, from (name, text) pairs: for tests and for rules that do not live in files."""
    loader = Loader()
    for name, text in texts:
        loader.add_text(name, text)
    return loader.compile(resolvers=resolvers, compile_output=compile_output)


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
