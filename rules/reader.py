"""Reading, the first phase of a load: a rules file's YAML text to item nodes, each piece with its position.

PyYAML's composer (not its constructor) keeps every node's line and column, so a diagnostic can point at the
spot. `Source`, `Piece` and `Text` carry that through the next phases: a condition assembled from a
definition and its appends, folded by YAML, still maps any offset back to file:line:column. `ItemReader`
holds the typed scalar readers every item kind uses; each reports a diagnostic into the load's result and
raises ItemError, which abandons that one item (the load goes on, collecting every problem).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Code, Context, LoadResult, Msg, Position

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


# --- YAML to items ------------------------------------------------------------------------------------------


def iter_items(src: Source, result: LoadResult) -> Iterator[yaml.Node]:
    """The top-level items of every YAML document of `src`, in order. A file that is not YAML, or a document
    that is not a sequence, is reported into `result` (lazily, so diagnostics keep the file's order)."""
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs = list(yaml.compose_all(src.text, Loader=loader_cls))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = src.position(mark.line, mark.column) if mark else Position(src.name, 1, 1)
        reason = exc.problem or str(exc)
        result.add(Code.ERR_YAML_PARSE, Msg.YAML_PARSE.format(reason=reason), pos)
        return
    except yaml.YAMLError as exc:
        result.add(Code.ERR_YAML_PARSE, Msg.YAML_PARSE.format(reason=exc), Position(src.name, 1, 1))
        return
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, yaml.SequenceNode):
            result.add(Code.ERR_YAML_VALIDATE, Msg.NOT_ARRAY, src.node_position(doc))
            continue
        yield from doc.value


class ItemError(Exception):
    """Aborts one item (already reported)."""


class ItemReader:
    """Typed readers of an item's values; each reports into `result` and raises ItemError on a bad value."""

    def __init__(self) -> None:
        self.result = LoadResult()

    def _err(
        self, code: Code, message: str, position: Position | None, ctx: tuple[Context, ...]
    ) -> ItemError:
        self.result.add(code, message, position, ctx)
        return ItemError()

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
            value = construct_scalar(node)
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


# --- YAML values --------------------------------------------------------------------------------------------

_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def construct_scalar(node: yaml.ScalarNode) -> Any:
    return _CONSTRUCTOR.construct_object(node, deep=True)


def construct_deep(node: yaml.Node) -> Any:
    value = _CONSTRUCTOR.construct_object(node, deep=True)
    return value


def mapping_keys(node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for knode, vnode in node.value:
        key = str(knode.value) if isinstance(knode, yaml.ScalarNode) else repr(knode)
        out[key] = (knode, vnode)
    return out
