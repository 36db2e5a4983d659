"""The live kernel decides each gated syscall as sensor/eventgate.py's model says: as root, the real BPF program.

Gates on mkdir, unlinkat, setsid and setresuid use every mode of every kind (result classes, a uid that must
be in a set or out of one, a comm that must be in a set or out of one, an argument that must be in a set
(a 32-bit -1 included) or out of one); a child process runs each syscall with success and failure under
three comms and three real uids. The events that reach user space must be exactly
those the model keeps (tests/rules/test_event_gates_property.py proves the model conservative against the
rule engine)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from falconet.model.event import Event
from falconet.model.prefilter import RES_NEG, RES_POS, RES_ZERO, EventGate, ValueSet
from falconet.sensor import SensorConfig
from falconet.sensor import syscalls as sc
from falconet.sensor.eventgate import comm_key, compile_gates

from .conftest import PY, LiveSensor, collect, start_or_skip

pytestmark = pytest.mark.bpf

TYPES = {"mkdir", "unlinkat", "setsid", "setresuid"}
COMMS = ("gate_a", "gate_b", "gate_c")
UIDS = (0, 1234, 4321)
GATES = {
    "mkdir": EventGate(RES_ZERO | RES_NEG, uid=ValueSet(False, frozenset({0, 1234})),
                       args=(("mode", ValueSet(True, frozenset({0o777}))),)),
    "setresuid": EventGate(args=(("ruid", ValueSet(False, frozenset({-1, 1234}))),)),
    "unlinkat": EventGate(RES_ZERO, comm=ValueSet(True, frozenset({"gate_b"}))),
    "setsid": EventGate(RES_POS | RES_NEG, uid=ValueSet(True, frozenset({4321})),
                        comm=ValueSet(False, frozenset({"gate_a", "gate_c"}))),
}


@pytest.fixture(scope="module")
def gated() -> Iterator[LiveSensor]:
    live = LiveSensor(start_or_skip(SensorConfig(ringbuf_bytes=16 << 20, syscalls=set(TYPES))))
    try:
        yield live
    finally:
        live.close()


def test_the_kernel_keeps_back_exactly_what_the_model_drops(gated: LiveSensor, tmp_path: Path) -> None:
    code = "\n".join([
        "import os",
        f"base = {str(tmp_path)!r}",
        "d = os.open(base, os.O_RDONLY | os.O_DIRECTORY)",
        f"for comm in {COMMS!r}:",
        f"    for uid in {UIDS!r}:",
        "        with open('/proc/self/comm', 'w') as f:",
        "            f.write(comm)",
        "        os.setresuid(uid, 0, 0)",
        "        os.setresuid(-1, 0, 0)",
        "        name = f'{comm}-{uid}'",
        "        os.mkdir(os.path.join(base, name), 0o700)",
        "        for call in (lambda: os.mkdir(os.path.join(base, name)), lambda: os.rmdir(name, dir_fd=d),",
        "                     lambda: os.rmdir(name, dir_fd=d), os.setsid):",
        "            try:",
        "                call()",
        "            except OSError:",
        "                pass",
        "        os.setresuid(0, 0, 0)",
        "with open('/proc/self/comm', 'w') as f:",
        "    f.write('gate_a')",
        "os.mkdir(os.path.join(base, 'END'), 0o700)",
        "print(os.getpid(), flush=True)",
    ])  # fmt: skip

    def workload() -> int:
        return int(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True, timeout=60).stdout)

    def keep(pid: int, e: Event) -> bool:
        return e.proc.pid == pid and e.type in TYPES and e.proc.name.startswith("gate_")

    def done(kept: list[Event]) -> bool:
        return any(e.type == "mkdir" and str(e.args.get("path", "")).endswith("/END") for e in kept)

    try:
        gated.sensor.set_event_gates(GATES)
        _, events = collect(gated, workload, keep, done)
        gated_count = gated.sensor.stats().gated
    finally:
        gated.sensor.set_event_gates(None)
    got = [(e.type, e.res, e.proc.user.uid, e.proc.name) for e in events]
    maps = compile_gates(GATES)
    expected = []
    total = 0
    for comm in COMMS:
        for uid in UIDS:
            # the child's syscalls in order (result, the caller's uid at the exit, argument registers)
            first = comm == COMMS[0] and uid == UIDS[0]
            calls = [("setresuid", 0, uid, (uid, 0, 0)), ("setresuid", 0, uid, (0xFFFFFFFF, 0, 0)),
                     ("mkdir", 0, uid, (0, 0o700)), ("mkdir", -17, uid, (0, 0o777)),
                     ("unlinkat", 0, uid, (0, 0, 0x200)), ("unlinkat", -2, uid, (0, 0, 0x200)),
                     ("setsid", 1 if first else -1, uid, ()),  # the first setsid makes a session
                     ("setresuid", 0, 0, (0, 0, 0))]  # fmt: skip
            for etype, res, caller, regs in calls:
                total += 1
                if maps.keeps(sc.BY_NAME[etype].nr, res, caller, comm_key(comm), (*regs, 0, 0, 0, 0, 0, 0)[:6]):
                    expected.append((etype, res, caller, comm))
    expected.append(("mkdir", 0, 0, "gate_a"))
    got = [(t, 1 if t == "setsid" and r > 0 else r, u, c) for t, r, u, c in got]
    assert got == expected
    assert 10 < len(expected) < total  # both decisions are exercised
    assert gated_count >= total + 1 - len(expected)


# Path gates: one string argument per syscall, prefix and suffix atoms; the kernel judges only clean absolute
# strings. mkdir (argument 0, a path), unlinkat (argument 1, resolved against a dirfd), rename (argument 0),
# renameat (argument 3: the second string), symlink (argument 0: a plain string, the link's target).
PATH_TYPES = {"mkdir", "unlinkat", "rename", "renameat", "symlink"}


def _path_gates(base: str) -> dict[str, EventGate]:
    return {
        "mkdir": EventGate(paths=(("path", frozenset({f"{base}/keep", "*-sfx"})),)),
        "unlinkat": EventGate(paths=(("name", frozenset({"*/keep-u", "*.histx"})),)),
        "rename": EventGate(paths=(("oldpath", frozenset({"*_history"})),)),
        "renameat": EventGate(paths=(("newpath", frozenset({f"{base}/keep"})),)),
        "symlink": EventGate(paths=(("target", frozenset({"/etc/shadow", "*/sudoers"})),)),
    }


PATH_CODE = """
import json, os, sys
base = sys.argv[1]
with open('/proc/self/comm', 'w') as f:
    f.write('gate_p')
