"""What watching costs the watched: an open/read/close loop and a fork+exec loop under each tracing setup.

Rows, all measured in this one run on this machine (C loops, so the loop itself costs next to nothing):
- bare: nothing attached;
- floor: a no-op BPF program on raw_syscalls:sys_enter (the least any syscall tracer can cost);
- attach points: no-op programs on everything the sensor attaches to (the sys_enter and sys_exit raw
  tracepoints, sched_process_fork and sched_process_exit), so the difference to the floor is the price of the design;
- daemon, default rules: `falconet run` with rules/falconet_rules.yaml (the sensor ships to user space only
  the syscalls those rules and the process/fd state need, and only the opens under the path prefixes the
  engine derives from the rules);
- daemon, default rules, open filter off: the same with `sensor.open_path_filter: false` (every open ships);
- daemon, upstream stable rules: `falconet run` with Falco's falco_rules.yaml.
Each figure is the median of several runs; every row is printed against bare and against the floor.

Run: python -m bench.daemon_overhead [--open N] [--exec N] [--repeat K]   (as root)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._daemon_common import machine_state, UPSTREAM_STABLE, Daemon, build_loops
from falconet.rules import DEFAULT_RULES

NOOP_ENTER = "TRACEPOINT_PROBE(raw_syscalls, sys_enter) { return 0; }"
NOOP_ATTACH_POINTS = """
RAW_TRACEPOINT_PROBE(sys_enter) { return 0; }
RAW_TRACEPOINT_PROBE(sys_exit) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }
"""


def measure(loops: Path, mode: str, n: int, repeat: int) -> float:
    runs = [float(subprocess.run([str(loops), mode, str(n)], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeat)]
    return statistics.median(runs)


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


OPEN_FILTER_OFF = "sensor: {open_path_filter: false}\n"


@contextmanager
def daemon(rules: list[Path], extra: str = "") -> Iterator[None]:
    with Daemon(rules, metrics_port=0, extra=extra):
        yield


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.daemon_overhead")
    p.add_argument("--open", type=int, default=100_000, help="open/read/close iterations per run")
    p.add_argument("--exec", type=int, default=300, help="fork+exec iterations per run")
    p.add_argument("--repeat", type=int, default=5, help="runs per row (the median is reported)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.daemon_overhead needs root (BPF)", file=sys.stderr)
        return 1
    rows: list[tuple[str, Callable[[], object]]] = [
        ("bare", nothing),
        ("floor: no-op raw_syscalls:sys_enter", lambda: bpf(NOOP_ENTER)),
        ("no-op on the sensor's attach points", lambda: bpf(NOOP_ATTACH_POINTS)),
        ("daemon, default rules", lambda: daemon([DEFAULT_RULES])),
        ("daemon, default rules, open filter off", lambda: daemon([DEFAULT_RULES], OPEN_FILTER_OFF)),
        ("daemon, upstream stable rules", lambda: daemon([UPSTREAM_STABLE])),
    ]
    print(f"machine before: {machine_state()}")
    with tempfile.TemporaryDirectory() as tmp:
        loops = build_loops(Path(tmp))
        results: list[tuple[str, float, float]] = []
        for label, ctx in rows:
            with ctx():  # type: ignore[attr-defined]
                o = measure(loops, "open", args.open, args.repeat)
                e = measure(loops, "exec", args.exec, max(3, args.repeat // 2))
            results.append((label, o, e))
            print(f"  measured {label}: open {o:.0f} ns, exec {e / 1000:.0f} us", file=sys.stderr, flush=True)
    print(f"machine after: {machine_state()}")
    bare_o, bare_e = results[0][1], results[0][2]
    floor_o, floor_e = results[1][1], results[1][2]
    print(f"{'setup':40} {'open ns/iter':>12} {'vs bare':>8} {'vs floor':>9} {'exec us/iter':>12} "
          f"{'vs bare':>8} {'vs floor':>9}")
    for label, o, e in results:
        print(f"{label:40} {o:12.0f} {100 * (o / bare_o - 1):+7.1f}% {100 * (o / floor_o - 1):+8.1f}% "
              f"{e / 1000:12.0f} {100 * (e / bare_e - 1):+7.1f}% {100 * (e / floor_e - 1):+8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
