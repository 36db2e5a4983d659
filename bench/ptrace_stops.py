"""Where a traced syscall's time goes under the ptrace driver: the tracer alone (sensor/ptrace/tracer.py with a
sink that drops its records: no enricher, engine or outputs), on the open/read/close loop of
bench/ptrace_loops.c, with the C stop loop (with its placement: the tracer thread follows the tracee's CPU and
resumes it there; and without), and with the pure-Python loop, interleaved.

Per loop iteration it prints the stops (waitpid returns), the loop's own CPU (what it prints), the tracer
thread's CPU and its voluntary and involuntary context switches (getrusage(RUSAGE_THREAD)). With --profile
the Python loop's run is also profiled (cProfile, top functions by own time). "C, per wake-up" is the C loop
with FALCONET_PTRACE_KEEP_NARROW=0 (the tracee narrowed for each wake-up only: session 5's placement).
Built with `CFLAGS=-DSTOPLOOP_PROFILE`, the C loop also prints its time per step (stoploop.c). The open filter is the default
rules' (the loop's /etc/hostname read-only open is under none of their atoms, so the open and its close are
kept back, as under the eBPF probe), and, as with the default rules, no rule looks at close, so the kept-back
open skips its exit stop (2 stops per iteration; "C, exit stops" keeps it: session 6's 3).

    python -m bench.ptrace_stops [--open N] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench._daemon_common import machine_state
from bench.ptrace_overhead import build
from bench.sensor_overhead import rule_prefixes
from falconet.rules import DEFAULT_RULES
from falconet.sensor.ptrace import fastpath
from falconet.sensor.ptrace.openfilter import OpenFilter
from falconet.sensor.ptrace.tracer import Tracer, traced_names

Row = tuple[float, float, float, float, float, float, float]
"""stops, loop CPU ns, tracer CPU ns, voluntary and involuntary switches (per iteration), the tracer thread's
moves (per run), resumes onto its CPU (per iteration)."""


def _prefixes() -> dict[str, list[str]]:
    return rule_prefixes(Path(DEFAULT_RULES))


def one(loops: Path, n: int, c_loop: bool, prefixes: dict[str, list[str]], profile: bool,
        placement: bool = True, keep: bool = True, exit_stops: bool = False) -> Row:
    """One traced run of `loops open N` on a thread of its own (as in the daemon); per-iteration figures.
    keep: placed tracees stay narrowed across the C loop's stops (off: narrowed per wake-up, session 5's);
    exit_stops: kept-back opens keep their exit stop (session 6's)."""
    os.environ[fastpath.KEEP_SWITCH] = "1" if keep else "0"
    out: dict[str, float] = {}
    loop_line: list[str] = []
    rfd, wfd = os.pipe()

    def trace() -> None:
        tracer = Tracer(lambda _: None, print, traced_names(None), stoploop=c_loop, placement=placement)
        tracer.open_filter = OpenFilter.build(prefixes)
        tracer.close_events = exit_stops  # the default rules have no rule on close
        prof = cProfile.Profile() if profile else None
        os.dup2(wfd, 1)  # the loop's figures line, on a pipe (the launcher inherits fd 1)
        tracer.launch([str(loops), "open", str(n)])
        tracer.release()
        before = resource.getrusage(resource.RUSAGE_THREAD)
        if prof is not None:
            prof.runcall(tracer.run)
        else:
            tracer.run()
        after = resource.getrusage(resource.RUSAGE_THREAD)
        out["stops"] = tracer.stops
        out["cpu"] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e9
        out["nvcsw"] = after.ru_nvcsw - before.ru_nvcsw
        out["nivcsw"] = after.ru_nivcsw - before.ru_nivcsw
        if tracer.loop is not None:
            got = tracer.loop.placement()
            out["moves"], out["held"] = got.moves, got.held
        if prof is not None:
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
            print(text.getvalue(), file=sys.stderr)

    saved = os.dup(1)
    try:
        thread = threading.Thread(target=trace)
        thread.start()
        thread.join()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(wfd)
    with os.fdopen(rfd) as pipe:
        loop_line = [line for line in pipe.read().splitlines() if line.startswith("loop ")]
    if not loop_line:
        raise RuntimeError("the loop printed no figures")
    loop_cpu = float(loop_line[0].split()[2])
    return (out["stops"] / n, loop_cpu, out["cpu"] / n, out["nvcsw"] / n, out["nivcsw"] / n,
            out.get("moves", 0.0), out.get("held", 0.0) / n)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ptrace_stops")
    p.add_argument("--open", type=int, default=20_000, help="open/read/close iterations per run")
    p.add_argument("--repeat", type=int, default=3, help="runs per row (the median is reported)")
    p.add_argument("--profile", action="store_true", help="cProfile the Python loop's runs (slows them)")
    args = p.parse_args(argv)
    if not fastpath.BUILT:
        print("bench.ptrace_stops: the C stop loop is not built (pip install -e .)", file=sys.stderr)
        return 1
    prefixes = _prefixes()
    print(f"machine before: {machine_state()}")
    runs: dict[str, list[Row]] = {"bare": [], "C loop": [], "C, exit stops": [], "C, per wake-up": [],
                                  "C, no placement": [], "Python loop": []}
    with tempfile.TemporaryDirectory() as tmp:
        loops = build(Path(tmp))
        for _ in range(args.repeat):
            bare = subprocess.run([str(loops), "open", str(args.open)], capture_output=True, text=True,
                                  check=True).stdout.split()
            runs["bare"].append((0.0, float(bare[2]), 0.0, 0.0, 0.0, 0.0, 0.0))
            runs["C loop"].append(one(loops, args.open, True, prefixes, False))
            runs["C, exit stops"].append(one(loops, args.open, True, prefixes, False, exit_stops=True))
            runs["C, per wake-up"].append(one(loops, args.open, True, prefixes, False, keep=False))
            runs["C, no placement"].append(one(loops, args.open, True, prefixes, False, placement=False))
            runs["Python loop"].append(one(loops, args.open, False, prefixes, args.profile))
    print(f"machine after: {machine_state()}")
    print(f"{'open/read/close':16} {'stops/it':>8} {'loop CPU ns/it':>14} {'x bare':>7} {'tracer CPU ns/it':>16} "
          f"{'tracer vol. cs/it':>17} {'invol. cs/it':>12} {'moves':>5} {'held/it':>7}")
    bare_cpu = statistics.median(r[1] for r in runs["bare"])
    for name, rows in runs.items():
        med = [statistics.median(r[i] for r in rows) for i in range(7)]
        print(f"{name:16} {med[0]:8.2f} {med[1]:14.0f} {med[1] / bare_cpu:7.2f} {med[2]:16.0f} {med[3]:17.2f} "
              f"{med[4]:12.2f} {med[5]:5.0f} {med[6]:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
