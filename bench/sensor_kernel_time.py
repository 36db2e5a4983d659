"""The BPF program's own time per invocation, from the kernel's run-time statistics: what each tracepoint of
sensor/probe.c costs per call while the open and exec loops of bench/daemon_loops.c run.

Wall-clock rows (bench.sensor_overhead) move with everything else on a shared machine; the kernel's per-program
counters (run_time_ns / run_cnt, switched on with BPF_ENABLE_STATS for this process only while it holds the fd)
count only the program's instructions and helper calls, so a change to what the program reads (for example the
pid-namespace reads every record makes, or the exec facts) shows up here even when the loops' wall time is noise.
The default rules' event types are delivered to a consumer thread, as in bench.sensor_overhead; with
`--filter default` or `--filter stable` the open filter the engine derives from the default or the upstream
stable rules is on (and those rules' event types delivered), as the daemon runs it.

Run: python -m bench.sensor_kernel_time [--open N] [--exec N] [--repeat R] [--filter none|default|stable]  (root)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from bench._daemon_common import build_loops
from bench._sensor_reader import reading
from bench.sensor_overhead import STABLE, rule_prefixes, rule_types, run_loop

BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
SYS_BPF = 321  # x86_64
PROGRAMS = ("raw_tracepoint__sys_enter", "raw_tracepoint__sys_exit", "tracepoint__sched__sched_process_fork",
            "tracepoint__sched__sched_process_exit")  # bcc's names for probe.c's programs


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


def measure(exe: Path, n_open: int, n_exec: int, which: str = "none") -> dict[str, float]:
    from falconet.rules import DEFAULT_RULES
    from falconet.sensor import Sensor, SensorConfig

    rules = STABLE if which == "stable" else DEFAULT_RULES
    prefixes = None if which == "none" else rule_prefixes(rules)
    s = Sensor(SensorConfig(syscalls=rule_types(rules), open_prefixes=prefixes))
    s.start()
    out: dict[str, float] = {}
    with closing(s), reading(s):
        funcs = s._bpf.funcs  # bcc's loaded programs: name -> Function(fd)
        fds = {p: funcs[p.encode()].fd for p in PROGRAMS}
        for loop, n in (("open", n_open), ("exec", n_exec)):
            before = {p: prog_stats(fd) for p, fd in fds.items()}
            run_loop(exe, loop, n)
            for p, fd in fds.items():
                ns, cnt = prog_stats(fd)
                d_ns, d_cnt = ns - before[p][0], cnt - before[p][1]
                out[f"{loop}:{p}"] = d_ns / d_cnt if d_cnt else 0.0
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open", type=int, default=200_000)
    ap.add_argument("--exec", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--filter", choices=("none", "default", "stable"), default="none",
                    help="the open filter from these rules on (and their event types delivered)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.sensor_kernel_time needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    stats_fd = enable_stats()
    best: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            exe = build_loops(Path(tmp))
            for _ in range(args.repeat):
                for key, v in measure(exe, args.open, args.exec, args.filter).items():
                    best[key] = min(best.get(key, v), v)
    finally:
        os.close(stats_fd)
    rules = "upstream stable" if args.filter == "stable" else "default"
    print(f"BPF program time per invocation, ns (min of {args.repeat}; open loop {args.open}, exec loop {args.exec}; "
          f"{rules} rules' event types; open filter: {args.filter})")
    for loop in ("open", "exec"):
        cells = "  ".join(f"{p.split('__')[-1]} {best[f'{loop}:{p}']:7.0f}" for p in PROGRAMS)
        print(f"{loop} loop: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
