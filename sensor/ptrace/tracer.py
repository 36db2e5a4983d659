"""The tracer loop: one thread that owns every tracee, turns their stops into probe-format records and hands
them to a sink (the ptrace source, which feeds them to the Enricher).

Two ways in. `launch`: the workload starts under launch.py, which installs the seccomp filter (seccomp.py), so
only the traced syscalls stop it: a seccomp stop at entry (the tracer reads what an exec or an unshare/setns
needs before the syscall runs), PTRACE_SYSCALL to its exit stop (result and arguments, as the probe reads them
at sys_exit), then PTRACE_CONT. `attach` (--pid): a running process cannot be given a filter, so every syscall
of it stops twice (entry and exit) and the tracer tells them apart with PTRACE_GET_SYSCALL_INFO.
Fork, vfork, clone, exec and exit events follow every descendant; a new child is held at its first stop until
its parent's fork event has been recorded, so no record of a child ever comes before the fork that made it.

ptrace requests are only valid from the thread that attached, so everything here runs on the tracer thread;
the sink is called there too (it must be quick and thread-safe). The stops are waited for by the C stop loop
when it is built (fastpath.py): it keeps this thread on the tracees' CPU and, for a launched workload, answers
the open filter's stops, which make no record, and hands every other stop here (attached, every stop).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from falconet.sensor import syscalls as sc
from falconet.sensor.ptrace import kernel as k
from falconet.sensor.ptrace import fastpath, procfs
from falconet.sensor.ptrace.openfilter import OPEN_KEEP, OPEN_READ, OPEN_WRITE, PATH_SCAN_MAX, OpenFilter, open_need
from falconet.sensor.ptrace.procfs import Identity
from falconet.sensor.ptrace.fdbook import (
    _FD_ARGS,
    FD_CLOSES,
    FD_CREATES_PAIR,
    FD_CREATES_RES,
    CopiedFds,
    FdBook,
    LearnFd,
    Sink,
    _i32,
    _Task,
)
from falconet.sensor.ptrace.records import U32, pack, sockinfo, strv
from falconet.sensor.ptrace.seccomp import DATA_FOREIGN, build_filter
from falconet.sensor.record import EXECARGS_LOST, REC_EXECARGS, REC_EXECENV, REC_EXIT, REC_FORK, REC_SYSCALL

Log = Callable[[str], None]

CLONE_THREAD, CLONE_VM, CLONE_VFORK, SIGCHLD = 0x10000, 0x100, 0x4000, 17
MAX_ARGV, MAX_ENVP, ARGS_AREA, ENV_MORE_AREA, STR_MAX, SOCK_MAX = 32, 48, 4096, 12288, 4096, 128
# Syscalls after which the task's credentials, session, group or name may differ (the tracer re-reads them).
CRED_STATE = frozenset({"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "capset", "setsid",
                        "setpgid", "unshare", "setns", "prctl"})
_CRED_NRS = frozenset(sc.BY_NAME[n].nr for n in CRED_STATE)
_EXEC_NRS = frozenset({sc.BY_NAME["execve"].nr, sc.EXECVEAT_NR})
_SETPGID_NR = sc.BY_NAME["setpgid"].nr
CLONE_FILES = 0x400
LAUNCHER = Path(__file__).with_name("launch.py")


def traced_names(wanted: frozenset[str] | None) -> frozenset[str]:
    """What the filter traces: the rules' syscalls (every known one but read/write when None) and the ones
    the tables need (process lifecycle, fds, credentials), as the probe's sysconf turns them on."""
    rules = frozenset(sc.BY_NAME) - sc.NAMED_ONLY if wanted is None else wanted & frozenset(sc.BY_NAME)
    return rules | sc.PROCESS_STATE | sc.FD_STATE | CRED_STATE


