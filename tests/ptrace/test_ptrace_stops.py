"""Two stops per kept-back open/read/close when no rule looks at close (sensor/ptrace/stoploop_fds.h): the open is
continued at its seccomp stop, with no exit stop, and a close is dropped at its seccomp stop when its fd is not
in the per-process set of fds the engine may know. These tests show the engine's fd table stays right:

- a kept-back fd's number reused by a watched open, closed, and reused by a kept-back open again: each fcntl on
  that number names the file the engine should know (the watched one, or nothing: never a stale name);
- a kept-back read-only open of a directory (which the probe never keeps back) is learned before a record uses
  it: a relative openat through it names the full path, and fcntl on it names the directory;
- fork copies the set, CLONE_FILES shares it, exec keeps it; a fork/exec/exit storm of processes gives every
  process's fcntl the right name (an fd closed by one thread and reused by another at once:
  test_ptrace_fdorder.py);
- the C loop and the pure-Python loop give the same events, and the C loop makes 2 stops, not 3, per kept-back
  open/read/close.
No root needed: the tracer traces its own child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ptrace_harness import PY, token

from falconet.model.event import Event
from falconet.sensor.ptrace import fastpath
from falconet.server.source_ptrace import PtraceSource
from resources import missing

WANTED = frozenset({"openat", "open", "fcntl", "execve", "dup2", "connect"})  # no close: closes are state-only

REUSE = r"""
import ctypes, os, sys
tok, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
hidden, watched, dird = work + "/hidden-" + tok, work + "/watched-" + tok, work + "/dir-" + tok
if len(sys.argv) > 4:                           # attached with --pid: wait for the tracer
    os.read(os.open(sys.argv[4], os.O_RDONLY), 1)
os.close(os.open(watched, os.O_RDONLY))         # the start mark
for i in range(n):
    a = os.open(hidden, os.O_RDONLY)            # kept back: no exit stop
    os.get_inheritable(a)                       # fcntl: no name (the engine cannot know it)
    os.close(a)                                 # dropped at its seccomp stop
    b = os.open(watched, os.O_RDONLY)           # watched: the same number as a
    os.get_inheritable(b)                       # fcntl: the watched file
    os.close(b)                                 # known: seen, the engine forgets it
    c = os.open(hidden, os.O_RDONLY)            # kept back, the same number again
    os.get_inheritable(c)                       # fcntl: no name, never the watched file's
    os.close(c)
    d = os.open(dird, os.O_RDONLY)              # a directory without O_DIRECTORY, kept back by path
    e = os.open("inner", os.O_RDONLY, dir_fd=d)  # relative through it: the directory is learned first
    os.get_inheritable(d)                       # fcntl: the directory
    os.close(e)
    os.close(d)
    f = os.open(watched, os.O_RDONLY)           # known, then inherited by a child
    g = os.open(hidden, os.O_RDONLY)            # kept back, inherited too
    pid = os.fork()
    if pid == 0:
        os.get_inheritable(f)                   # the child's copy of the set knows f ...
        os.get_inheritable(g)                   # ... and not g
        os.close(f)                             # the child's own table: the parent's f stays
        os._exit(0)
    os.waitpid(pid, 0)
    os.get_inheritable(f)                       # still the watched file in the parent
    os.close(f)
    os.close(g)
    r, w = os.pipe()                            # CLONE_FILES: one fd table, one set
    libc = ctypes.CDLL(None, use_errno=True)
    pid = libc.syscall(56, 0x400 | 17, 0, 0, 0, 0)  # clone(CLONE_FILES | SIGCHLD)
    if pid == 0:
        m = os.open(watched, os.O_RDONLY)       # learned in the shared table
        os.write(w, str(m).encode())
        os._exit(0)
    m = int(os.read(r, 16))
    os.waitpid(pid, 0)
    os.close(m)                                 # the parent closes the child's fd: it is known, so seen
    h = os.open(hidden, os.O_RDONLY)            # kept back, the same number
    os.get_inheritable(h)                       # no name: the shared table forgot the watched file
    os.close(h)
    os.close(r)
    os.close(w)
