"""The condition parser: Falco's filter language, text in, AST out.

Conditions are parsed once at load time, so this module favours clear errors over speed: every error is a
`ConditionSyntaxError` with an offset inside the input, which the loader turns into file:line:column and a
caret. Lists are already inlined (textually, as Falco does) before text reaches this parser; macros are
references in the AST that the compiler expands.

Grammar (EBNF; mirrors libsinsp's filter grammar, precedence `not` > `and` > `or`)::

    Expr         ::= OrExpr
    OrExpr       ::= AndExpr { 'or' AndExpr }
    AndExpr      ::= NotExpr { 'and' NotExpr }
    NotExpr      ::= { 'not' } Check                       (each 'not' followed by a blank or '(')
    Check        ::= '(' Expr ')'
                   | FieldExpr Condition
                   | Identifier                             (a macro reference)
    FieldExpr    ::= Transformer '(' FieldExpr ')' | Field
    Transformer  ::= 'tolower' | 'toupper' | 'b64' | 'basename' | 'len'
    Field        ::= FieldName [ '[' FieldArg ']' ]
    Condition    ::= UnaryOp
                   | CompareOp Value
                   | ListOp ListValue
    UnaryOp      ::= 'exists'
    CompareOp    ::= '=' | '==' | '!=' | '<' | '<=' | '>' | '>=' | 'contains' | 'icontains' | 'bcontains'
                   | 'startswith' | 'bstartswith' | 'endswith' | 'glob' | 'iglob' | 'regex'
    ListOp       ::= 'in' | 'intersects' | 'pmatch'
    Value        ::= 'val' '(' FieldExpr ')' | Transformer '(' FieldExpr ')' | QuotedStr | BareStr
    ListValue    ::= '(' [ ListItem { ',' ListItem } ] ')'
    ListItem     ::= QuotedStr | BareStr
    FieldName    ::= /[a-zA-Z][a-zA-Z0-9_]*(\\.[a-zA-Z][a-zA-Z0-9_]*)+/
    Identifier   ::= /[a-zA-Z][a-zA-Z0-9_]*/
    FieldArg     ::= QuotedStr | /[^ \\t\\n\\r\\[\\]"']+/
    QuotedStr    ::= '"' { /[^"\\\\]/ | '\\\\' any } '"' | "'" { /[^'\\\\]/ | '\\\\' any } "'"
    BareStr      ::= /[^ \\t\\n\\r\\f\\v(),="']+/               (after CompareOp, `<` and `>` are allowed too)

Blanks (space, tab, newline, carriage return, form feed) separate tokens. Word operators and the keywords
`and`, `or`, `not` must be followed by a blank or '(' (or, for `exists`, the end of a check). In quoted
strings a backslash escapes the quote, a backslash, and b f n r t; any other backslash is kept literally, so
regular expressions survive.

Nesting (parentheses, `not`, transformers) is limited to MAX_DEPTH levels: deeper input raises our error,
never RecursionError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConditionSyntaxError, Msg

MAX_DEPTH = 100
"""Deepest nesting accepted. Falco allows 1000; each level costs this parser several Python frames, and 100
is far beyond any real rule (the upstream files nest at most 7 deep, macros included)."""

TRANSFORMERS: tuple[str, ...] = ("tolower", "toupper", "b64", "basename", "len")
UNARY_OPS: tuple[str, ...] = ("exists",)
COMPARE_OPS: tuple[str, ...] = (
    "=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "bcontains", "startswith", "bstartswith",
    "endswith", "glob", "iglob", "regex",
)  # fmt: skip
LIST_OPS: tuple[str, ...] = ("in", "intersects", "pmatch")
ALL_OPS: tuple[str, ...] = COMPARE_OPS + LIST_OPS + UNARY_OPS

_BLANKS = " \t\n\r\f\v"
_FIELD_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*(?:\.[a-zA-Z][a-zA-Z0-9_]*)+")
_IDENT_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
_WORD_RE = re.compile(r"[a-z]+")
_FIELD_ARG_RE = re.compile(r"[^ \t\n\r\[\]\"']+")
_BARE_RE = re.compile(r"[^ \t\n\r\f\v(),=\"']+")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


# --- the AST ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field with its optional argument, wrapped in transformers (outermost first)."""

    name: str
    arg: str | None
    offset: int
    transformers: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = self.name if self.arg is None else f"{self.name}[{self.arg}]"
        for t in reversed(self.transformers):
            text = f"{t}({text})"
        return text


