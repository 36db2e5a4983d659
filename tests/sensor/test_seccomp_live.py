"""A syscall a seccomp filter denies reaches the rules with its error result (issue 12 item 1).

The kernel runs seccomp before the sys_enter tracepoint, so a denied syscall is seen only at sys_exit (Docker's
default profile denies unshare, for example). The probe builds every record at sys_exit, so the attempt must
still arrive, with its arguments and res == -EPERM. The test installs a real filter (prctl(PR_SET_NO_NEW_PRIVS) +
seccomp(SECCOMP_SET_MODE_FILTER), a classic BPF program) in a child, which then tries an unshare, an openat with
one exact flag combination and an execve; all come back EPERM without running (the file is not created, the
process is still the child). The exec's arguments come from its registers at exit, as for any failed exec.
"""

from __future__ import annotations

import errno
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from falconet.model.event import Event
from falconet.rules.engine import Engine, Resolvers

from .conftest import PY, LiveSensor, collect, start_or_skip

from falconet.sensor import SensorConfig

pytestmark = [pytest.mark.bpf, pytest.mark.root]

CLONE_NEWUSER = 0x10000000
DENIED_FLAGS = 0o701  # O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY: the filter denies openat with exactly these

# The child: a seccomp filter returning EPERM for unshare and for openat(.., .., DENIED_FLAGS, ..), then the
# attempts. Prints its pid and what each attempt returned, so the test knows the kernel really refused them.
CHILD = """
    import ctypes, os, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)

    def insn(code, jt, jf, k):
        return struct.pack("<HBBI", code, jt, jf, k)

    LD_ABS, JEQ, RET = 0x20, 0x15, 0x06
    ALLOW, EPERM = 0x7FFF0000, 0x00050000 | 1
    prog = b"".join([
        insn(LD_ABS, 0, 0, 4),             # 0: A = seccomp_data.arch
        insn(JEQ, 1, 0, 0xC000003E),       # 1: x86_64? to 3
        insn(RET, 0, 0, ALLOW),            # 2
        insn(LD_ABS, 0, 0, 0),             # 3: A = seccomp_data.nr
        insn(JEQ, 0, 1, 272),              # 4: unshare? to 5, else 6
        insn(RET, 0, 0, EPERM),            # 5
        insn(JEQ, 0, 1, 59),               # 6: execve? to 7, else 8
        insn(RET, 0, 0, EPERM),            # 7
        insn(JEQ, 0, 3, 257),              # 8: openat? to 9, else 12
        insn(LD_ABS, 0, 0, 32),            # 9: A = low word of args[2] (the flags)
        insn(JEQ, 0, 1, {flags}),          # 10: the denied flags? to 11, else 12
        insn(RET, 0, 0, EPERM),            # 11
        insn(RET, 0, 0, ALLOW),            # 12
    ])

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    fprog = SockFprog(len(prog) // 8, prog)
    assert libc.prctl(38, 1, 0, 0, 0) == 0, ctypes.get_errno()  # PR_SET_NO_NEW_PRIVS
    assert libc.syscall(317, 1, 0, ctypes.byref(fprog)) == 0, ctypes.get_errno()  # SECCOMP_SET_MODE_FILTER
    r1 = libc.syscall(272, {newuser})
    e1 = ctypes.get_errno()
    r2 = libc.syscall(257, -100, sys.argv[1].encode(), {flags}, 0o600)  # openat(AT_FDCWD, path, flags, mode)
    e2 = ctypes.get_errno()
    try:
        os.execve("/bin/true", ["/bin/true", "ck-seccomp-exec"], {{"CK_SECCOMP": "1"}})
    except PermissionError:
        pass
    print(os.getpid(), r1, e1, r2, e2, flush=True)
"""

RULES = f"""
- rule: Namespace change denied
  desc: an unshare the kernel refused before running it
  condition: evt.type = unshare and evt.dir = < and evt.res = EPERM
  output: "unshare denied (proc.pid=%proc.pid res=%evt.res flags=%evt.arg.flags)"
  priority: NOTICE
- rule: Denied create of a marked file
  desc: an openat refused before running it, on the path it named
  condition: >
    evt.type = openat and evt.dir = < and evt.failed = true and evt.rawres = -{errno.EPERM}
    and fd.name endswith /falconet-seccomp-denied
  output: "open denied (file=%fd.name res=%evt.res)"
  priority: NOTICE
- rule: Denied exec
  desc: an execve refused before running it, with what it was asked to run
  condition: evt.type = execve and evt.dir = < and evt.res = EPERM and evt.arg.filename = /bin/true
  output: "exec denied (filename=%evt.arg.filename res=%evt.res)"
  priority: NOTICE
"""


@pytest.fixture(scope="module")
def sensor() -> Iterator[LiveSensor]:
    live = LiveSensor(start_or_skip(SensorConfig(ringbuf_bytes=64 << 20, syscalls={"unshare", "openat", "execve"})))
    try:
        yield live
    finally:
        live.close()


def test_syscalls_a_seccomp_filter_denies_reach_the_rules_with_eperm(sensor: LiveSensor, tmp_path: Path) -> None:
    target = tmp_path / "falconet-seccomp-denied"
    code = textwrap.dedent(CHILD).format(flags=DENIED_FLAGS, newuser=CLONE_NEWUSER)

    def workload() -> int:
        out = subprocess.run([PY, "-c", code, str(target)], check=True, capture_output=True, text=True, timeout=60)
        pid, r1, e1, r2, e2 = (int(v) for v in out.stdout.split())
        # The filter really refused both: nothing ran (a root unshare(CLONE_NEWUSER) would succeed).
        assert (r1, e1, r2, e2) == (-1, errno.EPERM, -1, errno.EPERM)
        return pid

    def keep(pid: int, e: Event) -> bool:
        return e.proc.pid == pid and (e.type == "unshare" or (e.type == "execve" and e.res < 0)
                                      or (e.type == "openat" and e.fd is not None and e.fd.name == str(target)))

    def done(kept: list[Event]) -> bool:
        return {e.type for e in kept} == {"unshare", "openat", "execve"}

    _pid, evs = collect(sensor, workload, keep, done)
    assert not target.exists()
    unshare = next(e for e in evs if e.type == "unshare")
    opened = next(e for e in evs if e.type == "openat")
    assert unshare.res == -errno.EPERM and unshare.args["flags"] == CLONE_NEWUSER
    assert opened.res == -errno.EPERM and opened.args["flags"] == DENIED_FLAGS
    assert opened.fd is not None and opened.fd.num == -1
    execve = next(e for e in evs if e.type == "execve")
    assert execve.res == -errno.EPERM and execve.args["filename"] == "/bin/true"
    assert execve.args["args"] == ["ck-seccomp-exec"] and execve.args["env"] == ["CK_SECCOMP=1"]

    engine = Engine.from_texts([("seccomp.yaml", RULES)], rule_matching="all", resolvers=Resolvers.local())
    fired = {a.rule: a for e in (unshare, opened, execve) for a in engine.process(e)}
    assert set(fired) == {"Namespace change denied", "Denied create of a marked file", "Denied exec"}
    assert "filename=/bin/true res=EPERM" in fired["Denied exec"].output
    assert "res=EPERM" in fired["Namespace change denied"].output
    assert f"file={target} res=EPERM" in fired["Denied create of a marked file"].output
