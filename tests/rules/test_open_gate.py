"""The user-space open gate (rules/open_gate.py) is conservative: whenever any enabled rule matches an open, the
gate says it may. Checked on the default rules, synthetic rules with every shape the pruning treats (and, or,
not, macros, fd.nameraw, exact fd.filename/fd.directory tests, flags) and Falco's upstream stable rules, over
generated opens; and it must actually rule out the opens a build makes, or it would cost without helping."""

from __future__ import annotations

import textwrap

import pytest
from engine_support import STABLE
from hypothesis import given, settings
from hypothesis import strategies as st
from resources import shared_path
from test_engine_open_prefixes import DEFAULT, FLAGS, PROCS, SYNTH, open_event, paths, rule

from falconet.model.event import Event
from falconet.rules import open_gate
from falconet.rules.engine import Engine
from falconet.sensor.openfilter import OPEN_KEEP, open_need

O_RDONLY, O_WRONLY, O_TRUNC = 0, 1, 0o1000


def gate_allows(engine: Engine, event: Event) -> bool:
    """What the enricher asks the gate for this event (sensor/enricher.py's _gated)."""
    assert event.fd is not None and event.fd.name is not None
    need = open_need(event.type, int(event.args.get("flags") or 0))
    return bool(need & OPEN_KEEP) or engine.open_gate().may_match(event.type, event.fd.name, need)


def _shapes() -> Engine:
    macro = textwrap.dedent("""
        - macro: reading
          condition: evt.type in (open, openat) and evt.is_open_read = true
        - list: keys
          items: [id_rsa, authorized_keys]
        """)
    text = (
        rule("reading and fd.filename in (keys) and fd.name pmatch (/tmp, /home)", "a", extra=macro)
        + rule("evt.type in (openat, creat) and evt.is_open_write = true and fd.directory endswith /.ssh"
               " and fd.filename startswith authorized", "b")
        + rule("evt.type = openat and fd.nameraw contains '../' and fd.name startswith /etc", "c")
        + rule("evt.type = open and not fd.name startswith /tmp and fd.filename = shadow", "d")
        + rule("evt.type in (openat, open) and evt.arg.flags contains O_TRUNC and (fd.directory = /var/log"
               " or fd.name glob '/home/*/.bash*')", "e")
        + rule("evt.type = creat and (proc.name = cat or fd.name = /run/x)", "f")
        + rule("evt.type = openat and fd.nameraw startswith /tmp/ and evt.is_open_write = true", "g")
    )
    return Engine.from_texts([("t.yaml", text)], rule_matching="all")


SHAPES = _shapes()
NAMERAW = st.sampled_from(["same", "../x", "x/../../etc/shadow", "rel", "/tmp/../etc/shadow"])


def _check(engine: Engine, etype: str, path: str, flags: int, comm: str, raw: str) -> None:
    event = open_event(etype, path, flags, comm)
    assert event.fd is not None
    if raw != "same":
        event.fd.nameraw = raw
    matched = engine.matching_rules(event)
    if matched:
        assert gate_allows(engine, event), (matched, path, oct(flags), raw)


@settings(max_examples=1500, deadline=None)
@given(etype=st.sampled_from(["open", "openat", "creat"]), path=paths, flags=st.sampled_from(FLAGS),
       comm=st.sampled_from(PROCS), raw=NAMERAW)  # fmt: skip
def test_default_rules_never_match_what_the_gate_rules_out(etype: str, path: str, flags: int, comm: str,
                                                           raw: str) -> None:
    _check(DEFAULT, etype, path, flags, comm, raw)


@settings(max_examples=1500, deadline=None)
@given(etype=st.sampled_from(["open", "openat", "creat"]), path=paths | st.sampled_from(
       ["/run/x", "/etc/shadow", "/var/log/syslog", "/home/a/.bashrc", "/tmp/id_rsa", "/root/.ssh/authorized_keys2"]),
       flags=st.sampled_from(FLAGS), comm=st.sampled_from(PROCS), raw=NAMERAW)  # fmt: skip
