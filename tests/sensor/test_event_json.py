"""The JSON-lines form carries a data buffer (evt.buffer) through capture and replay unchanged, whatever its bytes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from falconet.model.event import Event, Process
from falconet.rules.fields import resolve


@given(st.binary(max_size=96))
def test_buffer_survives_the_json_lines_form(data: bytes) -> None:
    ev = Event(num=1, ts=1, type="read", tid=7, res=len(data), proc=Process(pid=7, ppid=1, name="java"),
               args={"fd": 3, "data": data})
    line = json.dumps(ev.to_dict(), separators=(",", ":"))  # what `falconet capture` writes
    back = Event.from_dict(json.loads(line))
    assert resolve("evt.buffer").extract(back) == resolve("evt.buffer").extract(ev) == data
