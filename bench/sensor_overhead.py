"""Sensor overhead: what tracing adds to an open/read/close loop and to an exec loop, in one run.

Rows, each the same C workloads (bench/daemon_loops.c) run in a child process:
- bare: nothing attached;
- floor: a no-op raw_syscalls:sys_enter probe (the issue's reference floor);
- sensor attach points, no-op: no-op probes on every tracepoint sensor/probe.c uses (raw sys_exit, the
  sys_enter tracepoints of unshare/setns/execveat, sched_process_fork, sched_process_exit): the price of the
  design before any work;
- sensor, default rules' syscalls: the real program, delivering the default rules' event types to a
  consumer thread calling Sensor.poll (enrichment included: it competes for the same 2 cores);
- sensor, stable upstream rules' syscalls: the same with falco_rules.yaml's event types;
- sensor, default rules, track_fds=False: what shipping fd-state syscalls (open/close/...) costs;
- sensor, default rules, open filter: the kernel-side open-prefix filter with the prefixes the engine derives
  from the default rules (Engine.open_path_prefixes, as the daemon applies them): the loop's reads of
  /etc/hostname are under none of them, so they and their closes stay in the kernel;
- sensor, stable rules, open filter: the same with the atoms derived from falco_rules.yaml (prefixes, base
  names, suffixes; rules/open_prefixes.py).
Every repeat runs every row once (interleaved, rotating order), and each figure is the median of the repeats;
ratios against bare and against the floor are medians of per-repeat ratios (bench/_interleave.py), as issue 12's
targets ask. Both loops are also given in CPU time of the loop's process and its children (user + system: the
probe runs in their syscalls), which a loaded machine moves much less than the wall clock. The consumer
thread's own time is not in either column (it is this process's, not the loop's).

Run (root):
  python -m bench.sensor_overhead --quick   bare, floor, attach points and the two filtered rows the daemon runs;
                                            5 repeats of 100,000 opens and 2,000 execs: about 3 minutes
  python -m bench.sensor_overhead           every row: about 5 minutes
  [--open N] [--exec N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._daemon_common import UPSTREAM_STABLE, build_loops, machine_state
from bench._interleave import Figures, Row, interleaved, ratio_table, time_loop
from bench._sensor_reader import reading

HERE = Path(__file__).resolve().parent
STABLE = UPSTREAM_STABLE


def run_loop(exe: Path, kind: str, n: int) -> float:
    """Wall ns per iteration of one run of a daemon_loops.c loop (bench.sensor_kernel_time uses it)."""
    return time_loop(exe, kind, n).wall_ns


@contextmanager
def nothing() -> Iterator[str]:
    yield ""


@contextmanager
def noop(sensor_points: bool) -> Iterator[str]:
    from bcc import BPF

    cflags = ["-DSENSOR_POINTS"] if sensor_points else []
    b = BPF(src_file=str(HERE / "sensor_noop.c").encode(), cflags=cflags)
    try:
        yield ""
    finally:
        b.cleanup()


@contextmanager
def live_sensor(syscalls: set[str], track_fds: bool = True,
                prefixes: dict[str, list[str]] | None = None) -> Iterator[str]:
    from falconet.sensor import Sensor, SensorConfig

    s = Sensor(SensorConfig(syscalls=syscalls, track_fds=track_fds, open_prefixes=prefixes))
    s.start()
    try:
        with reading(s):
            yield ""
    finally:
        st = s.stats()
        s.close()
        print(f"    (records {st.records}, delivered {st.events}, kernel drops {st.kernel_drops}, "
              f"kept back by the open filter {st.path_filtered})", flush=True)


def rule_types(path: Path) -> set[str]:
    from falconet.rules.engine import Engine, Resolvers

    eng = Engine.from_files([path], resolvers=Resolvers(hostname=lambda: "bench", dns=lambda _n: []))
    assert eng.event_types is not None
    return set(eng.event_types)


def rule_prefixes(path: Path) -> dict[str, list[str]]:
    from falconet.rules.engine import Engine, Resolvers

    eng = Engine.from_files([path], resolvers=Resolvers(hostname=lambda: "bench", dns=lambda _n: []))
    found = eng.open_path_prefixes()
    assert found is not None, f"some rule of {path} cannot be bounded: {eng.open_path_blockers()}"
    return found


SENSOR_TARGET_ROWS = ("bare", "floor: no-op raw_syscalls:sys_enter", "no-op on the sensor's attach points",
                      "sensor, default rules, open filter from the rules",
                      "sensor, stable rules, open filter from the rules")
"""--quick: the floor, the design's price and the two configurations the daemon runs (its filter is on)."""


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open", type=int, default=100_000, help="open/read/close iterations per repeat")
    ap.add_argument("--exec", type=int, default=2_000, help="fork+exec iterations per repeat")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repeats (medians are reported)")
    ap.add_argument("--quick", action="store_true", help=f"only the rows {', '.join(SENSOR_TARGET_ROWS)}")
    args = ap.parse_args(argv)
    if args.open < 1 or args.exec < 1 or args.repeat < 1:
        ap.error("--open, --exec and --repeat must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("bench.sensor_overhead needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    from falconet.rules import DEFAULT_RULES

    default_types = rule_types(DEFAULT_RULES)
    default_prefixes = rule_prefixes(DEFAULT_RULES)
    stable_types = rule_types(STABLE)
    stable_prefixes = rule_prefixes(STABLE)
    rows: list[Row] = [
        ("bare", nothing),
        ("floor: no-op raw_syscalls:sys_enter", lambda: noop(False)),
        ("no-op on the sensor's attach points", lambda: noop(True)),
        ("sensor, default rules' syscalls", lambda: live_sensor(default_types)),
        ("sensor, stable rules' syscalls", lambda: live_sensor(stable_types)),
        ("sensor, default rules, track_fds=False", lambda: live_sensor(default_types, track_fds=False)),
        ("sensor, default rules, open filter from the rules", lambda: live_sensor(default_types,
                                                                                  prefixes=default_prefixes)),
        ("sensor, stable rules, open filter from the rules", lambda: live_sensor(stable_types,
                                                                                 prefixes=stable_prefixes)),
    ]
    if args.quick:
        rows = [row for row in rows if row[0] in SENSOR_TARGET_ROWS]
    print(f"machine before: {machine_state()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_loops(Path(tmp))

        def measure(_label: str, _ctx: object) -> Figures:
            o, e = time_loop(exe, "open", args.open), time_loop(exe, "exec", args.exec)
            return {"open": o.wall_ns, "open_cpu": o.cpu_ns, "exec": e.wall_ns, "exec_cpu": e.cpu_ns}

        results = interleaved(rows, args.repeat, measure)
    print(f"machine after: {machine_state()}")
    print(f"\nsensor overhead: median of {args.repeat} interleaved repeats (ratios: medians of per-repeat ratios); "
          f"default rules {len(default_types)} event types, stable {len(stable_types)}")
    floor = "floor: no-op raw_syscalls:sys_enter"
    for line in ratio_table(f"open/read/close loop, {args.open:,} iterations per repeat", results, "open",
                            "ns/iter", 1.0, "bare", floor):
        print(line)
    for line in ratio_table(f"fork+exec loop, {args.exec:,} execs per repeat", results, "exec", "us/exec",
                            1000.0, "bare", floor):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
