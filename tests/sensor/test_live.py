"""The real sensor in the real kernel: real processes doing real syscalls, asserted as enriched Events."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
from falconet.model.event import Event

from .conftest import LIVE_TYPES, PY, LiveSensor, collect

pytestmark = pytest.mark.bpf


def _run(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-c", textwrap.dedent(code)], cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=60)


def _spawn(code: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-c", textwrap.dedent(code)], cwd=cwd, stdout=subprocess.PIPE, text=True)


def _my_comm() -> str:
    return Path("/proc/self/comm").read_text().strip()


def _my_loginuid() -> int:
    v = int(Path("/proc/self/loginuid").read_text())
    return -1 if v == 0xFFFFFFFF else v


def test_opens_absolute_relative_dirfd_and_dotdot(sensor: LiveSensor, tmp_path: Path) -> None:
    code = """
        import ctypes, os
        os.chdir("/etc")
        os.close(os.open("/etc/hostname", os.O_RDONLY))                 # absolute
        os.close(os.open("hostname", os.O_RDONLY))                      # relative to the cwd
        d = os.open("/usr", os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("../etc/hostname", os.O_RDONLY, dir_fd=d))     # through a dirfd, with ..
        os.close(os.open("./../etc/./hostname", os.O_RDONLY))           # .. from the cwd
        class How(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
        how = How(os.O_RDONLY, 0, 0)
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(437, d, b"../etc/hostname", ctypes.byref(how), 24)   # openat2
        assert fd >= 0, ctypes.get_errno()
        os.close(fd)
        print(os.getpid(), d, flush=True)
    """
    def workload() -> tuple[int, int]:
        pid, dirfd = (int(x) for x in _run(code, cwd=tmp_path).stdout.split())
        return pid, dirfd

    def keep(ctx: tuple[int, int], e: Event) -> bool:
        return e.proc.pid == ctx[0] and e.type in ("openat", "openat2") and bool(e.fd) and "hostname" in (
            e.fd.nameraw or "")  # type: ignore[union-attr]

    (pid, dirfd), evs = collect(sensor, workload, keep, lambda k: len(k) >= 5)
    raws = [(e.type, e.fd.nameraw) for e in evs]  # type: ignore[union-attr]
    assert raws == [("openat", "/etc/hostname"), ("openat", "hostname"), ("openat", "../etc/hostname"),
                    ("openat", "./../etc/./hostname"), ("openat2", "../etc/hostname")]
    for e in evs:
        assert e.fd is not None and e.fd.name == "/etc/hostname" and e.fd.type == "file"
        assert e.res >= 0 and e.args["fd"] == e.res and e.args["name"] == "/etc/hostname"
        assert e.proc.cwd == "/etc"
        assert e.proc.name == "python3" or e.proc.name.startswith("python")
        assert e.proc.ppid == os.getpid() and e.proc.parent is not None and e.proc.parent.name == _my_comm()
        assert e.proc.user.name == "root" and e.container.id == "host"
    assert evs[2].args["dirfd"] == dirfd and evs[4].args["dirfd"] == dirfd
    assert evs[4].args["flags"] == os.O_RDONLY and evs[4].args["resolve"] == 0


def test_exec_with_argv_cwd_user_and_parent(sensor: LiveSensor, tmp_path: Path) -> None:
    def workload() -> int:
        return subprocess.run(["/bin/sh", "-c", "exit 0", "marker-arg", "second arg"], cwd=tmp_path, check=True,
                              timeout=60).returncode

    _, evs = collect(sensor, workload,
                     lambda _c, e: e.type == "execve" and e.proc.args[-2:] == ["marker-arg", "second arg"],
                     lambda k: len(k) >= 1)
    e = evs[0]
    assert e.res == 0
    assert e.proc.name == "sh" and e.proc.exe == "/bin/sh"
    assert e.proc.exepath == os.path.realpath("/bin/sh")  # the kernel's file: symlinks resolved, as Falco's
    assert e.proc.args == ["-c", "exit 0", "marker-arg", "second arg"]
    assert e.proc.cmdline == "sh -c exit 0 marker-arg second arg"
    assert e.proc.ppid == os.getpid() and e.proc.parent is not None
    assert e.proc.parent.name == _my_comm() and e.proc.parent.pid == os.getpid()
    assert e.proc.cwd == str(tmp_path)
    assert e.proc.user.uid == 0 and e.proc.user.name == "root" and e.proc.group.name == "root"
    assert e.proc.user.loginuid == _my_loginuid()
    assert e.container.id == "host" and e.proc.container_id == "host"
    assert e.args["args"] == e.proc.args and e.args["filename"] == "/bin/sh"
    assert any(v.startswith("PATH=") for v in e.proc.env)
    assert e.proc.cap_effective != 0  # root


def test_connect_to_localhost_port(sensor: LiveSensor) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def workload() -> tuple[int, int]:
        p = _spawn(f"""
            import socket, os
            c = socket.create_connection(("127.0.0.1", {port}))
            print(os.getpid(), c.getsockname()[1], flush=True)
            c.close()
        """)
        conn, _ = srv.accept()
        out, _ = p.communicate(timeout=60)
        conn.close()
        pid, cport = (int(x) for x in out.split())
        return pid, cport

    try:
        (pid, cport), evs = collect(sensor, workload, lambda c, e: e.proc.pid == c[0] and e.type == "connect",
                                    lambda k: len(k) >= 1)
    finally:
        srv.close()
    e = evs[0]
    assert e.res == 0 and e.fd is not None
    assert e.fd.name == f"127.0.0.1:{cport}->127.0.0.1:{port}" == e.args["tuple"]
    assert (e.fd.sip, e.fd.sport, e.fd.cip, e.fd.cport) == ("127.0.0.1", port, "127.0.0.1", cport)
    assert (e.fd.type, e.fd.l4proto, e.fd.sockfamily, e.fd.connected) == ("ipv4", "tcp", "ip", True)
    assert e.args["addr"] == f"127.0.0.1:{port}"


def test_ptrace_attach(sensor: LiveSensor) -> None:
    code = """
        import ctypes, os
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.read(r, 1)
            os._exit(0)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        assert libc.ptrace(16, child, None, None) == 0, ctypes.get_errno()   # PTRACE_ATTACH
        os.waitpid(child, 0)
        libc.ptrace(17, child, None, None)                                   # PTRACE_DETACH
        os.write(w, b"x")
        os.waitpid(child, 0)
        print(os.getpid(), child, flush=True)
    """
    def workload() -> tuple[int, int]:
        pid, child = (int(x) for x in _run(code).stdout.split())
        return pid, child

    (pid, child), evs = collect(sensor, workload, lambda c, e: e.proc.pid == c[0] and e.type == "ptrace",
                                lambda k: len(k) >= 2)
    assert [(e.args["request"], e.args["pid"], e.res) for e in evs[:2]] == [(16, child, 0), (17, child, 0)]


def test_symlinkat_and_unlinkat(sensor: LiveSensor, tmp_path: Path) -> None:
    code = f"""
        import os
        d = os.open({str(tmp_path)!r}, os.O_RDONLY | os.O_DIRECTORY)
        os.symlink("/etc/shadow", "shadow-link", dir_fd=d)
        os.unlink("shadow-link", dir_fd=d)
        print(os.getpid(), d, flush=True)
    """
    def workload() -> tuple[int, int]:
        pid, d = (int(x) for x in _run(code).stdout.split())
        return pid, d

    (pid, d), evs = collect(sensor, workload,
                            lambda c, e: e.proc.pid == c[0] and e.type in ("symlinkat", "unlinkat"),
                            lambda k: len(k) >= 2)
    sym, unl = evs[0], evs[1]
    assert sym.type == "symlinkat" and sym.res == 0
    assert sym.args == {"res": 0, "target": "/etc/shadow", "linkdirfd": d,
                        "linkpath": str(tmp_path / "shadow-link")}
    assert unl.type == "unlinkat" and unl.args["name"] == str(tmp_path / "shadow-link") and unl.args["dirfd"] == d


def test_own_process_is_filtered_in_the_kernel(sensor: LiveSensor, tmp_path: Path) -> None:
    own = tmp_path / "own-marker"
    child = tmp_path / "child-marker"
    def workload() -> None:
        os.close(os.open(own, os.O_CREAT | os.O_WRONLY, 0o600))  # by this (excluded) process
        _run(f"import os; os.close(os.open({str(child)!r}, os.O_CREAT | os.O_WRONLY, 0o600))")

    names = {str(own), str(child)}
    _, evs = collect(sensor, workload,
                     lambda _c, e: e.type == "openat" and e.fd is not None and e.fd.name in names,
                     lambda k: any(e.fd.name == str(child) for e in k))  # type: ignore[union-attr]
    # The child's open happened after ours; the ring buffer is ordered, so ours would have arrived first.
    assert [e.fd.name for e in evs] == [str(child)]  # type: ignore[union-attr]
    assert all(e.proc.pid != os.getpid() for e in evs)


def test_set_syscalls_applies_in_the_kernel_without_recompiling(sensor: LiveSensor, tmp_path: Path) -> None:
    import ctypes as c
    live, real = sensor, sensor.sensor
    program = real._bpf  # the same loaded program before and after
    try:
        untraced = real.set_syscalls({"mkdir", "mkdirat", "no_such_event"})
        assert untraced == {"no_such_event"}
        conf = real._bpf[b"sysconf"]
        assert conf[c.c_int(83)].on == 1 and conf[c.c_int(258)].on == 1  # mkdir, mkdirat
        assert conf[c.c_int(263)].on == 0  # unlinkat: no rule, no state need -> never leaves the kernel
        assert conf[c.c_int(59)].on == 1  # execve: process state
        target = tmp_path / "d"

        def workload() -> int:
            if target.exists():
                target.rmdir()
            return int(_run(f"import os; os.mkdir({str(target)!r}); print(os.getpid())").stdout)

        _, evs = collect(live, workload, lambda pid, e: e.proc.pid == pid,
                         lambda k: any(e.type == "mkdir" for e in k))
        assert {e.type for e in evs} == {"mkdir"}  # its openat/execve kept state, were not delivered
        assert evs[-1].args["path"] == str(tmp_path / "d")
    finally:
        real.set_syscalls(LIVE_TYPES)
    assert real._bpf is program


def test_tiny_ring_buffer_counts_kernel_drops() -> None:
    from falconet.sensor import SensorConfig

    from .conftest import start_or_skip

    small = start_or_skip(SensorConfig(ringbuf_bytes=4096, syscalls={"openat"}))
    try:
        # No polling while the load runs: the single page fills and every further record is a counted drop.
        _run("""
            import os
            for _ in range(3000):
                os.close(os.open("/dev/null", os.O_RDONLY))
        """)
        st = small.stats()
        assert st.kernel_drops > 0
        assert len(st.kernel_drops_per_cpu) == os.cpu_count()
        assert sum(st.kernel_drops_per_cpu) == st.kernel_drops
        small.poll(0)
        after = small.stats()
        assert 0 < after.records < 3000  # what fit in one page arrived, intact
        assert after.decode_errors == 0
    finally:
        small.close()


def test_poll_takes_a_bounded_batch_under_a_backlog() -> None:
    from falconet.sensor import SensorConfig
    from falconet.sensor.sensor import POLL_BATCH

    from .conftest import start_or_skip

    s = start_or_skip(SensorConfig(ringbuf_bytes=16 << 20, syscalls={"openat"}))
    try:
        # A backlog larger than one batch: poll() must return after POLL_BATCH records, keeping the rest.
        _run(f"""
            import os
            for _ in range({POLL_BATCH}):
                os.close(os.open("/dev/null", os.O_RDONLY))
        """)
        s.poll(0)
        first = s.stats().records
        assert first == POLL_BATCH
        s.poll(0)
        assert s.stats().records > first  # the rest stayed in the ring buffer for the next call
    finally:
        s.close()


def test_non_root_start_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The check itself, not privilege dropping, is under test: geteuid is what it consults.
    from falconet.sensor import Sensor as S
    from falconet.sensor import SensorError

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SensorError, match="needs root"):
        S().start()


class _Capture:
    """A running `falconet capture -s openat`: its stderr lines (gathered by a thread) and its output file."""

    def __init__(self, out: Path) -> None:
        import threading

        self.out = out
        self.proc = subprocess.Popen([PY, "-m", "falconet.server.cli", "capture", "-w", str(out), "-s", "openat"],
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "capturing" in line:
                self.ready.set()
        self.ready.set()  # ended: whoever waits sees the exit

    def drops_reported(self) -> int:
        """Kernel-drop lines the capture printed so far (one per second in which it lost events)."""
        return sum("falconet capture: kernel drops" in line for line in list(self.lines))

    def opened(self, marker: Path, timeout: float) -> Event | None:
        """The captured open of `marker` (the event itself, not just the marker in some command line), or
        None when it is not in the file within `timeout`."""
        import json
        import time

        deadline = time.monotonic() + timeout
        while True:
            text = self.out.read_text() if self.out.exists() else ""
            for line in text[: text.rfind("\n") + 1].splitlines():  # whole lines only: the last may be partial
                if str(marker) in line:
                    e = Event.from_dict(json.loads(line))
                    if e.type == "openat" and e.fd is not None and e.fd.name == str(marker):
                        return e
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return None
            time.sleep(0.05)  # polls the file's content above, with a deadline

    def stop(self) -> str:
        """SIGTERM, then everything it printed."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._pump.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return "".join(self.lines)


def test_capture_cli_writes_enriched_json_lines(tmp_path: Path) -> None:
    """The open of a fresh marker file is in the capture, enriched. A marker open the kernel dropped (the
    capture reports it) is retried with a new marker, as tests/containers' Live.expect does; a missing open
    without a reported drop fails at once."""
    import json
    import uuid

    cap = _Capture(tmp_path / "cap.jsonl")
    try:
        assert cap.ready.wait(60) and cap.proc.poll() is None, f"capture never said it was ready: {cap.lines}"
        mine: Event | None = None
        for _attempt in range(3):
            marker = tmp_path / f"capture-marker-{uuid.uuid4().hex[:8]}"
            before = cap.drops_reported()
            _run(f"open({str(marker)!r}, 'w').close()")
            mine = cap.opened(marker, timeout=30)
            if mine is not None:
                break
            assert cap.proc.poll() is None, f"capture exited: {cap.lines}"
            assert cap.drops_reported() > before, f"{marker} was opened, not captured, and nothing was dropped"
        assert mine is not None, "the kernel dropped events during each of 3 attempts"
    finally:
        rest = cap.stop()
    assert cap.proc.returncode == 0, rest
    assert "captured" in rest and "kernel drops" in rest
    events = [Event.from_dict(json.loads(x)) for x in cap.out.read_text().splitlines()]
    assert {e.type for e in events} == {"openat"}
    assert mine.proc.user.name == "root" and mine.container.id == "host" and mine.res >= 0


def test_open_prefix_filter_is_conservative(sensor: LiveSensor, short_tmp_path: Path) -> None:
    """The same workload with the filter off and on: every open under a prefix, and every open the kernel
    cannot judge (relative, dotted), arrives identically; only clean absolute paths elsewhere are kept back."""
    tmp_path = short_tmp_path  # prefixes of it must fit the kernel's PREFIX_MAX
    (tmp_path / "keep").mkdir()
    (tmp_path / "other").mkdir()
    for d in ("keep", "other"):
        (tmp_path / d / "f").write_text("x")
    code = f"""
        import os
        base = {str(tmp_path)!r}
        for p in [base + "/keep/f", base + "/other/f", base + "/other/../keep/f", base + "/other/./f",
                  base + "//other/f", base + "/keep/missing"]:
            try:
                os.close(os.open(p, os.O_RDONLY))
            except FileNotFoundError:
                pass
        os.close(os.open(base + "/keep/f", os.O_WRONLY | os.O_CLOEXEC))
        os.close(os.open(base + "/keep/f", os.O_RDONLY | os.O_TRUNC))
        os.chdir(base + "/other")
        os.close(os.open("f", os.O_RDONLY))
        print(os.getpid())
    """
    live = sensor

    def run() -> list[tuple[str, int, str | None, str | None]]:
        def keep(pid: int, e: Event) -> bool:
            return e.proc.pid == pid and e.type == "openat" and e.fd is not None and (
                str(tmp_path) in (e.fd.name or "") or e.fd.nameraw == "f")

        _, evs = collect(live, lambda: int(_run(code).stdout), keep,
                         lambda k: any(e.fd.nameraw == "f" for e in k))  # type: ignore[union-attr]
        return [(e.type, e.res, e.fd.nameraw, e.fd.name) for e in evs]  # type: ignore[union-attr]

    off = run()
    before = live.sensor.stats().path_filtered
    try:
        live.sensor.set_open_prefixes([str(tmp_path / "keep") + "/"])
        on = run()
        live.sensor.set_open_prefixes({str(tmp_path / "keep") + "/": ["read"]})
        reads_only = run()
    finally:
        live.sensor.set_open_prefixes(None)
    assert live.sensor.stats().path_filtered > before
    base = str(tmp_path)
    keep_f = base + "/keep/f"
    assert [r[2] for r in off] == [keep_f, base + "/other/f", base + "/other/../keep/f", base + "/other/./f",
                                   base + "//other/f", base + "/keep/missing", keep_f, keep_f, "f"]
    # every kind of open under keep/: only the clean path elsewhere is kept back
    assert on == [r for i, r in enumerate(off) if i != 1]
    assert off[1][3] == base + "/other/f"
    # read opens under keep/: the write-only open (index 6) is kept back too; O_RDONLY|O_TRUNC (7) is still a
    # read open, which a read rule matches whatever else it does, so it passes
    assert reads_only == [r for i, r in enumerate(off) if i not in (1, 6)]


def test_open_filter_keeps_back_the_close_of_a_kept_back_fd(sensor: LiveSensor, short_tmp_path: Path) -> None:
    tmp_path = short_tmp_path  # prefixes of it must fit the kernel's PREFIX_MAX
    (tmp_path / "keep").mkdir()
    (tmp_path / "other").mkdir()
    for d in ("keep", "other"):
        (tmp_path / d / "f").write_text("x")
    code = f"""
        import os
        a = os.open({str(tmp_path / "other" / "f")!r}, os.O_RDONLY)   # kept back
        os.close(a)                                                    # ... and so is its close
        b = os.open({str(tmp_path / "keep" / "f")!r}, os.O_RDONLY)    # same number, reaches user space
        os.close(b)                                                    # ... and so does its close
        print(os.getpid(), a, b, flush=True)
    """

    def workload() -> tuple[int, int, int]:
        pid, a, b = (int(x) for x in _run(code).stdout.split())
        return pid, a, b

    def keep(ctx: tuple[int, int, int], e: Event) -> bool:
        # Directories (O_DIRECTORY) always pass the filter: closes of python's own ones may reuse the number.
        mine = e.fd is None or (e.fd.name or "").startswith(str(tmp_path))
        return e.proc.pid == ctx[0] and e.type == "close" and e.args.get("fd") in (ctx[1], ctx[2]) and mine

    live = sensor
    try:
        live.sensor.set_open_prefixes([str(tmp_path / "keep") + "/"])
        (_pid, a, b), closes = collect(live, workload, keep,
                                       lambda k: any(e.fd is not None and e.fd.name is not None
                                                     and e.fd.name.endswith("keep/f") for e in k))
    finally:
        live.sensor.set_open_prefixes(None)
    assert a == b  # the kernel reused the number: the test covers a mark cleared by a later open
    assert [(e.args["fd"], e.fd.name if e.fd else None) for e in closes] == [(b, str(tmp_path / "keep" / "f"))]
