"""The busy-CPU guard of the C loop's placement (stoploop_place.h guard_busy): when the stop thread's run_delay
(/proc/thread-self/schedstat) grows by more than FALCONET_PTRACE_GUARD_NS per stop over a window, it gives the
narrowed masks back, unpins itself and places nothing for a back-off, then pins again.

The threshold decides, so both branches are shown without loading the machine: at 1 ns per stop any wait for
the CPU trips it (a woken thread is always runnable a little before it runs), at 0 the guard is off. Either
way the workload's events are the same. No root needed: the tracer traces its own child.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ptrace_harness import PY, needs_two_cpus, token

from falconet.sensor.ptrace import fastpath
from falconet.server.source_ptrace import PtraceSource

LOOP = r"""
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
end = time.monotonic() + 0.6                  # long enough to outlast a 50 ms back-off a few times
i = 0
while i < n or time.monotonic() < end:
    os.close(os.open(path, os.O_RDONLY))      # kept back: stops the C loop answers
    i += 1
os.close(os.open(path + "-watched", os.O_RDONLY))
os._exit(0)
"""


def _run(tmp_path: Path, guard: str, monkeypatch: pytest.MonkeyPatch) -> tuple[fastpath.Placement, int]:
    monkeypatch.setenv(fastpath.ENV_SWITCH, "1")
    monkeypatch.setenv(fastpath.PLACE_SWITCH, "1")
    monkeypatch.setenv(fastpath.GUARD_SWITCH, guard)
    path = tmp_path / f"f-{token()}"
    path.write_text("x")
    (tmp_path / f"{path.name}-watched").write_text("x")
    log: list[str] = []
    source = PtraceSource([PY, "-I", "-S", "-c", LOOP, str(path), "3000"], [], frozenset({"openat"}), 80,
                          log.append)
    source.set_open_prefixes({f"{path}-watched": ["read"]})
    watched = 0
    source.start()
    try:
        while (got := source.poll(200)) is not None:
            watched += sum(1 for e in got if e.fd is not None and e.fd.name == f"{path}-watched")
    finally:
        source.close()
    loop = source.tracer.loop
    assert loop is not None and loop.place, log
    return loop.placement(), watched


def test_the_guard_unpins_when_the_stop_thread_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_two_cpus()
    place, watched = _run(tmp_path, "1", monkeypatch)
    assert watched == 1
    assert place.backoffs >= 1, place
    assert place.moves >= 2, place  # pinned again after a back-off


def test_the_guard_off_never_unpins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_two_cpus()
    place, watched = _run(tmp_path, "0", monkeypatch)
    assert watched == 1
    assert place.backoffs == 0 and place.moves >= 1, place
