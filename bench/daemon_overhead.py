"""What watching costs the watched: an open/read/close loop and a fork+exec loop under each tracing setup.

Rows, all measured in this one run on this machine (C loops, so the loop itself costs next to nothing):
- bare: nothing attached;
- floor: a no-op BPF program on raw_syscalls:sys_enter (the least any syscall tracer can cost);
- attach points: no-op programs on everything the sensor attaches to (the sys_exit raw tracepoint, the
  sys_enter tracepoints of unshare, setns and execveat, sched_process_fork and sched_process_exit), so the
  difference to the floor is the price of the design;
- daemon, default rules: `falconet run` with rules/falconet_rules.yaml (the sensor ships to user space only
  the syscalls those rules and the process/fd state need, and only the opens the kernel prefilter derived from
  the rules lets through);
- daemon, default rules, open filter off: the same with `sensor.open_path_filter: false` (every open ships);
- daemon, default rules, engine thread yields (nice 10): `sensor.engine_nice: 10`, the engine thread gives
  the CPU to the workload first while it keeps up (server/daemon_sched.py; off by default);
- daemon, default rules, poll interval 2 ms / 8 ms: `sensor.poll_interval_ms` above its default (1): how often
  the engine thread reads while events keep coming (sensor/wakeup.py), so how many engine runs per exec;
- daemon, upstream stable rules: `falconet run` with Falco's falco_rules.yaml (/work/shared/upstream-rules).

Issue 12's targets, checked at the end of every run: "each row against the floor and against bare in the same
run, median of at least 5 interleaved repeats": every repeat runs every row once (a daemon is started afresh for
each), and each ratio is the median over repeats of row/floor within the same repeat (bench/_interleave.py).
- open loop, daemon with the default rules: at most 1.10x the floor; with the upstream stable rules 1.20x;
- exec loop (at least 2,000 execs per repeat), daemon with the default rules: at most 1.15x the floor.
The targets are about wall time on a quiet machine; the CPU-time columns (the loop process's user + system time,
which includes the probe's work in its syscalls) are the steadier figure on a loaded one. Kernel drops of each
daemon run are printed too (the daemon is asked after the loops, once it has drained its ring buffer).

Run (as root):
  python -m bench.daemon_overhead --quick      the target rows only (bare, floor, the two daemons), 5 repeats of
                                               500,000 opens and 2,000 execs: about 3-4 minutes
  python -m bench.daemon_overhead              every row: about 5-6 minutes
  [--open N] [--exec N] [--repeat K]
  --rqwait                                     also, per repeat, a second exec loop that reads each child's
                                               /proc/PID/schedstat before reaping it: where the exec loop's wall
                                               time went (run time vs run-queue wait of the loop and its
                                               children), and how much of the wait was behind the daemon's
                                               threads (sched tracepoints, bench/_rq_blame.py: attached for the
                                               whole run, so every row's figures carry their cost alike)

Why --rqwait: the exec loop's wall ratio can exceed its CPU ratio, i.e. the loop spends time not running. With
2 cores that time is run-queue wait: the loop's parent or child woke on the core another task held (the daemon's
engine thread, which wakes about once a millisecond while events come). The figures say how much of each exec
was waiting, per row, so a wall ratio can be told apart from a CPU ratio. Its reads cost every row alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bench._daemon_common import UPSTREAM_STABLE, Daemon, build_loops, close_inherited_high_fds, machine_state
from bench._rq_blame import RqBlame
from bench._interleave import Figures, Row, interleaved, ratio_table, time_loop, verdict
from falconet.rules import DEFAULT_RULES

NOOP_ENTER = "TRACEPOINT_PROBE(raw_syscalls, sys_enter) { return 0; }"
NOOP_ATTACH_POINTS = """
RAW_TRACEPOINT_PROBE(sys_exit) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_unshare) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_setns) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_execveat) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }
"""
OPEN_FILTER_OFF = "sensor: {open_path_filter: false}\n"
ENGINE_YIELDS = "sensor: {engine_nice: 10}\n"
YIELDS = "daemon, default rules, engine thread yields (nice 10)"
POLL_INTERVALS = (2, 8)
"""The full run's rows above the default sensor.poll_interval_ms (1): which way a longer interval moves the exec
loop (fewer engine runs per exec), interleaved with the default daemon."""

BARE = "bare"
FLOOR = "floor: no-op raw_syscalls:sys_enter"
DEFAULT = "daemon, default rules"
UPSTREAM = "daemon, upstream stable rules"
MIN_EXECS = 2_000
MIN_REPEATS = 5


@contextmanager
def nothing() -> Iterator[None]:
    yield


@contextmanager
def bpf(text: str) -> Iterator[None]:
    from bcc import BPF

    b = BPF(text=text)
    try:
        yield
    finally:
        b.cleanup()


@contextmanager
def daemon(rules: list[Path], extra: str = "") -> Iterator[Daemon]:
    with Daemon(rules, metrics_port=0, extra=extra) as d:
        yield d


def rows(quick: bool) -> list[Row]:
    every: list[tuple[bool, Row]] = [
        (True, (BARE, nothing)),
        (True, (FLOOR, lambda: bpf(NOOP_ENTER))),
        (False, ("no-op on the sensor's attach points", lambda: bpf(NOOP_ATTACH_POINTS))),
        (True, (DEFAULT, lambda: daemon([DEFAULT_RULES]))),
        (False, ("daemon, default rules, open filter off", lambda: daemon([DEFAULT_RULES], OPEN_FILTER_OFF))),
        (False, (YIELDS, lambda: daemon([DEFAULT_RULES], ENGINE_YIELDS))),
        *((False, (f"daemon, default rules, poll interval {ms} ms",
                   lambda ms=ms: daemon([DEFAULT_RULES], f"sensor: {{poll_interval_ms: {ms}}}\n")))
          for ms in POLL_INTERVALS),
        (True, (UPSTREAM, lambda: daemon([UPSTREAM_STABLE]))),
    ]
    return [row for target, row in every if target or not quick]


def thread_schedstats(pid: int | None) -> dict[int, tuple[int, int]]:
    """{tid: (run ns, timeslices)} of a process's threads (/proc/PID/task/TID/schedstat); {} for no process."""
    out: dict[int, tuple[int, int]] = {}
    if pid is None:
        return out
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run, _wait, slices = (int(x) for x in (task / "schedstat").read_text().split())
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
        out[int(task.name)] = (run, slices)
    return out