@dataclass(frozen=True, slots=True)
class Literal:
    text: str
    offset: int
    quoted: bool = False

    def __str__(self) -> str:
        return _quote(self.text) if self.quoted or not self.text else self.text


@dataclass(frozen=True, slots=True)
class FieldValue:
    """A field on the right-hand side (`val(f)` or a transformer expression): field-to-field comparison."""

    field: FieldRef
    offset: int

    def __str__(self) -> str:
        return str(self.field) if self.field.transformers else f"val({self.field})"


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Literal, ...]
    offset: int

    def __str__(self) -> str:
        return "(" + ", ".join(str(i) for i in self.items) + ")"


Value = Literal | FieldValue | ListLiteral


@dataclass(frozen=True, slots=True)
class Check:
    field: FieldRef
    op: str
    value: Value | None
    offset: int
    op_offset: int

    def __str__(self) -> str:
        return f"{self.field} {self.op}" if self.value is None else f"{self.field} {self.op} {self.value}"


@dataclass(frozen=True, slots=True)
class MacroRef:
    name: str
    offset: int

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Not:
    child: Node
    offset: int

    def __str__(self) -> str:
        return f"not {_wrap(self.child)}"


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]
    offset: int

    def __str__(self) -> str:
        return " and ".join(_wrap(c) for c in self.children)


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]
    offset: int

    def __str__(self) -> str:
        return " or ".join(_wrap(c) for c in self.children)


Node = And | Or | Not | Check | MacroRef


def _wrap(node: Node) -> str:
    return f"({node})" if isinstance(node, And | Or) else str(node)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the parser ---------------------------------------------------------------------------------------------


def parse_condition(text: str) -> Node:
    """Parses a whole condition; raises ConditionSyntaxError with an offset inside `text`."""
    return _Parser(text).parse()


