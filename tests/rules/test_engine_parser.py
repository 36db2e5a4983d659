"""The condition parser: its AST for Falco's precedence and quoting, and, over arbitrary text, that only our
error type ever escapes, always with a position inside the input."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from falconet.rules.errors import ConditionSyntaxError, RuleError
from falconet.rules.parser import MAX_DEPTH, And, Check, MacroRef, Not, Or, parse_condition


def test_precedence_shapes() -> None:
    ast = parse_condition("not a and b or c")
    assert isinstance(ast, Or)
    left = ast.children[0]
    assert isinstance(left, And) and isinstance(left.children[0], Not)
    assert isinstance(left.children[0].child, MacroRef) and left.children[0].child.name == "a"
    assert str(parse_condition("a or b and not (c or d)")) == "a or (b and not (c or d))"


def test_checks_and_values() -> None:
    check = parse_condition("proc.aname[2] in (bash, \"a b\", 'c')")
    assert isinstance(check, Check)
    assert (check.field.name, check.field.arg, check.op) == ("proc.aname", "2", "in")
    assert [i.text for i in check.value.items] == ["bash", "a b", "c"]  # type: ignore[union-attr]
    t = parse_condition("toupper(b64(evt.arg.data)) = val(proc.name)")
    assert (
        isinstance(t, Check) and t.field.transformers == ("toupper", "b64") and t.field.name == "evt.arg.data"
    )
    assert str(t) == "toupper(b64(evt.arg.data)) = val(proc.name)"
    assert str(parse_condition("fd.name exists")) == "fd.name exists"
    assert (
        str(parse_condition('proc.cmdline contains "a \\"q\\" b"')) == 'proc.cmdline contains "a \\"q\\" b"'
    )


def test_round_trip_of_the_printed_form() -> None:
    text = '(evt.type in (open, openat) and not fd.name pmatch (/tmp)) or m1 and proc.name="x y"'
    ast = parse_condition(text)
    assert str(parse_condition(str(ast))) == str(ast)


def test_deep_nesting_raises_our_error() -> None:
    deep = "(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1)
    try:
        parse_condition(deep)
    except ConditionSyntaxError as exc:
        assert "max depth" in exc.message and exc.offset == MAX_DEPTH
    else:
        raise AssertionError("no error")
    parse_condition("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH)  # the limit itself is fine
    nots = "not " * 5000 + "a"
    try:
        parse_condition(nots)
    except ConditionSyntaxError as exc:
        assert exc.offset is not None and exc.offset <= len(nots)


_ALPHABET = string.ascii_letters + string.digits + " \t\n()[],=!<>\"'\\._-/*?%"
_TOKENS = st.sampled_from([
    "proc.name", "fd.name", "evt.type", "proc.aname[2]", "not", "and", "or", "(", ")", "=", "!=", "in",
    "contains", "exists", "pmatch", "glob", "tolower(", "val(", "\"q s\"", "'x'", "bash", ",", "[", "]",
    "macro_x", " ", "  ", "<", ">=", "\\", "intersects", "len(",
])  # fmt: skip


def _check(text: str) -> None:
    try:
        parse_condition(text)
    except RuleError as exc:
        assert type(exc) is ConditionSyntaxError
        assert exc.offset is not None and 0 <= exc.offset <= len(text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=80))
def test_arbitrary_text_raises_only_our_error(text: str) -> None:
    _check(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_token_soup_raises_only_our_error(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_unicode_raises_only_our_error(text: str) -> None:
    _check(text)
