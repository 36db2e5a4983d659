"""The C stop loop (stoploop.c, built as `_stoploop` by `pip install`) and the hidden-fd sets the tracer and it
share; a pure-Python set of hidden fds when the loop is not used (not built, or turned off with
FALCONET_PTRACE_STOPLOOP=0). Attached with --pid there are no seccomp stops: the loop only waits, places and
hands every stop over.

The C loop answers the stops that make no record (the open filter's kept-back opens and their closes) and the
seccomp stops of syscalls that need nothing at entry but their arguments (not an exec, not one whose
credentials are read before it runs; an open only once its path's decision is cached). It hands every other
stop to the Python tracer, with the task's pending syscall (number, entry arguments, kept back or not) when it
stopped at such an entry: the exit stop that makes the record, or a stop for another reason.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Protocol

from falconet.sensor import syscalls as sc

try:
    from falconet.sensor.ptrace import _stoploop

    BUILT = True
except ImportError:  # not built (no compiler or Python headers where it was installed): the Python loop runs
    BUILT = False

ENV_SWITCH = "FALCONET_PTRACE_STOPLOOP"
"""Set to 0 to run the pure-Python stop loop (the differential tests and the benchmark's before rows)."""
PLACE_SWITCH = "FALCONET_PTRACE_PLACEMENT"
"""Set to 0 to turn the C loop's placement off (the tracer thread stays where the scheduler puts it): the
benchmark's before rows, and a way out should narrowing a tracee's affinity for its wake-ups ever matter."""
KEEP_SWITCH = "FALCONET_PTRACE_KEEP_NARROW"
"""Set to 0 to narrow a tracee's affinity for each wake-up only and give its mask back right after (session 5's
placement, three affinity calls per placed stop) instead of keeping it narrowed across the stops the C loop
answers (stoploop_place.h): the benchmark's before row."""

GUARD_SWITCH = "FALCONET_PTRACE_GUARD_NS"
"""The busy-CPU guard's threshold: placement backs off when the stop thread's run_delay grows by more than this
many ns per stop (stoploop_place.h guard_busy); 0 turns the guard off; unset: the built-in 20,000."""
SKIP_SWITCH = "FALCONET_PTRACE_SKIP_EXIT"
"""Set to 0 to keep every kept-back open's exit stop and the hidden-fd sets even when no rule looks at close
(session 6's 3 stops per kept-back open/read/close): the benchmark's before row."""

NR_CLOSE, NR_OPEN_FLAGS, NR_OPEN_WRITE, NR_PLAIN, NR_SERIAL = 1, 2, 3, 4, 5  # stoploop.c's kinds of syscall
SERIAL_NRS = frozenset({203, 204})
"""sched_setaffinity, sched_getaffinity (x86-64): traced for placement only and continued by the C loop at their
seccomp stop, which orders them after the tracer has given back an affinity it narrowed (stoploop.c NR_SERIAL)."""
_KINDS = {"close": (NR_CLOSE, 0), "open": (NR_OPEN_FLAGS, 1), "openat": (NR_OPEN_FLAGS, 2),
          "creat": (NR_OPEN_WRITE, 0)}
"""(kind, index of the flags argument; the path is the argument before it, creat's is the first)."""
_PYTHON_AT_ENTRY = frozenset({sc.BY_NAME["execve"].nr, sc.EXECVEAT_NR})
"""Read at their seccomp stop by the tracer (tracer.py _exec_entry), as are the credsbefore syscalls."""


def kinds(traced: frozenset[str], place: bool = False) -> dict[int, tuple[int, int]]:
    """stoploop.c's table: syscall number -> (kind, flags argument) for the traced syscalls it may enter, and
    with placement the affinity syscalls it continues at once."""
    out: dict[int, tuple[int, int]] = {nr: (NR_SERIAL, 0) for nr in SERIAL_NRS} if place else {}
    for name in traced:
        spec = sc.BY_NAME[name]
        if name in _KINDS:
            out[spec.nr] = _KINDS[name]
        elif spec.nr not in _PYTHON_AT_ENTRY and not spec.credsbefore and spec.nr < NR_LIMIT:
            out[spec.nr] = (NR_PLAIN, 0)  # openat2 too: its kinds are OPEN_KEEP (never kept back)
    return out


NR_LIMIT = 512  # stoploop.c NR_MAX


def available() -> bool:
    """Whether the C loop was built and is not turned off."""
    return BUILT and os.environ.get(ENV_SWITCH, "1") != "0"


def placement_wanted() -> bool:
    """Whether the C loop keeps the tracer on its tracees' CPU (stoploop.c, "Placement"): on unless turned off."""
    return os.environ.get(PLACE_SWITCH, "1") != "0"


def skip_wanted() -> bool:
    """Whether kept-back opens may skip their exit stop when closes are state-only (stoploop_fds.h)."""
    return os.environ.get(SKIP_SWITCH, "1") != "0"


def guard_ns() -> int | None:
    """The busy-CPU guard's threshold from the environment (None: the built-in one)."""
    raw = os.environ.get(GUARD_SWITCH, "")
    return int(raw) if raw.isdigit() else None


def keep_wanted() -> bool:
    """Whether placed tracees stay narrowed across the stops the C loop answers: on unless turned off."""
    return os.environ.get(KEEP_SWITCH, "1") != "0"


class Placement(NamedTuple):
    """Where the C loop's thread is: its CPU (-1: not pinned yet), how often it moved, how many resumes
    woke a tracee on that CPU (its affinity narrowed for the wake-up or kept narrowed since an earlier one),
    how many masks the give-back thread gave back (a tracee not resumed for a few ms), how many tracees are
    narrowed now, and how often the busy-CPU guard unpinned the thread (stoploop_place.h)."""

    cpu: int
    moves: int
    held: int
    given_back: int = 0
    narrowed: int = 0
    backoffs: int = 0


class Hidden(Protocol):
    """probe.c's hidden_fds: per process, the fds of opens the open filter kept back (when they take their exit
    stop); and the fds the engine may know per process (stoploop_fds.h: when closes are state-only, a kept-back
    open skips its exit stop and a close of an fd the engine cannot know is dropped at its seccomp stop)."""

    def hide(self, tgid: int, fd: int) -> None: ...
    def unhide(self, tgid: int, fd: int) -> bool: ...
    def forget_process(self, tgid: int) -> None: ...
    def fds_track(self, tgid: int) -> None: ...
    def fds_learn(self, tgid: int, fd: int, learn: bool = True) -> None: ...
    def fds_known(self, tgid: int, fd: int) -> bool | None: ...
    def fds_fork(self, parent: int, child: int, share: bool) -> None: ...
    def fds_unshare(self, tgid: int) -> None: ...
    def fds_same(self, a: int, b: int) -> bool: ...
    def set_skip(self, skip: bool) -> None: ...


class HiddenFds:
    """The hidden fds and the engine's may-know sets when the Python loop runs alone (stoploop_fds.h's rules:
    a process without a set is "everything known"; CLONE_FILES shares a set, an exec unshares it)."""

    def __init__(self) -> None:
        self._fds: dict[int, set[int]] = {}
        self._known: dict[int, set[int]] = {}
        self.skip = False

    def fds_track(self, tgid: int) -> None:
        self._known[tgid] = set()

    def fds_learn(self, tgid: int, fd: int, learn: bool = True) -> None:
        known = self._known.get(tgid)
        if known is not None and fd >= 0:
            if learn:
                known.add(fd)
            else:
                known.discard(fd)

    def fds_known(self, tgid: int, fd: int) -> bool | None:
        known = self._known.get(tgid)
        return None if known is None else fd in known

    def fds_fork(self, parent: int, child: int, share: bool) -> None:
        known = self._known.get(parent)
        if known is None:
            self._known.pop(child, None)
        else:
            self._known[child] = known if share else set(known)

    def fds_unshare(self, tgid: int) -> None:
        known = self._known.get(tgid)
        if known is not None and any(v is known for k, v in self._known.items() if k != tgid):
            self._known[tgid] = set(known)

    def fds_same(self, a: int, b: int) -> bool:
        known = self._known.get(a)
        return a == b or (known is not None and known is self._known.get(b))

    def set_skip(self, skip: bool) -> None:
        self.skip = skip

    def hide(self, tgid: int, fd: int) -> None:
        self._fds.setdefault(tgid, set()).add(fd)

    def unhide(self, tgid: int, fd: int) -> bool:
        fds = self._fds.get(tgid)
        if not fds or fd not in fds:
            return False
        fds.discard(fd)
        return True

    def forget_process(self, tgid: int) -> None:
        self._fds.pop(tgid, None)
        self._known.pop(tgid, None)


class Handed(NamedTuple):
    """A stop the C loop leaves to the tracer; nr >= 0: the task had a syscall pending whose seccomp stop the
    C loop answered (its number, entry arguments, whether the open filter keeps it back and whether its fd may
    be a directory's), which the tracer takes over."""

    pid: int
    status: int
    nr: int
    args: tuple[int, int, int, int, int, int]
    hide: bool
    may_be_dir: bool


class StopLoop:
    """One tracer's C state. Only the tracer thread calls it, except `bump_epoch` (any thread)."""

    def __init__(self, traced: frozenset[str], place: bool | None = None) -> None:
        """place: keep this thread on its tracees' CPU (None: unless FALCONET_PTRACE_PLACEMENT=0)."""
        if not BUILT:
            raise RuntimeError("the C stop loop is not built")
        self._mod = _stoploop
        self.place = placement_wanted() if place is None else place
        self.keep = keep_wanted()
        guard = guard_ns()
        self._st = _stoploop.new(kinds(traced, self.place), self.place, self.keep) if guard is None else \
            _stoploop.new(kinds(traced, self.place), self.place, self.keep, guard)

    def wait(self) -> Handed | None:
        """Blocks (without the GIL) until a stop the tracer must handle; None when no tracee is left."""
        got = self._mod.wait(self._st)
        return None if got is None else Handed(*got)

    def filter_extra(self) -> frozenset[int]:
        """Syscall numbers the workload's filter must trace for this loop beyond the rules' (placement's)."""
        return SERIAL_NRS if self.place else frozenset()

    def resume(self, pid: int, request: int, sig: int = 0) -> bool:
        """PTRACE_CONT or PTRACE_SYSCALL as the C loop resumes (onto this thread's CPU when the tracee was
        there); False when the tracee is gone."""
        return self._mod.resume(self._st, pid, request, sig)

    def placement(self) -> Placement:
        return Placement(*self._mod.placement(self._st))

    def task(self, tid: int, tgid: int) -> None:
        self._mod.task(self._st, tid, tgid)

    def forget(self, tid: int) -> None:
        self._mod.forget(self._st, tid)

    def hide(self, tgid: int, fd: int) -> None:
        self._mod.hide(self._st, tgid, fd)

    def unhide(self, tgid: int, fd: int) -> bool:
        return self._mod.unhide(self._st, tgid, fd)

    def forget_process(self, tgid: int) -> None:
        self._mod.forget_process(self._st, tgid)

    def fds_track(self, tgid: int) -> None:
        self._mod.fds_track(self._st, tgid)

    def fds_learn(self, tgid: int, fd: int, learn: bool = True) -> None:
        if fd >= 0:
            self._mod.fds_learn(self._st, tgid, fd, learn)

    def fds_known(self, tgid: int, fd: int) -> bool | None:
        return self._mod.fds_known(self._st, tgid, fd)

    def fds_fork(self, parent: int, child: int, share: bool) -> None:
        self._mod.fds_fork(self._st, parent, child, share)

    def fds_unshare(self, tgid: int) -> None:
        self._mod.fds_unshare(self._st, tgid)

    def fds_same(self, a: int, b: int) -> bool:
        """Whether the two processes are one fd table (the same process, or sets shared by CLONE_FILES)."""
        return self._mod.fds_same(self._st, a, b)

    def closing(self, tgid: int) -> list[tuple[int, tuple[int, int, int, int, int, int]]]:
        """The closes of tgid's fd table whose seccomp stops were answered in C and whose exit stops were not
        handed over yet: (tid, entry arguments) each (stoploop_fds.h "Closes in flight")."""
        return self._mod.closing(self._st, tgid)

    def closed_early(self, tid: int) -> None:
        """That close was recorded (before its exit stop): no longer in flight."""
        self._mod.closed_early(self._st, tid)

    def set_skip(self, skip: bool) -> None:
        """Closes are state-only (no rule on close): kept-back opens skip their exit stop (any thread)."""
        self._mod.set_skip(self._st, skip)

    def set_learn(self, learn: bool) -> None:
        """Closes of fds not in their process's set stop at entry for Python to learn the fd (any thread)."""
        self._mod.set_learn(self._st, learn)

    def epoch(self) -> int:
        return self._mod.epoch(self._st)

    def decide(self, path: bytes, need: int, epoch: int, drop: bool) -> None:
        """The open filter's decision (as it was at `epoch`) on this open: later ones are entered in C."""
        self._mod.decide(self._st, path, need, epoch, drop)

    def bump_epoch(self) -> None:
        """The open filter was replaced: the decisions cached so far are dropped."""
        self._mod.bump_epoch(self._st)

    def counters(self) -> tuple[int, int, int]:
        """(stops waited for, stops answered in C, opens and closes kept back in C)."""
        return self._mod.counters(self._st)
