"""The record cuts (sensor/recut.py) are sound in user space: every record the model cuts leaves the Enricher's
tables as they were, and the cuts are computed only where the rules' gates allow them. The live kernel's
decision is checked against a sensor without cuts in test_recut_live.py; the rules' side (fd.num bounding an
open's result class) in tests/rules/test_fail_cut_property.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

from falconet.model.event import Fd
from falconet.model.prefilter import EVERYTHING, RES_POS, RES_ZERO, EventGate
from falconet.rules import DEFAULT_RULES
from falconet.rules.engine import Engine
from falconet.sensor import record as r
from falconet.sensor import syscalls as sc
from falconet.sensor.enricher import Enricher
from falconet.sensor.recut import CUT_FAIL, CUT_QUIET, FAIL_INERT, QUIET_KEEP, Cut, compute
from falconet.sensor.state import ProcessTable

PID = 60
# Argument registers: fds the table knows (3 a file, 4 a directory, 5 a pipe, 6 a socket), ones it does not, the
# dirfd AT_FDCWD, commands and flags; 64-bit patterns too.
REGS = [0, 1, 2, 3, 4, 5, 6, 7, 40, 1030, 0xFFFFFF9C, 0o2000000, (1 << 64) - 1, 0x7FFF0000]
FAILURES = [-1, -2, -9, -11, -13, -22, -24, -115]


def _rec(kind: int, nr: int = -1, res: int = 0, args: tuple[int, ...] = (0,) * 6,
         segs: dict[int, bytes] | None = None) -> bytes:
    segments = [b""] * 6
    for k, v in (segs or {}).items():
        segments[k] = v
    return r.encode(r.Record(kind=kind, ts=1000, tgid=PID, tid=PID, ppid=1, loginuid=-1, uid=0, gid=0, euid=0,
                             egid=0, cap_inheritable=0, cap_permitted=0, cap_effective=0, tty=0, sid=1, pgid=PID,
                             cpu=0, vtid=PID, vpid=PID, vpgid=PID, pidns_level=0, pidns_init_ts=0, nr=nr, res=res,
                             args=tuple(a & 0xFFFFFFFFFFFFFFFF for a in args), comm="cc",
                             segments=tuple(segments)))


def _enricher(wanted: set[str] | None) -> Enricher:
    t = ProcessTable()
    p = t.ensure(PID)
    p.comm, p.exe, p.exepath, p.cwd, p.ppid, p.sid, p.pgid, p.vpid, p.vpgid = (
        "cc", "cc", "/usr/bin/cc", "/tmp/build", 1, 1, PID, PID, PID)
    p.fds = {3: Fd(3, "file", "/tmp/build/a.c"), 4: Fd(4, "directory", "/tmp/build/sub"),
             5: Fd(5, "pipe", "pipe:[1]"), 6: Fd(6, "ipv4", "1.2.3.4:5->6.7.8.9:10", l4proto="tcp")}
    t.ensure(1).comm = "init"
    en = Enricher(t, wanted=wanted)
    en.feed(_rec(r.REC_SYSCALL, sc.BY_NAME["setsid"].nr, PID))  # the process's identity as the records bring it
    return en


def _snapshot(en: Enricher) -> object:
    return {pid: (sorted(p.fds.items()), p.cwd, p.exe, p.gen) for pid, p in en.table.procs.items()}


def _paths(name: str) -> list[dict[int, bytes]]:
    spec = sc.BY_NAME[name]
    if spec.str0 == sc.NO_ARG:
        return [{}]
    return [{r.SEG_STR0: p} for p in (b"/etc/shadow\0", b"x.h\0", b"../sub/y.h\0", b"/tmp/build/sub\0", b"")]


def test_a_failed_call_of_each_fail_inert_syscall_changes_no_table() -> None:
    checked = 0
    for name in sorted(FAIL_INERT):
        nr = sc.BY_NAME[name].nr
        wanteds: tuple[set[str] | None, ...] = (None, set())
        for wanted in wanteds:
            for res in FAILURES:
                for reg in REGS:
                    for segs in _paths(name):
                        en = _enricher(wanted)
                        before = _snapshot(en)
                        en.feed(_rec(r.REC_SYSCALL, nr, res, (reg, reg, reg, 0, 0, 0), segs))
                        assert _snapshot(en) == before, (name, wanted, res, reg, segs)
                        checked += 1
    assert checked > 3000


def test_a_quiet_record_of_an_undelivered_type_changes_no_table() -> None:
    for name, (argidx, kept) in QUIET_KEEP.items():
        nr = sc.BY_NAME[name].nr
        for value in [*range(0, 12), 1024, 1025, 1026, 1031, 1032, 1033, 1034, 0xFFFFFFFF]:
            if value in kept:
                continue
            for res in (0, 1, 3, 7, 40, 4321):
                for fd in (3, 4, 5, 6, 9):
                    args = [fd, 0, 0, 0, 0, 0]
                    args[argidx] = value if argidx else args[0]
                    if name == "fcntl":
                        args[1] = value
                    en = _enricher(set())
                    before = _snapshot(en)
                    assert not Cut(CUT_FAIL | CUT_QUIET, argidx, kept).keeps(res, tuple(args))
                    en.feed(_rec(r.REC_SYSCALL, nr, res, tuple(args)))
                    assert _snapshot(en) == before, (name, value, res, fd)


def test_the_kept_fcntl_commands_do_change_the_table() -> None:
    """The other side: what QUIET_KEEP keeps is what the table needs (a mutation that cut them changes it)."""
    for cmd, res in ((0, 20), (1030, 21), (2, 0)):
        en = _enricher(set())
        before = _snapshot(en)
        en.feed(_rec(r.REC_SYSCALL, sc.BY_NAME["fcntl"].nr, res, (3, cmd, 1, 0, 0, 0)))
        assert _snapshot(en) != before, cmd
        assert QUIET_KEEP["fcntl"][1].count(cmd) == 1


def test_the_model() -> None:
    fail = Cut(CUT_FAIL)
    assert not fail.keeps(-2, (0,) * 6) and fail.keeps(0, (0,) * 6) and fail.keeps(5, (0,) * 6)
    quiet = Cut(CUT_FAIL | CUT_QUIET, 1, (0, 2, 1030))
    assert quiet.keeps(5, (3, 0, 0, 0, 0, 0)) and quiet.keeps(0, (3, (7 << 32) | 2, 0, 0, 0, 0))
    assert not quiet.keeps(0, (3, 3, 0, 0, 0, 0)) and not quiet.keeps(-9, (3, 0, 0, 0, 0, 0))
    assert not Cut(CUT_QUIET, 0, ()).keeps(1234, (0,) * 6)


def test_the_cuts_of_the_default_rules() -> None:
    eng = Engine.from_files([DEFAULT_RULES])
    types = eng.event_types
    assert types is not None
    cuts = compute(types, eng.event_gates(sorted(types)))
    by_name = {sc.BY_NR[nr].name: cut for nr, cut in cuts.items()}
    # the delivered opens and dups: no default rule matches a failure (open_read/open_write need fd.num >= 0)
    for name in ("open", "openat", "openat2", "creat", "dup", "dup2", "dup3"):
        assert by_name[name] == Cut(CUT_FAIL), name
    assert by_name["fcntl"] == Cut(CUT_FAIL | CUT_QUIET, 1, (0, 2, 1030))
    assert by_name["close"] == by_name["pipe2"] == Cut(CUT_FAIL)
    for name in ("clone", "clone3", "fork", "vfork"):
        assert by_name[name] == Cut(CUT_FAIL | CUT_QUIET, 0, ())
    for name in ("connect", "execve", "execveat", "unlinkat", "mkdir"):
        assert name not in by_name, name  # EINPROGRESS names the fd; exec is joined; not a state syscall
    assert compute(types, None) == {} and compute(None, {}) == {}


def test_a_rule_on_failures_keeps_them() -> None:
    text = textwrap.dedent("""
        - rule: failed opens
          desc: d
          condition: evt.type in (openat, dup2) and evt.rawres < 0
          output: o
          priority: WARNING
        - rule: fcntl
          desc: d
          condition: evt.type = fcntl and fd.num = -1
          output: o
          priority: WARNING
        """)
    eng = Engine.from_texts([("t.yaml", text)])
    types = eng.event_types
    assert types is not None
    cuts = compute(types, eng.event_gates(sorted(types)))
    names = {sc.BY_NR[nr].name for nr in cuts}
    assert not names & {"openat", "dup2", "fcntl"}
    assert "close" in names and "open" in names  # not delivered: their failures only keep the tables
    # a gate that keeps no failure, for a delivered type: its failures are cut; a gate that may: not
    only_ok = {"openat": EventGate(result=RES_ZERO | RES_POS), "dup": EVERYTHING}
    got = compute(frozenset({"openat", "dup"}), only_ok)
    assert got[sc.BY_NAME["openat"].nr] == Cut(CUT_FAIL) and sc.BY_NAME["dup"].nr not in got


def test_the_map_layout_matches_the_header() -> None:
    text = (Path(__file__).parents[2] / "sensor" / "probe_recut.h").read_text()
    assert f"#define RECUT_FAIL {CUT_FAIL}" in text and f"#define RECUT_QUIET {CUT_QUIET}" in text
