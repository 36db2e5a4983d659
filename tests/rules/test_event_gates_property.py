"""The event gates are conservative: for random rules built from every predicate kind the gate analysis knows
(result comparisons, evt.failed, evt.res, user.uid, proc.name, numeric evt.rawarg.NAME with =, in, != and
numbers of every sign, on registers holding 32- and 64-bit negatives; bit tests `evt.arg.NAME contains TEXT` of
arguments rendered by bit names, TEXT a name, a part of one, several, a number or a separator; string arguments evt.arg.NAME and
evt.rawarg.NAME of paths and plain strings with every path operator, on strings absolute or relative, clean or
not, long, unreadable or not UTF-8) and
checks it cannot bound, under and/or/not and macros, and random events of gated syscalls, an event the
kernel's model drops (sensor/eventgate.py, the decision probe_eventgate.h makes with the maps filled from the
rules) never matches any rule.

tests/sensor/test_eventgate_live.py checks that the live kernel decides as this model does."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rule_strategies import conditions
from rule_strategies import quote as _q

from falconet.model.event import Container, Event, Process, User
from falconet.model.prefilter import EVERYTHING, NOTHING, RES_NEG, RES_POS, RES_ZERO, EventGate, ValueSet
from falconet.rules.engine import Engine
from falconet.rules.errors import RulesLoadError
from falconet.sensor import syscalls as sc
from falconet.sensor.eventgate import (
    GateMaps,
    arg_value,
    comm_key,
    compile_gates,
    gateable,
    register_params,
    string_params,
)
from falconet.sensor.state import resolve_path

TYPES = ["mkdir", "unlinkat", "setuid", "chmod", "ptrace", "read", "rename", "symlink"]
RESULTS = [-13, -2, -1, 0, 1, 2, 5, 4096]
UIDS = [0, 1, 1000, 4321, 65534]
# Kernel comm bytes; proc.name is their decoding (an empty comm is a missing proc.name).
COMMS = [b"cat", b"bash", b"sudo", b"", b"a_very_long_pro", b"\xffab", b"gate", b"Cat"]
NAMES = ["cat", "bash", "sudo", "", "a_very_long_process", "a_very_long_pro", "\ufffdab", "gate", "x y"]
# Argument registers: small values, a 32-bit -1, a 64-bit -1, and one with garbage in the upper half.
REGS = [0, 1, 2, 0o4755, 0o644, 16, 0xFFFFFFFF, (1 << 64) - 1, (5 << 32) | 16, 0x200, 0o2755, 0o1777, 0o6000]
PARAMS = ["mode", "uid", "request", "size", "dirfd", "flags", "fd", "pid"]
NUMS = ["0", "-1", "1", "2", "-2", "5", "0x10", "1000", "4321", "abc", "1.0", "-13"]
# Strings the argument pointers point to (None: unreadable); a path argument's value is the string resolved
# against the cwd (/root) with `.` and `..` folded, a plain string's the string itself.
STRINGS: list[bytes | None] = [
    b"/etc/shadow", b"/etc/shadowx", b"/etc", b"/etc/", b"/", b"/root/.bash_history", b"/tmp/a_history",
    b"rel_history", b"../etc/shadow", b"/etc//shadow", b"/etc/./shadow", b"/x/../etc/shadow", b"/tmp/f.log",
    b"/tmp/sub/f.log", b"shadow", b"", None, b"/" + b"a" * 260 + b"_history", b"/tmp/\xff_history",
    b"/etc/shadow/..", b"/tmp/x.", b"/.bash_history",
]  # fmt: skip
BIT_TEXTS = ["S_ISUID", "S_ISGID", "S_IS", "ISUID", "S_IRUSR", "S_I", "UID", "0", "1", "|", "S_ISUID|S_IRUSR",
             "X", "AT_REMOVEDIR", "AT_", "REMOVE", "S_IXOTH", "4096", "RENAME_NOREPLACE"]
STR_FIELDS = ["evt.arg.path", "evt.arg.name", "evt.arg.filename", "evt.arg.oldpath", "evt.arg.newpath",
              "evt.arg.target", "evt.arg.linkpath", "evt.rawarg.path", "evt.rawarg.target", "fd.name"]
STR_VALUES = ["/etc/shadow", "/etc", "/etc/", "_history", "/root", "*/shadow", "/tmp/*.log", "../", "shadow",
              "/", "/tmp/", ".log", "/.bash_history", "'/tmp/sub/**'", "/tmp/*"]


check = st.one_of(
    st.builds(lambda op, n: f"evt.rawres {op} {n}", st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
              st.sampled_from(NUMS[:9])),
    st.builds(lambda a, b: f"evt.rawres in ({a}, {b})", st.sampled_from(NUMS[:6]), st.sampled_from(NUMS[:6])),
    st.sampled_from(["evt.failed = true", "evt.failed = false", "evt.res = SUCCESS", "evt.res != SUCCESS",
                     "evt.res = ENOENT", "evt.res != EACCES", "evt.res startswith E"]),
    st.builds(lambda op, n: f"user.uid {op} {n}", st.sampled_from(["=", "!=", ">", "<="]),
              st.sampled_from(["0", "1000", "4321", "-1", "0x10"])),
    st.builds(lambda a, b: f"user.uid in ({a}, {b})", st.sampled_from(["0", "1", "1000"]),
              st.sampled_from(["4321", "65534", "0"])),
    st.builds(lambda op, n: f"proc.name {op} {_q(n)}", st.sampled_from(["=", "!=", "startswith", "contains"]),
              st.sampled_from(NAMES)),
    st.builds(lambda a, b: f"proc.name in ({_q(a)}, {_q(b)})", st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.builds(lambda p, op, n: f"evt.rawarg.{p} {op} {n}", st.sampled_from(PARAMS),
              st.sampled_from(["=", "!=", ">"]), st.sampled_from(["0", "-1", "16", "0x10", "2564", "4294967295",
                                                                  "-100", "512", "2"])),
    st.builds(lambda p, a, b: f"evt.rawarg.{p} in ({a}, {b})", st.sampled_from(PARAMS),
              st.sampled_from(["0", "-1", "16"]), st.sampled_from(["420", "2", "18446744073709551615"])),
    st.builds(lambda f, op, v: f"{f} {op} {v}", st.sampled_from(STR_FIELDS),
              st.sampled_from(["=", "!=", "startswith", "endswith", "contains", "glob", "pmatch"]),
              st.sampled_from(STR_VALUES)),
    st.builds(lambda f, a, b: f"{f} in ({a}, {b})", st.sampled_from(STR_FIELDS), st.sampled_from(STR_VALUES),
              st.sampled_from(STR_VALUES)),
    st.builds(lambda f, t: f"{f} contains {_q(t)}", st.sampled_from(["evt.arg.mode", "evt.arg.flags"]),
              st.sampled_from(BIT_TEXTS)),
    st.sampled_from(["proc.exe = cat", "user.name = root", "container.id = host", "proc.pname = bash",
                     "evt.type = mkdir", "evt.type != setuid", "evt.type in (chmod, read)",
                     "proc.name in (known_names)", "known_macro", "toupper(proc.name) = CAT"]),
)


condition = conditions(check)
types = st.sets(st.sampled_from(TYPES), min_size=1)
PREAMBLE = textwrap.dedent("""
    - list: known_names
      items: [sudo, cat, "a_very_long_process"]
    - macro: known_macro
      condition: (proc.name in (known_names) and evt.rawres >= 0) or user.uid = 1000
    """)


def _rule(i: int, etypes: set[str], cond: str) -> str:
    return textwrap.dedent(f"""
        - rule: r{i}
          desc: d
          condition: evt.type in ({", ".join(sorted(etypes))}) and {cond}
          output: o %proc.name
          priority: WARNING
        """)


def event(etype: str, res: int, uid: int, comm: bytes, regs: tuple[int, ...] = (0,) * 6,
          strings: dict[int, bytes | None] | None = None) -> Event:
    """An event as the sensor makes it: proc.name the comm decoded, user.uid the record's uid, each register
    parameter its register as user space reads it, each string parameter the string at its pointer (a path
    resolved against the cwd as sensor/state.py does; absent when unreadable), and no other argument."""
    name = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
    proc = Process(pid=100, ppid=10, name=name, exe="x", exepath="/usr/bin/x", args=[], cwd="/root",
                   user=User(uid=uid, name="root" if uid == 0 else None))  # fmt: skip
    args: dict[str, object] = {}
    for pname, (index, conv) in register_params(etype).items():
        args[pname] = arg_value(conv, regs[index])
    sources = dict(sc.BY_NAME[etype].params)
    for pname, index in string_params(etype).items():
        raw = (strings or {}).get(index)
        if raw is None:
            continue
        text = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        args[pname] = resolve_path("/root", text) if sources[pname].startswith("p") else text
    return Event(num=1, ts=1, type=etype, tid=100, res=res, proc=proc, args=args, fd=None,
                 container=Container())  # fmt: skip


def gates_of(text: str) -> tuple[Engine, dict[str, EventGate]] | None:
    try:
        eng = Engine.from_texts([("t.yaml", PREAMBLE + text)], rule_matching="all")
    except RulesLoadError:
        return None  # a combination the engine refuses: no rule to test
    return eng, eng.event_gates(TYPES)


@settings(max_examples=500, deadline=None)
@given(
    rules=st.lists(st.tuples(types, condition), min_size=1, max_size=3),
    events=st.lists(st.tuples(st.sampled_from(TYPES), st.sampled_from(RESULTS), st.sampled_from(UIDS),
                              st.sampled_from(COMMS), st.tuples(*[st.sampled_from(REGS)] * 6),
                              st.tuples(*[st.sampled_from(STRINGS)] * 4)),
                    min_size=1, max_size=10),  # fmt: skip
)
def test_an_event_the_gates_drop_matches_no_rule(
    rules: list[tuple[set[str], str]],
    events: list[tuple[str, int, int, bytes, tuple[int, ...], tuple[bytes | None, ...]]],
) -> None:
    text = "".join(_rule(i, etypes, cond) for i, (etypes, cond) in enumerate(rules))
    found = gates_of(text)
    if found is None:
        return
    eng, gates = found
    maps = compile_gates(gates)
    for etype, res, uid, comm, regs, strs in events:
        strings = dict(enumerate(strs))
        if maps.keeps(sc.BY_NAME[etype].nr, res, uid, comm.ljust(16, b"\0"), regs, strings):
            continue
        ev = event(etype, res, uid, comm, regs, strings)
        assert not eng.matching_rules(ev), (text, gates[etype], etype, res, uid, comm, ev.args)


def test_the_generated_space_is_not_empty() -> None:
    """Gates that drop and events that match both occur (else the property is vacuous); each kind narrows."""
    text = _rule(0, {"setuid"}, "evt.rawres = 0 and user.uid != 0 and not proc.name in (sudo, su)")
    found = gates_of(text)
    assert found is not None
    eng, gates = found
    assert gates["setuid"] == EventGate(RES_ZERO, ValueSet(True, frozenset({0})),
                                        ValueSet(True, frozenset({"sudo", "su"})))
    assert gates["mkdir"] == NOTHING  # no rule of the type
    maps = compile_gates(gates)
    nr = sc.BY_NAME["setuid"].nr
    assert maps.keeps(nr, 0, 1000, comm_key("cat"))
    assert eng.matching_rules(event("setuid", 0, 1000, b"cat"))
    for res, uid, comm in ((-1, 1000, "cat"), (0, 0, "cat"), (0, 1000, "sudo")):
        assert not maps.keeps(nr, res, uid, comm_key(comm)), (res, uid, comm)
    assert not maps.keeps(sc.BY_NAME["mkdir"].nr, 0, 0, comm_key("cat"))


def test_result_bounds() -> None:
    def res_gate(cond: str) -> int:
        found = gates_of(_rule(0, {"mkdir"}, cond))
        assert found is not None
        return found[1]["mkdir"].result

    assert res_gate("evt.rawres >= 0") == RES_ZERO | RES_POS
    assert res_gate("evt.rawres > 5") == RES_POS
    assert res_gate("not evt.rawres > 5") == RES_NEG | RES_ZERO | RES_POS  # "> 5" is not a whole class
    assert res_gate("not evt.rawres > 0") == RES_NEG | RES_ZERO
    assert res_gate("evt.failed = true or evt.rawres = 0") == RES_NEG | RES_ZERO
    assert res_gate("not evt.res = SUCCESS") == RES_NEG
    assert res_gate("evt.res = ENOENT") == RES_NEG
    assert res_gate("not evt.res = ENOENT") == RES_NEG | RES_ZERO | RES_POS


def test_state_syscalls_are_never_gated() -> None:
    """Syscalls that keep user space's tables right reach it whatever the rules say."""
    for name in ("execve", "clone", "fork", "chdir", "fchdir", "open", "openat", "close", "dup2", "connect",
                 "sendto", "accept4", "socket", "pipe2", "fcntl", "memfd_create"):
        assert not gateable(name), name
    maps = compile_gates({"execve": NOTHING, "sendto": NOTHING, "mkdir": NOTHING, "unlinkat": EVERYTHING})
    assert set(maps.entries) == {sc.BY_NAME["mkdir"].nr}
    # unshare/setns carry the credentials from before the syscall: their uid bound is not checked
    unshare = EventGate(RES_ZERO, ValueSet(False, frozenset({0})))
    assert compile_gates({"unshare": unshare}).keeps(sc.BY_NAME["unshare"].nr, 0, 1000, comm_key("x"))


