"""Where the daemon's own user-space CPU goes, per kind of record: a real workload recorded once, replayed offline.

Issue 12 item 3 says what is left is the daemon's CPU per delivered event (the exec loop at 1.26x the floor, the
xz build at 1.23x bare wall with the daemon using about 5 s of CPU on the build's two cores). A profiler on the
live daemon mixes in its waits and the load of the moment, so this bench splits the two halves:

- `record`: the live sensor, set up as the daemon sets it up for a rules file (event types, open filter, data
  buffers, environment, event gates: server.pipeline.apply_open_filter), takes every record that reaches user
  space while a workload runs (default: bench.build_workload's pinned xz-utils tree, `./configure && make -j2`
  below /tmp) and writes them to a file (the length-prefixed format of tests/sensor/replay_records.py);
- `replay`: feeds that file through the daemon's per-event path in ring-buffer-sized batches (Enricher.feed_batch,
  then Engine.process of each delivered event), `--rounds` times, timing each batch by the thread's CPU clock,
  and prints: records by kind (fork, exit, exec arguments, each syscall; delivered or state only), the CPU of
  the enricher and of the engine per record and per delivered event, the share of each kind (from a second
  pass that feeds each record alone, so a kind's cost is its own), and with --profile the top functions
  (cProfile). The replay is deterministic: two trees replay the same file, and their ratio is the comparison.

Run (as root for `record`):
  python -m bench.userspace_profile record --out /tmp/build.rec [--rules default|upstream|FILE] [-- CMD...]
  python -m bench.userspace_profile replay /tmp/build.rec [--rules ...] [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gzip
import pstats
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._daemon_common import UPSTREAM_STABLE, machine_state
from falconet.rules import DEFAULT_RULES

_LEN = struct.Struct("<I")
BATCH = 4096  # sensor.POLL_BATCH: a poll takes at most this many records
GATE = [True]  # the user-space open gate on, as the daemon serves (--no-gate: off); a tree without it has none


def rules_path(name: str) -> Path:
    return {"default": DEFAULT_RULES, "upstream": UPSTREAM_STABLE}.get(name, Path(name))


def save(records: list[bytes], path: Path) -> None:
    path.write_bytes(gzip.compress(b"".join(_LEN.pack(len(r)) + r for r in records), compresslevel=1))


def load(path: Path) -> list[bytes]:
    data = gzip.decompress(path.read_bytes())
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def _engine(rules: Path) -> object:
    from falconet.rules.engine import Engine

    return Engine.from_files([str(rules)])


@contextmanager
def _build_tree() -> Iterator[tuple[list[list[str]], Path]]:
    """bench.build_workload's pinned xz-utils tree, fresh below /tmp: (commands, directory)."""
    from bench.build_workload import DEFAULT_CACHE, PACKAGE, extract, fetch

    work = Path(tempfile.mkdtemp(prefix="falconet-profile-", dir="/tmp"))
    try:
        tree = extract(fetch(PACKAGE, DEFAULT_CACHE), work, PACKAGE.tree)
        yield [list(PACKAGE.configure), ["make", "-j2"]], tree
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record(rules: Path, out: Path, command: list[str]) -> None:
    """Runs the workload under a sensor set up as the daemon's, keeping every record user space receives."""
    from bench.build_workload import build_env
    from falconet.rules.engine import Engine
    from falconet.server.pipeline import apply_open_filter
    from falconet.server.source_ebpf import SensorSource

    engine = Engine.from_files([str(rules)])
    source = SensorSource(256 << 20, engine.event_types)
    sensor = source._sensor  # noqa: SLF001 - the bench reads the raw batches the daemon's poll would enrich
    source.start()
    apply_open_filter(source, engine, True, lambda line: print(line, file=sys.stderr))
    raw: list[bytes] = []
    roots: set[int] = set()  # the workload's processes: the sensor sees the whole machine, others' work too

    def run(cmd: list[str], cwd: Path | None) -> None:
        proc = subprocess.Popen(cmd, cwd=cwd, env=build_env(), stdout=subprocess.DEVNULL)
        roots.add(proc.pid)
        while proc.poll() is None:
            raw.extend(sensor.consume_raw())
            time.sleep(0.002)
        if proc.returncode:
            raise SystemExit(f"{cmd} failed ({proc.returncode})")

    try:
        if command:
            run(command, None)
        else:
            with _build_tree() as (commands, where):
                for cmd in commands:
                    run(cmd, where)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            raw.extend(sensor.consume_raw())
            time.sleep(0.01)
        drops = sensor.stats().kernel_drops
    finally:
        source.close()
    kept = _tree_only(raw, roots)
    save(kept, out)
    print(f"{len(kept):,} of {len(raw):,} records ({sum(map(len, kept)):,} bytes) in {out}; kernel drops {drops}")