def engine_runs(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], n: int) -> Figures:
    """The daemon's busiest thread over the loop (the engine thread: the only one with work per event): its CPU
    time and how many separate runs (timeslices: each wake-up is at least one) per exec."""
    if not after:
        return {}
    tid = max(after, key=lambda t: after[t][0] - before.get(t, (0, 0))[0])
    run0, slices0 = before.get(tid, (0, 0))
    return {"rq_engine_ns": (after[tid][0] - run0) / n, "rq_engine_runs": (after[tid][1] - slices0) / n}


def exec_waits(loops: Path, n: int, blame: RqBlame, daemon_pid: int | None) -> Figures:
    """daemon_loops.c's `execsched` loop: per exec, wall, the loop's and its children's run-queue waits and run
    times (ns), the loop's involuntary context switches, (bench/_rq_blame.py) how much of the wait was behind
    the daemon's threads, and the engine thread's CPU and runs per exec."""
    blame.reset()
    threads0 = thread_schedstats(daemon_pid)
    out = subprocess.run([str(loops), "execsched", str(n)], capture_output=True, text=True, check=True).stdout
    threads1 = thread_schedstats(daemon_pid)
    waits = blame.read()
    tids = {int(t.name) for t in Path(f"/proc/{daemon_pid}/task").iterdir()} if daemon_pid else set()
    behind = [v for (pid, _comm), v in waits.items() if pid in tids]
    wall, parent_wait, child_wait, child_run, parent_run, preempted = (float(x) for x in out.split())
    return {"rq_wall": wall, "rq_wait": parent_wait + child_wait, "rq_run": parent_run + child_run,
            "rq_preempted": preempted, "rq_daemon": sum(ns for ns, _ in behind) / n,
            "rq_daemon_n": sum(k for _, k in behind) / n, **engine_runs(threads0, threads1, n)}


