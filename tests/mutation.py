"""Text mutation for the fuzz tests of every file a stranger may hand us (config files, rules files).

Valid seeds with spans deleted, duplicated or replaced by hostile pieces reach deeper into a parser than random
bytes do; one strategy serves every such test so they all mutate the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


@st.composite
def mutated_text(draw: st.DrawFn, seeds: Sequence[str], pieces: Sequence[str], *, rounds: int, span: int,
                 junk: int) -> str:
    """A seed after 1..`rounds` edits of spans up to `span` long; inserts are a piece or `junk` random chars."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(min_value=1, max_value=rounds))):
        i = draw(st.integers(min_value=0, max_value=len(text)))
        j = draw(st.integers(min_value=i, max_value=min(len(text), i + span)))
        action = draw(st.sampled_from(["delete", "duplicate", "insert"]))
        if action == "delete":
            text = text[:i] + text[j:]
        elif action == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(st.sampled_from(pieces) | st.text(max_size=junk)) + text[i:]
    return text
