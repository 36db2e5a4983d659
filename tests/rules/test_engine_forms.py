"""The compiled forms of a condition agree on every event: the closures of the condition as written (no
reordering or merging), the optimised closures (compile), the per-type specialised function (specialize)
and the engine's generated per-type dispatch (process).

Conditions are random and/or/not combinations of checks over several field kinds and event types, so
constant folding of evt.type, chain flattening and reordering, and the inline forms of generated code are
all exercised against the plain closures.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine_support import RESOLVERS, make_event
from hypothesis import given, settings
from hypothesis import strategies as st

from falconet.rules.compiler import Compiler
from falconet.rules.engine import Engine
from falconet.rules.parser import parse_condition

CHECKS = [
    "evt.type = execve", "evt.type in (openat, connect)", "evt.type != openat", "proc.name = bash",
    "proc.name in (bash, cat)", "proc.name != cat", "user.uid = 0", "user.uid >= 1000", "fd.name startswith /etc",
    "fd.name endswith shadow", "fd.name contains ssh", "fd.name exists", "proc.aname = sshd", "proc.aname[2] = systemd",
    'fd.sip = "10.0.0.0/8"', 'fd.snet in ("10.0.0.0/8", "192.168.0.0/16")', 'proc.cmdline contains "-c"',
    "fd.name glob '/etc/*'", "fd.name pmatch (/etc, /root)", "proc.name = val(proc.pname)", "tolower(proc.name) = bash",
    "evt.is_open_read = true", "fd.sport in (22, 443)", "proc.pname exists", "evt.dir = <", "evt.dir = >",
    "fd.name endswith id", "fd.name startswith /root", "proc.name = cat", "fd.sport = 22", "user.uid in (0, 33)",
]  # fmt: skip

EVENTS: list[dict[str, Any]] = [
    {},
    {"proc": {"name": "cat", "args": ["/etc/shadow"]}},
    {"proc": {"name": "bash", "args": ["-c", "id"], "user": {"uid": 0, "name": "root"}, "ancestors": ["bash", "sshd"]}},
    {"type": "openat", "proc": {"name": "cat"}, "args": {"flags": 0}, "fd": {"num": 3, "name": "/etc/shadow"}},
    {"type": "openat", "proc": {"name": "vim"}, "args": {"flags": 1}, "fd": {"num": 3, "name": "/root/.ssh/id"}},
    {"type": "connect", "fd": {"num": 3, "type": "ipv4", "cip": "10.0.0.5", "cport": 5000, "sip": "10.1.1.1", "sport": 443}},
    {"type": "connect", "fd": {"num": 3, "type": "ipv4", "cip": "10.0.0.5", "cport": 5000, "sip": "8.8.8.8", "sport": 22}},
    {"type": "ptrace", "proc": {"ancestors": []}},
]  # fmt: skip


def _condition(draw: st.DrawFn, depth: int) -> str:
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(CHECKS))
    kind = draw(st.sampled_from(["and", "or", "not", "paren"]))
    if kind == "not":
        return "not " + _condition(draw, depth - 1)
    if kind == "paren":
        return "(" + _condition(draw, depth - 1) + ")"
    parts = [_condition(draw, depth - 1) for _ in range(draw(st.integers(2, 4)))]
    return "(" + f" {kind} ".join(parts) + ")"


@st.composite
def conditions(draw: st.DrawFn) -> str:
    return _condition(draw, 4)


@settings(max_examples=120, deadline=None)
@given(conditions())
def test_compiled_forms_agree(condition: str) -> None:
    text = (
        "- rule: r\n  desc: d\n  output: o\n  priority: INFO\n  warn_evttypes: false\n"
        f"  condition: {json.dumps(condition)}\n"
    )
    engine = Engine.from_texts([("forms.yaml", text)], resolvers=RESOLVERS)
    rule = engine.rules[0]
    as_written = (
        Compiler({}, resolvers=RESOLVERS, optimize=False).compile(parse_condition(condition)).predicate
    )
    for spec in EVENTS:
        event = make_event(spec)
        reference = as_written(event)
        assert rule.predicate(event) == reference, (condition, spec)
        specialised = engine.matching_rules(event) == ["r"]
        dispatched = [a.rule for a in engine.process(event)] == ["r"]
        assert specialised == reference, (condition, spec)
        assert dispatched == reference, (condition, spec)
        # The rule's event types never exclude an event it matches.
        if reference:
            assert event.type in rule.types, (condition, spec)
    assert engine.stats.eval_errors == 0


MERGEABLE = [
    "fd.name endswith shadow or fd.name endswith id",
    "fd.name startswith /etc or fd.name startswith /root",
    "proc.name = bash or proc.name in (cat, vim) or proc.name = sh",
    "fd.sport = 22 or fd.sport in (443) or user.uid = 0",
    "(fd.name endswith id or proc.name = cat) or (fd.name endswith shadow or proc.name = bash)",
    "not (fd.name endswith id or fd.name endswith passwd) and evt.type = openat",
]


@pytest.mark.parametrize("condition", MERGEABLE)
def test_merged_or_chains_mean_what_was_written(condition: str) -> None:
    """An 'or' of checks on one field becomes one check; every event must see the same answer."""
    test_compiled_forms_agree.hypothesis.inner_test(condition)  # type: ignore[attr-defined]
    text = "- rule: r\n  desc: d\n  output: o\n  priority: INFO\n  warn_evttypes: false\n"
    engine = Engine.from_texts(
        [("m.yaml", text + f"  condition: {json.dumps(condition)}\n")], resolvers=RESOLVERS
    )
    hits = [engine.matching_rules(make_event(spec)) == ["r"] for spec in EVENTS]
    assert any(hits)  # each condition matches some event, so a merge that lost a value would show
