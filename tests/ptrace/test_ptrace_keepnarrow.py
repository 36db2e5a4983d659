"""Placement keeps a tracee's affinity narrowed across the stops the C loop answers (stoploop_place.h): what
must still hold. A tracee that stops stopping gets its own mask back (the give-back thread), and a child forked
by a narrowed tracee starts with the parent's own mask, never the narrowed one (a fork-family syscall runs with
the own mask), and a thread reading another thread's mask reads its own mask, never the narrowed one (at a
sched_*affinity stop every mask is given back and nothing is narrowed until that syscall has run). Each fails if
the rule it tests is taken out: without the give-back thread the spinning tracee stays on one CPU forever;
without the fork rule the children inherit the narrowed mask (the parent's last stop before each fork is a
kept-back close, which leaves it narrowed); without the pause in narrowing the reader sees the opener thread
re-narrowed while its syscall runs. No root needed; two CPUs needed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ptrace_harness import PY, needs_two_cpus, token

from falconet.sensor.ptrace import fastpath
from falconet.server.source_ptrace import PtraceSource


@pytest.fixture(autouse=True)
def no_busy_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Placement's own rules are under test: the busy-CPU guard (test_ptrace_guard.py) would pause placement
    whenever the shared machine keeps the tracer waiting, and these tests count placed wake-ups."""
    monkeypatch.setenv(fastpath.GUARD_SWITCH, "0")


DEADLINE = 60.0

# argv: work directory, phase file, stop file. Writes its pid, then in rounds until the stop file exists: opens a
# kept-back file (answered by the C loop, so it is kept narrowed) until the phase file exists, then spins without
# syscalls (a look at the files now and then) while it does. A round's last stop is not always narrowed (placement
# may have just sampled the tracee on another CPU, or moved the tracer): the test then removes the phase file
# for another round.
SPINNER = r"""
import os, sys
work, phase, stop = sys.argv[1:4]
with open(work + "/pid", "w") as f:
    f.write(str(os.getpid()))
x = 0
while not os.path.exists(stop):
    n = 0
    while not (n % 64 == 0 and os.path.exists(phase)):
        os.close(os.open(work + "/hidden", os.O_RDONLY))
        n += 1
    while os.path.exists(phase) and not os.path.exists(stop):
        for i in range(200000):
            x += i
os._exit(0)
"""

# argv: work directory, forks, output file. Before each fork: kept-back opens and closes (the last stop is the
# close's, answered by the C loop: narrowed). Each child reports how many CPUs its own mask holds (its exit
# status); the parent writes the counts it saw.
FORKER = r"""
import os, sys
work, forks, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = set()
for _ in range(forks):
    for _ in range(20):
        os.close(os.open(work + "/hidden", os.O_RDONLY))
    pid = os.fork()
    if pid == 0:
        os._exit(len(os.sched_getaffinity(0)))
    seen.add(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
with open(out, "w") as f:
    f.write(repr(sorted(seen)) + "\n")
os._exit(0)
"""

# argv: work directory, stop file, output file. A thread opens a kept-back file (kept narrowed between its stops)
# while the main thread reads that thread's mask until the stop file exists; the masks read are written out.
READER = r"""
import os, sys, threading
work, stop_file, out = sys.argv[1:4]
stop = threading.Event()
started = threading.Event()
def opener():
    started.set()
    while not stop.is_set():
        os.close(os.open(work + "/hidden", os.O_RDONLY))
t = threading.Thread(target=opener)
t.start()
started.wait()
seen = set()
n = 0
while not (n % 100 == 0 and os.path.exists(stop_file)):
    seen.add(tuple(sorted(os.sched_getaffinity(t.native_id))))
    n += 1
stop.set()
t.join()
with open(out, "w") as f:
    f.write(repr(sorted(seen)) + "\n")
os._exit(0)
"""


