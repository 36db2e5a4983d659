"""What the ptrace driver costs a workload, against bare and against the eBPF daemon, in one run.

Rows: the open/read/close loop and the fork+exec loop bare, under `falconet run --source ptrace` with the
default rules, and under the eBPF daemon with the default rules; a getpid loop and a loop reading 64 bytes from /dev/zero bare and under ptrace (neither is in a
rule: the seccomp filter lets them through without a stop, so they pay only the kernel's seccomp entry work:
getpid shows it against the cheapest syscall, read64 against one doing real work). Each
figure is the median of --repeat runs, as wall-clock ns per iteration and as the loop's own CPU ns per
iteration (user+system, children included), which a machine loaded by others moves far less than wall clock.
The tracer's CPU (Falconet's own user+system time per iteration, the Python side of every stop) and the
stops per iteration (from Falconet's end-of-workload log line) are printed beside the ptrace rows. The
`ptrace` rows use the C stop loop (sensor/ptrace/stoploop.c) with its placement (the tracer follows the
tracee's CPU and resumes it there, keeping the tracee's affinity narrowed across the stops the loop answers);
`ptrace-wake` the same placement narrowing for each wake-up only (session 5's, FALCONET_PTRACE_KEEP_NARROW=0);
`ptrace-nopl` the C loop with FALCONET_PTRACE_PLACEMENT=0 (the scheduler
places both, as before); `ptrace-py` the pure-Python loop (FALCONET_PTRACE_STOPLOOP=0); `ptrace-3stop` the default C loop with
every kept-back open's exit stop kept (session 6's 3 stops per open/read/close, FALCONET_PTRACE_SKIP_EXIT=0);
`ptrace-noguard` the default without the busy-CPU guard (FALCONET_PTRACE_GUARD_NS=0: placement never backs off
when the tracer waits for its CPU). The `floor-*` rows (open loop only) are not Falconet: bench/ptrace_floor.c,
a minimal C tracer that reads what the driver reads at each stop (PTRACE_GET_SYSCALL_INFO, the path with
process_vm_readv) and answers at once, tracer and loop pinned to one CPU (what placement achieves), with the
driver's 2 stops per iteration (`floor-2`: openat's and close's seccomp stops) and with 1 (`floor-1`: close not
traced): the cost of the stops themselves on this machine, against which the `ptrace` row is judged. Session 9's
rows answer syscalls through SECCOMP_RET_USER_NOTIF instead (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, continued):
`floor-notif` the close only (openat still stops), `floor-notif-all` the openat too (no ptrace stop), both from a
supervisor thread, and `floor-notif-poll` as -all from the tracer's one thread polling the listener and a SIGCHLD
signalfd (see FLOORS). Every repeat runs
every row once, in turn (bare, the ptrace rows, then the eBPF daemon started for the repeat's eBPF rows and
stopped again, so it never sees the other rows), and the median of the repeats is printed with the ratios
against bare. Needs root for the eBPF row only (--no-ebpf skips it).

    python -m bench.ptrace_overhead [--open N] [--exec N] [--getpid N] [--read64 N] [--repeat N] [--no-ebpf]
        [--no-py] [--no-nopl] [--no-wake] [--no-3stop] [--no-noguard] [--no-floor]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._daemon_common import Daemon, machine_state
from falconet.rules import DEFAULT_RULES

Figures = tuple[float, float, float, float]  # wall ns/iter, loop CPU ns/iter, tracer CPU ns/iter, stops/iter
STOPS = re.compile(r"ptrace: the workload ended .*?; (\d+) stops")


def build(directory: Path) -> Path:
    out = directory / "ptrace_loops"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(Path(__file__).with_name("ptrace_loops.c"))], check=True)
    return out


def build_floor(directory: Path) -> Path:
    out = directory / "ptrace_floor"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(out), str(Path(__file__).with_name("ptrace_floor.c"))],
                   check=True)
    return out


FLOORS = {"floor-2": ("2c", {}), "floor-1": ("1", {}), "floor-notif": ("n", {}),
          "floor-notif-all": ("nn", {}), "floor-notif-poll": ("nn", {"POLL": "1"})}
"""The minimal C tracer's rows: bench/ptrace_floor.c's mode and extra environment. floor-2: openat's and
close's seccomp stops (the driver's 2 stops); floor-1: close not traced; floor-notif: openat's seccomp stop,
close answered by a supervisor thread through SECCOMP_RET_USER_NOTIF (SYNC_WAKE_UP, continued); floor-notif-all:
openat answered that way too (its path read from the supervisor, no ptrace stop); floor-notif-poll: the same with
the notifications answered by the tracer's one thread, which polls the listener and a SIGCHLD signalfd."""
FLOOR_COUNTS = re.compile(r"stops (\d+) notifications (\d+)")