class _Parser:
    """Recursive descent, one `_parse_<production>` per production of the grammar above."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # -- helpers --

    def _error(self, message: str, offset: int | None = None) -> ConditionSyntaxError:
        at = self.pos if offset is None else offset
        return ConditionSyntaxError(message, min(max(at, 0), len(self.text)))

    def _skip_blanks(self) -> bool:
        start = self.pos
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in _BLANKS:
            self.pos += 1
        return self.pos > start

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _keyword_at(self, word: str) -> bool:
        """True if `word` starts here and is followed by a blank, '(' or (never for and/or/not) the end."""
        end = self.pos + len(word)
        if not self.text.startswith(word, self.pos):
            return False
        return end < len(self.text) and (self.text[end] in _BLANKS or self.text[end] == "(")

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._error(Msg.MAX_DEPTH.format(limit=MAX_DEPTH))

    def _leave(self) -> None:
        self.depth -= 1

    # -- productions --

    def parse(self) -> Node:
        self._skip_blanks()
        if self._at_end():
            raise self._error(Msg.EMPTY, 0)
        node = self._parse_expr()
        self._skip_blanks()
        if not self._at_end():
            raise self._error(Msg.UNEXPECTED_AFTER.format(after=self._last_token()))
        return node

    def _last_token(self) -> str:
        """The text of the token before the current position, for "unexpected token after 'X'"."""
        end = self.pos
        while end > 0 and self.text[end - 1] in _BLANKS:
            end -= 1
        start = end
        while start > 0 and self.text[start - 1] not in _BLANKS:
            start -= 1
        return self.text[start:end][-40:]

    def _parse_expr(self) -> Node:
        return self._parse_or_expr()

    def _parse_or_expr(self) -> Node:
        start = self.pos
        children = [self._parse_and_expr()]
        while True:
            save = self.pos
            self._skip_blanks()
            if self.text.startswith("or", self.pos) and not self._continues_word(self.pos + 2):
                self.pos += 2
                if not self._blank_or_paren():
                    raise self._error(Msg.EXPECTED_BLANK_AFTER.format(word="or"))
                children.append(self._parse_and_expr())
            else:
                self.pos = save
                break
        return children[0] if len(children) == 1 else Or(tuple(children), start)

    def _parse_and_expr(self) -> Node:
        start = self.pos
        children = [self._parse_not_expr()]
        while True:
            save = self.pos
            self._skip_blanks()
            if self.text.startswith("and", self.pos) and not self._continues_word(self.pos + 3):
                self.pos += 3
                if not self._blank_or_paren():
                    raise self._error(Msg.EXPECTED_BLANK_AFTER.format(word="and"))
                children.append(self._parse_not_expr())
            else:
                self.pos = save
                break
        return children[0] if len(children) == 1 else And(tuple(children), start)

    def _blank_or_paren(self) -> bool:
        ch = self._peek()
        return ch != "" and (ch in _BLANKS or ch == "(")

    def _continues_word(self, index: int) -> bool:
        """True if the character at `index` would continue an identifier (so 'orphan' is not 'or')."""
        return index < len(self.text) and (self.text[index].isalnum() or self.text[index] in "_.")

    def _parse_not_expr(self) -> Node:
        self._skip_blanks()
        start = self.pos
        negations = 0
        # Iterative, so a long run of 'not' costs no stack; each still counts toward the nesting limit.
        while self._keyword_at("not"):
            negations += 1
            self._enter()
            self.pos += 3
            self._skip_blanks()
        node = self._parse_check()
        self.depth -= negations
        for _ in range(negations):
            node = Not(node, start)
        return node

    def _parse_check(self) -> Node:
        self._skip_blanks()
        start = self.pos
        if self._peek() == "(":
            self._enter()  # before consuming, so a too-deep error points at this parenthesis
            self.pos += 1
            node = self._parse_expr()
            self._skip_blanks()
            if self._peek() != ")":
                raise self._error(Msg.EXPECTED_CLOSE)
            self.pos += 1
            self._leave()
            return node
        if self._transformer_at():
            field = self._parse_field_expr()
            return self._parse_condition(field, start)
        match = _FIELD_RE.match(self.text, self.pos)
        if match:
            field = self._parse_field_expr()
            return self._parse_condition(field, start)
        match = _IDENT_RE.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return MacroRef(match.group(), start)
        raise self._error(Msg.EXPECTED_CHECK)

    def _transformer_at(self) -> bool:
        match = _IDENT_RE.match(self.text, self.pos)
        if not match or match.group() not in TRANSFORMERS:
            return False
        end = match.end()
        while end < len(self.text) and self.text[end] in _BLANKS:
            end += 1
        return end < len(self.text) and self.text[end] == "("

    def _parse_field_expr(self) -> FieldRef:
        self._skip_blanks()
        start = self.pos
        match = _IDENT_RE.match(self.text, self.pos)
        if match and match.group() in TRANSFORMERS and self._transformer_at():
            name = match.group()
            self.pos = match.end()
            self._skip_blanks()
            self.pos += 1  # the '('
            self._enter()
            self._skip_blanks()
            if not _FIELD_RE.match(self.text, self.pos) and not self._transformer_at():
                raise self._error(Msg.TRANSFORMER_NEEDS_FIELD)
            inner = self._parse_field_expr()
            self._skip_blanks()
            if self._peek() != ")":
                raise self._error(Msg.EXPECTED_CLOSE)
            self.pos += 1
            self._leave()
            return FieldRef(inner.name, inner.arg, start, (name, *inner.transformers))
        return self._parse_field()

    def _parse_field(self) -> FieldRef:
        start = self.pos
        match = _FIELD_RE.match(self.text, self.pos)
        if not match:
            raise self._error(Msg.EXPECTED_FIELD)
        self.pos = match.end()
        arg: str | None = None
        if self._peek() == "[":
            self.pos += 1
            arg = self._parse_field_arg()
        return FieldRef(match.group(), arg, start)

    def _parse_field_arg(self) -> str:
        if self._peek() in ("'", '"'):
            arg = self._parse_quoted_str()
        else:
            match = _FIELD_ARG_RE.match(self.text, self.pos)
            if not match:
                raise self._error(Msg.EMPTY_FIELD_ARG if self._peek() == "]" else Msg.EXPECTED_CLOSE_BRACKET)
            arg = match.group()
            self.pos = match.end()
        if self._peek() != "]":
            raise self._error(Msg.EXPECTED_CLOSE_BRACKET)
        self.pos += 1
        return arg

    def _parse_condition(self, field: FieldRef, start: int) -> Check:
        self._skip_blanks()
        op_offset = self.pos
        op = self._parse_operator()
        if op in UNARY_OPS:
            return Check(field, op, None, start, op_offset)
        if op in LIST_OPS:
            return Check(field, op, self._parse_list_value(), start, op_offset)
        return Check(field, op, self._parse_value(), start, op_offset)

    def _parse_operator(self) -> str:
        text, pos = self.text, self.pos
        for sym in ("==", "!=", "<=", ">=", "=", "<", ">"):
            if text.startswith(sym, pos):
                self.pos += len(sym)
                return sym
        match = _WORD_RE.match(text, pos)
        if match and match.group() in ALL_OPS:
            word = match.group()
            end = match.end()
            nxt = text[end] if end < len(text) else ""
            if word in UNARY_OPS:
                # 'exists' ends a check: what follows is a blank, ')' or the end of the input.
                if nxt == "" or nxt in _BLANKS or nxt == ")":
                    self.pos = end
                    return word
            elif nxt != "" and (nxt in _BLANKS or nxt == "(" or nxt in "'\""):
                self.pos = end
                return word
        raise self._error(Msg.EXPECTED_OPERATOR.format(ops=", ".join(ALL_OPS)))

    def _parse_value(self) -> Value:
        self._skip_blanks()
        start = self.pos
        match = _IDENT_RE.match(self.text, self.pos)
        if match and match.group() == "val":
            end = match.end()
            while end < len(self.text) and self.text[end] in _BLANKS:
                end += 1
            if end < len(self.text) and self.text[end] == "(":
                self.pos = end + 1
                self._enter()
                self._skip_blanks()
                field = self._parse_field_expr()
                self._skip_blanks()
                if self._peek() != ")":
                    raise self._error(Msg.EXPECTED_CLOSE)
                self.pos += 1
                self._leave()
                return FieldValue(field, start)
        if self._transformer_at():
            return FieldValue(self._parse_field_expr(), start)
        if self._peek() in ("'", '"'):
            return Literal(self._parse_quoted_str(), start, quoted=True)
        return Literal(self._parse_bare_str(), start)

    def _parse_list_value(self) -> ListLiteral:
        self._skip_blanks()
        start = self.pos
        if self._peek() != "(":
            raise self._error(Msg.EXPECTED_LIST)
        self.pos += 1
        items: list[Literal] = []
        self._skip_blanks()
        if self._peek() == ")":
            self.pos += 1
            return ListLiteral((), start)
        while True:
            items.append(self._parse_list_item())
            self._skip_blanks()
            ch = self._peek()
            if ch == ",":
                self.pos += 1
                continue
            if ch == ")":
                self.pos += 1
                return ListLiteral(tuple(items), start)
            raise self._error(Msg.EXPECTED_CLOSE)

    def _parse_list_item(self) -> Literal:
        self._skip_blanks()
        start = self.pos
        if self._peek() in ("'", '"'):
            return Literal(self._parse_quoted_str(), start, quoted=True)
        match = _BARE_RE.match(self.text, self.pos)
        if not match:
            raise self._error(Msg.EXPECTED_LIST_ITEM)
        self.pos = match.end()
        return Literal(match.group(), start)

    def _parse_bare_str(self) -> str:
        match = _BARE_RE.match(self.text, self.pos)
        if not match:
            raise self._error(Msg.EXPECTED_VALUE)
        self.pos = match.end()
        return match.group()

    def _parse_quoted_str(self) -> str:
        text = self.text
        quote = text[self.pos]
        start = self.pos
        i = self.pos + 1
        out: list[str] = []
        n = len(text)
        while i < n:
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                nxt = text[i + 1]
                if nxt in _ESCAPES:
                    out.append(_ESCAPES[nxt])
                else:
                    out.append("\\" + nxt)
                i += 2
                continue
            if ch == quote:
                self.pos = i + 1
                return "".join(out)
            out.append(ch)
            i += 1
        raise self._error(Msg.UNTERMINATED_STRING, start)
