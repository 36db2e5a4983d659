"""`falconet run --source ptrace` as an unprivileged user on a host without BPF: `setpriv` to nobody with no
capabilities, under a seccomp filter that fails bpf(2) with ENOSYS (what a kernel without BPF answers). The
workload's actions are detected, and attributed to nobody.

Root only to become nobody (marker root)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ptrace_harness import FALCONET, config_text, read_alerts, token, write_workload

from resources import require_root

pytestmark = pytest.mark.root

# Sets no_new_privs and a filter failing bpf(2) with ENOSYS, then execs its arguments.
NO_BPF = r"""
import ctypes, os, struct, sys
ins = lambda code, jt, jf, k: struct.pack("<HBBI", code, jt, jf, k)
prog = b"".join([ins(0x20, 0, 0, 0), ins(0x15, 0, 1, 321), ins(0x06, 0, 0, 0x00050000 | 38),
                 ins(0x06, 0, 0, 0x7FFF0000)])
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.byref(Fprog(4, prog)), 0, 0) == 0
os.execvp(sys.argv[1], sys.argv[1:])
"""
AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all"]
BPF_CALL = "import ctypes; c = ctypes.CDLL(None, use_errno=True); print(c.syscall(321, 0, 0, 0), ctypes.get_errno())"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody can use (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="falconet-ptrace-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def test_nobody_without_bpf_detects_the_workloads_actions(shared_dir: Path) -> None:
    require_root("the test becomes nobody with setpriv")
    (shared_dir / "no_bpf.py").write_text(NO_BPF)
    wrap = [*AS_NOBODY, sys.executable, "-I", str(shared_dir / "no_bpf.py")]
    probe = subprocess.run([*wrap, "/usr/bin/python3", "-c", BPF_CALL], capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["-1", "38"]  # bpf(2) is gone: ENOSYS
    write_workload(shared_dir)
    (shared_dir / "nginx").chmod(0o755)
    alerts = shared_dir / "alerts.json"
    (shared_dir / "falconet.yaml").write_text(config_text(shared_dir, alerts))
    tok = token()
    script = (f"ln -s /etc/shadow {shared_dir}/link-{tok}; /bin/true --url stratum+tcp://pool.example.org:3333 "
              f"{tok}; {shared_dir}/nginx -c \"sh -c 'exit 0' {tok}; exit 0\"; id -u")
    done = subprocess.run([*wrap, FALCONET, "run", "-c", str(shared_dir / "falconet.yaml"), "--no-store",
                           "--source", "ptrace", "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, check=False, cwd=shared_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == str(_uid("nobody"))  # the workload ran as nobody
    got = {a["rule"]: a["output_fields"] for a in read_alerts(alerts) if tok in json.dumps(a)}
    assert set(got) == {"Create symlink over sensitive file", "Crypto miner using the Stratum protocol",
                        "Shell spawned by server process"}, got
    for fields in got.values():
        assert fields["user.name"] == "nobody" and fields["user.uid"] == _uid("nobody")
    assert got["Shell spawned by server process"]["proc.pname"] == "nginx"
    assert got["Crypto miner using the Stratum protocol"]["proc.cmdline"] == \
        f"true --url stratum+tcp://pool.example.org:3333 {tok}"


def test_the_ebpf_driver_refuses_there(shared_dir: Path) -> None:
    """The control: the same unprivileged process cannot use the eBPF driver, and says why."""
    require_root("the test becomes nobody with setpriv")
    (shared_dir / "falconet.yaml").write_text(config_text(shared_dir, shared_dir / "alerts.json"))
    done = subprocess.run([*AS_NOBODY, FALCONET, "run", "-c", str(shared_dir / "falconet.yaml"), "--no-store"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "needs root" in done.stderr, done.stderr


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid




WAITING = r"""
import os, subprocess, sys, time
go, tok = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.05)
subprocess.run(["/bin/true", "--url", "stratum+tcp://pool.example.org:3333", tok], check=True)
"""


def test_only_cap_sys_ptrace_attaches_to_another_users_process(shared_dir: Path) -> None:
    """A container's view: uid 0 with CAP_SYS_PTRACE as its only capability (no CAP_BPF, no CAP_SYS_ADMIN)
    attaches with --pid to a process of another user, and sees its new child."""
    require_root("the test drops to a single capability with setpriv")
    tok = token()
    go = shared_dir / "go"
    alerts = shared_dir / "alerts.json"
    (shared_dir / "falconet.yaml").write_text(config_text(shared_dir, alerts))
    target = subprocess.Popen([*AS_NOBODY, "/usr/bin/python3", "-c", WAITING, str(go), tok])
    only_ptrace = ["setpriv", "--inh-caps=-all", "--bounding-set=-all,+sys_ptrace"]
    daemon = subprocess.Popen([*only_ptrace, FALCONET, "run", "-c", str(shared_dir / "falconet.yaml"), "--no-store",
                               "--source", "ptrace", "--pid", str(target.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if "falconet: ready" in line:
                break
        else:
            raise AssertionError("falconet run --pid did not start")
        go.touch()
        assert target.wait(60) == 0
        rest = daemon.stderr.read()
        assert daemon.wait(60) == 0, rest
    finally:
        target.kill()
        target.wait()
        daemon.kill()
        daemon.wait()
        if daemon.stderr is not None:
            daemon.stderr.close()
    got = [a for a in read_alerts(alerts) if tok in json.dumps(a)]
    assert [a["rule"] for a in got] == ["Crypto miner using the Stratum protocol"]
    assert got[0]["output_fields"]["user.name"] == "nobody"
