"""The C stop loop's placement (sensor/ptrace/stoploop.c, "Placement"): the tracer's stop thread follows the
tracee's CPU, a tracee on that CPU is resumed onto it, and the workload never sees the affinity narrowed for
those wake-ups nor loses a mask it set itself.

Why it matters (bench/RESULTS.md, "ptraceplace"): with the tracer and the tracee on two cores every stop wakes
an idle core twice; on one core a traced open costs a fraction of that. No root needed: the tracer traces its
own child. Needs two CPUs (CI's machine has them).
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

# The workload: sets its affinity to the CPUs listed in argv[3] (it inherits the tracer thread's), then opens
# a kept-back file (answered by the C loop) and now and then a watched one (a record: the Python tracer's
# resume) until the stop file exists, reading its own affinity at every turn; it writes the masks it saw to
# argv[4].
SCRIPT = r"""
import os, sys
stop, work, cpu, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
os.sched_setaffinity(0, {int(c) for c in cpu.split(",")})
seen = set()
n = 0
while not os.path.exists(stop):
    os.close(os.open(work + "/hidden", os.O_RDONLY))
    seen.add(tuple(sorted(os.sched_getaffinity(0))))
    if n % 50 == 0:
        os.close(os.open(work + "/watched/file", os.O_RDONLY))
    n += 1
with open(out, "w") as f:
    f.write(repr(sorted(seen)) + "\n" + str(n) + "\n")
os._exit(0)
"""


def _last_cpu(tid: int) -> int:
    """Field 39 of /proc/self/task/TID/stat: the CPU the thread last ran on."""
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[36])


def _workload(tmp_path: Path, cpu: str) -> tuple[list[str], Path, Path]:
    (tmp_path / "hidden").write_text("x")
    (tmp_path / "watched").mkdir()
    (tmp_path / "watched" / "file").write_text("x")
    stop, out = tmp_path / f"stop-{token()}", tmp_path / "seen.txt"
    return [PY, "-I", "-S", "-c", SCRIPT, str(stop), str(tmp_path), cpu, str(out)], stop, out


def _trace(tmp_path: Path, cpu: str, monkeypatch: pytest.MonkeyPatch, *, placement: bool,
           start_on: int) -> tuple[set[int], int, list[tuple[int, ...]], PtraceSource]:
    """Runs the workload under a source whose tracer thread starts on CPU `start_on`; once the tracer has
    answered enough stops (or the deadline passed) stops it. Returns the tracer thread's affinity and last CPU
    seen while it ran, the masks the workload saw, and the source."""
    monkeypatch.setenv(fastpath.ENV_SWITCH, "1")
    monkeypatch.setenv(fastpath.PLACE_SWITCH, "1" if placement else "0")
    command, stop, out = _workload(tmp_path, cpu)
    log: list[str] = []
    source = PtraceSource(command, [], None, 80, log.append)
    source.set_open_prefixes({str(tmp_path / "watched"): ["read"]})
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {start_on})  # the tracer thread (and the launcher) inherit it
    try:
        source.start()
    finally:
        os.sched_setaffinity(0, before)
    thread = source._thread
    assert thread is not None and thread.native_id is not None
    tid = thread.native_id
    affinity: set[int] = set()
    last = -1
    deadline = time.monotonic() + DEADLINE
    try:
        while (got := source.poll(50)) is not None:
            loop = source.tracer.loop
            if not stop.exists() and loop is not None:
                affinity, last = os.sched_getaffinity(tid), _last_cpu(tid)
                # Enough stops for a decision (the first sample moves it at once) and for many wake-ups.
                settled = not placement or "," in cpu or affinity == {int(cpu)}
                if (loop.counters()[1] > 3000 and settled) or time.monotonic() > deadline:
                    stop.write_text("")
            del got
    finally:
        source.close()
    lines = out.read_text().splitlines()
    return affinity, last, eval(lines[0]), source  # noqa: S307 (the workload's own repr of a list of tuples)


def test_the_tracer_thread_moves_to_the_cpu_of_a_pinned_tracee(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    needs_two_cpus()
    affinity, last, seen, source = _trace(tmp_path, "1", monkeypatch, placement=True, start_on=0)
    assert source.tracer.loop is not None
    place = source.tracer.loop.placement()
    assert affinity == {1} and last == 1, (affinity, last, place)
    assert place.cpu == 1 and place.moves >= 1, place
    assert place.held == 0, place  # a tracee allowed on one CPU already wakes there: its mask is left alone
    assert seen == [(1,)], seen  # the workload's own pin, never widened by the tracer


def test_without_placement_the_tracer_thread_stays_where_it_started(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same run with placement off leaves the tracer on CPU 0 (the test above can fail)."""
    needs_two_cpus()
    affinity, _, seen, source = _trace(tmp_path, "1", monkeypatch, placement=False, start_on=0)
    assert source.tracer.loop is not None
    place = source.tracer.loop.placement()
    assert affinity == {0} and place == (-1, 0, 0, 0, 0, 0), (affinity, place)
    assert seen == [(1,)], seen


def test_an_unpinned_tracee_never_sees_its_affinity_narrowed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumes narrow the tracee's affinity to the tracer's CPU (kept narrowed across the stops the C loop
    answers); its sched_getaffinity stops first and every mask is given back there (stoploop.c NR_SERIAL), so
    it reads its whole mask every time, thousands of times."""
    needs_two_cpus()
    whole = tuple(sorted(os.sched_getaffinity(0)))
    affinity, _, seen, source = _trace(tmp_path, ",".join(map(str, whole)), monkeypatch, placement=True,
                                       start_on=0)
    assert source.tracer.loop is not None
    place = source.tracer.loop.placement()
    assert place.held > 1000 and len(affinity) == 1, (place, affinity)
    assert seen == [whole], seen
