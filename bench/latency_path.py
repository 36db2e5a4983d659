"""Where an alert's latency goes: timestamps along the path from the syscall to an SDK subscriber.

bench.daemon_latency gives the end-to-end figure; this one splits it. `falconet run` is started under a thin
wrapper (this module with `--as-daemon`) that records, in the daemon's own process: each published alert's
sequence, syscall time and publish time (`Pipeline.emit`), each batch the batched stream hands to gRPC (time, and
how far its reader got), each commit of the alert store, and every pause of Python's cyclic garbage collector
(which stops every thread). The subscriber here notes each alert's arrival. Per alert: syscall -> published
(ring buffer, decode, engine), published -> stream (hub, the store's commit when it is on, the event loop),
stream -> arrival (gRPC, the client). Then a timeline in 100 ms slices of syscall time: the worst latency in each
and the pauses longer than 2 ms that began in it, which is how session 5 found the stall (bench/RESULTS.md,
"latloss"). The wrapper's own cost is a list append per alert and per batch: figures are for finding causes,
not for judging targets.

Each slow alert is also listed with its hops (syscall -> engine batch -> published -> stream -> arrival) and every
pause over 2 ms on either side while it was on its way: the collector's (daemon-gcN, client-gcN) and a sampler
thread's late wake-ups (daemon-late, client-late: the GIL held by another thread, or the process off a CPU; the
CPU time the process used meanwhile tells which), with what every other thread was doing then.

Run (as root): python -m bench.latency_path [--store off|on] [--rate 10000] [--seconds 3] [--repeat N]
  [--subscriber-gc frozen|default]
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from bench._daemon_common import Daemon, build_loops, machine_state
from bench.daemon_latency import Tally, generate, store_config, subscriber_heap, wait_subscribed
from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.rules import DEFAULT_RULES

LOG_ENV = "FALCONET_LATENCY_PATH_LOG"
Row = list[int | str]
CLIENT_LOG: dict[str, list[Row]] = {"pause": []}
"""This process's (the subscriber's) collector pauses and late sampler wake-ups, for the current round."""


LATE_NS = 4_000_000
"""A sampler wake-up this much later than asked for is recorded (with what every other thread was doing)."""


def _start_sampler(log: dict[str, list[Row]], side: str) -> None:
    """A thread that asks for the GIL every millisecond. When it gets it more than LATE_NS late it records the
    gap, the process's CPU time during it (near zero: the whole process was off a CPU, i.e. the machine; about
    the gap or more: some thread held the GIL) and every other thread's innermost Python frame."""

    def run() -> None:
        me = threading.get_ident()
        last, cpu = time.time_ns(), time.process_time_ns()
        while True:
            time.sleep(0.001)
            now, now_cpu = time.time_ns(), time.process_time_ns()
            if now - last - 1_000_000 > LATE_NS:
                names = {t.ident: t.name for t in threading.enumerate()}
                where = [f"{names.get(ident, ident)}:{f.f_code.co_name}@{Path(f.f_code.co_filename).name}:{f.f_lineno}"
                         for ident, f in sys._current_frames().items() if ident != me]
                log["pause"].append([last, now - last, f"{side}-late(cpu {(now_cpu - cpu) / 1e6:.0f})",
                                     "; ".join(where)])
            last, cpu = now, now_cpu

    threading.Thread(target=run, name=f"latency-path-sampler-{side}", daemon=True).start()


def _on_gc(log: dict[str, list[Row]], side: str) -> Callable[[str, dict[str, int]], None]:
    started: list[int] = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.time_ns()
        else:
            log["pause"].append([started[0], time.time_ns() - started[0], f"{side}-gc{info['generation']}",
                                 threading.current_thread().name])

    return on_gc


