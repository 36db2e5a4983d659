"""Output formats: a rule's `output` compiled once into literal text and bound fields, rendered per alert.

Syntax (Falco's, libsinsp eventformatter):

* `%field` and `%field[arg]` (`%proc.aname[2]`, `%evt.arg.flags`): the field's value; `<NA>` when unknown.
  The field name is the longest known field at that point, so `file=%fd.name.` ends at `fd.name`.
* `%transformer(field)` (`%toupper(user.name)`, nesting allowed): the transformed value.
* `%<N>field` with N digits (`%20proc.name`): the text is padded with spaces or cut to N characters.
* `%container.info` is deprecated (Falco >= 0.41): it renders as the `container_info` text given to
  `compile_output` (empty by default, as in Falco, whose container fields come from append_output instead) and
  the format records a deprecation warning for the loader.
* A `%` that starts no field is an error ("invalid formatting token"), and so is a trailing `%`.

`render` returns the text and the typed `output_fields`, as Falco's JSON output carries them: numbers as
numbers (evt.time as ns since the epoch), booleans as booleans, unknown values as null, everything else as
the text printed. Keys are the fields as written (`proc.aname[2]`, `toupper(user.name)`).

`with_extra` is the hook for append_output: text appended to the output, and fields added to output_fields
only (either a field name or a name bound to a format of its own).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import transformers
from .alert import OutputValue
from .errors import OutputFormatError, RuleError
from .fields import BoundField, FieldType, ResolversLike, resolve

if TYPE_CHECKING:
    from .event import Event

NA = "<NA>"
CONTAINER_INFO_DEPRECATED = (
    "%container.info is deprecated and rendered as an empty string; container fields are added by "
    "append_output (e.g. container_id=%container.id container_name=%container.name)"
)

_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*(?:\.[a-zA-Z0-9_]+)*")
_DIGITS_RE = re.compile(r"[0-9]+")
_NUMERIC_TYPES = frozenset({FieldType.INT, FieldType.PORT, FieldType.RELTIME, FieldType.ABSTIME})


def text_of(value: Any, ftype: FieldType, name: str = "") -> str:
    """How a value prints in the output text."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "(" + ",".join(text_of(v, ftype) for v in value) + ")" if value else NA
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if name == "evt.time" and isinstance(value, int):
        from .fields.evt import clock_time

        return clock_time(value)
    return str(value)


