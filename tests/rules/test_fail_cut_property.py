"""fd.num bounds an open's result class soundly (rules/event_gates.py `_open_fd_num_check`, which lets the record
cuts keep failed opens in the kernel, sensor/recut.py): for random rules mixing fd.num comparisons (every
operator, numbers around -1 and 0) with result checks, path checks, `not`, `and`/`or` and macros, a failed open
(fd.num -1, or no fd at all when the path was unreadable, as sensor/enricher.py makes it) matches no rule when
the type's gate keeps no negative result; and the shipped rules on a grid of failed opens of the paths they
look for."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st
from resources import shared_path

from falconet.model.event import Container, Event, Fd, Process, User
from falconet.model.prefilter import RES_NEG
from falconet.rules import DEFAULT_RULES
from falconet.rules.engine import Engine
from falconet.rules.errors import RulesLoadError

OPENS = ["open", "openat", "openat2", "creat"]
OPS = ["=", "!=", "<", "<=", ">", ">=", "in"]
NUMS = ["-2", "-1", "0", "1", "3", "-100"]
PATHS = ["/etc/shadow", "/root/.ssh/id_rsa", "/tmp/x.h", "/home/u/.bashrc", "/var/log/syslog", "x.h"]
FAILURES = [-1, -2, -13, -24]


def _leaf() -> st.SearchStrategy[str]:
    fd_num = st.builds(lambda op, n, m: f"fd.num {op} ({n}, {m})" if op == "in" else f"fd.num {op} {n}",
                       st.sampled_from(OPS), st.sampled_from(NUMS), st.sampled_from(NUMS))
    other = st.sampled_from([
        "evt.rawres < 0", "evt.rawres >= 0", "evt.failed = true", "evt.failed = false", "evt.res = SUCCESS",
        "fd.name startswith /etc", "fd.filename = id_rsa", "fd.typechar = f", "evt.is_open_read = true",
        "proc.name = cc", "known_macro", "fd.name exists",
    ])
    return st.one_of(fd_num, fd_num, other)


condition = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a} and {b})", inner, inner),
        st.builds(lambda a, b: f"({a} or {b})", inner, inner),
        st.builds(lambda a: f"not ({a})", inner),
    ),
    max_leaves=6,
)
PREAMBLE = textwrap.dedent("""
    - macro: known_macro
      condition: (fd.num >= 0 and fd.typechar = f)
    """)


def _event(etype: str, res: int, path: str, has_fd: bool) -> Event:
    proc = Process(pid=100, ppid=10, name="cc", exe="cc", exepath="/usr/bin/cc", args=[], cwd="/tmp",
                   user=User(uid=0, name="root"))
    fd = Fd(-1, "file", path, path, None, None, 0) if has_fd else None
    return Event(num=1, ts=1, type=etype, tid=100, res=res, proc=proc,
                 args={"fd": res, "name": path, "flags": 0, "mode": 0, "dirfd": -100}, fd=fd,
                 container=Container())


@settings(max_examples=400, deadline=None)
@given(conds=st.lists(st.tuples(st.sets(st.sampled_from(OPENS), min_size=1), condition), min_size=1, max_size=3))
def test_a_failed_open_matches_no_rule_when_the_gate_keeps_no_failure(conds: list[tuple[set[str], str]]) -> None:
    text = PREAMBLE + "".join(textwrap.dedent(f"""
        - rule: r{i}
          desc: d
          condition: evt.type in ({", ".join(sorted(types))}) and {cond}
          output: o
          priority: WARNING
        """) for i, (types, cond) in enumerate(conds))
    try:
        eng = Engine.from_texts([("t.yaml", text)], rule_matching="all")
    except RulesLoadError:
        return
    gates = eng.event_gates(OPENS)
    for etype in OPENS:
        if gates[etype].result & RES_NEG:
            continue
        for res in FAILURES:
            for path in PATHS:
                for has_fd in (True, False):
                    ev = _event(etype, res, path, has_fd)
                    assert not eng.matching_rules(ev), (text, etype, res, path, has_fd)


def test_fd_num_bounds() -> None:
    """Each operator's bound (the check alone) keeps a failure exactly when -1 (or a missing fd) can pass it."""
    expect = {"fd.num >= 0": False, "fd.num > -1": False, "fd.num = -1": True, "fd.num < 0": True,
              "fd.num != 3": True, "fd.num in (0, 1)": False, "fd.num in (-1, 1)": True, "fd.num <= -2": False,
              "not fd.num >= 0": True, "fd.num >= 0 and evt.rawres < 0": False}
    for cond, keeps in expect.items():
        eng = Engine.from_texts([("t.yaml", f"- rule: r\n  desc: d\n  condition: evt.type = openat and {cond}\n"
                                             "  output: o\n  priority: WARNING\n")])
        assert bool(eng.event_gates(["openat"])["openat"].result & RES_NEG) == keeps, cond


def test_the_shipped_rules_match_no_failed_open_their_gates_cut() -> None:
    checked = 0
    for path in (DEFAULT_RULES, shared_path("upstream-rules", "current", "falco_rules.yaml")):
        eng = Engine.from_files([path], rule_matching="all")
        types = [t for t in OPENS if t in (eng.event_types or ())]
        gates = eng.event_gates(types)
        for etype in types:
            if gates[etype].result & RES_NEG:
                continue
            for res in FAILURES:
                for name in [*PATHS, "/etc/sudoers", "/root/.aws/credentials", "/usr/bin/ls", "/etc/pam.d/x"]:
                    for has_fd in (True, False):
                        assert not eng.matching_rules(_event(etype, res, name, has_fd)), (path, etype, name)
                        checked += 1
    assert checked >= 4 * 4 * 10 * 2  # the default rules' four open types at least