def floor(tracer: Path, loops: Path, row: str, n: int) -> Figures:
    """The minimal C tracer on the open loop, both pinned to this process's first allowed CPU (placement's
    end state), reading at each stop or notification what the driver reads. Its CPU column is the tracer's
    own (its rusage less the loop's, which it reaps); its stops column counts ptrace stops plus user
    notifications, each a round trip to the tracer."""
    mode, extra = FLOORS[row]
    cpu = min(os.sched_getaffinity(0))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(["taskset", "-c", str(cpu), str(tracer), mode, str(loops), "open", str(n)],
                          capture_output=True, text=True, check=True, env=dict(os.environ, READ="1", **extra))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu_ns = _parse(done.stdout)
    total = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e9 / n
    counts = FLOOR_COUNTS.search(done.stderr)
    trips = (int(counts.group(1)) + int(counts.group(2))) / n if counts else float("nan")
    return wall, cpu_ns, max(0.0, total - cpu_ns), trips


def _parse(stdout: str) -> tuple[float, float]:
    for line in stdout.splitlines():
        if line.startswith("loop "):
            wall, cpu = line.split()[1:3]
            return float(wall), float(cpu)
    raise RuntimeError(f"no figures in the loop's output: {stdout!r}")


def bare(loops: Path, mode: str, n: int) -> Figures:
    wall, cpu = _parse(subprocess.run([str(loops), mode, str(n)], capture_output=True, text=True,
                                      check=True).stdout)
    return wall, cpu, 0.0, 0.0


VARIANTS = {"ptrace": {"FALCONET_PTRACE_STOPLOOP": "1", "FALCONET_PTRACE_PLACEMENT": "1",
                       "FALCONET_PTRACE_KEEP_NARROW": "1"},
            "ptrace-wake": {"FALCONET_PTRACE_STOPLOOP": "1", "FALCONET_PTRACE_PLACEMENT": "1",
                            "FALCONET_PTRACE_KEEP_NARROW": "0"},
            "ptrace-nopl": {"FALCONET_PTRACE_STOPLOOP": "1", "FALCONET_PTRACE_PLACEMENT": "0"},
            "ptrace-py": {"FALCONET_PTRACE_STOPLOOP": "0"},
            "ptrace-3stop": {"FALCONET_PTRACE_STOPLOOP": "1", "FALCONET_PTRACE_PLACEMENT": "1",
                             "FALCONET_PTRACE_KEEP_NARROW": "1", "FALCONET_PTRACE_SKIP_EXIT": "0"},
            "ptrace-noguard": {"FALCONET_PTRACE_STOPLOOP": "1", "FALCONET_PTRACE_PLACEMENT": "1",
                               "FALCONET_PTRACE_KEEP_NARROW": "1", "FALCONET_PTRACE_GUARD_NS": "0"}}
"""The ptrace rows' environments: C loop with placement keeping tracees narrowed across its stops (the
default), C loop narrowing for each wake-up only (session 5's placement), C loop without placement, Python
loop, the default with the kept-back opens' exit stops (session 6's), the default without the busy-CPU guard."""


def traced(loops: Path, mode: str, n: int, config: Path, variant: str) -> tuple[float, float, float]:
    """One `falconet run --source ptrace -- loops MODE N`: (wall, loop CPU, stops) per iteration."""
    cmd = [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(config), "--no-store", "--source",
           "ptrace", "--", str(loops), mode, str(n)]
    env = dict(os.environ, **VARIANTS[variant])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"falconet run --source ptrace failed ({done.returncode}):\n{done.stderr}")
    wall, cpu = _parse(done.stdout)
    stops = STOPS.search(done.stderr)
    return wall, cpu, int(stops.group(1)) / n if stops else float("nan")


