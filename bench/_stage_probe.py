"""The live daemon's engine-thread CPU split by stage, for bench.build_workload --stages.

A profiler on the live daemon mixes its waits with its work, and a replay (bench.userspace_profile) runs hot in
the caches and in big batches, so neither says where the live engine thread's CPU goes while a build shares
the two cores with it. This wrapper runs `falconet` in the daemon's own process with thin timers (the thread's
CPU clock) around each stage of the engine thread's loop: the ring-buffer wait (epoll), the ring-buffer read,
the enricher (decode, tables, Events) and the pipeline (rule engine and alert emission). What the loop does
between them (the poll's bookkeeping, the sweep, the once-a-second report) is the engine thread's total minus
these. On SIGUSR1 the wrapper writes the running totals as JSON to $FALCONET_STAGE_LOG, so a bench can take
them before and after a workload; a timer costs two clock reads per call, a few per poll.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, ParamSpec, TypeVar

LOG_ENV = "FALCONET_STAGE_LOG"
STAGES = ("wait", "read", "enrich", "engine")
P = ParamSpec("P")
R = TypeVar("R")


def _timed(totals: dict[str, int], stage: str, fn: Callable[P, R]) -> Callable[P, R]:
    cpu = time.thread_time_ns

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        t0 = cpu()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[stage] += cpu() - t0
            totals[stage + "_calls"] += 1

    return wrapper


def install(totals: dict[str, int]) -> None:
    """The timers, in this process, before the daemon starts."""
    from falconet.sensor.enricher import Enricher
    from falconet.sensor.ringbuf import RingBuffer
    from falconet.server import pipeline

    for stage in STAGES:
        totals.setdefault(stage, 0)
        totals.setdefault(stage + "_calls", 0)
    totals.setdefault("engine_thread", 0)
    totals.setdefault("records", 0)
    totals.setdefault("gated_opens", 0)
    setattr(RingBuffer, "wait", _timed(totals, "wait", RingBuffer.wait))
    setattr(RingBuffer, "read", _timed(totals, "read", RingBuffer.read))
    feed = _timed(totals, "enrich", Enricher.feed_batch)

    def feed_batch(self: Enricher, *args: Any) -> Any:
        try:
            return feed(self, *args)
        finally:  # the opens the user-space gate kept from becoming Events (a tree without the gate: 0)
            totals["gated_opens"] = int(getattr(self, "gated_opens", 0))
            totals["records"] += len(args[1])

    setattr(Enricher, "feed_batch", feed_batch)
    setattr(pipeline.Pipeline, "process", _timed(totals, "engine", pipeline.Pipeline.process))
    loop = pipeline.engine_loop
    engine_tid: list[int] = []

    def engine_loop(*args: object) -> None:
        engine_tid.append(threading.get_native_id())
        loop(*args)  # type: ignore[arg-type]

    setattr(pipeline, "engine_loop", engine_loop)
    # server.daemon imported engine_loop by name: point it at the wrapper too
    from falconet.server import daemon

    setattr(daemon, "engine_loop", engine_loop)

    def dump(_sig: int, _frame: FrameType | None) -> None:
        out = dict(totals)
        if engine_tid:
            try:
                fields = Path(f"/proc/self/task/{engine_tid[0]}/stat").read_text().rsplit(")", 1)[1].split()
                tick = os.sysconf("SC_CLK_TCK")
                out["engine_thread"] = int((int(fields[11]) + int(fields[12])) * 1e9 / tick)
            except OSError:
                pass
        path = Path(os.environ[LOG_ENV])
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(out))
        tmp.replace(path)

    signal.signal(signal.SIGUSR1, dump)


def as_daemon(argv: list[str]) -> int:
    from falconet.server.cli import main as falconet_main

    install({})
    return falconet_main(argv)