def _tree_only(raw: list[bytes], roots: set[int]) -> list[bytes]:
    """The records of the workload's process tree (its roots and everything they forked), in order."""
    from falconet.sensor.record import REC_FORK, decode

    tree = set(roots)
    kept: list[bytes] = []
    for data in raw:
        rec = decode(data)
        if rec.tgid in tree:
            kept.append(data)
            if rec.kind == REC_FORK:
                tree.add(rec.args[0])
    return kept


def _kind_of(data: bytes) -> str:
    from falconet.sensor import syscalls as sc
    from falconet.sensor.record import REC_EXECARGS, REC_EXECENV, REC_EXIT, REC_FORK, REC_SYSCALL, decode

    rec = decode(data)
    if rec.kind == REC_SYSCALL:
        spec = sc.BY_NR.get(rec.nr)
        return spec.name if spec is not None else f"nr {rec.nr}"
    return {REC_EXECARGS: "(exec arguments)", REC_EXECENV: "(exec environment)", REC_FORK: "(fork)",
            REC_EXIT: "(exit)"}.get(rec.kind, f"(kind {rec.kind})")


def _batches(records: list[bytes]) -> list[tuple[bytes, list[int], list[int]]]:
    out = []
    for i in range(0, len(records), BATCH):
        chunk = records[i : i + BATCH]
        offsets, lengths, pos = [], [], 0
        for r in chunk:
            offsets.append(pos)
            lengths.append(len(r))
            pos += len(r)
        out.append((b"".join(chunk), offsets, lengths))
    return out


def _fresh(rules: Path) -> tuple[Callable[[bytes, list[int], list[int]], tuple[list[object], int]],
                                 Callable[[object], list[object]]]:
    from falconet.rules.engine import Engine
    from falconet.sensor.enricher import Enricher

    engine = Engine.from_files([str(rules)])
    types = engine.event_types
    enricher = Enricher(wanted=set(types) if types is not None else None)
    if GATE[0] and hasattr(engine, "open_gate") and engine.open_path_prefixes() is not None:
        gate = engine.open_gate()  # as the daemon sets it, with the open filter on
        enricher.open_gate = gate.may_match
        enricher.fd_type_gate = getattr(gate, "fd_type_may_match", None)
    engine.warm()
    return enricher.feed_batch, engine.process  # type: ignore[return-value]


def replay_once(rules: Path, batches: list[tuple[bytes, list[int], list[int]]]) -> tuple[int, int, int, int]:
    """(enricher CPU ns, engine CPU ns, delivered events, alerts) of one pass over the whole file."""
    feed, process = _fresh(rules)
    cpu = time.thread_time_ns
    feed_ns = engine_ns = events = alerts = 0
    for data, offsets, lengths in batches:
        c0 = cpu()
        evs, _errors = feed(data, offsets, lengths)
        c1 = cpu()
        for ev in evs:
            alerts += len(process(ev))
        c2 = cpu()
        feed_ns += c1 - c0
        engine_ns += c2 - c1
        events += len(evs)
    return feed_ns, engine_ns, events, alerts


def by_kind(rules: Path, records: list[bytes]) -> dict[str, tuple[int, int, int, int]]:
    """kind -> (records, delivered events, enricher ns, engine ns), each record fed alone (wall clock: a thread
    CPU clock is too coarse for one record; the sum is compared with the batched CPU figure)."""
    feed, process = _fresh(rules)
    clock = time.perf_counter_ns
    acc: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
    one = [0]
    for data in records:
        kind = _kind_of(data)
        t0 = clock()
        evs, _errors = feed(data, one, [len(data)])
        t1 = clock()
        for ev in evs:
            process(ev)
        t2 = clock()
        row = acc[kind]
        row[0] += 1
        row[1] += len(evs)
        row[2] += t1 - t0
        row[3] += t2 - t1
    return {k: (v[0], v[1], v[2], v[3]) for k, v in acc.items()}


def daemon_gc() -> None:
    """The collector as the daemon of this tree serves with it (server/heap.py: start-up heap frozen, full
    collections spaced out), so that a replay costs what the daemon's engine thread pays; a tree without it
    keeps CPython's default."""
    try:
        from falconet.server import heap
    except ImportError:
        return
    heap.settle()


