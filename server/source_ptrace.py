"""The ptrace source: the user-space tracer (falconet.sensor.ptrace) behind the daemon's EventSource interface.

`--source ptrace -- COMMAND` launches the workload under the tracer (Falco's pdig pattern: Falconet is the
container's entrypoint); `--source ptrace --pid PID` attaches to running processes. run_cli spells the target
into the source's argument (`ptrace:exec=["cmd", "arg"]` as JSON, or `ptrace:pid=1,2`), so the registry,
the daemon and reloads handle it like any other source. The tracer's records go through the same Enricher the
eBPF sensor uses, so events, process and fd state are the same code's output.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from falconet.model.event import Event
from falconet.model.prefilter import EventGate
from falconet.sensor.clocks import wall_minus
from falconet.server.errors import DaemonError
from falconet.server.source import EventSource, KernelFilter, Log, SourceCounters, SourceKind, SourceRequest

SWITCH_INTERVAL = 0.0002
"""Seconds between the interpreter's thread switches while the ptrace source runs (default 0.005)."""

GRACE_SECONDS = 2.0
"""On a clean stop (SIGTERM to Falconet) the workload gets SIGTERM and this long before SIGKILL."""

LIMITS = (
    "ptrace driver limits: only the traced workload and its descendants are seen (no other process on the host); "
    "a process already being traced (by a debugger, strace) cannot be attached; with --pid no seccomp filter "
    "can be put into a running process, so every syscall of it stops twice (much slower); a launched workload "
    "runs with no_new_privs (set-uid/set-gid bits and file capabilities do not raise its privileges); the "
    "workload ends with Falconet (SIGTERM: the workload gets SIGTERM, then SIGKILL after "
    f"{GRACE_SECONDS:g}s; SIGKILL or a crash: the kernel kills it at once, PTRACE_O_EXITKILL), because a "
    "process whose filter traces syscalls gets ENOSYS from them once its tracer is gone; an eBPF daemon on the "
    "same host sees this process's PTRACE_SEIZE calls: rule 'PTRACE attached to process' (exclude it with "
    "known_ptrace_binaries / known_debugger; docs/ptrace.md)."
)


def parse_target(argument: str) -> tuple[list[str], list[int]]:
    """(command, pids) from the source argument; DaemonError for anything else."""
    kind, _, value = argument.partition("=")
    if kind == "exec":
        try:
            command = json.loads(value)
        except ValueError:
            command = None
        if not isinstance(command, list) or not command or not all(isinstance(c, str) and c for c in command):
            raise DaemonError("--source ptrace:exec= needs a JSON list of the command and its arguments; "
                              "use `falconet run --source ptrace -- COMMAND [ARGS...]`")
        return command, []
    if kind == "pid":
        try:
            pids = [int(p) for p in value.split(",")]
        except ValueError:
            pids = []
        if not pids or any(p <= 0 for p in pids):
            raise DaemonError(f"--pid needs process ids, not {value[:40]!r}")
        for pid in pids:
            if not Path(f"/proc/{pid}").is_dir():
                raise DaemonError(f"--pid {pid}: no such process")
        return [], pids
    raise DaemonError("--source ptrace needs a workload: `falconet run --source ptrace -- COMMAND [ARGS...]` "
                      "or `falconet run --source ptrace --pid PID`")