def _install_probes(log: dict[str, list[Row]]) -> None:
    """In the daemon's process, before it starts: the recording wrappers (see the module doc)."""
    from falconet.model.alert import Alert
    from falconet.server import pipeline, services_falconet, store, streams
    from falconet.server.hub import Reader

    gc.callbacks.append(_on_gc(log, "daemon"))
    _start_sampler(log, "daemon")
    emit = pipeline.Pipeline.emit
    process = pipeline.Pipeline.process
    batch_at: list[int] = [0]

    def timed_process(self: pipeline.Pipeline, events: Sequence[Event | AuditEvent]) -> None:
        batch_at[0] = time.time_ns()
        process(self, events)

    def timed_emit(self: pipeline.Pipeline, alert: Alert, *, internal: bool = False,
                   skip: object = None) -> None:
        emit(self, alert, internal=internal, skip=skip)  # type: ignore[arg-type]
        if alert.cursor is not None:
            log["publish"].append([alert.cursor.sequence, alert.time_ns, time.time_ns(), batch_at[0]])

    setattr(pipeline.Pipeline, "process", timed_process)
    setattr(pipeline.Pipeline, "emit", timed_emit)
    stream = streams.batch_stream  # what services_falconet imported

    async def timed_stream(hub: object, reader: Reader, *args: object, **kw: object) -> AsyncIterator[bytes]:
        async for chunk in stream(hub, reader, *args, **kw):  # type: ignore[arg-type]
            log["stream"].append([time.time_ns(), reader.next_seq])
            yield chunk

    setattr(services_falconet, "batch_stream", timed_stream)
    commit: Callable[[store.AlertStore], None] = store.AlertStore._commit

    def timed_commit(self: store.AlertStore) -> None:
        t = time.time_ns()
        commit(self)
        log["pause"].append([t, time.time_ns() - t, "commit", threading.current_thread().name])

    setattr(store.AlertStore, "_commit", timed_commit)