def cut(records: list[bytes], rules: Path) -> list[bytes]:
    """The records the kernel still sends with the record cuts on (sensor/recut.py's model of probe_recut.h,
    for these rules as the daemon serves them), from a recording made without them."""
    from falconet.sensor import recut
    from falconet.sensor.record import REC_SYSCALL, decode

    engine = _engine(rules)
    types = engine.event_types  # type: ignore[attr-defined]
    cuts = recut.compute(types, engine.event_gates(sorted(types or ())) if types is not None else None)  # type: ignore[attr-defined]
    out = []
    for data in records:
        rec = decode(data)
        c = cuts.get(rec.nr) if rec.kind == REC_SYSCALL else None
        if c is None or c.keeps(rec.res, rec.args):
            out.append(data)
    return out


def replay(path: Path, rules: Path, rounds: int, profile: bool, summary: bool, cuts: bool = False) -> None:
    records = load(path)
    if cuts:
        records = cut(records, rules)
    batches = _batches(records)
    daemon_gc()
    if summary:  # one line for bench.userspace_compare: the median CPU of each stage, in seconds
        runs = [replay_once(rules, batches) for _ in range(rounds)]
        print(f"SUMMARY {statistics.median(r[0] for r in runs) / 1e9:.4f} {statistics.median(r[1] for r in runs) / 1e9:.4f}"
              f" {runs[0][2]} {runs[0][3]}")
        return
    print(f"{path}: {len(records):,} records in {len(batches)} batches of up to {BATCH}; rules {rules}")
    print(machine_state())
    runs = [replay_once(rules, batches) for _ in range(rounds)]
    feed_ns = statistics.median(r[0] for r in runs)
    engine_ns = statistics.median(r[1] for r in runs)
    events, alerts = runs[0][2], runs[0][3]
    n = len(records)
    print(f"delivered events {events:,}, alerts {alerts:,} (every round the same: "
          f"{len({r[2:] for r in runs}) == 1})")
    print(f"median of {rounds} rounds, thread CPU: enricher {feed_ns / 1e9:.3f} s ({feed_ns / n:,.0f} ns/record, "
          f"{feed_ns / max(events, 1):,.0f} ns/event), engine {engine_ns / 1e9:.3f} s "
          f"({engine_ns / max(events, 1):,.0f} ns/event), total {(feed_ns + engine_ns) / 1e9:.3f} s")
    kinds = by_kind(rules, records)
    total = sum(v[2] + v[3] for v in kinds.values()) or 1
    print(f"\n{'kind':<22} {'records':>9} {'events':>9} {'enrich ns/rec':>13} {'engine ns/ev':>12} {'share':>6}")
    for kind, (count, evs, f_ns, e_ns) in sorted(kinds.items(), key=lambda kv: -(kv[1][2] + kv[1][3]))[:25]:
        per_event = f"{e_ns / evs:>12,.0f}" if evs else f"{'-':>12}"
        print(f"{kind:<22} {count:>9,} {evs:>9,} {f_ns / count:>13,.0f} {per_event} "
              f"{100 * (f_ns + e_ns) / total:>5.1f}%")
    if profile:
        prof = cProfile.Profile()
        feed, process = _fresh(rules)

        def work() -> None:
            for data, offsets, lengths in batches:
                for ev in feed(data, offsets, lengths)[0]:
                    process(ev)

        prof.runcall(work)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.userspace_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--rules", default="default")
    rec.add_argument("command", nargs="*", help="the workload (default: the xz-utils configure && make -j2)")
    rep = sub.add_parser("replay")
    rep.add_argument("file", type=Path)
    rep.add_argument("--rules", default="default")
    rep.add_argument("--rounds", type=int, default=5)
    rep.add_argument("--profile", action="store_true")
    rep.add_argument("--summary", action="store_true", help="print only the median CPU seconds per stage")
    rep.add_argument("--no-gate", action="store_true", help="without the user-space open gate (rules/open_gate.py)")
    rep.add_argument("--cuts", action="store_true",
                     help="only the records the kernel still sends with the record cuts on (a recording made "
                          "without them: sensor/recut.py's model decides)")
    args = p.parse_args(argv)
    if args.mode == "record":
        record(rules_path(args.rules), args.out, args.command)
    else:
        GATE[0] = not args.no_gate
        replay(args.file, rules_path(args.rules), args.rounds, args.profile, args.summary, args.cuts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