class PtraceSource:
    """The tracer thread (every ptrace call is made there) and the Enricher, which the engine thread runs."""

    name = "ptrace"

    def __init__(self, command: list[str], pids: list[int], syscalls: frozenset[str] | None, snaplen: int,
                 log: Log) -> None:
        from falconet.sensor import syscalls as sc
        from falconet.sensor.enricher import Enricher
        from falconet.sensor.ptrace.tracer import Tracer, traced_names
        from falconet.sensor.state import fd_from_link

        self.command, self.pids = command, pids
        self._log = log
        known = frozenset(sc.BY_NAME)
        wanted = known - sc.NAMED_ONLY if syscalls is None else syscalls & known
        self.enricher = Enricher(wanted=set(wanted), mono_to_epoch_ns=wall_minus(time.CLOCK_MONOTONIC))
        self._records: list[bytes | _Learned | _Copied] = []  # in the tracer's order: records and fds learned from /proc
        self._cond = threading.Condition()
        self._done = False
        self.tracer = Tracer(self._sink, log, traced_names(frozenset(wanted)), snaplen=snaplen)
        self.tracer.close_events = "close" in wanted
        self.tracer.learn_fd = self._learn_fd
        self.tracer.copied_fds = self._copied_fds
        self._fd_from_link = fd_from_link
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._go = threading.Event()
        self._error: BaseException | None = None
        self.events = 0
        self._switch_before: float | None = None

    def _sink(self, record: bytes | _Learned | _Copied) -> None:
        with self._cond:
            self._records.append(record)
            if len(self._records) == 1:  # the poller waits only on an empty batch: one wake-up per batch
                self._cond.notify()

    def _learn_fd(self, tgid: int, fd: int, target: str, flags: int | None) -> None:
        """An fd the engine never saw, read from /proc before its close (Tracer._learn_fd): into the tables in
        record order, as the start-up seeding puts a process's fds there."""
        self._sink(_Learned(tgid, fd, target, flags))

    def _copied_fds(self, child: int, fds: frozenset[int]) -> None:
        """The fds a child holds right after its fork (Tracer._copied): in record order, after its fork."""
        self._sink(_Copied(child, fds))

    def start(self) -> None:
        self._log(LIMITS)
        # The tracer thread wakes at every stop of the workload, which waits for it; with the interpreter's
        # default 5 ms switch interval a busy engine thread would hold it off that long each time.
        self._switch_before = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._trace, name="falconet-ptrace", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            why = self._error.strerror if isinstance(self._error, OSError) and self._error.strerror else self._error
            raise DaemonError(f"the ptrace driver cannot start: {why}") from None
        what = f"launched {self.command[0]!r} as pid {self.tracer.root_pid}" if self.command else \
            f"attached to {', '.join(map(str, self.pids))}"
        mode = "seccomp filter: only traced syscalls stop it" if self.command else \
            "no seccomp filter: every syscall stops (slower)"
        self._log(f"ptrace: {what} ({mode})")

    def _trace(self) -> None:
        from falconet.sensor.state import read_proc

        try:
            roots = [self.tracer.launch(self.command)] if self.command else self.tracer.attach(self.pids)
            for pid in roots:  # what the tables know of them before their first traced syscall
                info = read_proc(Path(f"/proc/{pid}"))
                if info is not None:
                    for fd in self.tracer.launcher_fds:  # closed by the launcher unseen (before its filter)
                        info.fds.pop(fd, None)
                    self.enricher.table.procs[pid] = info
                    self.tracer.seed_fds(pid, info.fds)  # the engine knows these fds
        except OSError as exc:
            self._error = exc
            self._started.set()
            self._finish()
            return
        self._started.set()
        self._go.wait()
        self.tracer.release()
        try:
            self.tracer.run()
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def kernel_filter(self) -> KernelFilter | None:
        return self

    def set_syscalls(self, names: frozenset[str] | None) -> None:
        from falconet.sensor import syscalls as sc

        known = frozenset(sc.BY_NAME)
        wanted = known - sc.NAMED_ONLY if names is None else names & known
        unseen = sorted(wanted - self.tracer.traced) if self.tracer.seccomp else []
        if unseen:
            self._log("ptrace: the workload's seccomp filter was built at launch and does not stop "
                      f"{', '.join(unseen)}; rules on them see nothing until Falconet restarts")
        self.enricher.wanted = wanted
        self.tracer.close_events = "close" in wanted

    def set_open_prefixes(self, prefixes: dict[str, list[str]] | None) -> None:
        """The eBPF probe's open filter, decided by the tracer (sensor/ptrace/openfilter.py): the same opens and
        closes are kept back, so the engine sees the same events as under the eBPF driver."""
        from falconet.sensor.ptrace.openfilter import OpenFilter

        self.tracer.open_filter = None if prefixes is None else OpenFilter.build(prefixes)  # one reference, read by the tracer thread at each open

    def set_event_gates(self, gates: dict[str, EventGate] | None) -> None:
        """Not applied: the tracer stops at every traced syscall anyway, and the engine drops what no rule
        matches (the eBPF probe's gates save building records it would throw away)."""

    def set_data_syscalls(self, names: frozenset[str] | None) -> None:
        self.tracer.data = names

    def set_full_environment(self, full: bool) -> None:
        from falconet.sensor.sensor import ENV_BASE, ENV_MAX

        self.tracer.env_max = ENV_MAX if full else ENV_BASE

    def poll(self, timeout_ms: int) -> list[Event] | None:
        self._go.set()  # the daemon applied its settings before its first poll: the workload may run
        with self._cond:
            if not self._records and not self._done:
                self._cond.wait(timeout_ms / 1000)
            records, self._records = self._records, []
            done = self._done
        if not records and done:
            status = self.tracer.root_status
            if status is not None:
                loop = self.tracer.loop
                answered = f", {loop.counters()[1]} of them answered by the C stop loop" if loop else ""
                if loop is not None and loop.place:
                    place = loop.placement()
                    answered += (f" (its thread last on CPU {place.cpu}, moved {place.moves} times, {place.held}"
                                 f" wake-ups placed there, {place.given_back} masks given back after a pause,"
                                 f" {place.backoffs} busy-CPU back-offs)")
                late = f" ({self.tracer.late_dirs} directory fds learned late)" if self.tracer.late_dirs else ""
                if self.tracer.learned_fds:
                    late += f" ({self.tracer.learned_fds} fds learned from /proc at their close)"
                self._log(f"ptrace: the workload ended ({_describe(status)}); {self.tracer.stops} stops"
                          f"{answered}; {self.tracer.path_filtered} opens and closes kept back by the open filter"
                          f"{late}")
                self.tracer.root_status = None
            return None
        out: list[Event] = []
        for data in records:
            if isinstance(data, _Learned):
                self.enricher.table.add_fd(data.tgid, self._fd_from_link(data.fd, data.target, data.flags))
                continue
            if isinstance(data, _Copied):
                proc = self.enricher.table.get(data.pid)
                if proc is not None:
                    for num in [num for num in proc.fds if num not in data.fds]:
                        del proc.fds[num]
                continue
            ev = self.enricher.feed(data)
            if ev is not None:
                out.append(ev)
        self.events += len(out)
        return out

    def counters(self) -> SourceCounters:
        return SourceCounters(self.events, 0)

    def close(self) -> None:
        """The documented default: the workload ends with Falconet (SIGTERM, a grace period, SIGKILL)."""
        self._go.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            self.tracer.signal_all(signal.SIGTERM)
            thread.join(GRACE_SECONDS)
            if thread.is_alive():
                self.tracer.signal_all(signal.SIGKILL)
                thread.join(GRACE_SECONDS)
        if self._switch_before is not None:
            sys.setswitchinterval(self._switch_before)
            self._switch_before = None


class _Learned(NamedTuple):
    tgid: int
    fd: int
    target: str
    flags: int | None


class _Copied(NamedTuple):
    pid: int
    fds: frozenset[int]


def _describe(status: int) -> str:
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"wait status {status}"


def _preflight() -> None:
    try:
        mode = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        return
    if mode == "3":
        raise DaemonError("ptrace is disabled on this host (kernel.yama.ptrace_scope = 3)")


def _open(request: SourceRequest) -> EventSource:
    command, pids = parse_target(request.argument)
    if pids and os.geteuid() != 0:
        mode = ""
        try:
            mode = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
        except OSError:
            pass
        if mode not in ("", "0"):
            request.log(f"ptrace: kernel.yama.ptrace_scope is {mode}: attaching to a process that is not a "
                        "descendant needs CAP_SYS_PTRACE")
    return PtraceSource(command, pids, request.syscalls, request.config.snaplen, request.log)


KIND = SourceKind(name="ptrace", argument="TARGET", open=_open, preflight=_preflight)