os.chdir(base)
d = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
calls = []
def attempt(etype, strings, call, *args, **kw):
    try:
        call(*args, **kw)
        res = 0
    except OSError as e:
        res = -e.errno
    calls.append((etype, res, strings))
for name in ('keep', 'keep-1', 'x-sfx', 'other', 'other-sfxx', base + '/other2', base + '//keepnot',
             base + '/./x', base + '/sub/../other3', 'rel-dir'):
    p = name if name.startswith('/') or name == 'rel-dir' else base + '/' + name
    attempt('mkdir', {0: p}, os.mkdir, p)
for name in ('keep-u', 'a.histx', 'gone', base + '/keep-u', base + '/x-sfx', base + '//keep-1', '../x'):
    attempt('unlinkat', {1: name}, os.rmdir, name, dir_fd=d)
for old, new in ((base + '/h_history', base + '/h2'), (base + '/other', base + '/other4'),
                 ('other4', 'other5'), (base + '/missing_history', base + '/m')):
    if old.endswith('h_history'):
        open(old, 'w').close()
    attempt('rename', {0: old, 1: new}, os.rename, old, new)
for new in (base + '/keep/r1', base + '/r2', 'r3', base + '/keep/../r4'):
    open(base + '/src', 'w').close()
    attempt('renameat', {1: 'src', 3: new}, os.rename, 'src', new, src_dir_fd=d, dst_dir_fd=d)
for target, link in (('/etc/shadow', 'l1'), ('/etc/sudoers', 'l2'), ('/etc/hostname', 'l3'),
                     ('../../etc/shadow', 'l4'), ('/etc//hostname', 'l5'), ('/var/sudoers', 'l6')):
    attempt('symlink', {0: target, 1: link}, os.symlink, target, link)
