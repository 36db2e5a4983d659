"""Where the store's CPU goes in the "publish until ready to send" row, thread by thread and step by step.

`python -m bench.server_throughput --store-only` gives the row's rate and the process's CPU per alert; this
splits them. The same run as that row (50,000 alerts published by `Hub.publish`, then waited for until durable;
without a store the first reader's conversion, made here in the publishing thread), store off and on in
interleaved rounds, printing per round:
- each thread's CPU per alert, from /proc/self/task/TID/schedstat (what the kernel ran it for, in ns), and its
  context switches: the publishing thread, the event loop, the store's writer and its I/O thread;
- the store's steps, timed with the calling thread's CPU clock (two clock reads per call, a few per commit):
  the writer's conversion (`_make_wires`), its drains, and in the I/O thread the record's encoding, its
  `pwritev`, the whole append and the whole commit (the SQLite index commit is `_write` less `append`).

`pwritev` is the step that moves with the minute on this VM (bench/RESULTS.md, "storeahead (session 7)"): new
page-cache pages cost a host fault when the host has taken the guest's free pages back. Run: python -m
bench.store_ready_split [--rounds N].
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.server_store import until_ready
from bench.server_throughput import Bench, make_alert
from falconet.server import hub as hub_module
from falconet.server import store as store_module
from falconet.server import store_data

N = 50_000
STEPS: dict[str, float] = defaultdict(float)
"""Thread CPU seconds per step label, this round."""


def _timed(owner: Any, name: str, label: str) -> None:
    fn: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            STEPS[label] += time.thread_time() - t0

    setattr(owner, name, timed)


def _install_timers() -> None:
    _timed(store_module, "_make_wires", "writer: conversion")
    _timed(store_module, "_convert", "writer: conversion beside the commit")
    _timed(hub_module.Hub, "drain_unsynced", "writer: drain")
    _timed(store_data, "encode_record", "io: encoding")
    _timed(store_data, "_writev_all", "io: pwritev")
    _timed(store_data.DataFiles, "append", "io: append")
    _timed(store_module.AlertStore, "_write", "io: append + index commit")
    _timed(store_module.AlertStore, "_commit", "io: whole commit")


def _threads() -> dict[str, tuple[str, int, int]]:
    """tid -> (thread name, ns on CPU, context switches)."""
    names = {str(t.native_id): re.sub(r"(_\d+|-\d+.*)$", "", t.name) for t in threading.enumerate()}
    out: dict[str, tuple[str, int, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/self/task/{tid}/status") as f:
                status = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        switches = sum(int(m) for m in re.findall(r"ctxt_switches:\s+(\d+)", status))
        out[tid] = (names.get(tid, "other"), ns, switches)
    return out


def one_round(bench: Bench, store: bool) -> float:
    """One run of the row; prints its split and returns the process's CPU µs per alert."""
    server, _, _ = bench.falconet(retention=N, store=store)
    alerts = [make_alert(i) for i in range(N)]
    STEPS.clear()
    before = _threads()
    seconds, cpu_s = until_ready(bench, server, store, alerts)
    cpu = cpu_s / N * 1e6
    per: dict[str, float] = defaultdict(float)
    switches: dict[str, int] = defaultdict(int)
    for tid, (name, ns, cs) in _threads().items():
        _, ns0, cs0 = before.get(tid, (name, 0, 0))
        per[name] += (ns - ns0) / N / 1000
        switches[name] += cs - cs0
    if server.store is not None and server.store.failures:  # e.g. a full disk: the row would measure memory only
        print(f"the store FAILED in this round, its figures are not the store's: {server.store.last_error}")
    bench.stop(server)
    threads = ", ".join(f"{k} {v:.2f} ({switches[k]} cs)" for k, v in sorted(per.items()) if v >= 0.005)
    steps = ", ".join(f"{k} {v / N * 1e6:.2f}" for k, v in STEPS.items())
    print(f"store {'on ' if store else 'off'}: {N / seconds:9,.0f} alerts/s, CPU {cpu:5.2f} µs/alert; threads: {threads}",
          flush=True)
    if steps:
        print(f"           steps (µs/alert): {steps}", flush=True)
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved off/on rounds")
    args = parser.parse_args(argv)
    _install_timers()
    bench = Bench(True)
    cpu: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(args.rounds):
            for store in (False, True):
                cpu[store].append(one_round(bench, store))
    finally:
        bench.close()
    off, on = min(cpu[False]), min(cpu[True])
    print(f"least CPU per alert: off {off:.2f}, on {on:.2f} µs (off/on {off / on:.3f}); load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