def test_values_beyond_the_kernel_hash_widen_the_gate() -> None:
    """More comms than gate_values holds: the largest sets become "any" (which only keeps more)."""
    many = ValueSet(True, frozenset(f"p{i}" for i in range(5000)))
    few = ValueSet(False, frozenset({"cat"}))
    maps = compile_gates({"mkdir": EventGate(RES_ZERO, comm=many), "rmdir": EventGate(comm=few)})
    assert len(maps.values) <= 4096
    mkdir, rmdir = sc.BY_NAME["mkdir"].nr, sc.BY_NAME["rmdir"].nr
    assert maps.keeps(mkdir, 0, 0, comm_key("p1"))  # the comm bound was dropped, the result's kept
    assert not maps.keeps(mkdir, -2, 0, comm_key("x"))
    assert maps.keeps(rmdir, 0, 0, comm_key("cat")) and not maps.keeps(rmdir, 0, 0, comm_key("dog"))


def test_argument_bounds_read_registers_as_user_space_does() -> None:
    """evt.rawarg.uid of setuid is the register's low half, signed: -1 is 0xffffffff with any upper half."""
    found = gates_of(_rule(0, {"setuid"}, "(evt.rawarg.uid = 0 or evt.rawarg.uid = -1) and evt.rawres = 0"))
    assert found is not None
    eng, gates = found
    maps = compile_gates(gates)
    nr = sc.BY_NAME["setuid"].nr
    for reg, kept in ((0, True), (0xFFFFFFFF, True), ((7 << 32) | 0xFFFFFFFF, True), (1000, False),
                      ((1 << 64) - 2, False)):
        assert maps.keeps(nr, 0, 0, comm_key("x"), (reg, 0, 0, 0, 0, 0)) == kept, hex(reg)
        assert bool(eng.matching_rules(event("setuid", 0, 0, b"x", (reg, 0, 0, 0, 0, 0)))) == kept, hex(reg)
    # a bound on a parameter the syscall does not have (or not in a register) is not checked
    assert compile_gates({"setuid": EventGate(args=(("mode", ValueSet(False, frozenset({1}))),))}).entries == {}