def traced_with_cpu(loops: Path, mode: str, n: int, config: Path, variant: str) -> Figures:
    """The tracer's CPU is Falconet's rusage less the loop's own (Falconet reaps the loop, so its rusage
    includes it)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu, stops = traced(loops, mode, n, config, variant)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e9 / n
    return wall, cpu, max(0.0, total - cpu), stops


def median(runs: list[Figures]) -> Figures:
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            statistics.median(r[2] for r in runs), statistics.median(r[3] for r in runs))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ptrace_overhead")
    p.add_argument("--open", type=int, default=20_000, help="open/read/close iterations per run")
    p.add_argument("--exec", type=int, default=200, help="fork+exec iterations per run")
    p.add_argument("--getpid", type=int, default=2_000_000, help="getpid iterations per run")
    p.add_argument("--read64", type=int, default=2_000_000, help="64-byte /dev/zero read iterations per run")
    p.add_argument("--repeat", type=int, default=3, help="runs per row (the median is reported)")
    p.add_argument("--no-ebpf", action="store_true", help="leave out the eBPF daemon's row (no root needed)")
    p.add_argument("--no-py", action="store_true", help="leave out the pure-Python stop loop's rows")
    p.add_argument("--no-nopl", action="store_true", help="leave out the C loop's rows without placement")
    p.add_argument("--no-wake", action="store_true", help="leave out the per-wake-up placement rows")
    p.add_argument("--no-3stop", action="store_true", help="leave out the rows with the kept-back exit stops")
    p.add_argument("--no-noguard", action="store_true", help="leave out the rows without the busy-CPU guard")
    p.add_argument("--no-floor", action="store_true", help="leave out the minimal C tracer's rows (floor-*)")
    args = p.parse_args(argv)
    left_out = {"ptrace-py": args.no_py, "ptrace-nopl": args.no_nopl, "ptrace-wake": args.no_wake,
                "ptrace-3stop": args.no_3stop, "ptrace-noguard": args.no_noguard}
    variants = [v for v in VARIANTS if not left_out.get(v)]
    if not args.no_ebpf and os.geteuid() != 0:
        print("bench.ptrace_overhead: the eBPF row needs root (or pass --no-ebpf)", file=sys.stderr)
        return 1
    n = {"open": args.open, "exec": args.exec, "getpid": args.getpid, "read64": args.read64}
    modes = ("open", "exec", "getpid", "read64")
    print(f"machine before: {machine_state()}")
    rows: dict[tuple[str, str], Figures] = {}
    with tempfile.TemporaryDirectory() as tmp:
        loops = build(Path(tmp))
        floor_tracer = None if args.no_floor else build_floor(Path(tmp))
        config = Path(tmp) / "falconet.yaml"
        config.write_text(f"rules_files: [{DEFAULT_RULES}]\nstdout_output: {{enabled: false}}\n"
                          "grpc: {enabled: false}\nwebserver: {enabled: false}\n")
        # Interleaved per repeat (bare, ptrace, ..., eBPF) so a load change hits every row alike.
        runs: dict[tuple[str, str], list[Figures]] = {}
        for _ in range(args.repeat):
            for mode in modes:
                runs.setdefault(("bare", mode), []).append(bare(loops, mode, n[mode]))
                for variant in variants if mode in ("open", "exec") else variants[:1]:  # untraced: no stops
                    runs.setdefault((variant, mode), []).append(
                        traced_with_cpu(loops, mode, n[mode], config, variant))
                if mode == "open" and floor_tracer is not None:
                    for row in FLOORS:
                        runs.setdefault((row, mode), []).append(floor(floor_tracer, loops, row, n[mode]))
            if not args.no_ebpf:
                with Daemon([DEFAULT_RULES]):
                    for mode in modes:
                        runs.setdefault(("ebpf", mode), []).append(bare(loops, mode, n[mode]))
        rows = {key: median(value) for key, value in runs.items()}
    print(f"machine after: {machine_state()}")
    print(f"{'loop':7} {'driver':16} {'wall ns/it':>11} {'x bare':>7} {'CPU ns/it':>10} {'x bare':>7} "
          f"{'tracer CPU ns/it':>16} {'stops/it':>8}")
    for (driver, mode), (wall, cpu, tracer, stops) in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        bw, bc, _, _ = rows[("bare", mode)]
        extra = f"{tracer:16.0f} {stops:8.2f}" if driver.startswith(("ptrace", "floor")) else ""
        print(f"{mode:7} {driver:16} {wall:11.0f} {wall / bw:7.2f} {cpu:10.0f} {cpu / bc:7.2f} {extra}")
    for mode in ("getpid", "read64"):  # what the filter alone costs an untraced syscall
        if ("ptrace", mode) in rows:
            (bw, bc, _, _), (tw, tc, _, _) = rows[("bare", mode)], rows[("ptrace", mode)]
            print(f"untraced {mode}: the seccomp filter adds {tw - bw:+.1f} ns wall ({(tw - bw) / bw:+.1%}), "
                  f"{tc - bc:+.1f} ns CPU ({(tc - bc) / bc:+.1%}) per syscall")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
