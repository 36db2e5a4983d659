"""Collecting and building rule exceptions: the `exceptions:` of a rule (read, checked, appended to) and the
condition text Falco makes of them, `(<condition>) and not (<exception> or ...)`.

Both halves live here because they are one piece of Falco's semantics: what a valid exception is decides
what text it becomes. Builder (builder.py) folds the text into the rule's condition before parsing.
"""

from __future__ import annotations

from typing import Any

import yaml

from .definitions import ExceptionDef, RuleDef
from .errors import Code, Context, Msg, Position
from .parser import ALL_OPS, LIST_OPS
from .reader import ItemReader, Source, construct_deep, mapping_keys

_EXC_KEYS = frozenset({"name", "fields", "comps", "values"})
_EXC_SINGLE_COMPS = frozenset(LIST_OPS)


class ExceptionsReader(ItemReader):
    """Reads a rule's `exceptions:` (a definition, or an append to an earlier rule's)."""

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
            ek = mapping_keys(enode)
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
            raw = construct_deep(vnode)
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


# --- exceptions as condition text ---------------------------------------------------------------------------


def quote_item(item: str) -> str:
    """Falco's quote_item: an item with a space is wrapped in double quotes unless already quoted."""
    if " " in item and not item.startswith(('"', "'")):
        return f'"{item}"'
    return item


def _paren_item(item: str) -> str:
    return item if item.startswith("(") else f"({item})"


def _exception_value(comp: str, value: Any) -> str:
    if comp in LIST_OPS:
        if isinstance(value, list):
            return "(" + ", ".join(quote_item(str(v)) for v in value) + ")"
        return _paren_item(str(value))
    if isinstance(value, list):
        return "(" + ", ".join(quote_item(str(v)) for v in value) + ")"
    return quote_item(_scalar_text(value))


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def exception_text(exc: ExceptionDef) -> str:
    """An exception as Falco builds it: list form `(f1 c1 v1 and f2 c2 v2) or (...)`; single form
    `f c (v1, v2)`. No values: no clause."""
    if not exc.values:
        return ""
    if isinstance(exc.fields, str):
        assert isinstance(exc.comps, str)
        return f"{exc.fields} {exc.comps} ({', '.join(quote_item(_scalar_text(v)) for v in exc.values)})"
    assert isinstance(exc.comps, list)
    tuples = []
    for tup in exc.values:
        parts = [
            f"{f} {c} {_exception_value(c, v)}" for f, c, v in zip(exc.fields, exc.comps, tup, strict=True)
        ]
        tuples.append("(" + " and ".join(parts) + ")")
    return " or ".join(tuples)
