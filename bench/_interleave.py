"""Interleaved repeats and paired ratios, shared by the overhead benchmarks (bench.sensor_overhead,
bench.daemon_overhead, bench.build_workload).

Why this shape: issue 12's targets are ratios "against the floor and against bare in the same run, median of at
least 5 interleaved repeats". On a shared machine the load drifts over minutes, so measuring one row's five
repeats back to back and then the next row's compares different moments. Here every repeat runs every row once
(the starting row rotates from one repeat to the next, so no row always follows, say, a daemon's shutdown), and a
row's ratio is the median over repeats of row/reference *within the same repeat*: each ratio pairs two figures
taken a few seconds apart.

CPU time: the loop's own process's user + system time (the kernel's rusage of the finished child, which includes
its waited-for children: the exec loop's /bin/true processes). A BPF probe runs inside the syscalls it traces, so
its work is system time of the traced process; time spent waiting for a core is not counted, which makes the CPU
column far steadier than the wall clock when other tenants load the machine.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

Row = tuple[str, Callable[[], AbstractContextManager[object]]]
"""A row's label and a factory of the context (nothing, a no-op probe, a daemon...) the workload runs under."""

Figures = dict[str, float]
"""One repeat's figures for one row, by column name (e.g. "open", "open_cpu")."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall and CPU time of one measured run, in ns per iteration (or per run, for n=1)."""

    wall_ns: float
    cpu_ns: float


def timed_child(cmd: Sequence[str], *, cwd: Path | None = None, per: int = 1,
                env: dict[str, str] | None = None) -> tuple[Timing, str]:
    """Runs `cmd` to completion; its wall time (monotonic, measured here) and the CPU time of it and its waited-for
    descendants, divided by `per`, and its stdout. Raises CalledProcessError (with the output) if it fails."""
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic_ns()
    done = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic_ns() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, list(cmd), done.stdout, done.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall / per, cpu * 1e9 / per), done.stdout


def time_loop(exe: Path, kind: str, n: int) -> Timing:
    """One run of bench/daemon_loops.c's `kind` loop of n iterations: the wall time as the loop timed itself
    (no process start-up in it) and the CPU time of the loop's process and its children, per iteration."""
    t, out = timed_child([str(exe), kind, str(n)], per=n)
    return Timing(float(out), t.cpu_ns)


def interleaved(rows: Sequence[Row], repeat: int,
                measure: Callable[[str, object], Figures]) -> dict[str, list[Figures]]:
    """Runs every row once per repeat, in rotating order, `measure(label, value)` inside the row's context
    (`value` is what the context yielded, e.g. the running daemon); returns each row's figures in repeat order."""
    results: dict[str, list[Figures]] = {label: [] for label, _ in rows}
    for rep in range(repeat):
        start = rep % len(rows)
        for label, ctx in [*rows[start:], *rows[:start]]:
            print(f"  [{rep + 1}/{repeat}] {label}", flush=True)
            with ctx() as value:
                results[label].append(measure(label, value))
    return results


def median_of(runs: list[Figures], column: str) -> float:
    return statistics.median(r[column] for r in runs)


def paired_ratio(runs: list[Figures], ref: list[Figures], column: str) -> float:
    """The median over repeats of this row's figure divided by the reference row's in the same repeat."""
    return statistics.median(r[column] / b[column] for r, b in zip(runs, ref, strict=True))


def spread(runs: list[Figures], column: str) -> str:
    """Lowest and highest of the repeats, as a percentage of the median (how far to trust the median)."""
    values = [r[column] for r in runs]
    mid = statistics.median(values)
    return f"{100 * (min(values) / mid - 1):+.0f}/{100 * (max(values) / mid - 1):+.0f}%"


def ratio_table(title: str, results: dict[str, list[Figures]], column: str, unit: str, scale: float,
                bare: str, floor: str | None) -> list[str]:
    """A table for one column: median wall figure and its spread, then the paired ratios of the wall and the CPU
    figures (column and column + "_cpu") against bare and against the floor."""
    lines = [title]
    head = f"{'row':52} {unit:>11} {'spread':>9} {'vs bare':>8}"
    head += f" {'vs floor':>8}" if floor else ""
    head += f" {'cpu ' + unit:>12} {'cpu/bare':>8}" + (f" {'cpu/floor':>9}" if floor else "")
    lines.append(head)
    cpu = column + "_cpu"
    for label, runs in results.items():
        line = (f"{label:52} {median_of(runs, column) / scale:11,.1f} {spread(runs, column):>9} "
                f"{paired_ratio(runs, results[bare], column):8.3f}")
        if floor:
            line += f" {paired_ratio(runs, results[floor], column):8.3f}"
        if cpu in runs[0]:
            line += (f" {median_of(runs, cpu) / scale:12,.1f} {paired_ratio(runs, results[bare], cpu):8.3f}"
                     + (f" {paired_ratio(runs, results[floor], cpu):9.3f}" if floor else ""))
        lines.append(line)
    return lines


def verdict(results: dict[str, list[Figures]], row: str, ref: str, column: str, target: float,
            what: str) -> str:
    """One target's line: the paired median ratio by wall time (what the target is about) and by CPU time."""
    wall = paired_ratio(results[row], results[ref], column)
    cpu = paired_ratio(results[row], results[ref], column + "_cpu")
    state = "met" if wall <= target else "MISSED"
    return (f"target {what}: at most {target:.2f}x; wall {wall:.3f}x -> {state} "
            f"(CPU time {cpu:.3f}x: {'met' if cpu <= target else 'missed'})")
