"""The tracer under a fork/exec/exit storm (threads and processes at once) loses no process state, and the
workload's fate when Falconet stops is the documented default: SIGTERM to Falconet gives the workload SIGTERM
(then SIGKILL after a grace period); SIGKILL to Falconet kills the workload at once (PTRACE_O_EXITKILL).

No root needed: the tracer traces its own children."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ptrace_harness import Falconet, config_text, token, wait_until

from falconet.model.event import Event
from falconet.server.source_ptrace import PtraceSource
from resources import missing

STORM = r"""
import os, subprocess, sys, threading
tok = sys.argv[1]
def worker(t):
    for i in range(int(sys.argv[2])):
        if i % 2:
            subprocess.run(["/bin/true", f"{tok}-{t}-{i}"], check=True)
        else:  # a shell that forks a grandchild which execs: two levels of process state
            subprocess.run(["/bin/sh", "-c", f"/bin/true {tok}-{t}-{i}; exit 0"], check=True)
threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
for th in threads: th.start()
for th in threads: th.join()
"""


def _collect(source: PtraceSource) -> list[Event]:
    out: list[Event] = []
    source.start()
    try:
        while True:
            got = source.poll(200)
            if got is None:
                return out
            out.extend(got)
    finally:
        source.close()


def test_a_fork_exec_exit_storm_loses_no_process_state(tmp_path: Path) -> None:
    tok, per_thread = token(), 20
    log: list[str] = []
    source = PtraceSource(["/usr/bin/python3", "-c", STORM, tok, str(per_thread)], [], None, 80, log.append)
    events = _collect(source)
    root = source.tracer.root_pid
    execs = [e for e in events if e.type == "execve" and e.res == 0 and e.proc.exepath == "/usr/bin/true"
             and tok in " ".join(e.proc.args)]
    names = sorted(e.proc.args[0] for e in execs)
    assert names == sorted(f"{tok}-{t}-{i}" for t in range(8) for i in range(per_thread)), log
    for e in execs:
        i = int(e.proc.args[0].rsplit("-", 1)[1])
        parent = e.proc.parent
        assert parent is not None
        if i % 2:  # python's child: its parent is the workload itself, named and placed as it is
            assert (parent.pid, parent.name) == (root, "python3")
        else:  # the shell's child, whose parent is python's child
            assert parent.name == "sh" and parent.parent is not None and parent.parent.pid == root
        assert e.proc.cwd in (os.getcwd(), os.getcwd() + "/"), e.proc.cwd  # inherited through the forks
        assert e.proc.user.name is not None and e.proc.exe == "/bin/true"
    # Threads are not processes, and every process that ended is gone from the table.
    pids = {e.proc.pid for e in events}
    assert len(pids) == 1 + 8 * per_thread + 8 * per_thread // 2
    assert not pids & set(source.enricher.table.procs)


TERM_WORKLOAD = r"""
import os, signal, sys, time
out = sys.argv[1]
def term(*_):
    open(out + ".term", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
with open(out + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(out + ".tmp", out)
while True:
    time.sleep(0.5)
"""


def _start(tmp_path: Path) -> tuple[Falconet, int, Path]:
    (tmp_path / "falconet.yaml").write_text(config_text(tmp_path, tmp_path / "alerts.json"))
    pidfile = tmp_path / "workload.pid"
    daemon = Falconet(["-c", str(tmp_path / "falconet.yaml"), "--no-store", "--source", "ptrace", "--",
                       sys.executable, "-c", TERM_WORKLOAD, str(pidfile)])
    daemon.wait_line(r"falconet: ready")
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), 60, "the workload's pid"))
    return daemon, pid, pidfile


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def test_sigterm_to_falconet_terminates_the_workload_gracefully(tmp_path: Path) -> None:
    daemon, pid, pidfile = _start(tmp_path)
    try:
        assert not _dead(pid)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, "\n".join(daemon.lines)
        wait_until(lambda: _dead(pid), 30, "the workload's end")
        assert Path(str(pidfile) + ".term").exists()  # it had its SIGTERM, and ran its handler under the tracer
        assert any("the workload ends with Falconet" in line for line in daemon.lines)
    finally:
        daemon.stop()


def test_sigkill_to_falconet_kills_the_workload_at_once(tmp_path: Path) -> None:
    daemon, pid, pidfile = _start(tmp_path)
    try:
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.wait(60)
        wait_until(lambda: _dead(pid), 30, "the workload's end (PTRACE_O_EXITKILL)")
        assert not Path(str(pidfile) + ".term").exists()  # no SIGTERM: the kernel's SIGKILL
    finally:
        daemon.stop()


ATTACHED = r"""
import os, subprocess, sys, time
go, tok = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.05)
subprocess.run(["/bin/true", "--url", "stratum+tcp://pool.example.org:3333", tok], check=True)
"""


def test_attaching_with_pid_follows_the_process_and_its_new_children(tmp_path: Path) -> None:
    import subprocess

    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    if os.geteuid() != 0 and scope.exists() and scope.read_text().strip() != "0":
        missing("attaching to a sibling process: root or kernel.yama.ptrace_scope 0")
    tok = token()
    go = tmp_path / "go"
    target = subprocess.Popen([sys.executable, "-c", ATTACHED, str(go), tok])
    alerts = tmp_path / "alerts.json"
    (tmp_path / "falconet.yaml").write_text(config_text(tmp_path, alerts))
    daemon = Falconet(["-c", str(tmp_path / "falconet.yaml"), "--no-store", "--source", "ptrace",
                       "--pid", str(target.pid)])
    try:
        daemon.wait_line(r"falconet: ready")
        assert any("every syscall stops" in line for line in daemon.lines)  # --pid: no filter, said so
        go.touch()
        assert target.wait(60) == 0
        assert daemon.wait(60) == 0, "\n".join(daemon.lines)  # its tracees are gone: it ends
    finally:
        target.kill()
        target.wait()
        daemon.stop()
    from ptrace_harness import read_alerts

    got = [a for a in read_alerts(alerts) if tok in str(a)]
    assert [a["rule"] for a in got] == ["Crypto miner using the Stratum protocol"]
    assert got[0]["output_fields"]["proc.pname"] == "python"  # the attached process (comm of the venv's python)
