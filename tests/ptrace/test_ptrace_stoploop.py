"""The C stop loop (sensor/ptrace/stoploop.c) against the pure-Python loop: the same workload under each gives
the same events, fd for fd, and the C loop did answer stops itself (the case is not vacuous).

The workload repeats every open the filter keeps back, since the C loop answers an open only once the Python
tracer has decided its (path, kind) and cached it: a kept-back read-only file (its exit stop and its close in
C), a directory opened read-only without O_DIRECTORY (kept back by path, but a directory's fd is never hidden:
C hands the exit stop with the open's pending state to Python, which records it), a write-only open dup2()ed
(the new number is known) and closed, a kept-back fd's number reused by a watched file, failed opens, a pipe,
and a child that closes an inherited kept-back fd (hidden fds are per process: the child's close is seen).
No root needed: the tracer traces its own child.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ptrace_harness import PY, token

from falconet.model.event import Event
from falconet.sensor.openfilter import open_need
from falconet.sensor.ptrace import fastpath
from falconet.server.source_ptrace import PtraceSource
from resources import missing

SCRIPT = r"""
import os, sys
tok, work = sys.argv[1], sys.argv[2]
hidden = work + "/hidden-" + tok
open(hidden, "w").close()
for i in range(40):
    a = os.open(hidden, os.O_RDONLY)                  # kept back, and its close
    os.read(a, 1)
    os.close(a)
    b = os.open("/etc/shadow", os.O_RDONLY)           # watched: the same number as a
    os.close(b)
    c = os.open(work, os.O_RDONLY)                    # a directory: never hidden, recorded
    os.close(c)
    d = os.open(hidden, os.O_WRONLY | os.O_APPEND)    # kept back ...
    os.dup2(d, 40 + i)                                # ... the dup's number is known
    os.close(40 + i)
    os.close(d)
    try:
        os.open(work + "/missing-" + tok, os.O_RDONLY)  # kept back, failed: no fd
    except OSError:
        pass
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    if i % 10 == 0:
        e = os.open(hidden, os.O_RDONLY)
        pid = os.fork()
        if pid == 0:
            os.close(e)                               # another process: its own hidden set
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(e)
os._exit(0)
"""

FLAG_CASES = [os.O_RDONLY, os.O_WRONLY, os.O_RDWR, 3, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_RDONLY | os.O_CLOEXEC,
              os.O_RDONLY | os.O_DIRECTORY, os.O_PATH, os.O_RDWR | os.O_APPEND, os.O_RDONLY | os.O_NOFOLLOW,
              os.O_RDONLY | os.O_TMPFILE, os.O_WRONLY | os.O_SYNC, os.O_RDONLY | os.O_NONBLOCK | os.O_LARGEFILE]

FD_TYPES = frozenset({"open", "openat", "openat2", "creat", "close", "dup", "dup2", "dup3", "pipe", "pipe2",
                      "read"})


Seen = tuple[str, str, int, int | None, str | None, str | None]  # process, type, res, fd number, type, name


def _run(work: Path, tok: str, c_loop: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Seen], PtraceSource]:
    monkeypatch.setenv(fastpath.ENV_SWITCH, "1" if c_loop else "0")
    log: list[str] = []
    source = PtraceSource([PY, "-I", "-S", "-c", SCRIPT, tok, str(work)], [], None, 80, log.append)
    source.set_open_prefixes({"/etc/shadow": ["read"], "/etc/": ["write"]})
    events: list[Event] = []
    source.start()
    try:
        while (got := source.poll(200)) is not None:
            events.extend(got)
    finally:
        source.close()
    root = source.tracer.root_pid
    seen: list[Seen] = []
    for e in events:
        if e.type not in FD_TYPES or e.proc.name != "python3":
            continue
        fd = e.fd
        name = (fd.name or "").replace(tok, "TOK").replace(str(work), "WORK") if fd is not None else None
        seen.append(("root" if e.proc.pid == root else "child", e.type, e.res,
                     fd.num if fd is not None else None, fd.type if fd is not None else None, name))
    return seen, source


def test_the_c_loop_gives_the_events_of_the_python_loop(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    tok = token()
    py, py_source = _run(tmp_path, tok, False, monkeypatch)
    c, c_source = _run(tmp_path, tok, True, monkeypatch)
    assert py_source.tracer.loop is None and c_source.tracer.loop is not None
    assert c == py, "\n".join(["python:", *map(str, py), "C:", *map(str, c)])
    names = {entry[5] for entry in c}
    assert {"/etc/shadow", "WORK"} <= names  # watched, directory
    assert sum(1 for entry in c if entry[1] == "dup2") == 40  # the dup of a kept-back fd: its number known
    assert sum(1 for entry in c if entry[1] == "close" and entry[0] == "child") == 4  # the inherited fd
    stops, answered, kept = c_source.tracer.loop.counters()
    # Per repeat, 9 stops are the C loop's: the kept-back read-only open (seccomp and exit stops, close), the
    # write-only one (both stops, the close of its own number), the failed open (both), the directory's
    # seccomp stop (its exit stop goes to Python).
    assert answered >= 39 * 9 and kept > 0, (stops, answered, kept)
    assert c_source.tracer.path_filtered == py_source.tracer.path_filtered



RELOAD = r"""
import os, sys
hidden, fifo = sys.argv[1], sys.argv[2]
for _ in range(5):
    os.close(os.open(hidden, os.O_RDONLY))   # kept back: the C loop caches the decision
os.close(os.open("/etc/shadow", os.O_RDONLY))  # the marker: the test now widens the rules
g = os.open(fifo, os.O_RDONLY)               # waits for the test's writer
os.read(g, 1)
os.close(g)
for _ in range(5):
    os.close(os.open(hidden, os.O_RDONLY))   # watched now: none may be kept back by a stale decision
os._exit(0)
"""


def test_a_reload_drops_the_c_loops_cached_decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    monkeypatch.setenv(fastpath.ENV_SWITCH, "1")
    hidden, fifo = tmp_path / f"hidden-{token()}", tmp_path / "go"
    hidden.write_text("x")
    os.mkfifo(fifo)
    log: list[str] = []
    source = PtraceSource([PY, "-I", "-S", "-c", RELOAD, str(hidden), str(fifo)], [], None, 80, log.append)
    source.set_open_prefixes({"/etc/shadow": ["read"]})
    opened: list[tuple[str, bool]] = []  # (name, after the reload)
    reloaded = False
    source.start()
    try:
        while (got := source.poll(200)) is not None:
            for e in got:
                name = e.fd.name if e.fd is not None else None
                if e.type == "openat" and name in (str(hidden), "/etc/shadow"):
                    opened.append((name, reloaded))
                if name == "/etc/shadow" and not reloaded:
                    reloaded = True
                    source.set_open_prefixes({"/etc/shadow": ["read"], str(tmp_path): ["read"]})
                    writer = os.open(fifo, os.O_WRONLY)
                    os.write(writer, b"g")
                    os.close(writer)
    finally:
        source.close()
    assert source.tracer.loop is not None and source.tracer.loop.counters()[1] > 0, log
    assert opened == [("/etc/shadow", False)] + [(str(hidden), True)] * 5, opened


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 64) - 1) | st.sampled_from(FLAG_CASES))
def test_the_c_loop_needs_what_the_kernels_model_needs(flags: int) -> None:
    """stoploop.c's open_need is the model's (sensor/openfilter.py): a different kind would look up another
    cached decision and keep back an open a rule could match."""
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    from falconet.sensor.ptrace import _stoploop

    for name in ("open", "openat"):
        assert _stoploop.open_need(flags) == open_need(name, flags)
