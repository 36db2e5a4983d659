"""Where one core's time goes for candidate events: ns per event in each stage of sensor -> engine.

Candidate events are ones that reach the engine: reads of /etc/shadow by a program named unix_chkpwd (a copy of
bench/daemon_loops.c: the default rules trust it, so nothing is raised), which pass the kernel's open filter and
user space's open gate as the daemon sets them (the bench checks that every open is delivered). A C generator
on core 0 opens and closes that file as fast as it can; this process, pinned to core 1, runs the daemon's
per-event path with a clock around each stage:

- kernel to user space: `Sensor.consume_batch`, i.e. walking the record headers in the ring buffer's memory
  map and copying the batch out in one piece (sensor.ringbuf; the probe's own cost is paid on the generator's
  core; see bench.daemon_overhead);
- decode: `record.decode` of each record of the batch, standalone (what decoding every record costs);
- state/enrich: `Enricher.feed_batch` minus that decode time: process and fd tables, the Event object.
  feed_batch decodes inline, and an undelivered close whose task's identity is unchanged gets no Record at
  all, so the split of the two rows is an estimate (decode over-counted, state under-counted by as much);
  their sum, the feed_batch row, is measured;
- engine: `Engine.process` of each delivered event (the default rules; no alert is raised by these opens).

Each open is two records (openat, and the close the fd table needs) and one delivered event; the figures are
per delivered event (both records' cost), and the implied ceiling is 1e9 / their sum. Each stage is timed in
wall time and in the consumer thread's CPU time: on a machine others load, wall time also counts the turns the
scheduler gave them, so the CPU column is the one to compare across runs there. The daemon adds queue
hand-offs and metrics on top (bench.daemon_latency's throughput measures the whole daemon).

Run: python -m bench.pipeline_stages [--seconds S]   (as root)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._daemon_common import CANDIDATE_PATH, build_loops, machine_state, trusted_reader
from falconet.rules import DEFAULT_RULES


@dataclass(slots=True)
class Stages:
    records: int = 0
    events: int = 0
    consume_ns: int = 0
    decode_ns: int = 0
    feed_ns: int = 0
    engine_ns: int = 0
    alerts: int = 0
    # the same stages in this thread's CPU time: on a machine others load, wall time counts their turns too
    cpu: list[int] = field(default_factory=lambda: [0, 0, 0, 0])


def measure(reader: Path, path: str, seconds: float) -> tuple[Stages, int, int]:
    """(stage totals, opens the generator made, kernel drops)."""
    from falconet.rules.engine import Engine
    from falconet.sensor import Sensor, SensorConfig
    from falconet.sensor.record import RecordError, decode
    from falconet.sensor.sensor import POLL_BATCH

    engine = Engine.from_files([str(DEFAULT_RULES)])
    prefixes = engine.open_path_prefixes()
    if prefixes is None or not any(path.startswith(p) for p in prefixes):
        raise SystemExit(f"{path} is not a candidate under the default rules' open filter: {prefixes}")
    types = engine.event_types
    sensor = Sensor(SensorConfig(ringbuf_bytes=256 << 20, syscalls=set(types) if types is not None else None,
                                 open_prefixes=prefixes))  # fmt: skip
    gate = engine.open_gate()  # user space's gates, as the daemon sets them (server/source_ebpf.py)
    sensor.enricher.open_gate, sensor.enricher.fd_type_gate = gate.may_match, gate.fd_type_may_match
    sensor.start()
    feed, process = sensor.enricher.feed_batch, engine.process
    st = Stages()
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    try:
        gen = subprocess.Popen(["taskset", "-c", "0", str(reader), "paced", path, "1000000000", str(seconds)],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
        idle_rounds = 0
        while gen.poll() is None or idle_rounds < 3:
            c0, t0 = cpu(), clock()
            batch = sensor.consume_batch(POLL_BATCH)
            t1, c1 = clock(), cpu()
            if not batch.consumed:
                idle_rounds += gen.poll() is not None
                time.sleep(0.001)  # nothing yet: let the generator's records arrive
                continue
            data = batch.data
            for off, n in zip(batch.offsets, batch.lengths, strict=True):
                try:
                    decode(data, off, n)
                except RecordError:
                    pass
            t2, c2 = clock(), cpu()
            events, _errors = feed(data, batch.offsets, batch.lengths)
            t3, c3 = clock(), cpu()
            for ev in events:
                st.alerts += len(process(ev))
            t4, c4 = clock(), cpu()
            for i, ns in enumerate((c1 - c0, c2 - c1, c3 - c2, c4 - c3)):
                st.cpu[i] += ns
            st.records += len(batch)
            st.events += len(events)
            st.consume_ns += t1 - t0
            st.decode_ns += t2 - t1
            st.feed_ns += t3 - t2
            st.engine_ns += t4 - t3
        out, _ = gen.communicate()
        drops = sensor.stats().kernel_drops
    finally:
        sensor.close()
    return st, int(out), drops


def report(st: Stages, opens: int, drops: int, seconds: float) -> list[str]:
    per = max(st.events, 1)
    names = ["kernel to user space (ring walk + copy)", "decode", "state/enrich (feed minus decode)", "engine"]
    wall = [st.consume_ns, st.decode_ns, st.feed_ns - st.decode_ns, st.engine_ns]
    cpu = [st.cpu[0], st.cpu[1], st.cpu[2] - st.cpu[1], st.cpu[3]]
    lines = [f"generator: {opens:,} candidate opens in {seconds:g} s on core 0; consumer on core 1 took "
             f"{st.records:,} records, {st.events:,} events delivered, {st.alerts} alerts, kernel drops {drops}",
             f"{'stage':<40} {'wall ns/event':>13} {'CPU ns/event':>13} {'CPU ns/record':>14}"]
    for name, w, c in zip(names, wall, cpu, strict=True):
        lines.append(f"{name:<40} {w / per:>13,.0f} {c / per:>13,.0f} {c / max(st.records, 1):>14,.0f}")
    lines.append(f"{'  (decode + state/enrich: feed_batch)':<40} {st.feed_ns / per:>13,.0f} {st.cpu[2] / per:>13,.0f} "
                 f"{st.cpu[2] / max(st.records, 1):>14,.0f}")
    tw, tc = sum(wall) / per, sum(cpu) / per
    lines.append(f"{'sum':<40} {tw:>13,.0f} {tc:>13,.0f}   -> at most {1e9 / tw:,.0f} candidate events/s on one "
                 f"core by wall time, {1e9 / tc:,.0f} by CPU time (user space only)")
    return lines


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline_stages")
    p.add_argument("--seconds", type=float, default=2.0, help="how long the generator runs")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.pipeline_stages needs root (BPF)", file=sys.stderr)
        return 1
    print(f"machine before: {machine_state()}")
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        st, opens, drops = measure(trusted_reader(build_loops(Path(tmp))), CANDIDATE_PATH, args.seconds)
    if drops == 0 and st.events < opens:  # with drops, the missing opens may be the dropped ones
        print(f"  only {st.events:,} of {opens:,} opens reached the engine: not all were candidates", file=sys.stderr)
    for line in report(st, opens, drops, args.seconds):
        print("  " + line)
    print(f"machine after: {machine_state()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