@pytest.mark.upstream
def test_the_default_and_upstream_rules_gates_drop_no_event_they_match() -> None:
    """The shipped rules (macros, lists, exceptions and all) on a grid of events of every gated syscall: the
    comms each gate names, results of each class, uids, argument registers of each kind, and strings at
    the bounded argument around each path atom."""
    from resources import shared_path

    from falconet.rules import DEFAULT_RULES

    files = [DEFAULT_RULES, shared_path("upstream-rules", "current", "falco_rules.yaml")]
    checked = path_drops = 0
    for path in files:
        eng = Engine.from_files([path], rule_matching="all")
        types = sorted(eng.event_types or ())
        maps = compile_gates(eng.event_gates(types))
        comms = {raw[:15] for nr, kind, raw in maps.values if kind == 2} | {b"cat", b""}
        for etype in types:
            nr = sc.BY_NAME[etype].nr
            if nr not in maps.entries:
                continue
            strings = _grid_strings(maps, nr)
            for res in (-1, 0, 5):
                for uid in (0, 1000):
                    for comm in sorted(comms):
                        for reg in (0, 1, 0xFFFFFFFF, 0o4755, 0o2700, 0o755):
                            regs = (reg,) * 6
                            for strs in strings:
                                if maps.keeps(nr, res, uid, comm.ljust(16, b"\0"), regs, strs):
                                    continue
                                checked += 1
                                path_drops += bool(strs) and maps.keeps(nr, res, uid, comm.ljust(16, b"\0"), regs)
                                ev = event(etype, res, uid, comm.rstrip(b"\0"), regs, strs)
                                assert not eng.matching_rules(ev), (path.name, etype, res, uid, comm, reg, strs)
    assert checked > 1000 and path_drops > 100, (checked, path_drops)