def as_daemon(argv: list[str]) -> int:
    """`falconet` with the probes; the log is written where $FALCONET_LATENCY_PATH_LOG says, at exit."""
    from falconet.server.cli import main as falconet_main

    log: dict[str, list[Row]] = {"pause": [], "publish": [], "stream": []}
    _install_probes(log)
    path = Path(os.environ[LOG_ENV])
    atexit.register(lambda: path.write_text(json.dumps(log)))
    return falconet_main(argv)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(log: dict[str, list[Row]], arrivals: dict[int, int]) -> list[str]:
    """The per-stage figures and the timeline (see the module doc)."""
    published = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in log["publish"]}
    streamed = sorted((int(r[1]), int(r[0])) for r in log["stream"])  # (reader's next seq, time)
    rows: list[tuple[int, int, int, int, int]] = []  # syscall, engine batch, published, streamed, arrived
    k = 0
    for seq in sorted(s for s in arrivals if s in published):
        while k < len(streamed) and streamed[k][0] <= seq:
            k += 1
        sent = streamed[k][1] if k < len(streamed) else arrivals[seq]
        syscall, pub, batch = published[seq]
        rows.append((syscall, batch, pub, sent, arrivals[seq]))
    if not rows:
        return ["no alert both published and received"]
    out = []
    for name, a, b in (("syscall -> arrival", 0, 4), ("syscall -> engine batch", 0, 1),
                       ("engine batch -> published", 1, 2), ("published -> stream", 2, 3),
                       ("stream -> arrival", 3, 4)):
        ms = [(r[b] - r[a]) / 1e6 for r in rows]
        out.append(f"{name:>22}: p50 {pct(ms, 0.5):7.2f}  p99 {pct(ms, 0.99):7.2f}  max {max(ms):7.2f} ms")
    t0 = min(r[0] for r in rows)
    worst: dict[int, float] = {}
    for r in rows:
        s = (r[0] - t0) // 100_000_000
        worst[s] = max(worst.get(s, 0.0), (r[4] - r[0]) / 1e6)
    pauses: dict[int, list[str]] = {}
    for start, dur, kind, _thread in log["pause"]:
        if int(dur) > 2_000_000 and int(start) >= t0:
            pauses.setdefault((int(start) - t0) // 100_000_000, []).append(f"{kind} {int(dur) / 1e6:.0f}")
    out.append("worst latency (ms) per 100 ms of syscall time [pauses > 2 ms begun in it, ms]:")
    cells = [f"{s / 10:.1f}s {w:.0f}" + (f" [{', '.join(pauses[s])}]" if s in pauses else "")
             for s, w in sorted(worst.items())]
    out.extend("  " + "  ".join(cells[i:i + 8]) for i in range(0, len(cells), 8))
    out.extend(slowest(rows, log["pause"]))
    kinds: dict[str, list[float]] = {}
    for start, dur, kind, _thread in log["pause"]:
        if int(start) >= t0:
            kinds.setdefault(str(kind), []).append(int(dur) / 1e6)
    for kind, durs in sorted(kinds.items()):
        out.append(f"{kind}: {len(durs)} in the step, median {statistics.median(durs):.2f} ms, longest "
                   f"{', '.join(f'{d:.1f}' for d in sorted(durs, reverse=True)[:5])} ms")
    return out


def slowest(rows: list[tuple[int, int, int, int, int]], pauses: list[Row], n: int = 5) -> list[str]:
    """The `n` slowest alerts (one per 50 ms of syscall time, so one stall shows once), each hop in ms, and
    every pause over 2 ms, either side, that overlapped the alert's way from its syscall to its arrival."""
    out = ["slowest alerts: syscall -> engine batch / -> published / -> stream / -> arrival (ms), and the pauses"
           " (> 2 ms) while they were on their way:"]
    shown: set[int] = set()
    for r in sorted(rows, key=lambda r: r[0] - r[4]):
        if len(shown) >= n:
            break
        if r[0] // 50_000_000 in shown:
            continue
        shown.add(r[0] // 50_000_000)
        hops = " / ".join(f"{(r[i + 1] - r[i]) / 1e6:.1f}" for i in range(4))
        out.append(f"  {(r[4] - r[0]) / 1e6:7.1f} ms: {hops}")
        for start, dur, kind, where in sorted(pauses, key=lambda p: int(p[0])):
            a, d = int(start), int(dur)
            if d > 2_000_000 and a < r[4] and a + d > r[0]:
                out.append(f"      {kind} {d / 1e6:.1f} ms from {(a - r[0]) / 1e6:+.1f} ms: {str(where)[:400]}")
    return out


def measure(args: argparse.Namespace) -> list[str]:
    from falconet.sdk import Client

    with tempfile.TemporaryDirectory(prefix="falconet-bench-path-") as tmp:
        loops = build_loops(Path(tmp))
        log_path = Path(tmp) / "path.json"
        os.environ[LOG_ENV] = str(log_path)
        arrivals: dict[int, int] = {}
        daemon = Daemon([DEFAULT_RULES], extra=store_config(args.store, "normal", Path(tmp)),
                        module="bench.latency_path", module_args=["--as-daemon"])
        with daemon:
            client = Client(unix_socket=daemon.socket)
            tally = Tally()
            stream = client.subscribe(start="now", batched=True)

            def consume() -> None:
                try:
                    for alert in stream:
                        now = time.time_ns()
                        tally.add(alert, now)
                        if alert.cursor is not None:
                            arrivals[alert.cursor.sequence] = now
                except Exception:  # the client is closed at the end
                    pass

            threading.Thread(target=consume, daemon=True).start()
            wait_subscribed(loops, tally)
            tag = f"falconet-latency-path-{os.getpid()}"
            done = generate(loops, args.rate, args.seconds, tag)
            got = tally.wait(tag, done, quiet_s=10, limit_s=120)
            client.close()
            first = min((t for t, _ in tally.by_tag.get(tag, [])), default=0)
        log = json.loads(log_path.read_text())
    log["pause"] += CLIENT_LOG["pause"]
    CLIENT_LOG["pause"] = []
    step = {seq: t for seq, t in arrivals.items() if t >= first}  # the step's alerts, not the readiness probe's
    return [f"{got}/{done} alerts received", *report(log, step)]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--as-daemon"]:
        return as_daemon(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.latency_path")
    p.add_argument("--store", choices=("off", "on"), default="off")
    p.add_argument("--rate", type=int, default=10_000, help="alerts/s offered")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=1, help="rounds, a fresh daemon each")
    p.add_argument("--subscriber-gc", choices=("frozen", "default"), default="frozen",
                   help="as bench.daemon_latency's option of the same name")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.latency_path needs root (BPF)", file=sys.stderr)
        return 1
    print(f"machine before: {machine_state()}")
    if args.subscriber_gc == "frozen":
        subscriber_heap()
    gc.callbacks.append(_on_gc(CLIENT_LOG, "client"))
    _start_sampler(CLIENT_LOG, "client")
    for rnd in range(args.repeat):
        print(f"latency path at {args.rate:,} alerts/s for {args.seconds:g} s, alert store {args.store}, round "
              f"{rnd + 1}/{args.repeat}:", flush=True)
        for line in measure(args):
            print("  " + line, flush=True)
    print(f"machine after: {machine_state()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
