"""Collecting, the middle phase of a load: items in file order to definitions (definitions.py).

Falco's semantics: a later `rule`/`macro`/`list` with an existing name replaces the earlier one in place
(keeping its position in the evaluation order); `append: true` (deprecated) and `override: {key: append |
replace}` change an earlier definition key by key; an enable-only rule item toggles an earlier rule.
Requirement items (requirements.py) and exceptions (rule_exceptions.py) are read by the mixed-in readers.
Every problem is a diagnostic in `result`; a bad item is skipped, the load goes on.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from falconet.model.alert import Priority

from .definitions import ListDef, MacroDef, RuleDef
from .errors import Code, Context, Msg, Position
from .reader import ItemError, Piece, Source, Text, construct_scalar, iter_items, mapping_keys
from .requirements import RequirementsReader
from .rule_exceptions import ExceptionsReader

_MACRO_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*\Z")
_LIST_NAME = re.compile(r"[^()\"'\s=,]+\Z")
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


class Collector(RequirementsReader, ExceptionsReader):
    """Collects several rules files in order: `add_file`/`add_text`; the definitions are then in `lists`,
    `macros` and `rules` (by name, in first-definition order) and the diagnostics in `result`."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: dict[str, ListDef] = {}
        self.macros: dict[str, MacroDef] = {}
        self.rules: dict[str, RuleDef] = {}
        self._counter = 0

    @property
    def missing_plugins(self) -> dict[str, list[str]]:
        """File -> the plugins it requires that Falconet does not provide (its unknown fields are skipped)."""
        return self._missing_plugins

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
        for item in iter_items(src, self.result):
            try:
                self._item(src, item)
            except ItemError:
                pass

    def _item(self, src: Source, item: yaml.Node) -> None:
        pos = src.node_position(item)
        if not isinstance(item, yaml.MappingNode):
            self.result.add(Code.ERR_YAML_VALIDATE, Msg.NOT_MAPPING, pos)
            return
        keys = mapping_keys(item)
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

    def _next_id(self) -> int:
        self._counter += 1
        return self._counter

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
        for key, (knode, vnode) in mapping_keys(onode).items():
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
            value = construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
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