def _grid_strings(maps: GateMaps, nr: int) -> list[dict[int, bytes | None]]:
    """For a syscall with a path bound: each atom hit and missed (a prefix itself, below it, beside it; a path
    ending in each suffix and in a cut of it), strings the kernel cannot judge, and benign paths."""
    entry = maps.entries[nr]
    if not entry.path:
        return [{}]
    raws: set[bytes | None] = {None, b"/tmp/f.log", b"rel_history", b"/etc//shadow", b"/etc/../etc/shadow", b"/"}
    for n, p in maps.prefixes:
        if n == nr:
            raws |= {p, p + b"/x", p + b"x", p[:-1], b"/x" + p}
    for n, x in maps.suffixes:
        if n == nr:
            raws |= {b"/home/u/" + x, b"/home/u/" + x[1:], b"/home/u/" + x + b"x", b"/home/u/a" + x}
    others: dict[int, bytes | None] = {i: b"/tmp/other" for i in range(4)}
    return [others | {entry.pathidx: raw} for raw in sorted(raws, key=lambda r: r or b"")]


STR_TYPES = ["mkdir", "unlinkat", "chmod", "rename", "symlink"]
STR_OPS = ["=", "!=", "startswith", "endswith", "contains", "glob", "pmatch", "in"]


def test_every_string_check_alone_and_negated_drops_no_event_it_matches() -> None:
    """Exhaustively (the random conditions above rarely meet the one string that breaks a bound): each field,
    operator and value of the string kinds, alone and under `not`, against every string on every string
    argument of every type that has one."""
    checked = dropped = 0
    for field in STR_FIELDS:
        for op in STR_OPS:
            for value in STR_VALUES:
                cond = f"{field} in ({value}, /etc/shadow)" if op == "in" else f"{field} {op} {value}"
                for text in (cond, f"not {cond}"):
                    found = gates_of(_rule(0, set(STR_TYPES), text))
                    if found is None:
                        continue
                    eng, gates = found
                    maps = compile_gates(gates)
                    for etype in STR_TYPES:
                        nr = sc.BY_NAME[etype].nr
                        for index in string_params(etype).values():
                            for raw in STRINGS:
                                strings: dict[int, bytes | None] = {i: b"/tmp/benign" for i in range(4)}
                                strings[index] = raw
                                checked += 1
                                if maps.keeps(nr, 0, 0, comm_key("cat"), (0,) * 6, strings):
                                    continue
                                dropped += 1
                                ev = event(etype, 0, 0, b"cat", (0,) * 6, strings)
                                assert not eng.matching_rules(ev), (text, gates[etype], etype, raw, ev.args)
    assert dropped > 1000 and checked > dropped, (checked, dropped)


