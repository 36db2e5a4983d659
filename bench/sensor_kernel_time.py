"""Where the sensor's kernel time goes in the open and exec loops of bench/daemon_loops.c, and what reaches user
space: per BPF program of sensor/probe.c, its runs per loop iteration and its own ns per run (the kernel's
run-time statistics), and per record kind and syscall, the records the loop's processes sent to user space.

Wall-clock rows (bench.sensor_overhead, bench.daemon_overhead) move with everything else on a shared machine; the
kernel's per-program counters (run_time_ns / run_cnt, switched on with BPF_ENABLE_STATS for this process only
while it holds the fd) count only the program's instructions and helper calls, so a change to what the program
does shows up here even when the loops' wall time is noise. They count every process's syscalls, not only the
loop's (runs per iteration above the loop's own syscalls are other tenants'). The statistics themselves add
about 20 ns per run (two clock reads).

The sensor is configured as the daemon configures it (server/source_ebpf.py and server/pipeline.py's
apply_open_filter: the rules' event types, the open filter, the event gates and the data buffers the rules
read), with the default rules or Falco's upstream stable rules (`--rules stable`); a consumer thread reads the
ring buffer and counts the records whose process is the loop or one of its children.

Run: python -m bench.sensor_kernel_time [--open N] [--exec N] [--repeat R] [--rules default|stable]  (root)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench._daemon_common import UPSTREAM_STABLE, build_loops, close_inherited_high_fds, machine_state

BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
SYS_BPF = 321  # x86_64
PROGRAMS = ("raw_tracepoint__sys_exit", "tracepoint__sched__sched_process_fork",
            "tracepoint__sched__sched_process_exit", "tracepoint__syscalls__sys_enter_unshare",
            "tracepoint__syscalls__sys_enter_setns", "tracepoint__syscalls__sys_enter_execveat")
"""bcc's names for probe.c's programs (the exec tails run inside sys_exit's time)."""
KINDS = {1: "syscall", 2: "exec args", 3: "fork", 4: "exit", 5: "exec env"}
HEAD = struct.Struct("<IIII")  # record_hdr's kind, size, tgid, tid (from offset 8)
PPID = struct.Struct("<I")  # record_hdr.ppid, offset 24
NR = struct.Struct("<q")  # record_hdr.nr, offset 112


def enable_stats() -> int:
    """An fd that keeps the kernel's BPF run-time statistics on while it is open."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 16)(BPF_STATS_RUN_TIME)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS failed")
    return int(fd)


def prog_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the BPF program behind `fd`, from its fdinfo."""
    vals: dict[str, int] = {}
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("run_time_ns", "run_cnt"):
            vals[key] = int(val)
    return vals.get("run_time_ns", 0), vals.get("run_cnt", 0)


@dataclass
class LoopFigures:
    """One loop's figures: per program (runs, ns), the loop's CPU ns per iteration, its records by kind."""

    iterations: int
    cpu_ns: float = 0.0
    programs: dict[str, tuple[int, int]] = field(default_factory=dict)
    records: Counter[tuple[str, str]] = field(default_factory=Counter)


class RecordCounter:
    """Counts the records of the watched processes (the loop and its children) by (kind, syscall name)."""

    def __init__(self) -> None:
        from falconet.sensor import syscalls as sc

        self.names = {spec.nr: spec.name for spec in sc.BY_NAME.values()}
        self.watched: set[int] = set()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def take(self, data: bytes, offsets: list[int]) -> None:
        got: Counter[tuple[str, str]] = Counter()
        for off in offsets:
            kind, _size, tgid, _tid = HEAD.unpack_from(data, off + 8)
            (ppid,) = PPID.unpack_from(data, off + 24)
            if tgid not in self.watched and ppid not in self.watched:
                continue
            (nr,) = NR.unpack_from(data, off + 112)
            name = self.names.get(nr, str(nr)) if kind in (1, 2, 5) else "-"
            got[(KINDS.get(kind, str(kind)), name)] += 1
        with self.lock:
            self.counts.update(got)

    def reset(self) -> Counter[tuple[str, str]]:
        with self.lock:
            out, self.counts = self.counts, Counter()
        return out


def measure(exe: Path, loops: list[tuple[str, int]], rules: Path) -> list[LoopFigures]:
    from falconet.rules.engine import Engine, Resolvers
    from falconet.server.pipeline import apply_open_filter
    from falconet.server.source_ebpf import SensorSource

    engine = Engine.from_files([rules], resolvers=Resolvers(hostname=lambda: "bench", dns=lambda _n: []))
    source = SensorSource(8 << 20, engine.event_types, 80)
    source.start()
    apply_open_filter(source, engine, True, lambda _msg: None)
    sensor = source._sensor
    counter = RecordCounter()
    stop = threading.Event()

    def consume() -> None:  # the ring buffer read as Sensor.poll reads it, records counted instead of enriched
        ring = sensor._ring()
        while not stop.is_set():
            ring.wait(1)
            batch = ring.read(4096)
            counter.take(batch.data, batch.offsets)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    out: list[LoopFigures] = []
    try:
        funcs = sensor._bpf.funcs  # bcc's loaded programs: name -> Function(fd)
        fds = {p: funcs[p.encode()].fd for p in PROGRAMS}
        for loop, n in loops:
            fig = LoopFigures(n)
            before = {p: prog_stats(fd) for p, fd in fds.items()}
            counter.reset()
            timing = time_loop_watched(exe, loop, n, counter)
            fig.cpu_ns = timing
            for p, fd in fds.items():
                ns, cnt = prog_stats(fd)
                fig.programs[p] = (cnt - before[p][1], ns - before[p][0])
            deadline = time.monotonic() + 10
            while sensor._ring().available() and time.monotonic() < deadline:  # the consumer's last batches
                time.sleep(0.01)
            fig.records = counter.reset()
            out.append(fig)
    finally:
        stop.set()
        thread.join()
        source.close()
    return out


def time_loop_watched(exe: Path, loop: str, n: int, counter: RecordCounter) -> float:
    """CPU ns per iteration of one loop run, its pid watched by `counter` from before its first syscall."""
    import resource
    import signal
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The shell stops itself until its pid is watched, then becomes the loop (exec keeps the pid).
    proc = subprocess.Popen(["sh", "-c", f'kill -STOP $$; exec "{exe}" {loop} {n}'], stdout=subprocess.DEVNULL)
    counter.watched = {proc.pid}
    os.waitpid(proc.pid, os.WUNTRACED)
    os.kill(proc.pid, signal.SIGCONT)
    proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu * 1e9 / n


def report(loop: str, figs: list[LoopFigures]) -> list[str]:
    """The median repeat's figures (by the loop's CPU time) of one loop."""
    fig = sorted(figs, key=lambda f: f.cpu_ns)[len(figs) // 2]
    n = fig.iterations
    lines = [f"{loop} loop, {n:,} iterations: loop CPU {fig.cpu_ns:,.0f} ns/iter (median repeat of {len(figs)})",
             f"  {'program':40} {'runs/iter':>10} {'ns/run':>8} {'ns/iter':>9}"]
    for p, (cnt, ns) in fig.programs.items():
        per_run = ns / cnt if cnt else 0.0
        lines.append(f"  {p:40} {cnt / n:10.2f} {per_run:8.0f} {ns / n:9.0f}")
    total = sum(fig.records.values())
    lines.append(f"  records to user space from the loop's processes: {total / n:.3f} per iteration")
    for (kind, name), c in sorted(fig.records.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {kind:10} {name:14} {c / n:8.3f}/iter")
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open", type=int, default=200_000)
    ap.add_argument("--exec", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rules", choices=("default", "stable"), default="default")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.sensor_kernel_time needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    closed = close_inherited_high_fds()  # the loops start with the small fd table, as in bench.daemon_overhead
    if closed:
        print(f"closed inherited fds {closed} (the loops start with the small fd table)")
    from falconet.rules import DEFAULT_RULES

    rules = UPSTREAM_STABLE if args.rules == "stable" else DEFAULT_RULES
    print(f"machine before: {machine_state()}", flush=True)
    stats_fd = enable_stats()
    runs: dict[str, list[LoopFigures]] = {"open": [], "exec": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            exe = build_loops(Path(tmp))
            for _ in range(args.repeat):
                opened, execed = measure(exe, [("open", args.open), ("exec", args.exec)], rules)
                runs["open"].append(opened)
                runs["exec"].append(execed)
    finally:
        os.close(stats_fd)
    print(f"machine after: {machine_state()}")
    print(f"sensor configured as the daemon with the {args.rules} rules")
    for loop, figs in runs.items():
        for line in report(loop, figs):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
