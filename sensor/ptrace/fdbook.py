"""The tracer's fd bookkeeping (a part of Tracer, tracer.py): the hidden-fd sets and the mirror of the fds the
engine may know (stoploop_fds.h), directories of kept-back opens learned late, and the order of records
between a process's threads as far as its fd table is concerned (docs/ptrace.md, "Order between threads").
Everything here runs on the tracer thread, in the order records are built.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from falconet.sensor import syscalls as sc
from falconet.sensor.ptrace import fastpath
from falconet.sensor.ptrace import kernel as k
from falconet.sensor.ptrace.procfs import Identity
from falconet.sensor.ptrace.records import pack
from falconet.sensor.record import REC_SYSCALL
from falconet.sensor.state import fd_flags

Sink = Callable[[bytes], None]
CopiedFds = Callable[[int, frozenset[int]], None]
"""(child, the fd numbers it holds): right after its fork's record, the child's table as the kernel copied it
(Tracer._copied), called in record order on the tracer thread."""
LearnFd = Callable[[int, int, str, int | None], None]
"""(process, fd number, its /proc/TID/fd link, its fdinfo flags): an fd the engine must learn before the next
record (Tracer._learn_fd), called in record order on the tracer thread."""

FD_CREATES_RES, FD_CREATES_PAIR, FD_CLOSES = 1, 2, 3  # Spec.fdeffect (probe.c FD_*)
AT_FDCWD, O_LARGEFILE = -100, 0o100000
_OPENAT_NR = sc.BY_NAME["openat"].nr
_CLOSE = sc.BY_NAME["close"]
_FCNTL_NR, _F_DUPFD = sc.BY_NAME["fcntl"].nr, (0, 1030)  # F_DUPFD, F_DUPFD_CLOEXEC
_FD_PARAMS = frozenset({"fd", "oldfd", "dirfd", "olddirfd", "newdirfd", "linkdirfd"})
"""Parameters naming an fd whose Fd the engine reads for the event or copies into its tables (not `newfd`,
which dup2/dup3 replace): a directory the engine never learned is learned late (Tracer._late_dirs)."""
_FD_ARGS: dict[int, tuple[int, ...]] = {
    s.nr: tuple(int(src[1:]) for name, src in s.params if name in _FD_PARAMS and src[:1] == "i")
    for s in sc.BY_NAME.values()}
_FD_ARGS[sc.EXECVEAT_NR] = (0,)


@dataclass(slots=True)
class _Task:
    tid: int
    tgid: int
    ident: Identity | None = None
    started: bool = False  # its first stop was seen and it runs
    awaiting: int = -1  # the syscall whose exit stop comes next (-1: none)
    entry_args: tuple[int, ...] = ()
    before: Identity | None = None  # credentials before a credsbefore syscall
    execargs: list[bytes] = field(default_factory=list)  # the exec's records, built at entry
    hide: bool = False  # the open filter keeps back the open whose exit stop comes next
    may_be_dir: bool = False  # ... and its fd may be a directory's (read-only access), which is never hidden


class FdBook:
    """Tracer's fd methods; the attributes and the two methods below are Tracer's."""

    tasks: dict[int, _Task]
    hidden: fastpath.Hidden
    loop: fastpath.StopLoop | None
    sink: Sink
    learn_fd: LearnFd | None
    copied_fds: CopiedFds | None
    learned_fds: int
    late_dirs: int
    closes_first: int
    _closing: dict[int, tuple[int, int]]
    _closed_early: set[int]
    _other_info: k.SyscallInfo
    _filtered: int
    _skip: bool
    _init_ts: int

    def _ident(self, t: _Task) -> Identity:
        raise NotImplementedError

    def _segments(self, tid: int, spec: sc.Spec, a: tuple[int, ...], res: int) -> list[bytes]:
        raise NotImplementedError

    def _copied(self, child: int) -> None:
        """The fds a forked child really holds: it has not run yet, so /proc/CHILD/fd is the kernel's copy. The
        fork event can be reaped after records of syscalls another thread of the parent made after the copy
        (waitpid's reaping order, _closes_first): the engine, copying the parent's table at the fork record,
        would give the child an fd opened after the copy, and a number the child then gets from an open kept
        back would carry that file's name. The engine drops from the child what the kernel did not copy. Only
        for a parent with more threads (Tracer._fork): one thread's own records all come before its fork's.
        (A single-threaded parent sharing its table with another process through CLONE_FILES is not checked.)"""
        try:
            held = frozenset(int(name) for name in os.listdir(f"/proc/{child}/fd"))
        except (OSError, ValueError):
            return
        if self.copied_fds is not None:
            self.copied_fds(child, held)


    def _fd_effect(self, t: _Task, spec: sc.Spec, res: int) -> bool:
        """probe.c's hidden-fd bookkeeping at exit: a new fd number is no longer hidden, unless it is the fd
        of an open the filter keeps back (True: no record), as probe.c decides it."""
        if spec.fdeffect == FD_CREATES_RES and res >= 0:
            self.hidden.unhide(t.tgid, res)
        elif spec.fdeffect == FD_CREATES_PAIR and res == 0:
            for fd in self._pair(t, spec):
                self.hidden.unhide(t.tgid, fd)
        if not t.hide:
            return False
        t.hide = False
        if res >= 0 and t.may_be_dir and _fd_may_be_dir(t.tid, res):
            return False
        if res >= 0:
            self.hidden.hide(t.tgid, res)
        self._filtered += 1
        return True

    def _learn(self, t: _Task, spec: sc.Spec, res: int) -> None:
        """The fds the engine may learn from this syscall's record (or forget: a successful close), into the
        may-know set (stoploop_fds.h); only the enricher's _fd_effects and _socket_event add fds."""
        eff = spec.fdeffect
        if eff == FD_CREATES_RES and res >= 0:
            self.hidden.fds_learn(t.tgid, res)
        elif eff == FD_CREATES_PAIR and res == 0:
            for fd in self._pair(t, spec):
                self.hidden.fds_learn(t.tgid, fd)
        elif eff == FD_CLOSES and res == 0:
            self.hidden.fds_learn(t.tgid, _i32(t.entry_args[0]), False)
        if spec.sockfd != sc.NO_ARG and spec.sockfd != sc.SOCKFD_RES:
            self.hidden.fds_learn(t.tgid, _i32(t.entry_args[spec.sockfd]))

    def _learn_fd(self, t: _Task, fd: int) -> None:
        """At the seccomp stop of a close of an fd the engine may not know, once a reload turned a close rule on
        after closes were state-only: the fd may come from an open kept back meanwhile with no exit stop (no
        record, not hidden), so the close would reach the rules with no fd at all. It has not run yet, so
        /proc/TID/fd/N still names the file: the engine learns the fd from there (as the start-up seeding
        learns a process's fds) before the close record, and its close carries the name. An fd /proc no longer
        shows (another thread closed it) is left unknown: its fd fields read <NA>."""
        try:
            target = os.readlink(f"/proc/{t.tid}/fd/{fd}")
        except OSError:
            return
        if self.learn_fd is not None:
            self.learn_fd(t.tgid, fd, target, fd_flags(Path(f"/proc/{t.tid}"), str(fd)))
        self.hidden.fds_learn(t.tgid, fd)
        self.learned_fds += 1

    def _pair(self, t: _Task, spec: sc.Spec) -> tuple[int, ...]:
        """The two fds a pipe/socketpair wrote to the tracee's int[2]."""
        raw = k.read_mem(t.tid, t.entry_args[spec.blob], 8)
        if len(raw) != 8:
            return ()
        return _i32(int.from_bytes(raw[:4], "little")), _i32(int.from_bytes(raw[4:], "little"))

    def _new_fds(self, t: _Task, spec: sc.Spec, res: int) -> tuple[int, ...]:
        """The fd numbers this syscall's record gives the engine anew."""
        if spec.nr == _FCNTL_NR and t.entry_args[1] not in _F_DUPFD:
            return ()  # its result is a flag or a lock, not an fd
        if spec.fdeffect == FD_CREATES_RES and res >= 0:
            return (res,)
        return self._pair(t, spec) if spec.fdeffect == FD_CREATES_PAIR and res == 0 else ()

    def _closes_first(self, t: _Task, fds: tuple[int, ...] = (), copied: int = 0) -> None:
        """Records first the closes in flight in t's fd table that must come before t's next record.

        Records are built in the order the tracer reaps stops, and waitpid reports stopped tracees by their place
        in its list (newest first), not by when they stopped: thread A's close of N and thread B's open that got
        N back at once can be reaped open first, and the engine would add N and then remove it (B's fd lost);
        or B's open of N was kept back (no record) and B's fcntl of N, or its fork copying N, is reaped first,
        and the engine names N with A's closed file (stoploop_fds.h "Closes in flight"). So a close of t's fd
        table entered and not yet recorded (another thread's, or a CLONE_FILES process's) is recorded here,
        before t's record, and not again at its exit stop:
        - when its thread already waits at its exit stop: the close is over, with the result read there;
        - when t's record gives its fd number anew (`fds`), even while its thread still runs the close: the
          close cannot free N before the tracer resumed A from its seccomp stop, so N's reuse shows it has
          freed it; its result is then 0 (a flush error, EIO or EINTR, which frees the fd too, is not reported);
        - at a fork that copied the table to process `copied` (held before it runs), when the child has no fd N:
          the close freed it before the copy (it was open at the close's seccomp stop).
        A close finished after B's syscall ran (B used the fd as it was closed: a race in the workload itself)
        then reads as closed first: the engine errs towards an fd it does not know (<NA>), never a stale name."""
        if not self._closing and self.loop is None:
            return
        for tid, args in self._in_flight(t):
            closer = self.tasks.get(tid)
            if closer is None:
                continue
            fd = _i32(args[0])
            try:
                done: int | None = self._other_info.rval() if k.syscall_info(
                    tid, self._other_info) == k.SYSCALL_INFO_EXIT else None
            except OSError:
                done = None  # still running its close (not stopped yet)
            if done is None:
                if fd not in fds and not (copied and not os.path.lexists(f"/proc/{copied}/fd/{fd}")):
                    continue
                done = 0
            self.sink(pack(REC_SYSCALL, tid, self._ident(closer), _CLOSE.nr, done, args,
                           self._segments(tid, _CLOSE, args, done), init_ts=self._init_ts))
            if done == 0:
                self.hidden.fds_learn(closer.tgid, fd, False)
            self._closing.pop(tid, None)
            if self.loop is not None:
                self.loop.closed_early(tid)
            self._closed_early.add(tid)
            self.closes_first += 1

    def _in_flight(self, t: _Task) -> list[tuple[int, tuple[int, ...]]]:
        """The closes of t's fd table entered and not exited, but t's own: (tid, entry arguments) each."""
        out = [(tid, closer.entry_args) for tid, (owner, _) in self._closing.items()
               if tid != t.tid and self.hidden.fds_same(owner, t.tgid) and (closer := self.tasks.get(tid))]
        if self.loop is not None:
            out.extend((tid, args) for tid, args in self.loop.closing(t.tgid) if tid != t.tid)
        return out

    def _late_dirs(self, t: _Task, nr: int) -> None:
        """An fd argument the engine cannot know (not in the may-know set) that is a directory now: a kept-back
        read-only open whose exit stop was skipped may have opened a directory, which the probe never keeps
        back (its fd resolves *at() paths and fchdir, and names the fd of later events). Learned before this
        record by a record of an openat of it (the path as /proc/TID/fd/N names it, the fd's own flags)."""
        for i in _FD_ARGS.get(nr, ()):
            fd = _i32(t.entry_args[i])
            if fd >= 0 and self.hidden.fds_known(t.tgid, fd) is False:
                self._late_dir(t, fd)

    def _late_dir(self, t: _Task, fd: int) -> None:
        link = f"/proc/{t.tid}/fd/{fd}".encode()
        try:
            if not stat.S_ISDIR(os.stat(link).st_mode):
                return
            path = os.readlink(link)
            flags = _fdinfo_flags(t.tid, fd)
        except OSError:
            return
        self._closes_first(t, (fd,))
        self.sink(pack(REC_SYSCALL, t.tid, self._ident(t), _OPENAT_NR, fd, (AT_FDCWD, 0, flags, 0, 0, 0),
                       [path + b"\0"], init_ts=self._init_ts))
        self.hidden.fds_learn(t.tgid, fd)
        self.late_dirs += 1


def _fd_may_be_dir(tid: int, fd: int) -> bool:
    """probe_openfilter.h's fd_may_be_dir: the file the fd refers to is a directory, or it cannot be told."""
    try:
        return stat.S_ISDIR(os.stat(f"/proc/{tid}/fd/{fd}").st_mode)
    except OSError:
        return True


def _fdinfo_flags(tid: int, fd: int) -> int:
    """An open fd's flags as /proc/TID/fdinfo/N shows them (octal), without the O_LARGEFILE the kernel adds."""
    with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
        for line in f:
            if line.startswith(b"flags:"):
                return int(line.split()[1], 8) & ~O_LARGEFILE
    return 0


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