def test_rule_shapes_never_match_what_the_gate_rules_out(etype: str, path: str, flags: int, comm: str,
                                                         raw: str) -> None:
    _check(SHAPES, etype, path, flags, comm, raw)
    _check(SYNTH, etype, path, flags, comm, raw)


UPSTREAM: list[Engine] = []


def _upstream() -> Engine:
    if not UPSTREAM:
        shared_path("upstream-rules", "current")
        UPSTREAM.append(Engine.from_files([STABLE], rule_matching="all"))
    return UPSTREAM[0]


@settings(max_examples=600, deadline=None)
@given(etype=st.sampled_from(["open", "openat", "creat"]), path=paths, flags=st.sampled_from(FLAGS),
       comm=st.sampled_from(PROCS), raw=NAMERAW)  # fmt: skip
def test_upstream_stable_rules_never_match_what_the_gate_rules_out(etype: str, path: str, flags: int, comm: str,
                                                                   raw: str) -> None:
    _check(_upstream(), etype, path, flags, comm, raw)


def test_the_spaces_reach_the_rules_and_the_gate_rules_out_a_builds_opens() -> None:
    """Without both, the properties above could not fail, or the gate would only cost."""
    hits = {("a", "openat", "/tmp/b/id_rsa", O_RDONLY), ("b", "creat", "/home/u/.ssh/authorized_keys", O_WRONLY),
            ("c", "openat", "/etc/passwd", O_RDONLY), ("d", "open", "/etc/shadow", O_RDONLY),
            ("e", "open", "/var/log/syslog", O_WRONLY | O_TRUNC), ("f", "creat", "/tmp/x.h", O_WRONLY),
            ("g", "openat", "/etc/shadow", O_WRONLY)}
    for name, etype, path, flags in hits:
        event = open_event(etype, path, flags, "cat" if name == "f" else "bash")
        assert event.fd is not None
        if name in ("c", "g"):
            event.fd.nameraw = "../etc/passwd" if name == "c" else "/tmp/../etc/shadow"
        assert name in SHAPES.matching_rules(event), (name, path)
        assert gate_allows(SHAPES, event)
    gate = SHAPES.open_gate()
    ruled_out = [("openat", "/tmp/b/x.h", 1), ("openat", "/root/.ssh/known", 4), ("open", "/tmp/passwd", 1),
                 ("open", "/var/log/syslog", 2), ("openat", "/home/u/.bashrc", 1)]
    for etype, path, need in ruled_out:
        assert not gate.may_match(etype, path, need), (etype, path, need)
    default = DEFAULT.open_gate()
    for path in ("/tmp/falconet-build-1/xz-5.4.1/src/liblzma/common/common.h", "/usr/include/stdio.h"):
        assert not default.may_match("openat", path, 1)
        assert not default.may_match("openat", path, 2 | 4)
    assert default.may_match("openat", "/tmp/u/.ssh/id_rsa", 1)
    assert default.may_match("openat", "relative/not/judged", 1)
    assert default.may_match("openat2", "/tmp/x.h", 1), "types the gate does not judge always may"
    assert gate.may_match("creat", "/tmp/x.h", 6), "a type an unbounded rule can match is not gated"


@pytest.mark.parametrize("engine", [DEFAULT, SHAPES, SYNTH], ids=["default", "shapes", "synthetic"])
def test_the_generated_gate_is_the_tree_it_was_made_from(engine: Engine) -> None:
    """compiled() against the plain walk (holds) over the property space's paths and every kind set."""
    gate = engine.open_gate()
    space = [f"/{a}/{b}" for a in ("etc", "tmp", "home/u/.ssh", "var/log", "root", "run", "usr/lib")
             for b in ("shadow", "id_rsa", "authorized_keys", "x.h", ".bashrc", ".bash_history", "syslog", "x")]
    for etype, tree in gate._trees.items():  # noqa: SLF001 - the test compares the two forms of the same tree
        for need in range(1, 8):
            fn = open_gate.compiled(tree, need)
            for path in space:
                assert fn(path) == open_gate.holds(tree, path, need), (etype, need, path)