def test_path_bounds() -> None:
    """What the string kinds bound, and what they leave alone."""
    cond = ("evt.rawres = 0 and (evt.arg.name endswith _history or evt.arg.oldpath endswith _history"
            " or evt.arg.target in (/etc/shadow, /))")
    found = gates_of(_rule(0, {"unlinkat", "rename", "symlink"}, cond))
    assert found is not None
    eng, gates = found
    assert gates["unlinkat"].paths == (("name", frozenset({"*_history"})),)  # it has no oldpath nor target
    assert gates["symlink"].paths == (("target", frozenset({"/etc/shadow"})),)  # "/" is never a clean value
    maps = compile_gates(gates)
    unlinkat, symlink = sc.BY_NAME["unlinkat"].nr, sc.BY_NAME["symlink"].nr
    for raw, kept in ((b"/tmp/a_history", True), (b"/tmp/f.log", False), (b"rel.log", True), (b"/tmp//f.log", True),
                      (b"/tmp/x/../f.log", True), (None, True), (b"/" + b"a" * 260, True)):
        assert maps.keeps(unlinkat, 0, 0, comm_key("x"), (0,) * 6, {1: raw}) == kept, raw
    assert maps.keeps(symlink, 0, 0, comm_key("x"), (0,) * 6, {0: b"/etc/shadow"})
    assert not maps.keeps(symlink, 0, 0, comm_key("x"), (0,) * 6, {0: b"/etc/hostname"})
    assert maps.keeps(symlink, 0, 0, comm_key("x"), (0,) * 6, {0: b"../etc/hostname"})
    assert eng.matching_rules(event("unlinkat", 0, 0, b"x", (0,) * 6, {1: b"/tmp/a_history"}))


