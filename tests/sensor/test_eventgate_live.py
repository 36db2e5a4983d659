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
