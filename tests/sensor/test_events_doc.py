"""docs/events.md is the event format's description: it names every field of the model, and its JSON examples
are events `Event.from_dict` reads and `to_dict` gives back unchanged."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from falconet.model import event as m

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def _json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)\n```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("cls", [m.Event, m.Process, m.User, m.Group, m.Fd, m.Container])
def test_every_field_is_documented(cls: type) -> None:
    text = DOC.read_text()
    missing = [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in text]
    assert missing == [], f"docs/events.md does not describe {cls.__name__}.{missing}"


def test_the_examples_read_and_round_trip() -> None:
    blocks = _json_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        ev = m.Event.from_dict(json.loads(block))
        assert m.Event.from_dict(ev.to_dict()) == ev


def test_the_full_example_is_in_to_dict_order() -> None:
    full = json.loads(_json_blocks()[0])
    ev = m.Event.from_dict(full)
    out = ev.to_dict()
    assert list(out) == list(full)
    assert list(out["proc"]) == list(full["proc"]) and list(out["fd"]) == list(full["fd"])
    assert list(out["container"]) == list(full["container"])


def test_unknown_keys_are_refused_with_a_reason() -> None:
    short = json.loads(_json_blocks()[1])
    with pytest.raises(ValueError, match="malformed event"):
        m.Event.from_dict({**short, "proc": {**short["proc"], "nmae": "typo"}})
    with pytest.raises(ValueError, match="missing key 'tid'"):
        m.Event.from_dict({k: v for k, v in short.items() if k != "tid"})
