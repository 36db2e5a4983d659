"""Sensor overhead: what tracing adds to an open/read/close loop and to an exec loop, in one run.

Rows, each the same C workloads (bench/daemon_loops.c) run in a child process:
- bare: nothing attached;
- floor: a no-op raw_syscalls:sys_enter probe (the issue's reference floor);
- sensor attach points, no-op: no-op probes on every tracepoint sensor/probe.c uses (sys_enter, sys_exit,
  sched_process_fork, sched_process_exit): the price of the design before any work;
- sensor, default rules' syscalls: the real program, delivering the default rules' event types to a
  consumer thread calling Sensor.poll (enrichment included: it competes for the same 2 cores);
- sensor, stable upstream rules' syscalls: the same with falco_rules.yaml's event types;
- sensor, default rules, track_fds=False: what shipping fd-state syscalls (open/close/...) costs;
- sensor, default rules, open filter: the kernel-side open-prefix filter with the prefixes the engine derives
  from the default rules (Engine.open_path_prefixes, as the daemon applies them): the loop's reads of
  /etc/hostname are under none of them, so they and their closes stay in the kernel;
- sensor, stable rules, open filter: the same with the atoms derived from falco_rules.yaml (prefixes, base
  names, suffixes; rules/open_prefixes.py).
Each row is measured REPEAT times, interleaved, and the minimum kept (other tenants of the machine only ever
add time). Ratios are against bare and against the floor, measured in the same run. The open loop is also
given in CPU time of the loop's process (user + system: the probe runs in its syscalls), which a loaded
machine moves much less than the wall clock.

Run: python -m bench.sensor_overhead [--open N] [--exec N] [--repeat R]   (root)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STABLE = REPO.parent / "shared" / "upstream-rules" / "current" / "falco_rules.yaml"


def build_loops(out_dir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("a C compiler is needed (build-essential, installed by make setup)")
    exe = out_dir / "daemon_loops"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "daemon_loops.c")], check=True)
    return exe


def run_loop(exe: Path, kind: str, n: int) -> float:
    return run_loop_cpu(exe, kind, n)[0]


def run_loop_cpu(exe: Path, kind: str, n: int) -> tuple[float, float]:
    """(wall ns per iteration as the loop timed itself, CPU ns per iteration the loop's process used).

    The CPU time (user + system, from the kernel's rusage of the finished child: the probe's work on each of
    its syscalls is system time of the child) moves far less than the wall clock when other tenants load the
    machine, since time spent waiting for a core is not in it; for an exec loop it is the parent's share only."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(exe), kind, str(n)], check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(out), cpu * 1e9 / n


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
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            s.poll(50)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        yield ""
    finally:
        stop.set()
        t.join()
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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open", type=int, default=200_000, help="open/read/close iterations per measurement")
    ap.add_argument("--exec", type=int, default=400, help="fork+exec iterations per measurement")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.sensor_overhead needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    from falconet.rules import DEFAULT_RULES

    default_types = rule_types(DEFAULT_RULES)
    default_prefixes = rule_prefixes(DEFAULT_RULES)
    stable_types = rule_types(STABLE)
    stable_prefixes = rule_prefixes(STABLE)
    rows: list[tuple[str, Callable[[], object]]] = [
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
    best: dict[str, dict[str, float]] = {name: {} for name, _ in rows}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_loops(Path(tmp))
        for rep in range(args.repeat):
            for name, ctx in rows:
                print(f"  [{rep + 1}/{args.repeat}] {name}", flush=True)
                with ctx():  # type: ignore[attr-defined]
                    o, o_cpu = run_loop_cpu(exe, "open", args.open)
                    e = run_loop(exe, "exec", args.exec)
                for kind, v in (("open", o), ("exec", e), ("open_cpu", o_cpu)):
                    best[name][kind] = min(best[name].get(kind, v), v)
    bare, floor = best["bare"], best["floor: no-op raw_syscalls:sys_enter"]
    print(f"\nsensor overhead (min of {args.repeat}; open loop {args.open}, exec loop {args.exec}; "
          f"default rules {len(default_types)} event types, stable {len(stable_types)})")
    print(f"{'row':44} {'open ns/it':>10} {'vs bare':>8} {'vs floor':>8} {'exec us/it':>10} {'vs bare':>8} "
          f"{'vs floor':>8} {'open cpu ns/it':>14} {'vs floor':>8}")
    for name, _ in rows:
        b = best[name]
        print(f"{name:44} {b['open']:10.0f} {b['open'] / bare['open']:8.3f} {b['open'] / floor['open']:8.3f} "
              f"{b['exec'] / 1000:10.1f} {b['exec'] / bare['exec']:8.3f} {b['exec'] / floor['exec']:8.3f} "
              f"{b['open_cpu']:14.0f} {b['open_cpu'] / floor['open_cpu']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