class Tracer(FdBook):
    """Owns the tracees; `run()` on the thread that made them (returns when none is left)."""

    def __init__(self, sink: Sink, log: Log, traced: frozenset[str], *, snaplen: int = 80,
                 env_max: int = MAX_ENVP, data: frozenset[str] | None = frozenset(),
                 stoploop: bool | None = None, placement: bool | None = None) -> None:
        """stoploop: use the C stop loop for a launched workload (None: when built and not turned off);
        placement: the C loop keeps its thread on the tracees' CPU (None: unless turned off)."""
        k.check_arch()
        self.sink = sink
        self.log = log
        self.traced = traced
        self.traced_nrs = frozenset(sc.BY_NAME[n].nr for n in traced)
        self.snaplen = snaplen
        self.env_max = env_max
        self.data = data
        self.seccomp = True
        self.tasks: dict[int, _Task] = {}
        self.threads: dict[int, set[int]] = {}  # tgid -> its live tids
        self.held: dict[int, int] = {}  # new child stopped before its parent's fork event -> its wait status
        self.expected: dict[int, int] = {}  # child tid announced by a fork event -> its tgid
        self.root_pid = 0
        self.root_status: int | None = None
        self._stops = 0
        self._want_loop = fastpath.available() if stoploop is None else stoploop
        self._placement = placement
        self.loop: fastpath.StopLoop | None = None
        self.foreign_seen = False
        self.closing = False
        self._init_ts = procfs.monotonic_start_of_init()
        self._regs = k.UserRegs()
        self._info = k.SyscallInfo()  # one buffer for every stop's PTRACE_GET_SYSCALL_INFO
        self._sync_fd = -1
        self.launcher_fds: frozenset[int] = frozenset()
        """fds the launcher closes before the workload runs (its sync pipe): not to be seeded as the workload's."""
        self._open_filter: OpenFilter | None = None
        self.hidden: fastpath.Hidden = fastpath.HiddenFds()  # probe.c hidden_fds (the C loop's when it runs)
        self._filtered = 0  # opens kept back and their closes here (the probe's CNT_PATH_FILTERED)
        self._skip = False  # closes are state-only: kept-back opens skip their exit stop (close_events)
        self.late_dirs = 0  # directory fds of kept-back opens the engine learned late (_late_dir)
        self._closing: dict[int, tuple[int, int]] = {}  # tid -> (tgid, fd): a close entered here, not exited
        self._closed_early: set[int] = set()  # tids whose close in flight was recorded already (_closes_first)
        self._other_info = k.SyscallInfo()  # another task's stop read while this one's info is in use
        self.closes_first = 0  # closes recorded before their exit stop (_closes_first)
        self.learn_fd: LearnFd | None = None
        self.copied_fds: CopiedFds | None = None
        self._learning = False  # closes turned into events after being state-only (close_events)
        self.learned_fds = 0  # fds learned from /proc at their close's seccomp stop (_learn_fd)

    @property
    def open_filter(self) -> OpenFilter | None:
        return self._open_filter

    @open_filter.setter
    def open_filter(self, filt: OpenFilter | None) -> None:
        """Replaced whole by the source's thread (a reload); the C loop's cached decisions go with it."""
        self._open_filter = filt
        if self.loop is not None:
            self.loop.bump_epoch()

    @property
    def close_events(self) -> bool:
        return not self._skip

    @close_events.setter
    def close_events(self, wanted: bool) -> None:
        """Whether a rule looks at close events (any thread). When none does, a close is state only: it can
        change nothing for an fd the engine cannot know, so such closes are dropped at their seccomp stop and a
        kept-back open skips its exit stop, whose only use was to learn the fd to hide (stoploop_fds.h). With
        close rules the hidden-fd sets keep the exact eBPF behaviour: a close of an fd the engine never saw is
        still an event there, unless its open was kept back."""
        was, self._skip = self._skip, not wanted and fastpath.skip_wanted()
        if was and not self._skip and not self._learning:  # fds kept back meanwhile: never seen by the engine
            self._learning = True
            if self.loop is not None:
                self.loop.set_learn(True)
        self.hidden.set_skip(self._skip)

    def seed_fds(self, tgid: int, fds: Iterable[int]) -> None:
        """The fds the engine's tables were seeded with for this process (from /proc): known to it."""
        for fd in fds:
            self.hidden.fds_learn(tgid, fd)

    @property
    def stops(self) -> int:
        return self._stops + (self.loop.counters()[0] if self.loop is not None else 0)

    @property
    def path_filtered(self) -> int:
        """Opens kept back and their closes, by either loop."""
        return self._filtered + (self.loop.counters()[2] if self.loop is not None else 0)

    # --- starting ----------------------------------------------------------------------------------------

    def launch(self, command: Sequence[str]) -> int:
        """Starts `command` under the filter; returns its pid. Raises OSError (spawn or attach refused)."""
        numbers = {sc.BY_NAME[n].nr for n in self.traced}
        if self._want_loop:
            self.loop = fastpath.StopLoop(self.traced, self._placement)
            self.hidden = self.loop
            self.hidden.set_skip(self._skip)
            self.loop.set_learn(self._learning)
            numbers |= self.loop.filter_extra()
        program = build_filter(numbers)
        rfd, wfd = os.pipe()
        os.set_inheritable(rfd, True)
        try:
            pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", str(LAUNCHER), str(rfd),
                                                   program.hex(), *command], dict(os.environ))
        finally:
            os.close(rfd)
        try:
            k.seize(pid)
        except OSError as exc:
            os.close(wfd)  # the launcher reads end of file and exits without running the workload
            os.waitpid(pid, 0)
            raise OSError(exc.errno, f"cannot trace the launched workload: {exc.strerror}") from None
        self._adopt(pid, pid, started=True)
        self.hidden.fds_track(pid)  # the source seeds it (seed_fds) before it runs
        self.root_pid = pid
        self._sync_fd = wfd
        self.launcher_fds = frozenset({rfd})
        return pid

    def release(self) -> None:
        """Lets a launched workload install its filter and exec (after the daemon has applied its settings)."""
        if self._sync_fd >= 0:
            os.write(self._sync_fd, b"g")
            os.close(self._sync_fd)
            self._sync_fd = -1

    def attach(self, pids: Sequence[int]) -> list[int]:
        """Seizes every thread of these processes (no filter: every syscall stops). Raises OSError for a
        process that cannot be attached (already traced, another user's, gone)."""
        self.seccomp = False
        if self._want_loop:  # no seccomp stops to answer, but its wait and placement serve every stop here
            self.loop = fastpath.StopLoop(self.traced, self._placement)
            self.hidden = self.loop
            self.hidden.set_skip(self._skip)
            self.loop.set_learn(self._learning)
        done: list[int] = []
        for pid in pids:
            self.hidden.fds_track(pid)  # the source seeds it (seed_fds) before it runs
            for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
                try:
                    k.seize(tid)
                except OSError as exc:
                    hint = " (another user's process needs CAP_SYS_PTRACE; a traced one cannot be attached)" \
                        if exc.errno == errno.EPERM else ""
                    raise OSError(exc.errno, f"cannot attach to process {pid}: {exc.strerror}{hint}") from None
                self._adopt(tid, pid, started=False)
                k.ptrace(k.PTRACE_INTERRUPT, tid)
            done.append(pid)
        self.root_pid = pids[0] if pids else 0
        return done

    def _adopt(self, tid: int, tgid: int, *, started: bool) -> _Task:
        t = self.tasks[tid] = _Task(tid, tgid, started=started)
        self.threads.setdefault(tgid, set()).add(tid)
        if self.loop is not None:
            self.loop.task(tid, tgid)
        return t

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Waits for stops until no tracee is left."""
        if self.loop is not None:
            self._run_loop(self.loop)
            return
        while True:
            try:
                pid, status = os.waitpid(-1, k.WAIT_FLAGS)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            self._stops += 1
            self._handle(pid, status)

    def _run_loop(self, loop: fastpath.StopLoop) -> None:
        """The C loop waits and answers what it can; a syscall it entered and hands over becomes this task's."""
        while (got := loop.wait()) is not None:
            if got.nr >= 0:
                t = self.tasks.get(got.pid)
                if t is not None:
                    t.awaiting, t.entry_args, t.hide, t.may_be_dir = got.nr, got.args, got.hide, got.may_be_dir
            self._handle(got.pid, got.status)

    def _handle(self, pid: int, status: int) -> None:
        try:
            self._on_status(pid, status)
        except OSError as exc:
            if exc.errno != errno.ESRCH:  # a tracee killed mid-stop is ordinary; anything else is not
                self.log(f"ptrace: tracee {pid}: {exc}")

    def _on_status(self, pid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._gone(pid, status)
            return
        if not os.WIFSTOPPED(status):
            return
        sig = os.WSTOPSIG(status)
        event = status >> 16
        t = self.tasks.get(pid)
        if t is None:  # a new child whose parent's fork event has not been handled yet: hold it
            if pid in self.expected:
                t = self._adopt(pid, self.expected.pop(pid), started=False)
            else:
                self.held[pid] = status
                return
        if not t.started:
            t.started = True
            self._resume(t)
            return
        if sig == signal.SIGTRAP | 0x80:
            self._syscall_stop(t)
        elif sig == signal.SIGTRAP and event:
            self._event(t, event)
        elif event == k.EV_STOP:
            k.ptrace(0x4208, pid)  # PTRACE_LISTEN: a group stop stays a stop, and we hear of its end
        else:
            self._resume(t, sig)  # a signal for the tracee: delivered as it was sent

    def _resume(self, t: _Task, sig: int = 0) -> None:
        req = k.PTRACE_SYSCALL if (t.awaiting >= 0 or not self.seccomp) else k.PTRACE_CONT
        if self.loop is not None:
            self.loop.resume(t.tid, req, sig)  # onto the tracer's CPU, as the C loop resumes
        else:
            k.resume(t.tid, req, sig)

    # --- events --------------------------------------------------------------------------------------------

    def _event(self, t: _Task, event: int) -> None:
        if event == k.EV_SECCOMP:
            k.syscall_info(t.tid, self._info)
            if self._info.ret_data == DATA_FOREIGN:
                if not self.foreign_seen:
                    self.foreign_seen = True
                    self.log(f"ptrace: process {t.tgid} made a syscall of another ABI (32-bit or x32); such "
                             "syscalls are let through and not decoded")
            else:
                self._entry(t)
        elif event in (k.EV_FORK, k.EV_VFORK, k.EV_CLONE):
            self._fork(t, event)
        elif event == k.EV_EXEC:
            former = k.event_msg(t.tid)
            if former != t.tid and former in self.tasks:  # a thread other than the leader exec'd
                old = self.tasks.pop(former)
                self.threads.get(t.tgid, set()).discard(former)
                if self.loop is not None:
                    self.loop.forget(former)
                t.awaiting, t.entry_args, t.execargs = old.awaiting, old.entry_args, old.execargs
            self.hidden.fds_unshare(t.tgid)  # a shared fd table is the process's own after an exec
        self._resume(t)

    def _fork(self, parent: _Task, event: int) -> None:
        child = k.event_msg(parent.tid)
        k.get_regs(parent.tid, self._regs)
        nr = self._regs.orig_rax
        if event == k.EV_VFORK:
            flags = CLONE_VFORK | CLONE_VM | SIGCHLD
        elif nr == sc.CLONE_NR:
            flags = self._regs.rdi
        elif nr == sc.CLONE3_NR:
            flags = k.read_u64(parent.tid, self._regs.rdi) or SIGCHLD
        else:
            flags = SIGCHLD
        ident = self._ident(parent)
        copy = child if not flags & (CLONE_THREAD | CLONE_FILES) else 0
        self._closes_first(parent, copied=copy)  # closes that took effect before the copy are not in the child's
        self.sink(pack(REC_FORK, parent.tid, ident, nr, 0, (child, flags), init_ts=self._init_ts))
        if copy and len(self.threads.get(parent.tgid, ())) > 1:  # only another thread's records can pass it
            self._copied(child)
        tgid = parent.tgid if flags & CLONE_THREAD else child
        if not flags & CLONE_THREAD:  # before the child runs: its fds as the engine's fork makes them
            self.hidden.fds_fork(parent.tgid, child, bool(flags & CLONE_FILES))
        held = self.held.pop(child, None)
        if held is None:
            self.expected[child] = tgid
        else:
            c = self._adopt(child, tgid, started=True)
            self._resume(c)

    def _gone(self, pid: int, status: int) -> None:
        t = self.tasks.pop(pid, None)
        self._closing.pop(pid, None)
        self._closed_early.discard(pid)
        if self.loop is not None:
            self.loop.forget(pid)
        if pid == self.root_pid:
            self.root_status = status
        if t is None:
            return
        live = self.threads.get(t.tgid)
        if live is not None:
            live.discard(pid)
            if not live:
                del self.threads[t.tgid]
                self.hidden.forget_process(t.tgid)
                ident = t.ident or Identity(t.tgid, 0, procfs.NO_LOGINUID, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                            t.tgid, t.tgid, 0, 0, b"")
                self.sink(pack(REC_EXIT, pid, ident, -1, 0, (1,)))
                for other in self.tasks.values():  # its children were reparented
                    if other.ident is not None and other.ident.ppid == t.tgid:
                        other.ident = None

    def _ident(self, t: _Task) -> Identity:
        if t.ident is None:
            got = procfs.read_identity(t.tid)
            if got is None:
                raise OSError(errno.ESRCH, "gone")
            t.ident = got
        return t.ident

    # --- syscalls ------------------------------------------------------------------------------------------

    def _syscall_stop(self, t: _Task) -> None:
        if not self.seccomp:
            op = k.syscall_info(t.tid, self._info)
            if op == k.SYSCALL_INFO_ENTRY:
                self._entry(t)
                self._resume(t)
                return
            if op != k.SYSCALL_INFO_EXIT or t.awaiting < 0:
                self._resume(t)
                return
        if t.awaiting >= 0:
            nr = t.awaiting
            t.awaiting = -1
            try:
                self._exit(t, nr)
            finally:
                self._resume(t)
            return
        self._resume(t)

    def _entry(self, t: _Task) -> None:
        """At a seccomp stop (or, attached, a syscall-entry stop): what the exit can no longer read."""
        info = self._info  # filled at this stop
        nr = info.nr
        if nr not in self.traced_nrs:
            return
        args = info.syscall_args()
        spec = sc.BY_NR[nr]
        if spec.fdeffect == FD_CLOSES and (self.hidden.unhide(t.tgid, _i32(args[0])) or (
                self._skip and self.hidden.fds_known(t.tgid, _i32(args[0])) is False)):
            self._filtered += 1  # the close of a kept-back open or of an fd the engine cannot know: no exit stop
            return
        t.awaiting = nr
        t.entry_args = args
        if spec.fdeffect == FD_CLOSES:  # in flight until its exit stop (_closes_first)
            self._closing[t.tid] = (t.tgid, _i32(args[0]))
            if self._learning and not self._skip and self.hidden.fds_known(t.tgid, _i32(args[0])) is False:
                self._learn_fd(t, _i32(args[0]))
        if spec.pathfilter and self._judge_open(t, spec, args):
            t.awaiting = -1  # kept back, and its fd is needed by no close: no exit stop
            self._filtered += 1
            return
        if spec.credsbefore:
            t.before = self._ident(t)
        if nr in _EXEC_NRS:
            self._exec_entry(t, nr)

    def _judge_open(self, t: _Task, spec: sc.Spec, args: tuple[int, ...]) -> bool:
        """The open filter's path decision, at entry. True: kept back with no exit stop (closes are state-only,
        stoploop_fds.h); else a kept-back open's exit stop still comes, to learn the fd to hide."""
        epoch = self.loop.epoch() if self.loop is not None else 0  # before the filter: a reload bumps it after
        filt = self._open_filter
        if filt is None:
            return False
        need = open_need(spec.name, args)
        path = k.read_str(t.tid, args[spec.str0], PATH_SCAN_MAX) if not need & OPEN_KEEP else None
        drop = filt.drops(path, need)
        if self.loop is not None and path is not None:
            self.loop.decide(path, need, epoch, drop)  # the same open again is entered in C
        if drop and self._skip and self.hidden.fds_known(t.tgid, -1) is not None:
            return True
        if drop:
            t.hide = True
            t.may_be_dir = bool(need & OPEN_READ) and not need & OPEN_WRITE  # a directory opens read-only
        return False

    def _exec_entry(self, t: _Task, nr: int) -> None:
        a = t.entry_args
        base = 1 if nr == sc.EXECVEAT_NR else 0
        filename = k.read_str(t.tid, a[base]) or b""
        argv = self._vector(t.tid, a[base + 1], MAX_ARGV)
        env = self._vector(t.tid, a[base + 2], self.env_max)
        argbytes, _, _ = strv(argv, MAX_ARGV, ARGS_AREA)
        envbytes, whole, _ = strv(env, MAX_ENVP, ARGS_AREA)
        more = b""
        if self.env_max > MAX_ENVP and len(env) > whole:
            more, _, _ = strv(env[whole:], self.env_max - MAX_ENVP, ENV_MORE_AREA)
        t.execargs = [filename + b"\0", argbytes, envbytes, more, U32.pack(whole)]

    def _vector(self, tid: int, addr: int, limit: int) -> list[bytes]:
        out: list[bytes] = []
        if not addr:
            return out
        raw = k.read_mem(tid, addr, 8 * limit)
        for i in range(0, len(raw) - 7, 8):
            p = int.from_bytes(raw[i:i + 8], "little")
            if not p:
                break
            s = k.read_str(tid, p, STR_MAX)
            if s is None:
                break
            out.append(s)
        return out

    def _exit(self, t: _Task, nr: int) -> None:
        if self.seccomp:  # attached, the syscall-exit stop's info was read to tell it from an entry
            k.syscall_info(t.tid, self._info)
        res = self._info.rval()
        spec = sc.BY_NR[nr]
        if nr in _EXEC_NRS:
            self._exec_exit(t, nr, res)
            return
        if spec.forks and res == 0:
            return
        if spec.fdeffect == FD_CLOSES:
            self._closing.pop(t.tid, None)
            if t.tid in self._closed_early:  # recorded when another thread got its fd back (_closes_first)
                self._closed_early.discard(t.tid)
                return
        if spec.fdeffect and self._fd_effect(t, spec, res):
            return
        self._closes_first(t, self._new_fds(t, spec, res) if spec.fdeffect in (FD_CREATES_RES, FD_CREATES_PAIR)
                           else ())
        if self._skip and _FD_ARGS.get(nr):
            self._late_dirs(t, nr)
        self._learn(t, spec, res)
        if nr in _CRED_NRS:
            if nr == _SETPGID_NR:
                for other in self.tasks.values():
                    other.ident = None
            before, t.before = t.before, None
            t.ident = None
            ident = before if spec.credsbefore and before is not None else self._ident(t)
        else:
            ident = self._ident(t)
        args = t.entry_args  # the argument registers are the same at exit (the probe reads them there)
        self.sink(pack(REC_SYSCALL, t.tid, ident, nr, res, args, self._segments(t.tid, spec, args, res),
                       init_ts=self._init_ts))

    def _segments(self, tid: int, spec: sc.Spec, a: tuple[int, ...], res: int) -> list[bytes]:
        """The payload probe.c's sys_exit reads for this syscall, from the tracee's memory and sockets."""
        segs = [b""] * 6
        if spec.str0 != sc.NO_ARG:
            s = k.read_str(tid, a[spec.str0], STR_MAX - 1)
            segs[0] = s + b"\0" if s is not None else b""
        if spec.str1 != sc.NO_ARG:
            s = k.read_str(tid, a[spec.str1], STR_MAX - 1)
            segs[1] = s + b"\0" if s is not None else b""
        if spec.data != sc.NO_ARG and res > 0 and self.snaplen > 0 and (
                self.data is None or spec.name in self.data):
            segs[1] = k.read_mem(tid, a[spec.data], min(res, self.snaplen))
        if spec.sock != sc.NO_ARG:
            lenarg = a[spec.socklen & ~sc.LEN_IS_PTR]
            if spec.socklen & sc.LEN_IS_PTR:
                raw = k.read_mem(tid, lenarg, 4)
                lenarg = U32.unpack(raw)[0] if len(raw) == 4 else 0
            segs[2] = k.read_mem(tid, a[spec.sock], min(lenarg & 0xFFFFFFFF, SOCK_MAX))
        if spec.blob != sc.NO_ARG:
            segs[3] = k.read_mem(tid, a[spec.blob], spec.bloblen)
        if spec.sockfd != sc.NO_ARG:
            fd = res if spec.sockfd == sc.SOCKFD_RES else _i32(a[spec.sockfd])
            segs[4] = self._sockinfo(tid, fd)
        while segs and not segs[-1]:
            segs.pop()
        return segs

    def _sockinfo(self, tid: int, fd: int) -> bytes:
        if fd < 0:
            return b""
        try:
            copy = k.pidfd_getfd(tid, fd)
        except OSError:
            return b""
        try:
            return sockinfo(copy)
        finally:
            os.close(copy)

    def _exec_exit(self, t: _Task, nr: int, res: int) -> None:
        """EXECARGS, EXECENV when asked, then the exec's own record (exe facts and cgroup on success)."""
        if self._skip and nr == sc.EXECVEAT_NR and res != 0:  # its dirfd, which the engine resolves against
            self._late_dirs(t, nr)  # (after a successful exec the fd may be gone: close-on-exec)
        if res == 0:
            t.ident = None  # a new image: name, credentials (file capabilities) re-read
        ident = self._ident(t)
        # No arguments saved: the exec's entry was never seen (attached during it), so they are unknown, not
        # none; the EXECARGS_LOST stand-in says so, as the kernel's does when the ring buffer had no room.
        lost = () if t.execargs else (EXECARGS_LOST,)
        filename, argbytes, envbytes, more, whole = t.execargs or [b"", b"", b"", b"", U32.pack(0)]
        t.execargs = []
        self.sink(pack(REC_EXECARGS, t.tid, ident, nr, 0, lost, (filename, b"", b"", b"", argbytes, envbytes),
                       init_ts=self._init_ts))
        if more:
            self.sink(pack(REC_EXECENV, t.tid, ident, nr, 0, (0, U32.unpack(whole)[0]),
                           (b"", b"", b"", b"", b"", more), init_ts=self._init_ts))
        segs: list[bytes] = []
        if res == 0:
            path, blob = procfs.exe_segments(t.tgid, ident.fsuid, ident.fsgid)
            segs = [path, b"", b"", blob, procfs.cgroup_segment(t.tgid)]
        self.sink(pack(REC_SYSCALL, t.tid, ident, nr, res, t.entry_args, segs, init_ts=self._init_ts))

    # --- stopping ------------------------------------------------------------------------------------------

    def signal_all(self, sig: int) -> None:
        """Sends sig to every traced process (from any thread: kill(2) needs no tracer)."""
        for tgid in list(self.threads):
            try:
                os.kill(tgid, sig)
            except OSError:
                pass
