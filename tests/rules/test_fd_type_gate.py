"""The fd-type gate (rules/fd_type_gate.py) is conservative: whenever an enabled rule matches an event, the
gate says an event of its type on an fd of its type may match. Checked on the default rules, synthetic rules
and Falco's upstream stable rules over generated events of the syscalls the sensor delivers with an fd."""

from __future__ import annotations

import textwrap
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_open_prefixes import DEFAULT, PROCS, rule
from test_open_gate import _upstream

from falconet.model.event import Container, Event, Fd, Process, User
from falconet.rules.engine import Engine
from falconet.rules.fd_type_gate import NO_FD
from falconet.rules.syscalls import FD_TYPECHARS

TYPES = ["dup", "dup2", "dup3", "connect", "accept4", "sendto", "recvfrom", "read", "write", "close", "fcntl",
         "bind", "listen", "ptrace", "openat"]  # fmt: skip
# NO_FD: an event without an fd; TYPELESS: an fd of no known type (both asked as NO_FD, as the enricher does)
TYPELESS = "<typeless>"
FD_TYPES = sorted(FD_TYPECHARS) + ["memfd", "userfaultfd", NO_FD, TYPELESS]


def fd_event(etype: str, fd_type: str, res: int, comm: str, name: str) -> Event:
    parent = Process(pid=10, ppid=1, name="bash", exe="bash", exepath="/usr/bin/bash", args=[], cwd="/",
                     user=User(uid=0, name="root"))  # fmt: skip
    proc = Process(pid=100, ppid=10, name=comm, exe=comm, exepath=f"/usr/bin/{comm}", args=["-i"], cwd="/root",
                   tty=34816, user=User(uid=0, name="root"), parent=parent)  # fmt: skip
    args: dict[str, Any] = {"fd": 3, "oldfd": 3, "newfd": res, "res": res}
    fd: Fd | None = Fd(num=res, type="" if fd_type == TYPELESS else fd_type, name=name, sip="203.0.113.5", sport=4444, cip="192.0.2.1", cport=5555,
            l4proto="tcp" if fd_type in ("ipv4", "ipv6") else None,
            sockfamily="ip" if fd_type in ("ipv4", "ipv6") else ("unix" if fd_type == "unix" else None))
    if fd_type == NO_FD:
        fd = None
    return Event(num=1, ts=1, type=etype, tid=100, res=res, proc=proc, args=args, fd=fd, container=Container())


def _synthetic() -> Engine:
    macro = textwrap.dedent("""
        - macro: net
          condition: fd.typechar in (4, 6)
        """)
    text = (rule("evt.type in (dup, dup2) and evt.rawres in (0, 1, 2) and net", "a", extra=macro)
            + rule("evt.type = dup3 and not fd.type = pipe", "b")
            + rule("evt.type = sendto and (fd.type = unix or proc.name = nc)", "c")
            + rule("evt.type in (read, write) and fd.typechar = p and fd.num = 2", "d")
            + rule("evt.type = close and fd.typechar = o", "e"))  # an fd of no known type reads "o"
    return Engine.from_texts([("t.yaml", text)], rule_matching="all")


SYNTH = _synthetic()
EVENTS = dict(etype=st.sampled_from(TYPES), fd_type=st.sampled_from(FD_TYPES), res=st.sampled_from([0, 1, 2, 5]),
              comm=st.sampled_from([*PROCS, "nc"]), name=st.sampled_from(["/tmp/x", "203.0.113.5:4444", "pipe:[1]"]))


def _check(engine: Engine, etype: str, fd_type: str, res: int, comm: str, name: str) -> None:
    event = fd_event(etype, fd_type, res, comm, name)
    matched = engine.matching_rules(event)
    if matched:
        asked = NO_FD if fd_type == TYPELESS else fd_type
        assert engine.open_gate().fd_type_may_match(etype, asked), (matched, etype, fd_type)


@settings(max_examples=1500, deadline=None)
@given(**EVENTS)
def test_default_and_synthetic_rules_never_match_what_the_gate_rules_out(etype: str, fd_type: str, res: int,
                                                                         comm: str, name: str) -> None:
    _check(DEFAULT, etype, fd_type, res, comm, name)
    _check(SYNTH, etype, fd_type, res, comm, name)


@settings(max_examples=600, deadline=None)
@given(**EVENTS)
def test_upstream_stable_rules_never_match_what_the_gate_rules_out(etype: str, fd_type: str, res: int,
                                                                   comm: str, name: str) -> None:
    _check(_upstream(), etype, fd_type, res, comm, name)


def test_the_space_reaches_the_rules_and_the_gate_rules_out_a_builds_dups() -> None:
    assert SYNTH.matching_rules(fd_event("dup2", "ipv4", 1, "bash", "x")) == ["a"]
    assert SYNTH.matching_rules(fd_event("dup3", "file", 1, "bash", "x")) == ["b"]
    assert SYNTH.matching_rules(fd_event("sendto", "ipv4", 5, "nc", "x")) == ["c"]
    assert SYNTH.matching_rules(fd_event("write", "pipe", 2, "bash", "x")) == ["d"]
    assert SYNTH.matching_rules(fd_event("close", TYPELESS, 2, "bash", "x")) == ["e"]
    assert not SYNTH.matching_rules(fd_event("close", NO_FD, 2, "bash", "x"))
    gate = SYNTH.open_gate()
    assert not gate.fd_type_may_match("dup2", "pipe")
    assert gate.fd_type_may_match("dup3", "pipe"), "a negation may hold"
    assert gate.fd_type_may_match("sendto", "ipv4"), "an or with another test may hold"
    assert not gate.fd_type_may_match("read", "file")
    assert gate.fd_type_may_match("openat", "file"), "opens are the open gate's"
    default = DEFAULT.open_gate()
    assert DEFAULT.matching_rules(fd_event("dup2", "ipv4", 0, "bash", "203.0.113.5:4444"))
    assert default.fd_type_may_match("dup2", "ipv4")
    assert not default.fd_type_may_match("dup2", "pipe") and not default.fd_type_may_match("dup2", "file")
    # a dup of an fd user space does not know (a build's dup2 of fds it inherited): no default rule
    assert not default.fd_type_may_match("dup2", NO_FD)
    assert gate.fd_type_may_match("dup3", NO_FD), "a negation may hold"
