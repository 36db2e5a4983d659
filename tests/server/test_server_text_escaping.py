"""The one escaping function of every text output (falconet.model.text): properties over any text."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from falconet.model.text import escape_controls, has_controls, json_safe


@given(st.text())
def test_escaped_text_is_one_line_of_visible_characters(text: str) -> None:
    out = escape_controls(text)
    assert not has_controls(out)
    assert len(out.splitlines()) <= 1
    assert not any(unicodedata.category(ch) == "Cc" for ch in out)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"))))
def test_text_without_controls_is_unchanged(text: str) -> None:
    if not has_controls(text):
        assert escape_controls(text) == text


@given(st.text())
def test_json_safe_json_parses_to_the_same_text_and_carries_no_raw_control(text: str) -> None:
    line = json_safe(json.dumps({"k": text}, ensure_ascii=False))
    assert json.loads(line) == {"k": text}
    assert not any(unicodedata.category(ch) == "Cc" for ch in line)
    assert "\u2028" not in line and "\u2029" not in line


def test_examples() -> None:
    assert escape_controls("a\nb\r\tc\x1b[2J\x07\x9b\x7f\u202e") == "a\\nb\\r\\tc\\x1b[2J\\x07\\x9b\\x7f\\u202e"
    assert escape_controls("C:\\path é ✓") == "C:\\path é ✓"