os._exit(0)
"""

Seen = tuple[str, str, int | None, str | None]  # process (root/child), type, fd number, fd name


def _run(work: Path, tok: str, n: int, c_loop: bool, monkeypatch: pytest.MonkeyPatch,
         script: str = REUSE, attach: bool = False, extra: tuple[str, ...] = ()
         ) -> tuple[list[Seen], list[Event], PtraceSource]:
    """attach: the workload is started untraced and attached with --pid (no filter: every syscall stops and
    the Python tracer decides every one), its fds seeded from /proc. extra: more arguments for the script."""
    monkeypatch.setenv(fastpath.ENV_SWITCH, "1" if c_loop else "0")
    log: list[str] = []
    argv = [PY, "-I", "-S", "-c", script, tok, str(work), str(n), *extra]
    target = None
    if attach:
        go = work / "go"
        os.mkfifo(go)
        target = subprocess.Popen([*argv, str(go)])
        source = PtraceSource([], [target.pid], WANTED, 80, log.append)
    else:
        source = PtraceSource(argv, [], WANTED, 80, log.append)
    source.set_syscalls(WANTED)
    source.set_open_prefixes({str(work / f"watched-{tok}"): ["read"]})
    assert not source.tracer.close_events
    events: list[Event] = []
    try:
        source.start()
        if attach:
            events.extend(source.poll(200) or [])  # the first poll lets the tracer resume the target
            with open(go, "wb") as fifo:
                fifo.write(b"g")
        while (got := source.poll(200)) is not None:
            events.extend(got)
    finally:
        source.close()
        if target is not None:
            target.kill()
            target.wait()
    root = source.tracer.root_pid
    seen: list[Seen] = []
    started = False  # from the script's start mark on (not the interpreter's own start)
    for ev in events:
        fd = ev.fd
        name = fd.name if fd is not None else None
        if ev.type not in ("openat", "fcntl") or ev.proc.name != "python3":
            continue
        if ev.type == "openat" and (name is None or tok not in name):
            continue
        if not started:
            started = ev.type == "openat" and name is not None and name.endswith(f"/watched-{tok}")
            continue
        shown = name.replace(str(work), "WORK").replace(tok, "TOK") if name is not None else None
        num = fd.num if fd is not None else ev.args.get("fd")  # an fd the engine does not know: the argument
        seen.append(("root" if ev.proc.pid == root else "child", ev.type, num if isinstance(num, int) else None,
                     shown))
    return seen, events, source


def _expected(seen: list[Seen], n: int) -> None:
    """The events of REUSE, iteration by iteration (fd numbers as the kernel gave them)."""
    per = 13
    assert len(seen) == per * n, "\n".join(map(str, seen))
    for i in range(n):
        it = seen[per * i:per * (i + 1)]
        b = it[1][2]
        assert b is not None, it
        assert it[0] == ("root", "fcntl", b, None), it  # a, kept back: the number b gets next
        assert it[1] == ("root", "openat", b, "WORK/watched-TOK"), it
        assert it[2] == ("root", "fcntl", b, "WORK/watched-TOK"), it
        assert it[3] == ("root", "fcntl", b, None), it  # c, the same number: never the stale watched name
        d = it[4][2]
        assert it[4] == ("root", "openat", d, "WORK/dir-TOK"), it  # learned late, before the relative open
        assert it[5][1:] == ("openat", it[5][2], "WORK/dir-TOK/inner"), it
        assert it[6] == ("root", "fcntl", d, "WORK/dir-TOK"), it
        f = it[7][2]
        assert f is not None, it
        assert it[7] == ("root", "openat", f, "WORK/watched-TOK"), it
        assert it[8] == ("child", "fcntl", f, "WORK/watched-TOK"), it
        assert it[9] == ("child", "fcntl", f + 1, None), it  # g: kept back, inherited
        assert it[10] == ("root", "fcntl", f, "WORK/watched-TOK"), it  # the child's close was its own
        m = it[11][2]
        assert it[11] == ("child", "openat", m, "WORK/watched-TOK"), it  # the CLONE_FILES child's
        assert it[12] == ("root", "fcntl", m, None), it  # h, m's number: the shared table forgot m


@pytest.fixture
def work() -> Iterator[Path]:
    """A short directory: the open filter's prefix atoms are cut at PREFIX_MAX bytes, and a cut atom for the
    watched file under pytest's long tmp_path would cover the kept-back files beside it too."""
    path = Path(tempfile.mkdtemp(prefix="fps", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _workdir(tmp_path: Path, tok: str) -> None:
    (tmp_path / f"hidden-{tok}").write_text("x")
    (tmp_path / f"watched-{tok}").write_text("x")
    (tmp_path / f"dir-{tok}").mkdir()
    (tmp_path / f"dir-{tok}" / "inner").write_text("x")


@pytest.mark.parametrize("c_loop", [True, False], ids=["C loop", "Python loop"])
def test_a_reused_fd_number_is_named_right_with_closes_state_only(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 c_loop: bool) -> None:
    if c_loop and not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    tok = token()
    _workdir(work, tok)
    seen, _, source = _run(work, tok, 20, c_loop, monkeypatch)
    _expected(seen, 20)
    assert source.tracer.late_dirs == 20


def test_attached_with_pid_a_reused_fd_number_is_named_right(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--pid: the same rules with every stop decided by the Python tracer, the process's fds seeded from /proc."""
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    if os.geteuid() != 0 and scope.exists() and scope.read_text().strip() != "0":
        missing("attaching to a sibling process: root or kernel.yama.ptrace_scope 0")
    tok = token()
    _workdir(work, tok)
    seen, _, source = _run(work, tok, 5, fastpath.BUILT, monkeypatch, attach=True)
    assert not source.tracer.seccomp
    _expected(seen, 5)
    assert source.tracer.late_dirs == 5


def test_the_c_loop_makes_two_stops_per_kept_back_open_and_close(work: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The C loop's stops grow by 2 per extra kept-back open/read/close (3 before: the open's exit stop)."""
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    script = r"""
import os, sys
tok, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
hidden = work + "/hidden-" + tok
os.close(os.open(hidden, os.O_RDONLY))   # the first one is decided by the Python tracer
for i in range(n):
    a = os.open(hidden, os.O_RDONLY)
    os.read(a, 1)
    os.close(a)
os._exit(0)
"""
    tok = token()
    _workdir(work, tok)
    stops = []
    for n in (0, 300):
        _, _, source = _run(work, tok, n, True, monkeypatch, script)
        assert source.tracer.loop is not None
        stops.append(source.tracer.loop.counters()[0])
    assert 2 * 300 - 10 <= stops[1] - stops[0] <= 2 * 300 + 10, stops  # 3 * 300 before


def test_the_c_loop_gives_the_python_loops_events(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    tok = token()
    _workdir(work, tok)
    py, _, py_source = _run(work, tok, 10, False, monkeypatch)
    c, _, c_source = _run(work, tok, 10, True, monkeypatch)
    assert c == py, "\n".join(["python:", *map(str, py), "C:", *map(str, c)])
    assert c_source.tracer.path_filtered == py_source.tracer.path_filtered > 0


STORM = r"""
import os, sys
tok, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
hidden, watched = work + "/hidden-" + tok, work + "/watched-" + tok
def worker(t):
    for i in range(n):
        w = os.open(watched, os.O_RDONLY)       # known, inherited
        h = os.open(hidden, os.O_RDONLY)        # kept back, inherited
        pid = os.fork()
        if pid == 0:
            os.get_inheritable(w)
            os.get_inheritable(h)
            os.close(w)
            x = os.open(hidden, os.O_RDONLY)    # the child's own kept-back fd: w's number
            os.get_inheritable(x)
            if i % 2:
                os.execv("/bin/true", ["/bin/true", f"{tok}-{t}-{i}"])
            os._exit(0)
        os.waitpid(pid, 0)
        os.get_inheritable(w)                   # the worker's w is still the watched file
        os.close(w)
        os.close(h)
if len(sys.argv) > 4:                           # threads of one process: one fd table
    import threading
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads: th.start()
    for th in threads: th.join()
    os._exit(0)
workers = []
for t in range(6):                              # processes at once, each one thread
    pid = os.fork()
    if pid == 0:
        worker(t)
        os._exit(0)
    workers.append(pid)
for pid in workers:
    os.waitpid(pid, 0)
os._exit(0)
"""


def test_a_fork_exec_exit_storm_keeps_every_processs_fds(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    tok, per_thread = token(), 15
    _workdir(work, tok)
    _, events, source = _run(work, tok, per_thread, True, monkeypatch, STORM)
    root = source.tracer.root_pid
    watched = str(work / f"watched-{tok}")
    by_proc: dict[int, list[str | None]] = {}
    parents: dict[int, int] = {}
    for ev in events:
        if ev.type == "fcntl" and ev.proc.name == "python3" and ev.proc.pid != root:
            by_proc.setdefault(ev.proc.pid, []).append(ev.fd.name if ev.fd is not None else None)
            parents[ev.proc.pid] = ev.proc.ppid
    workers = {pid for pid in by_proc if parents[pid] == root}
    children = {pid: names for pid, names in by_proc.items() if pid not in workers}
    assert len(workers) == 6 and len(children) == 6 * per_thread, (len(workers), len(children))
    for names in children.values():  # inherited w named, inherited h and the child's own x not
        assert names == [watched, None, None], names
    for pid in workers:
        assert by_proc[pid] == [watched] * per_thread, by_proc[pid]
    execs = [ev for ev in events if ev.type == "execve" and ev.res == 0 and ev.proc.args[:1] != [] and
             ev.proc.args[0].startswith(tok + "-")]
    assert len(execs) == 6 * (per_thread // 2)
    assert not {ev.proc.pid for ev in events} - {root} & set(source.enricher.table.procs)


def test_a_threaded_fork_exec_storm_keeps_every_processs_fds(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STORM's workers as threads of one process: a worker's fd closed and reused at once by another thread
    is recorded closed before it is reused, and a child's table is what the kernel copied (sensor/ptrace/fdbook.py
    _closes_first, _copied), so every child inherits w named and never a name for h or x. Before session 9
    most runs failed: a child's w lost (1-5 of 90 in session 7's runs), or its x named by another thread's
    w opened after the fork."""
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    tok, per_thread = token(), 15
    _workdir(work, tok)
    _, events, source = _run(work, tok, per_thread, True, monkeypatch, STORM, extra=("threads",))
    root = source.tracer.root_pid
    watched = str(work / f"watched-{tok}")
    by_proc: dict[int, list[str | None]] = {}
    for ev in events:
        if ev.type == "fcntl" and ev.proc.name == "python3" and not (ev.proc.pid == root and ev.tid == root):
            by_proc.setdefault(ev.proc.pid, []).append(ev.fd.name if ev.fd is not None else None)
    children = {pid: names for pid, names in by_proc.items() if pid != root}
    assert len(children) == 6 * per_thread, len(children)
    for names in children.values():  # inherited w named, inherited h and the child's own x not
        assert names == [watched, None, None], names
    assert by_proc[root] == [watched] * (6 * per_thread), by_proc[root]
