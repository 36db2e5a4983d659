"""Where the open loop's extra time goes under the real daemon, per rules set: each BPF program's own time per loop
iteration (the kernel's run-time statistics of the daemon's programs), the loop's CPU and wall time, and what the
daemon's threads did meanwhile (CPU, wake-ups, records the engine saw).

Why: bench.daemon_overhead's quiet rerun at the end of session 6 put the daemon with the default rules about 40 ns
per open/read/close iteration above the daemon with Falco's upstream stable rules, although the loop's
/etc/hostname opens reach user space under neither and bench.sensor_kprof's stages (the sensor alone, configured
as the daemon configures it) cost the same for both. This runs the real `falconet run` with each rules set,
alternating, and splits the difference: if the programs' ns per iteration agree and the loop's time does not, the
difference is outside the BPF programs (the daemon's threads, the machine); if they differ, the per-program row
says which. The statistics (BPF_ENABLE_STATS, on only while this process holds the fd) add about 20 ns per
program run to every row alike, and count every process's syscalls, not only the loop's (runs per iteration above
3 are other tenants').

Run: python -m bench.sensor_daemon_time [--open N] [--repeat R] [--settle S]  (root; about 30 s per daemon start)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._daemon_common import UPSTREAM_STABLE, Daemon, build_loops, machine_state, scrape
from bench._interleave import time_loop
from bench._daemon_common import close_inherited_high_fds
from bench.sensor_kernel_time import enable_stats

TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")
PROG_TYPES = {"5": "tracepoint", "17": "raw_tracepoint"}  # fdinfo's prog_type numbers (enum bpf_prog_type)


@dataclass
class DaemonRun:
    """One daemon's figures for one open loop."""

    wall_ns: float
    cpu_ns: float
    programs: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (runs/iter, ns/iter)
    daemon_cpu_ns: float = 0.0  # the daemon's threads, per loop iteration
    daemon_wakeups: float = 0.0  # its threads' voluntary context switches during the loop
    events: float = 0.0  # events the engine evaluated during the loop


def prog_fds(pid: int) -> list[int]:
    """The daemon's BPF program fds (bcc keeps one per loaded program)."""
    out: list[int] = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:bpf-prog":
                out.append(int(fd.name))
        except OSError:
            continue
    return out


def prog_stats(pid: int, fds: list[int]) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) per program of the daemon, keyed by type and tag (fdinfo has no name)."""
    stats: dict[str, tuple[int, int]] = {}
    for fd in fds:
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        kind = info.get("prog_type", "?").strip()
        key = f"{PROG_TYPES.get(kind, kind)}:{info.get('prog_tag', '?').strip()}"
        ns, cnt = int(info.get("run_time_ns", "0")), int(info.get("run_cnt", "0"))
        old = stats.get(key, (0, 0))
        stats[key] = (old[0] + ns, old[1] + cnt)
    return stats


def thread_totals(pid: int) -> tuple[int, int]:
    """(CPU ticks, voluntary context switches) summed over the daemon's threads."""
    ticks = switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue
        ticks += int(stat[11]) + int(stat[12])
        m = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
        switches += int(m.group(1)) if m else 0
    return ticks, switches


def measure(loops: Path, rules: Path, n: int, settle: float) -> DaemonRun:
    with Daemon([rules]) as d:
        pid = d.proc.pid
        time.sleep(settle)
        fds = prog_fds(pid)
        p0, (t0, s0) = prog_stats(pid, fds), thread_totals(pid)
        e0 = scrape(d.metrics_url).get("falconet_events_total", 0.0)
        timing = time_loop(loops, "open", n)
        p1, (t1, s1) = prog_stats(pid, fds), thread_totals(pid)
        e1 = scrape(d.metrics_url).get("falconet_events_total", 0.0)
    run = DaemonRun(timing.wall_ns, timing.cpu_ns, daemon_cpu_ns=(t1 - t0) * TICK_NS / n,
                    daemon_wakeups=float(s1 - s0), events=e1 - e0)
    for key, (ns, cnt) in p1.items():
        dns, dcnt = ns - p0.get(key, (0, 0))[0], cnt - p0.get(key, (0, 0))[1]
        if dcnt:
            run.programs[key] = (dcnt / n, dns / n)
    return run


def report(name: str, runs: list[DaemonRun]) -> list[str]:
    med = statistics.median
    lines = [f"{name}: loop wall {med(r.wall_ns for r in runs):,.0f} ns/iter, CPU {med(r.cpu_ns for r in runs):,.0f} "
             f"ns/iter; daemon CPU {med(r.daemon_cpu_ns for r in runs):,.1f} ns/iter, "
             f"{med(r.daemon_wakeups for r in runs):,.0f} wake-ups and {med(r.events for r in runs):,.0f} events "
             "per loop (medians)"]
    keys = sorted({k for r in runs for k in r.programs}, key=lambda k: -med(r.programs.get(k, (0, 0))[1] for r in runs))
    for key in keys:
        per = [r.programs.get(key, (0.0, 0.0)) for r in runs]
        runs_it, ns_it = med(p[0] for p in per), med(p[1] for p in per)
        lines.append(f"  {key:40} {runs_it:8.2f} runs/iter {ns_it / runs_it if runs_it else 0:8.1f} ns/run "
                     f"{ns_it:8.1f} ns/iter")
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open", type=int, default=500_000, help="open/read/close iterations per daemon")
    ap.add_argument("--repeat", type=int, default=3, help="daemons per rules set (alternating)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between the daemon's ready and the loop")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.sensor_daemon_time needs root (BPF)", file=sys.stderr)
        return 1
    from falconet.rules import DEFAULT_RULES

    sets = {"default rules": DEFAULT_RULES, "upstream stable rules": UPSTREAM_STABLE}
    runs: dict[str, list[DaemonRun]] = {name: [] for name in sets}
    closed = close_inherited_high_fds()  # the loops start with the small fd table, as in bench.daemon_overhead
    if closed:
        print(f"closed inherited fds {closed}")
    print(f"machine before: {machine_state()}", flush=True)
    stats_fd = enable_stats()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loops = build_loops(Path(tmp))
            for rep in range(args.repeat):
                order = list(sets) if rep % 2 == 0 else list(reversed(sets))
                for name in order:
                    runs[name].append(measure(loops, sets[name], args.open, args.settle))
                    print(f"  [{rep + 1}/{args.repeat}] {name}: CPU {runs[name][-1].cpu_ns:,.0f} ns/iter", flush=True)
    finally:
        os.close(stats_fd)
    print(f"machine after: {machine_state()}")
    print(f"open/read/close loop of {args.open:,} iterations under `falconet run`, {args.repeat} daemons per rules "
          "set, alternating; BPF programs by type:tag (sys_exit is the raw_tracepoint with ~3 runs/iter; the exec "
          "tails run inside it); daemon CPU and wake-ups: all its threads (voluntary context switches), during the "
          "loop")
    for name, rs in runs.items():
        for line in report(name, rs):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
