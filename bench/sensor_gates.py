"""Event gates: what tracing adds to a file-churn loop of syscalls without a state role, with and without the
gates the default rules give the kernel (rules/event_gates.py, sensor/probe_eventgate.h).

The loop (bench/gate_loops.c, in a folder on /dev/shm) does, per iteration, mkdir, chmod, rename, rmdir and a failing unlink (`rm -f`
of a missing file); of those the default rules trace chmod, rename and unlink. It runs under two comms: `cc`
(a compiler's churn: the rules need its successful chmod and rename, and its failed unlink no rule can match)
and `dpkg` (a package manager's: the rules' package-management exclusions leave nothing to match). Rows:
- bare: nothing attached;
- floor: a no-op raw_syscalls:sys_enter probe (the issue's reference floor);
- sensor, default rules, open filter: the real program as the daemon ran it before the gates (the default
  rules' event types, the open filter on), a consumer thread calling Sensor.poll;
- sensor, default rules, open filter + event gates: the same with the gates the engine derives.
Each row runs REPEAT times, interleaved, and the median is kept; the figure to read is the CPU time of the loop's
process (user + system: the probe runs in its syscalls), which a loaded machine moves much less than the wall
clock; the ratios are against the floor measured in the same run.

Run: python -m bench.sensor_gates [--n N] [--repeat R]   (root)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from bench._sensor_reader import reading
from bench.sensor_overhead import noop, nothing, rule_prefixes, rule_types

HERE = Path(__file__).resolve().parent
COMMS = ("cc", "dpkg")


def build(out_dir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("a C compiler is needed (build-essential, installed by make setup)")
    exe = out_dir / "gate_loops"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "gate_loops.c")], check=True)
    return exe


def run(exe: Path, comm: str, work: Path, n: int) -> tuple[float, float]:
    """(wall ns per iteration, CPU ns per iteration of the loop's process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(exe), comm, str(work), str(n)], check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(out), cpu * 1e9 / n


@contextmanager
def live(types: set[str], prefixes: dict[str, list[str]], gates: bool, counts: dict[str, int]) -> Iterator[str]:
    from falconet.rules import DEFAULT_RULES
    from falconet.rules.engine import Engine, Resolvers
    from falconet.sensor import Sensor, SensorConfig

    s = Sensor(SensorConfig(syscalls=types, open_prefixes=prefixes))
    s.start()
    if gates:
        eng = Engine.from_files([DEFAULT_RULES], resolvers=Resolvers(hostname=lambda: "bench", dns=lambda _n: []))
        s.set_event_gates(eng.event_gates(sorted(types)))
    try:
        with reading(s):
            yield ""
    finally:
        st = s.stats()
        s.close()
        counts["events"] = counts.get("events", 0) + st.events
        counts["gated"] = counts.get("gated", 0) + st.gated
        counts["drops"] = counts.get("drops", 0) + st.kernel_drops


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="loop iterations per measurement")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.sensor_gates needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    from falconet.rules import DEFAULT_RULES

    types = rule_types(DEFAULT_RULES)
    prefixes = rule_prefixes(DEFAULT_RULES)
    counts: dict[str, dict[str, int]] = {}
    rows: list[tuple[str, Callable[[], AbstractContextManager[str]]]] = [
        ("bare", nothing),
        ("floor: no-op raw_syscalls:sys_enter", lambda: noop(False)),
        ("sensor, default rules, open filter", lambda: live(types, prefixes, False, counts.setdefault("off", {}))),
        ("sensor, default rules, open filter + gates", lambda: live(types, prefixes, True,
                                                                    counts.setdefault("on", {}))),
    ]
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as w:
        exe = build(Path(tmp))
        work = Path(w)  # tmpfs: the loop's own file-system work as small and steady as it gets
        for rep in range(args.repeat):
            for name, ctx in rows:
                print(f"  [{rep + 1}/{args.repeat}] {name}", flush=True)
                with ctx():
                    for comm in COMMS:
                        got.setdefault((name, comm), []).append(run(exe, comm, work, args.n))
    load = os.getloadavg()
    print(f"\nfile churn (median of {args.repeat}, {args.n} iterations; load average {load[0]:.1f} {load[1]:.1f})")
    print(f"{'row':44} {'comm':>5} {'wall ns/it':>10} {'vs floor':>8} {'cpu ns/it':>10} {'vs floor':>8}")
    floor = "floor: no-op raw_syscalls:sys_enter"
    for name, _ in rows:
        for comm in COMMS:
            wall = statistics.median(w for w, _ in got[(name, comm)])
            cpu = statistics.median(c for _, c in got[(name, comm)])
            fwall = statistics.median(w for w, _ in got[(floor, comm)])
            fcpu = statistics.median(c for _, c in got[(floor, comm)])
            print(f"{name:44} {comm:>5} {wall:10.0f} {wall / fwall:8.3f} {cpu:10.0f} {cpu / fcpu:8.3f}")
    for key, c in counts.items():
        print(f"gates {key}: events delivered {c.get('events', 0)}, kept back by the gates {c.get('gated', 0)}, "
              f"kernel drops {c.get('drops', 0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
