"""The fleet end to end (issue 13's benchmark): alerts/s from N node processes through JetStream to a subscriber
of `falconet aggregate`, N = 1, 10, 50.

Each node is bench.fleet_publish's "backlog" worker: its own process, a memory hub holding pre-built typical
alerts with their wire forms made, and the real `nats` output (server/fleet/output.py) started when the clock
starts. One child nats-server (a fresh stream per row, made as a node makes it); `falconet aggregate` is its own
process (the real command, as deployed), started on the empty stream before the clock; the subscriber is one more
process on the aggregator's UNIX socket reading Falconet's batched stream (`Subscribe` from the oldest alert,
raw gRPC, counting each batch's alerts: a client cheap enough not to be what is measured). The clock runs from
"go" to the node workers until the subscriber holds every alert; the row also gives when the last node had its
last alert acknowledged (the publish side alone, in the same run), and the aggregator's CPU time per alert
(/proc utime + stime over the row), which a loaded machine disturbs less than wall-clock rates.

    .venv/bin/python -m bench.fleet_e2e [--quick] [--alerts N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fleet_publish import NatsServerProcess, _reset_stream, _stream_messages, run_workers, start_workers

FALCONET = str(Path(sys.executable).parent / "falconet")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class AggregatorChild:
    """`falconet aggregate` on a UNIX socket, as its own process; ready once it prints its listening line."""

    def __init__(self, url: str, sock: Path) -> None:
        self.proc = subprocess.Popen(
            [FALCONET, "aggregate", "--servers", url, "--listen", f"unix://{sock}", "--no-metrics",
             "--hostname", "bench-agg"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("listening on unix://"):
                return
        raise SystemExit(f"falconet aggregate exited ({self.proc.wait()})")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


def subscriber_main(sock: str, total: int) -> None:
    """The subscriber process: batched Subscribe from the oldest; prints "ready", then the time (and its CPU
    seconds) when it has `total` alerts."""
    import grpc

    from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, types_pb2

    req = alerts_pb2.SubscribeRequest(start=types_pb2.Start(position=types_pb2.Start.POSITION_OLDEST))
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stream = alerts_pb2_grpc.AlertServiceStub(channel).Subscribe(req)
        print("ready", flush=True)
        got = 0
        for batch in stream:
            got += len(batch.alerts)
            if got >= total:
                break
        print(json.dumps({"end": time.time(), "cpu": time.process_time(), "got": got}), flush=True)
        stream.cancel()


def run_row(url: str, sock: Path, nodes: int, per_node: int) -> dict[str, float]:
    """One measurement on a fresh stream and a fresh aggregator."""
    asyncio.run(_reset_stream(url))
    agg = AggregatorChild(url, sock)
    total = nodes * per_node
    sub = subprocess.Popen([sys.executable, "-m", "bench.fleet_e2e", "--subscriber", str(sock), "--alerts",
                            str(total)], stdout=subprocess.PIPE, text=True)
    workers: list[subprocess.Popen[str]] = []
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise SystemExit("the subscriber did not start")
        start_workers(workers, "backlog", url, [f"e2e-node-{i}" for i in range(nodes)], per_node)
        agg_cpu0 = _cpu_seconds(agg.proc.pid)
        start = time.time()
        results = run_workers(workers)
        done = json.loads(sub.stdout.readline())
        agg_cpu = _cpu_seconds(agg.proc.pid) - agg_cpu0
        sub.wait(60)
    finally:
        for p in [*workers, sub]:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        agg.stop()
    held = asyncio.run(_stream_messages(url))
    # More than published: the nodes' own internal alerts (e.g. "NATS output failing" when 50 processes on 2
    # cores wait past their acknowledgement timeout), forwarded like any alert. Counted, and said.
    if held < total or done["got"] < total:
        raise SystemExit(f"the stream holds {held} and the subscriber got {done['got']}, fewer than the {total} "
                         "published")
    published = max(r["end"] for r in results) - start
    e2e = done["end"] - start
    return {"total": total, "extra": held - total, "e2e": total / e2e, "published": total / published,
            "agg_us": agg_cpu / total * 1e6, "agg_cpu_share": agg_cpu / e2e}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fleet_e2e")
    ap.add_argument("--quick", action="store_true", help="fewer alerts and no 50-node row")
    ap.add_argument("--alerts", type=int, default=0, help="alerts per row (all nodes together)")
    ap.add_argument("--rounds", type=int, default=1, help="measurements per row (each row's best is printed)")
    ap.add_argument("--nodes", type=int, action="append", help="only these rows (repeatable; default 1, 10, 50)")
    ap.add_argument("--subscriber", metavar="SOCK", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.subscriber:
        subscriber_main(args.subscriber, args.alerts)
        return 0
    total = args.alerts or (30_000 if args.quick else 100_000)
    base = Path(tempfile.mkdtemp(prefix="falconet-e2e-bench-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the children
    server = NatsServerProcess(base)
    try:
        print(f"load average {os.getloadavg()[0]:.1f}; {total} alerts per row; {args.rounds} round(s)")
        print(f"{'nodes':>5} {'end-to-end alerts/s':>20} {'published alerts/s':>19} {'ratio':>6} "
              f"{'aggregator CPU us/alert':>24} {'aggregator busy':>16}")
        for nodes in args.nodes or ((1, 10) if args.quick else (1, 10, 50)):
            rows = [run_row(server.url, base / "agg.sock", nodes, total // nodes) for _ in range(args.rounds)]
            r = max(rows, key=lambda x: x["e2e"])
            print(f"{nodes:>5} {r['e2e']:>20,.0f} {r['published']:>19,.0f} {r['e2e'] / r['published']:>6.2f} "
                  f"{r['agg_us']:>24.1f} {r['agg_cpu_share']:>15.0%}"
                  + (f"  (+{r['extra']:.0f} internal alerts of the nodes)" if r["extra"] else ""), flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