def json_of(value: Any, ftype: FieldType, name: str = "") -> OutputValue:
    """How a value appears in output_fields (Falco's JSON output types)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and ftype in _NUMERIC_TYPES:
        return value
    if isinstance(value, list):
        return text_of(value, ftype, name) if value else None
    if isinstance(value, int | float):
        return value
    return text_of(value, ftype, name)


@dataclass(frozen=True, slots=True)
class FieldToken:
    """One `%...` of a format: the key it has in output_fields and how to read it."""

    key: str
    type: FieldType
    read: Callable[[Event], Any]
    width: int | None = None
    name: str = ""  # the underlying field name (for evt.time's text form)

    def values(self, event: Event) -> tuple[str, OutputValue]:
        value = self.read(event)
        text = text_of(value, self.type, self.name)
        if self.width is not None:
            text = text[: self.width].ljust(self.width)
        return text, json_of(value, self.type, self.name)


Part = str | FieldToken


@dataclass(slots=True)
class OutputFormat:
    """A compiled output format. `render(event)` -> (text, output_fields)."""

    source: str
    parts: list[Part]
    extra_fields: list[tuple[str, Callable[[Event], OutputValue]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def field_keys(self) -> list[str]:
        """The output_fields keys, in order of first appearance."""
        keys: dict[str, None] = {}
        for part in self.parts:
            if isinstance(part, FieldToken):
                keys[part.key] = None
        for key, _ in self.extra_fields:
            keys[key] = None
        return list(keys)

    def render(self, event: Event) -> tuple[str, dict[str, OutputValue]]:
        chunks: list[str] = []
        out: dict[str, OutputValue] = {}
        for part in self.parts:
            if isinstance(part, str):
                chunks.append(part)
            else:
                text, value = part.values(event)
                chunks.append(text)
                out[part.key] = value
        for key, read in self.extra_fields:
            out[key] = read(event)
        return "".join(chunks), out

    def with_extra(
        self,
        extra_output: str | None = None,
        extra_fields: Iterable[str | Mapping[str, str]] = (),
        *,
        resolvers: ResolversLike | None = None,
    ) -> OutputFormat:
        """A copy with `extra_output` appended to the text (after a space) and `extra_fields` added to
        output_fields only: a field name, or {name: format} whose rendered text is the value."""
        parts = list(self.parts)
        warnings = list(self.warnings)
        if extra_output:
            more = compile_output(extra_output, resolvers=resolvers)
            if parts and not (isinstance(parts[-1], str) and parts[-1].endswith(" ")):
                parts.append(" ")
            parts.extend(more.parts)
            warnings.extend(more.warnings)
        extras = list(self.extra_fields)
        for item in extra_fields:
            if isinstance(item, str):
                token = _field_token(item.lstrip("%"), resolvers)
                extras.append((token.key, _json_reader(token)))
            else:
                for name, fmt in item.items():
                    sub = compile_output(str(fmt), resolvers=resolvers)
                    extras.append((str(name), _text_reader(sub)))
        return OutputFormat(self.source, parts, extras, warnings)


def _json_reader(token: FieldToken) -> Callable[[Event], OutputValue]:
    return lambda e: token.values(e)[1]


def _text_reader(fmt: OutputFormat) -> Callable[[Event], OutputValue]:
    return lambda e: fmt.render(e)[0]


def compile_output(
    fmt: str, *, resolvers: ResolversLike | None = None, container_info: str = ""
) -> OutputFormat:
    """Compiles an output format; raises OutputFormatError (with `offset` into `fmt`) when it is invalid."""
    parts: list[Part] = []
    warnings: list[str] = []
    literal: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        ch = fmt[i]
        if ch != "%":
            literal.append(ch)
            i += 1
            continue
        if i == n - 1:
            raise OutputFormatError("invalid formatting syntax: formatting cannot end with a %", i)
        start = i
        i += 1
        width = None
        m = _DIGITS_RE.match(fmt, i)
        if m:
            width = int(m.group())
            i = m.end()
        if fmt.startswith("container.info", i) and not _continues_name(fmt, i + len("container.info")):
            if literal:
                parts.append("".join(literal))
                literal = []
            if container_info:
                parts.extend(compile_output(container_info, resolvers=resolvers).parts)
            warnings.append(CONTAINER_INFO_DEPRECATED)
            i += len("container.info")
            continue
        token, i = _parse_token(fmt, i, start, resolvers)
        if width is not None:
            token = FieldToken(token.key, token.type, token.read, width, token.name)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(token)
    if literal:
        parts.append("".join(literal))
    return OutputFormat(fmt, parts, [], warnings)


def _continues_name(fmt: str, j: int) -> bool:
    return j < len(fmt) and (fmt[j].isalnum() or fmt[j] in "_[")


def _parse_token(fmt: str, i: int, start: int, resolvers: ResolversLike | None) -> tuple[FieldToken, int]:
    """Parses `transformer(...)` or `field[arg]` at i; returns the token and the index after it."""
    m = _NAME_RE.match(fmt, i)
    if not m:
        raise OutputFormatError(f"invalid formatting token at '%{fmt[i : i + 20]}'", start)
    word = m.group()
    if word in transformers.NAMES and m.end() < len(fmt) and fmt[m.end()] == "(":
        inner, j = _parse_token(fmt, m.end() + 1, start, resolvers)
        if j >= len(fmt) or fmt[j] != ")":
            raise OutputFormatError(f"expected ')' after the argument of {word}() in output", j)
        read, ftype, _is_list, _any = transformers.apply(word, inner.read, inner.type, False, False)
        return FieldToken(f"{word}({inner.key})", ftype, read, None, inner.name), j + 1
    # The longest known field: shrink at dots until one resolves (`%fd.name.` is fd.name then '.').
    candidates = [word]
    while "." in candidates[-1]:
        candidates.append(candidates[-1].rsplit(".", 1)[0])
    first_error: RuleError | None = None
    for cand in candidates:
        end = i + len(cand)
        arg = None
        if end < len(fmt) and fmt[end] == "[":
            close = fmt.find("]", end)
            if close < 0:
                raise OutputFormatError("expected a ']' after the field argument", end)
            arg = fmt[end + 1 : close]
            after = close + 1
        else:
            after = end
        try:
            bound = resolve(cand, arg, resolvers)
        except RuleError as exc:
            first_error = first_error or exc
            continue
        return _token(bound), after
    assert first_error is not None
    raise OutputFormatError(f"invalid formatting token: {first_error.message}", start)


def _token(bound: BoundField) -> FieldToken:
    return FieldToken(bound.display, bound.type, bound.output or bound.extract, None, bound.name)


def _field_token(text: str, resolvers: ResolversLike | None) -> FieldToken:
    token, end = _parse_token(text, 0, 0, resolvers)
    if end != len(text):
        raise OutputFormatError(f"'{text}' is not a single field", end)
    return token