os.mkdir(base + '/END')
print(json.dumps([os.getpid(), calls]), flush=True)
"""


def test_the_kernel_keeps_back_exactly_what_the_model_drops_by_path(tmp_path: Path) -> None:
    """Every path mode: a prefix hit, a suffix hit, a miss, a string the kernel cannot judge (relative, `//`,
    `/./`, `..`), on a first and a second string argument, a path and a plain string; each call's result as
    it came."""
    import json

    base = str(tmp_path / "pg")
    Path(base).mkdir()
    gates = _path_gates(base)
    live = LiveSensor(start_or_skip(SensorConfig(ringbuf_bytes=16 << 20, syscalls=set(PATH_TYPES))))
    out: list[tuple[int, list[tuple[str, int, dict[str, str]]]]] = []

    def workload() -> int:
        run = subprocess.run(
            [PY, "-c", PATH_CODE, base], check=True, capture_output=True, text=True, timeout=60
        )
        pid, calls = json.loads(run.stdout)
        out.append((pid, calls))
        return int(pid)

    def keep(pid: int, e: Event) -> bool:
        return e.proc.pid == pid and e.type in PATH_TYPES

    def done(kept: list[Event]) -> bool:
        return any(e.type == "mkdir" and str(e.args.get("path", "")).endswith("/END") for e in kept)

    try:
        live.sensor.set_event_gates(gates)
        _, events = collect(live, workload, keep, done)
        gated_count = live.sensor.stats().gated
    finally:
        live.sensor.set_event_gates(None)
        live.close()
    maps = compile_gates(gates)
    assert {sc.BY_NR[nr].name for nr, e in maps.entries.items() if e.path} == PATH_TYPES
    calls = out[-1][1]
    expected = []
    for etype, res, strings in calls:
        raw = {int(k): v.encode() for k, v in strings.items()}
        if maps.keeps(sc.BY_NAME[etype].nr, res, 0, comm_key("gate_p"), strings=raw):
            expected.append((etype, res))
    expected.append(("mkdir", 0))
    got = [(e.type, e.res) for e in events]
    assert got == expected
    assert 10 < len(expected) < len(calls)  # both decisions are exercised
    assert gated_count >= len(calls) + 1 - len(expected)


# Bit tests: one argument per syscall must share a bit with a mask: chmod's mode (argument 1), fchmodat's
# (argument 2), unlinkat's flags (argument 2: AT_REMOVEDIR).
BITS_TYPES = {"chmod", "fchmodat", "unlinkat", "mkdir"}
BITS_GATES = {
    "chmod": EventGate(bits=(("mode", 0o6000),)),
    "fchmodat": EventGate(bits=(("mode", 0o4000),)),
    "unlinkat": EventGate(bits=(("flags", 0x200),)),
}
BITS_CODE = """
import json, os, sys
base = sys.argv[1]
with open('/proc/self/comm', 'w') as f:
    f.write('gate_b')
d = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
calls = []
def attempt(etype, regs, call, *args, **kw):
    try:
        call(*args, **kw)
        res = 0
    except OSError as e:
        res = -e.errno
    calls.append((etype, res, regs))
open(base + '/f', 'w').close()
for mode in (0o4755, 0o2755, 0o755, 0o6000, 0o1777, 0o644):
    attempt('chmod', [0, mode], os.chmod, base + '/f', mode)
    attempt('chmod', [0, mode], os.chmod, base + '/missing', mode)
    attempt('fchmodat', [0, 0, mode], os.chmod, 'f', mode, dir_fd=d)
for name in ('a', 'b'):
    os.mkdir(base + '/' + name)
    open(base + '/' + name + 'f', 'w').close()
    attempt('unlinkat', [0, 0, 0], os.unlink, name + 'f', dir_fd=d)
    attempt('unlinkat', [0, 0, 0x200], os.rmdir, name, dir_fd=d)
    attempt('unlinkat', [0, 0, 0x200], os.rmdir, name, dir_fd=d)
os.mkdir(base + '/END')
print(json.dumps([os.getpid(), calls]), flush=True)
"""


def test_the_kernel_keeps_back_exactly_what_the_model_drops_by_bits(tmp_path: Path) -> None:
    """Each mask kept and missed, on a second and a third argument, with success and failure."""
    import json

    base = str(tmp_path / "bg")
    Path(base).mkdir()
    live = LiveSensor(start_or_skip(SensorConfig(ringbuf_bytes=16 << 20, syscalls=set(BITS_TYPES))))
    out: list[list[tuple[str, int, list[int]]]] = []

    def workload() -> int:
        run = subprocess.run([PY, "-c", BITS_CODE, base], check=True, capture_output=True, text=True, timeout=60)
        pid, calls = json.loads(run.stdout)
        out.append(calls)
        return int(pid)

    def keep(pid: int, e: Event) -> bool:
        return e.proc.pid == pid and e.type in BITS_TYPES

    def done(kept: list[Event]) -> bool:
        return any(e.type == "mkdir" and str(e.args.get("path", "")).endswith("/END") for e in kept)

    try:
        live.sensor.set_event_gates(BITS_GATES)
        _, events = collect(live, workload, keep, done)
        gated_count = live.sensor.stats().gated
    finally:
        live.sensor.set_event_gates(None)
        live.close()
    maps = compile_gates(BITS_GATES)
    assert {sc.BY_NR[nr].name for nr, e in maps.entries.items() if e.bitsmask} == set(BITS_GATES)
    calls = out[-1]
    expected = [(etype, res) for etype, res, regs in calls
                if maps.keeps(sc.BY_NAME[etype].nr, res, 0, comm_key("gate_b"), (*regs, 0, 0, 0, 0, 0, 0)[:6])]
    got = [(e.type, e.res) for e in events if e.type != "mkdir"]
    assert got == expected
    assert 8 < len(expected) < len(calls)  # both decisions are exercised
    assert gated_count >= len(calls) - len(expected)