BIT_TYPES = ["chmod", "fchmodat", "unlinkat", "renameat2", "mkdir"]


def test_every_bit_check_alone_and_negated_drops_no_event_it_matches() -> None:
    """Exhaustively: each bit text on each flag or mode parameter, alone and under `not`, against registers with
    each bit of the tables set, none, all, and garbage in the upper half."""
    regs = sorted({0, 1, 2, 4, 0x100, 0x200, 0x400, 0o4000, 0o2000, 0o1000, 0o6755, 0o755, 0xFFFFFFFF,
                   (1 << 64) - 1, (3 << 32) | 0o4000, 1 << 40})  # fmt: skip
    checked = dropped = 0
    for field in ("evt.arg.mode", "evt.arg.flags"):
        for text in BIT_TEXTS:
            cond = f"{field} contains {_q(text)}"
            for rule in (cond, f"not {cond}", f"{cond} or evt.rawres < 0", f"{cond} and {field} contains S_IXOTH"):
                found = gates_of(_rule(0, set(BIT_TYPES), rule))
                if found is None:
                    continue
                eng, gates = found
                maps = compile_gates(gates)
                for etype in BIT_TYPES:
                    nr = sc.BY_NAME[etype].nr
                    for reg in regs:
                        for res in (0, -1):
                            checked += 1
                            if maps.keeps(nr, res, 0, comm_key("cat"), (reg,) * 6):
                                continue
                            dropped += 1
                            ev = event(etype, res, 0, b"cat", (reg,) * 6)
                            assert not eng.matching_rules(ev), (rule, gates[etype], etype, reg, ev.args)
    assert dropped > 300 and checked > dropped, (checked, dropped)


def test_bit_bounds() -> None:
    """What the bit kind bounds: the default rules' setuid/setgid test keeps a chmod with either bit only."""
    found = gates_of(_rule(0, {"chmod", "fchmodat", "mkdir"},
                           "evt.rawres = 0 and (evt.arg.mode contains S_ISUID or evt.arg.mode contains S_ISGID)"))
    assert found is not None
    eng = found[0]
    gates = eng.event_gates(["chmod", "fchmodat", "mkdir"])
    assert gates["chmod"].bits == (("mode", 0o6000),)
    assert gates["mkdir"].bits == ()  # mkdir's mode renders as an octal number, not by bit names
    maps = compile_gates(gates)
    chmod, fchmodat = sc.BY_NAME["chmod"].nr, sc.BY_NAME["fchmodat"].nr
    for mode, kept in ((0o4755, True), (0o2755, True), (0o755, False), (0o1777, False), (0, False)):
        assert maps.keeps(chmod, 0, 0, comm_key("x"), (0, mode, 0, 0, 0, 0)) == kept, oct(mode)
        assert maps.keeps(fchmodat, 0, 0, comm_key("x"), (0, 0, mode, 0, 0, 0)) == kept, oct(mode)
        assert bool(eng.matching_rules(event("chmod", 0, 0, b"x", (0, mode, 0, 0, 0, 0)))) == kept, oct(mode)
    assert gates_of(_rule(0, {"chmod"}, "evt.arg.mode contains S_ISXYZ")) is not None
    never = gates_of(_rule(0, {"chmod"}, "evt.arg.mode contains S_ISXYZ"))
    assert never is not None and never[1]["chmod"] == NOTHING  # no bit's name holds it
