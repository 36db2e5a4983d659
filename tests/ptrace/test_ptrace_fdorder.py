"""The engine's fd table follows the kernel's when one thread closes an fd and another thread of the same process
gets its number back at once (sensor/ptrace/stoploop_fds.h "Closes in flight", fdbook.py _closes_first).

Records are built in the order the tracer reaps stops, and waitpid(-1) reports stopped tracees by their place
in the tracer's list, not by when they stopped: without the fix the open that got the number back was often
recorded before the close that freed it, so the engine added the fd and then removed it, and the thread's next
fcntl on it had no fd (dozens in 6,000 here, in every mode below). Two threads each open their own watched
file, fcntl it and close it, thousands of times: every fcntl must name the file its own thread opened last.
Run with the C loop and the pure-Python loop, with closes state-only (the mirror of fds the engine may know)
and with a rule on close (every close recorded). No root needed: the tracer traces its own child.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ptrace_harness import PY

from falconet.model.event import Event
from falconet.sensor.ptrace import fastpath
from falconet.server.source_ptrace import PtraceSource
from resources import missing

ROUNDS = 3000

THREADS = r"""
import os, sys, threading
work, n = sys.argv[1], int(sys.argv[2])
def worker(t):
    path = f"{work}/w{t}"
    for i in range(n):
        fd = os.open(path, os.O_RDONLY)         # watched: recorded, often the number the other thread just closed
        os.get_inheritable(fd)                  # fcntl: must name this thread's file
        os.close(fd)
threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
for th in threads: th.start()
for th in threads: th.join()
os._exit(0)
"""


@pytest.fixture
def work() -> Iterator[Path]:
    """A short directory (the open filter's prefix atoms are cut at PREFIX_MAX bytes)."""
    path = Path(tempfile.mkdtemp(prefix="fpo", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(work: Path, wanted: frozenset[str], c_loop: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[list[Event], PtraceSource]:
    monkeypatch.setenv(fastpath.ENV_SWITCH, "1" if c_loop else "0")
    for t in range(2):
        (work / f"w{t}").write_text("x")
    log: list[str] = []
    source = PtraceSource([PY, "-I", "-S", "-c", THREADS, str(work), str(ROUNDS)], [], wanted, 80, log.append)
    source.set_syscalls(wanted)
    source.set_open_prefixes({f"{work}/": ["read"]})
    events: list[Event] = []
    try:
        source.start()
        while (got := source.poll(200)) is not None:
            events.extend(got)
    finally:
        source.close()
    assert any("exit status 0" in line for line in log), log
    return events, source


@pytest.mark.parametrize("closes", [False, True], ids=["closes state-only", "a rule on close"])
@pytest.mark.parametrize("c_loop", [True, False], ids=["C loop", "Python loop"])
def test_an_fd_closed_by_one_thread_and_reused_by_another_stays_known(
        work: Path, monkeypatch: pytest.MonkeyPatch, c_loop: bool, closes: bool) -> None:
    if c_loop and not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    wanted = frozenset({"openat", "fcntl", "close"} if closes else {"openat", "fcntl"})
    events, source = _run(work, wanted, c_loop, monkeypatch)
    assert source.tracer.close_events is closes
    root = source.tracer.root_pid
    own: dict[int, str] = {}  # thread -> the file it opened last
    wrong: list[str] = []
    checked = 0
    for ev in events:
        if ev.proc.pid != root or ev.tid == root:
            continue
        name = ev.fd.name if ev.fd is not None else None
        if ev.type == "openat" and name is not None and name.startswith(f"{work}/w"):
            own[ev.tid] = name
        elif ev.type == "fcntl" and ev.tid in own:
            checked += 1
            if name != own[ev.tid]:
                wrong.append(f"thread {ev.tid} fd {ev.args.get('fd')}: {name!r}, opened {own[ev.tid]!r}")
    assert checked == 2 * ROUNDS, checked
    assert not wrong, f"{len(wrong)} of {checked} fcntls name the wrong file:\n" + "\n".join(wrong[:10])
    if closes:  # every close is an event, once: the ones recorded early are not recorded again at their exit
        closed = [ev for ev in events if ev.type == "close" and ev.proc.pid == root and ev.tid != root and
                  ev.fd is not None and (ev.fd.name or "").startswith(f"{work}/w")]
        assert len(closed) == 2 * ROUNDS, len(closed)
        assert all(ev.res == 0 for ev in closed)
