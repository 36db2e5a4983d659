"""Where sys_exit's time goes, stage by stage, for the open/read/close loop of bench/daemon_loops.c.

bench.sensor_kernel_time gives each BPF program's total per run; this splits sys_exit's run into the stages
probe.c marks with KP(slot) when it is compiled with -DKPROF (never by the sensor itself): each mark adds the ns
since the previous mark to its slot, per CPU, for the loop's process only. A mark costs about one clock read
and a map update; slot 0 (a mark right after the first) measures that, and the table subtracts it from every
stage. The sensor is configured as the daemon configures it (bench.sensor_kernel_time's setup), so the stages
are the ones the daemon's kernel runs. Figures are ns per stage visit and per loop iteration (a stage one
syscall of three passes counts once per iteration).

Run: python -m bench.sensor_kprof [--open N] [--repeat R] [--rules default|stable] [--probe PATH]  (root)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench._daemon_common import UPSTREAM_STABLE, build_loops, machine_state
from bench._daemon_common import close_inherited_high_fds

SLOTS = 32
NAMES = {
    0: "mark overhead (calibration)",
    1: "regs read + sysconf lookup (on)",
    2: "regs read + sysconf lookup (off: returns)",
    3: "pid_tgid, scratch, gate",
    4: "reset_hdr + put_syscall",
    5: "close of a kept-back fd: unhide + count",
    6: "open: path read",
    7: "open: open_need",
    8: "open: filter_on + path_clean",
    9: "open: prefix key + LPM lookup",
    10: "open: suffix lookups",
    11: "open: fd_may_be_dir",
    12: "open: count + fd_hide",
}
# (Scratch copies of probe.c may mark more slots; they print as "?".)


def _with_kprof(probe: Path | None) -> None:
    """Makes the sensor compile probe.c with -DKPROF (this process only), or another copy of probe.c with its
    probe_*.h beside it (an older tree's with the same KP marks, to compare in one run)."""
    from falconet.sensor import sensor as sensor_mod

    if probe is not None:
        sensor_mod.PROBE_C = probe

    original = sensor_mod.program_text

    def program_text(config: sensor_mod.SensorConfig,
                     offsets: dict[str, int] | None = None) -> tuple[str, list[str]]:
        text, flags = original(config, offsets)
        return text, [*flags, "-DKPROF"]

    sensor_mod.program_text = program_text


def run_once(exe: Path, n: int, rules: Path) -> dict[int, tuple[float, float]]:
    """One loop run; per slot (ns sum, visits) summed over CPUs."""
    from falconet.rules.engine import Engine, Resolvers
    from falconet.server.pipeline import apply_open_filter
    from falconet.server.source_ebpf import SensorSource

    # The loop starts (stopped) before the sensor: a child made while this process holds the sensor's many fds
    # would inherit a grown fd table, and the kernel reads a kept-back open's fd through files->fd_array only while
    # the table is the small one every process starts with (as the loops bench.daemon_overhead times have).
    proc = subprocess.Popen(["sh", "-c", f'kill -STOP $$; exec "{exe}" open {n}'], stdout=subprocess.DEVNULL)
    os.waitpid(proc.pid, os.WUNTRACED)
    engine = Engine.from_files([rules], resolvers=Resolvers(hostname=lambda: "bench", dns=lambda _n: []))
    source = SensorSource(8 << 20, engine.event_types, 80)
    try:
        source.start()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    apply_open_filter(source, engine, True, lambda _msg: None)
    sensor = source._sensor
    stop = threading.Event()

    def consume() -> None:
        ring = sensor._ring()
        while not stop.is_set():
            ring.wait(1)
            ring.read(4096)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        sensor._bpf[b"kprof_tgid"][ctypes.c_int(0)] = ctypes.c_uint32(proc.pid)
        os.kill(proc.pid, signal.SIGCONT)
        proc.wait()
        sensor._bpf[b"kprof_tgid"][ctypes.c_int(0)] = ctypes.c_uint32(0)
        table = sensor._bpf[b"kprof"]
        out: dict[int, tuple[float, float]] = {}
        for slot in range(SLOTS):
            total = sum(int(v) for v in table.getvalue(ctypes.c_int(slot * 2)))
            visits = sum(int(v) for v in table.getvalue(ctypes.c_int(slot * 2 + 1)))
            if visits:
                out[slot] = (float(total), float(visits))
        return out
    finally:
        if proc.poll() is None:  # a failure before the loop ran: do not leave it stopped
            proc.kill()
            proc.wait()
        stop.set()
        thread.join()
        source.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rules", choices=("default", "stable"), default="default")
    ap.add_argument("--probe", type=Path, help="another probe.c (with KP marks) to time instead of this tree's")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.sensor_kprof needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    from falconet.rules import DEFAULT_RULES

    rules = UPSTREAM_STABLE if args.rules == "stable" else DEFAULT_RULES
    closed = close_inherited_high_fds()  # so the loop's fd table is the small one (see run_once)
    if closed:
        print(f"closed inherited fds {closed}")
    _with_kprof(args.probe)
    print(f"machine before: {machine_state()}", flush=True)
    runs: list[dict[int, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_loops(Path(tmp))
        for _ in range(args.repeat):
            runs.append(run_once(exe, args.open, rules))
    print(f"machine after: {machine_state()}")
    print(f"sys_exit stages, open loop of {args.open:,} iterations, {args.rules} rules, median of {args.repeat} "
          "(ns per visit minus the mark overhead; visits and ns per loop iteration)")
    slots = sorted({s for r in runs for s in r})

    def median(vals: list[float]) -> float:
        return sorted(vals)[len(vals) // 2]

    mark = median([r[0][0] / r[0][1] for r in runs if 0 in r])
    total = 0.0
    for slot in slots:
        per_visit = median([r[slot][0] / r[slot][1] - mark for r in runs if slot in r])
        visits = median([r[slot][1] / args.open for r in runs if slot in r])
        shown = per_visit if slot else mark
        if slot:
            total += per_visit * visits
        print(f"  {slot:2} {NAMES.get(slot, '?'):45} {shown:7.1f} ns/visit {visits:6.2f} visits/iter "
              f"{(per_visit * visits if slot else 0):7.1f} ns/iter")
    print(f"  total of the stages: {total:.1f} ns per iteration")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
