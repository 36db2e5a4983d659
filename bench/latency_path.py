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

Run (as root): python -m bench.latency_path [--store off|on] [--rate 10000] [--seconds 3]
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
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bench._daemon_common import Daemon, build_loops, machine_state
from bench.daemon_latency import Tally, generate, store_config, wait_subscribed
from falconet.rules import DEFAULT_RULES

LOG_ENV = "FALCONET_LATENCY_PATH_LOG"
Row = list[int | str]


def _install_probes(log: dict[str, list[Row]]) -> None:
    """In the daemon's process, before it starts: the recording wrappers (see the module doc)."""
    from falconet.model.alert import Alert
    from falconet.server import pipeline, services_falconet, store, streams
    from falconet.server.hub import Reader

    started: list[int] = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.time_ns()
        else:
            log["pause"].append([started[0], time.time_ns() - started[0], f"gc{info['generation']}",
                                 threading.current_thread().name])

    gc.callbacks.append(on_gc)
    emit = pipeline.Pipeline.emit

    def timed_emit(self: pipeline.Pipeline, alert: Alert, *, internal: bool = False,
                   skip: object = None) -> None:
        emit(self, alert, internal=internal, skip=skip)  # type: ignore[arg-type]
        if alert.cursor is not None:
            log["publish"].append([alert.cursor.sequence, alert.time_ns, time.time_ns()])

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
    published = {int(r[0]): (int(r[1]), int(r[2])) for r in log["publish"]}
    streamed = sorted((int(r[1]), int(r[0])) for r in log["stream"])  # (reader's next seq, time)
    rows: list[tuple[int, int, int, int]] = []  # syscall, published, streamed, arrived
    k = 0
    for seq in sorted(s for s in arrivals if s in published):
        while k < len(streamed) and streamed[k][0] <= seq:
            k += 1
        sent = streamed[k][1] if k < len(streamed) else arrivals[seq]
        syscall, pub = published[seq]
        rows.append((syscall, pub, sent, arrivals[seq]))
    if not rows:
        return ["no alert both published and received"]
    out = []
    for name, a, b in (("syscall -> arrival", 0, 3), ("syscall -> published", 0, 1),
                       ("published -> stream", 1, 2), ("stream -> arrival", 2, 3)):
        ms = [(r[b] - r[a]) / 1e6 for r in rows]
        out.append(f"{name:>22}: p50 {pct(ms, 0.5):7.2f}  p99 {pct(ms, 0.99):7.2f}  max {max(ms):7.2f} ms")
    t0 = min(r[0] for r in rows)
    worst: dict[int, float] = {}
    for r in rows:
        s = (r[0] - t0) // 100_000_000
        worst[s] = max(worst.get(s, 0.0), (r[3] - r[0]) / 1e6)
    pauses: dict[int, list[str]] = {}
    for start, dur, kind, _thread in log["pause"]:
        if int(dur) > 2_000_000 and int(start) >= t0:
            pauses.setdefault((int(start) - t0) // 100_000_000, []).append(f"{kind} {int(dur) / 1e6:.0f}")
    out.append("worst latency (ms) per 100 ms of syscall time [pauses > 2 ms begun in it, ms]:")
    cells = [f"{s / 10:.1f}s {w:.0f}" + (f" [{', '.join(pauses[s])}]" if s in pauses else "")
             for s, w in sorted(worst.items())]
    out.extend("  " + "  ".join(cells[i:i + 8]) for i in range(0, len(cells), 8))
    kinds: dict[str, list[float]] = {}
    for start, dur, kind, _thread in log["pause"]:
        if int(start) >= t0:
            kinds.setdefault(str(kind), []).append(int(dur) / 1e6)
    for kind, durs in sorted(kinds.items()):
        out.append(f"{kind}: {len(durs)} in the step, median {statistics.median(durs):.2f} ms, longest "
                   f"{', '.join(f'{d:.1f}' for d in sorted(durs, reverse=True)[:5])} ms")
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
    step = {seq: t for seq, t in arrivals.items() if t >= first}  # the step's alerts, not the readiness probe's
    return [f"{got}/{done} alerts received", *report(log, step)]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--as-daemon"]:
        return as_daemon(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.latency_path")
    p.add_argument("--store", choices=("off", "on"), default="off")
    p.add_argument("--rate", type=int, default=10_000, help="alerts/s offered")
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.latency_path needs root (BPF)", file=sys.stderr)
        return 1
    print(f"machine before: {machine_state()}")
    print(f"latency path at {args.rate:,} alerts/s for {args.seconds:g} s, alert store {args.store}:")
    for line in measure(args):
        print("  " + line)
    print(f"machine after: {machine_state()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