def _source(tmp_path: Path, script: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> PtraceSource:
    monkeypatch.setenv(fastpath.ENV_SWITCH, "1")
    monkeypatch.setenv(fastpath.PLACE_SWITCH, "1")
    monkeypatch.setenv(fastpath.KEEP_SWITCH, "1")
    (tmp_path / "hidden").write_text("x")
    (tmp_path / "watched").mkdir()
    source = PtraceSource([PY, "-I", "-S", "-c", script, *args], [], None, 80, lambda _: None)
    source.set_open_prefixes({str(tmp_path / "watched"): ["read"]})
    source.start()
    return source


def _drain(source: PtraceSource, deadline: float) -> None:
    while source.poll(50) is not None:
        assert time.monotonic() < deadline, "the workload did not end"


def test_a_tracee_that_stops_stopping_gets_its_own_mask_back(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    needs_two_cpus()
    whole = os.sched_getaffinity(0)
    phase, stop = tmp_path / f"phase-{token()}", tmp_path / f"stop-{token()}"
    source = _source(tmp_path, SPINNER, [str(tmp_path), str(phase), str(stop)], monkeypatch)
    deadline = time.monotonic() + DEADLINE
    narrowed_seen: set[int] = set()
    try:
        pid = 0
        loop = source.tracer.loop
        assert loop is not None
        rounds = 0
        while True:
            narrowed_seen = set()
            while len(narrowed_seen) != 1:  # the opening phase: kept narrowed between its stops, seen from here
                assert time.monotonic() < deadline, f"never saw the tracee narrowed ({narrowed_seen}, round {rounds})"
                source.poll(1)
                text = (tmp_path / "pid").read_text() if (tmp_path / "pid").exists() else ""
                if text:
                    pid = int(text)
                    mask = os.sched_getaffinity(pid)
                    if len(mask) == 1:
                        narrowed_seen = mask
            phase.write_text("")
            rounds += 1
            # The spinning phase: given back after a pause, by the give-back thread (its count; a Python stop
            # gives the mask back too, so the mask alone does not prove it). A round whose last stop did not
            # narrow the tracee gives the thread nothing to do: after a while, another round.
            round_end = min(deadline, time.monotonic() + 3.0)
            while (mask := os.sched_getaffinity(pid)) != whole or loop.placement().given_back < 1:
                assert time.monotonic() < deadline, f"the spinning tracee kept its narrowed mask {mask}"
                if time.monotonic() > round_end and mask == whole:
                    break
                source.poll(1)
            else:
                break
            phase.unlink()
        stop.write_text("")
        _drain(source, deadline)
    finally:
        stop.write_text("")
        source.close()


def test_a_child_of_a_narrowed_tracee_starts_with_its_own_mask(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    needs_two_cpus()
    whole = os.sched_getaffinity(0)
    out = tmp_path / "seen.txt"
    source = _source(tmp_path, FORKER, [str(tmp_path), "200", str(out)], monkeypatch)
    try:
        _drain(source, time.monotonic() + DEADLINE)
        loop = source.tracer.loop
        assert loop is not None
        place = loop.placement()
    finally:
        source.close()
    assert place.held > 1000, place  # the parent was placed (and kept narrowed) before its forks
    assert out.read_text().splitlines() == [repr([len(whole)])]


def test_a_thread_reads_another_threads_own_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_two_cpus()
    whole = tuple(sorted(os.sched_getaffinity(0)))
    out, stop = tmp_path / "seen.txt", tmp_path / f"stop-{token()}"
    source = _source(tmp_path, READER, [str(tmp_path), str(stop), str(out)], monkeypatch)
    deadline = time.monotonic() + DEADLINE
    try:
        loop = source.tracer.loop
        # Reads go on until the opener thread has been placed (and kept narrowed) many times meanwhile.
        while (loop is None or loop.placement().held < 3000) and time.monotonic() < deadline:
            source.poll(5)
            loop = source.tracer.loop
        stop.write_text("")
        _drain(source, deadline + DEADLINE)
        assert loop is not None
        place = loop.placement()
    finally:
        stop.write_text("")
        source.close()
    assert place.held >= 3000, place
    assert out.read_text().splitlines() == [repr([whole])]