def wait_table(results: dict[str, list[Figures]], n: int) -> list[str]:
    """Medians over repeats of the execsched figures, in us per exec; `other` is wall - run - wait (time nobody
    of the loop was running or runnable: blocked, or parent and child overlapping makes it negative); `engine`
    the daemon's engine thread's CPU per exec and `runs/exec` its separate runs (0 for rows without a daemon)."""
    lines = [f"fork+exec loop with schedstat reads, {n:,} execs per repeat (us per exec, medians)",
             f"{'row':52} {'wall':>8} {'run':>8} {'rq wait':>8} {'other':>8} {'preempt/exec':>12} "
             f"{'behind daemon':>13} {'times/exec':>10} {'engine':>8} {'runs/exec':>9}"]
    for label, runs in results.items():
        def med(key: str) -> float:
            return statistics.median(r.get(key, 0.0) for r in runs) / 1000
        other = statistics.median((r["rq_wall"] - r["rq_run"] - r["rq_wait"]) for r in runs) / 1000
        lines.append(f"{label:52} {med('rq_wall'):8,.1f} {med('rq_run'):8,.1f} {med('rq_wait'):8,.1f} "
                     f"{other:8,.1f} {statistics.median(r['rq_preempted'] for r in runs):12.3f} "
                     f"{med('rq_daemon'):13,.1f} {statistics.median(r['rq_daemon_n'] for r in runs):10.3f} "
                     f"{med('rq_engine_ns'):8,.1f} "
                     f"{statistics.median(r.get('rq_engine_runs', 0) for r in runs):9.2f}")
    return lines


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.daemon_overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # 500,000 (session 7; 100,000 before): at about 1 us per iteration a 0.1 s loop, started right after the
    # daemon said ready, was short enough for the daemon's start-up tail and the process's own start (counted in
    # the CPU column) to move a row by several percent; the ratios' expectation is the same.
    p.add_argument("--open", type=int, default=500_000, help="open/read/close iterations per repeat")
    p.add_argument("--exec", type=int, default=MIN_EXECS, help="fork+exec iterations per repeat")
    p.add_argument("--repeat", type=int, default=MIN_REPEATS, help="interleaved repeats (medians are reported)")
    p.add_argument("--quick", action="store_true", help="only the rows the targets name")
    p.add_argument("--rqwait", action="store_true", help="also measure the exec loop's run-queue waits")
    args = p.parse_args(argv)
    if args.open < 1 or args.exec < 1 or args.repeat < 1:
        p.error("--open, --exec and --repeat must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    closed = close_inherited_high_fds()
    if closed:
        print(f"closed inherited fds {closed} (the loops start with the small fd table)")
    if os.geteuid() != 0:
        print("bench.daemon_overhead needs root (BPF)", file=sys.stderr)
        return 1
    if not UPSTREAM_STABLE.is_file():
        print(f"bench.daemon_overhead needs Falco's stable rules at {UPSTREAM_STABLE}", file=sys.stderr)
        return 1
    drops: dict[str, list[str]] = {}
    print(f"machine before: {machine_state()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        loops = build_loops(Path(tmp))

        def measure(label: str, ctx: object) -> Figures:
            o, e = time_loop(loops, "open", args.open), time_loop(loops, "exec", args.exec)
            if isinstance(ctx, Daemon):
                events, dropped = ctx.settled_counters()
                drops.setdefault(label, []).append(f"{dropped:.0f}")
            figures = {"open": o.wall_ns, "open_cpu": o.cpu_ns, "exec": e.wall_ns, "exec_cpu": e.cpu_ns}
            if blame is not None:
                figures.update(exec_waits(loops, args.exec, blame, ctx.proc.pid if isinstance(ctx, Daemon) else None))
            return figures

        with RqBlame() if args.rqwait else nullcontext() as blame:
            results = interleaved(rows(args.quick), args.repeat, measure)
    print(f"machine after: {machine_state()}")
    print(f"\ndaemon overhead: median of {args.repeat} interleaved repeats; ratios are medians of per-repeat "
          f"ratios; spread = lowest/highest repeat vs the median")
    for line in ratio_table(f"open/read/close loop, {args.open:,} iterations per repeat", results, "open",
                            "ns/iter", 1.0, BARE, FLOOR):
        print(line)
    for line in ratio_table(f"fork+exec loop, {args.exec:,} execs per repeat", results, "exec", "us/exec",
                            1000.0, BARE, FLOOR):
        print(line)
    if args.rqwait:
        for line in wait_table(results, args.exec):
            print(line)
    for label, counts in drops.items():
        print(f"kernel drops, {label}: {', '.join(counts)} (per repeat)")
    print(verdict(results, DEFAULT, FLOOR, "open", 1.10, "open loop, daemon with the default rules vs the floor"))
    print(verdict(results, UPSTREAM, FLOOR, "open", 1.20, "open loop, daemon with upstream stable rules vs floor"))
    print(verdict(results, DEFAULT, FLOOR, "exec", 1.15, "exec loop, daemon with the default rules vs the floor"))
    if args.exec < MIN_EXECS or args.repeat < MIN_REPEATS:
        print(f"(not a target measurement: the targets want at least {MIN_EXECS:,} execs and {MIN_REPEATS} "
              "repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
