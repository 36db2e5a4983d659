"""Hypothesis strategies shared by the property tests of the kernel-side analyses (test_event_gates_property,
test_prefilter_property): each draws single checks of its own kinds, and both build rule conditions from them the
same way, so a condition nests and/or/not as the analyses must see them in real rules.
"""

from __future__ import annotations

from hypothesis import strategies as st


def quote(text: str) -> str:
    """A single-quoted rules-language string (the values drawn hold no quote)."""
    return "'" + text + "'"


def combined(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """One level of and/or/not over `children`."""
    return st.one_of(
        st.builds(lambda a, b: f"({a} and {b})", children, children),
        st.builds(lambda a, b: f"({a} or {b})", children, children),
        st.builds(lambda a: f"not {a}", children),
    )


def conditions(check: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Conditions of up to six checks drawn from `check`, nested under and/or/not."""
    return st.recursive(check, combined, max_leaves=6)
