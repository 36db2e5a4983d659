"""`falconet aggregate` capacity beside a single node's, in the same run (issue 13: target >= 0.8x).

Method of bench/server_throughput.py's capacity rows, reused (its Spec, client processes and Bench): a backlog of
typical alerts is streamed to 1 or 100 subscribers in other processes, once from a node's server (alerts in its
hub) and once from an aggregator whose stream holds the same alerts as two nodes' forwarders published them
(node payloads, subjects, message ids). Both serve from their in-memory ring with wire forms cached, as after the
first reader; the aggregator's extra per-alert work (decoding each node message, once) happens before the clock
starts. Each row also gives alerts delivered per CPU second of the serving process (best of its runs): on a machine
shared with other tenants that ratio is steadier than the wall-clock one. One more row streams the aggregator's
backlog from JetStream itself (a ring smaller than the backlog, so
every alert is read through a pull consumer), against the same node figure.

Run: python -m bench.fleet_aggregate [--quick]. Needs nats-server (make nats-tools builds the pinned one).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import nats

from bench.fleet_publish import nats_server_binary
from bench.server_throughput import SUB, SUBSCRIBE, Bench, Outcome, Spec, make_alert, run_clients
from falconet.model.alert import Cursor
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, types_pb2
from falconet.sdk.convert import alert_to_wire
from falconet.server.daemon_config import GrpcConfig, MetricsConfig
from falconet.server.fleet.aggregate import Aggregator
from falconet.server.fleet.aggregate_config import AggregateConfig
from falconet.server.fleet.connection import NatsConnection
from falconet.server.fleet.names import (
    DEFAULT_STREAM,
    HEADER_EPOCH,
    HEADER_HOST,
    HEADER_MSG_ID,
    HEADER_SEQ,
    alert_subject,
    all_alerts,
    msg_id,
)

HOSTS = ("bench-node-1", "bench-node-2")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsProcess:
    """One JetStream server for the run (its own store in a temporary directory)."""

    def __init__(self, base: Path) -> None:
        binary = nats_server_binary()
        self.port, http = _port(), _port()
        conf = base / "nats.conf"
        conf.write_text(f'listen: "127.0.0.1:{self.port}"\nhttp: "127.0.0.1:{http}"\n'
                        f'jetstream {{ store_dir: "{base / "js"}", max_memory_store: 256MB, max_file_store: 4GB }}\n')
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz?js-enabled-only=true", timeout=2):
                    return
            except OSError:
                time.sleep(0.05)  # polling a condition with a deadline
        raise RuntimeError("nats-server did not start")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def fill_stream(url: str, stream: str, prefix: str, n: int) -> None:
    """`n` alerts alternating between two hosts, published as their nodes' forwarders publish them."""
    from nats.js import api

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(api.StreamConfig(name=stream, subjects=[all_alerts(prefix)], storage=api.StorageType.FILE))
        for i in range(n):
            host = HOSTS[i % 2]
            alert = make_alert(i)
            alert.hostname = host
            node_seq = i // 2 + 1
            alert.cursor = Cursor(f"ep-{host}", node_seq)
            headers = {HEADER_MSG_ID: msg_id(f"ep-{host}", node_seq), HEADER_EPOCH: f"ep-{host}",
                       HEADER_SEQ: str(node_seq), HEADER_HOST: host}
            await js.publish_async(alert_subject(host, prefix), alert_to_wire(alert), headers=headers)
        await js.publish_async_completed()
    finally:
        await nc.close()


class FleetBench:
    def __init__(self, bench: Bench, nats_url: str) -> None:
        self.bench = bench
        self.url = nats_url
        self.streams = 0
        self.catchup: list[tuple[int, float]] = []
        """(alerts, seconds) of each aggregator's start: reading, checking and decoding the stream into its ring."""

    def aggregator(self, n: int, retention: int) -> tuple[Aggregator, str, str]:
        """An aggregator over a new stream holding `n` alerts, caught up, its ring's wire forms cached."""
        self.streams += 1
        stream, prefix = f"{DEFAULT_STREAM}_{self.streams}", f"bench{self.streams}.alerts"
        self.bench.loop.run(fill_stream(self.url, stream, prefix, n), timeout=600)
        certs = self.bench.tmp / "certs"
        sock = self.bench.tmp / f"agg{self.streams}.sock"
        cfg = AggregateConfig(
            nats=NatsConnection(servers=(self.url,), name="bench-aggregate"), stream=stream, subject_prefix=prefix,
            hostname="bench-agg",
            grpc=GrpcConfig(bind_address=(f"unix://{sock}", "127.0.0.1:0"), root_certs=certs / "ca.crt",
                            cert_chain=certs / "server.crt", private_key=certs / "server.key", retention=retention),
            metrics=MetricsConfig(enabled=False),  # measured as the node is: no HTTP listener of its own
        )
        agg = Aggregator(cfg)
        t0 = time.monotonic()
        bound = self.bench.loop.run(agg.start(), timeout=600)
        self.catchup.append((min(n, retention), time.monotonic() - t0))
        assert agg.hub is not None
        for entry in agg.hub.snapshot():
            entry.framed()
        return agg, bound[0], bound[1]

    def _node(self, spec: Spec, n: int, procs: int) -> tuple[Outcome, float]:
        node, _, tcp = self.bench.falconet(retention=max(n, 10_000))
        self.bench.backlog(node, [make_alert(i) for i in range(n)])
        for entry in node.hub.snapshot():
            entry.framed()
        try:
            return _timed(Spec(**{**spec.__dict__, "target": tcp}), procs)
        finally:
            self.bench.stop(node)

    def _aggregated(self, spec: Spec, n: int, procs: int, ring: int | None) -> tuple[Outcome, float]:
        agg, _, tcp = self.aggregator(n, ring if ring is not None else max(n, 10_000))
        try:
            return _timed(Spec(**{**spec.__dict__, "target": tcp}), procs)
        finally:
            self.bench.loop.run(agg.stop(0.5))

    def row(self, label: str, batched: bool, streams: int, n: int, procs: int, *, ring: int | None = None) -> None:
        """Node and aggregator capacity for the same backlog and subscribers; prints both and the ratio."""
        tls = self.bench.client_tls
        if batched:
            req = alerts_pb2.SubscribeRequest(start=types_pb2.Start(position=types_pb2.Start.POSITION_OLDEST))
            method, payload = SUBSCRIBE, req.SerializeToString()
        else:
            falco = outputs_pb2.request()  # one subscriber: exactly Falco's request (its per-identity cursor)
            if streams > 1:
                falco.start.position = types_pb2.Start.POSITION_OLDEST
            method, payload = SUB, falco.SerializeToString()
        spec = Spec("", tls, method, payload, streams, n, 300)
        # Node, aggregator, aggregator, node: the machine is shared, so each side's better run is kept and
        # neither always runs first.
        node_runs = [self._node(spec, n, procs)]
        agg_runs = [self._aggregated(spec, n, procs, ring), self._aggregated(spec, n, procs, ring)]
        node_runs.append(self._node(spec, n, procs))
        o_node, _ = max(node_runs, key=lambda r: r[0].rate if r[0].complete else -1.0)
        o_agg, _ = max(agg_runs, key=lambda r: r[0].rate if r[0].complete else -1.0)
        status = "".join(f"  INCOMPLETE {who}: {o.received}/{o.expected_total}, lost {o.lost}"
                         for who, o in (("node", o_node), ("aggregator", o_agg)) if not o.complete)
        ratio = o_agg.rate / o_node.rate if o_node.rate else 0.0
        # Alerts delivered per CPU second of the serving process (its other tenants' load not counted).
        per_cpu_node = max(n * streams / c for _, c in node_runs)
        per_cpu_agg = max(n * streams / c for _, c in agg_runs)
        print(f"{label:<52} {o_node.rate:>11,.0f} {o_agg.rate:>11,.0f} {ratio:>7.2f}   per CPU s: "
              f"{per_cpu_node:>11,.0f} {per_cpu_agg:>11,.0f} {per_cpu_agg / per_cpu_node:>5.2f}{status}", flush=True)


def _timed(spec: Spec, procs: int) -> tuple[Outcome, float]:
    """The clients' outcome and the CPU seconds this (serving) process spent meanwhile."""
    c0 = time.process_time()
    outcome = run_clients(spec, procs)
    return outcome, max(1e-9, time.process_time() - c0)


def serving_path(n: int, repeat: int) -> None:
    """The hub side of serving alone, in this process (no gRPC, no client): a node's Hub and a FleetHub holding
    the same cached entries, drained by the services' own stream functions; the best of `repeat` runs each, in
    CPU time (the machine is shared: wall time here mostly measures the other tenants)."""
    from falconet.server.fleet.aggregate_hub import FleetHub
    from falconet.server.hub import AlertFilter, Hub
    from falconet.server.streams import batch_stream, single_stream

    alerts = [make_alert(i) for i in range(n)]
    node = Hub(retention=n, epoch="node")
    node.publish_many(alerts)
    fleet = FleetHub(n, "fleet", "agg", start_seq=1)
    fleet.publish_at([(e.seq, e) for e in node.snapshot()])  # the very same entries: same cached bytes
    for e in node.snapshot():
        e.framed()

    async def drain(hub: Hub, batched: bool) -> float:
        reader = hub.reader(1)
        t0 = time.process_time()  # CPU time of this process: other processes' load is not counted
        if batched:
            async for _ in batch_stream(hub, reader, AlertFilter(), None, live=False, max_batch=1000):
                pass
        else:
            async for _ in single_stream(hub, reader, AlertFilter(), None, live=False, falco_identity="bench"):
                pass
        return time.process_time() - t0

    for label, batched in (("Falco sub path (one message per alert, Falco cursor)", False),
                           ("batched path (1,000 per message)", True)):
        times = {"node": [], "aggregator": []}  # type: dict[str, list[float]]
        for _ in range(repeat):
            for name, hub in (("node", node), ("aggregator", fleet)):
                times[name].append(asyncio.run(drain(hub, batched)))
        rn, ra = n / min(times["node"]), n / min(times["aggregator"])
        print(f"{'in-process ' + label:<52} {rn:>11,.0f} {ra:>11,.0f} {ra / rn:>7.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller backlogs")
    args = parser.parse_args(argv)
    q = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="fn-fleet-bench-"))
    server = NatsProcess(tmp)
    bench = Bench(q)
    try:
        fleet = FleetBench(bench, server.url)
        print("capacity: a backlog streamed over mTLS to subscribers in other processes (alerts/s, all "
              "subscribers); node = one node's server, aggregator = `falconet aggregate` over JetStream")
        print(f"{'scenario':<52} {'node':>11} {'aggregator':>11} {'ratio':>7}   per CPU s: {'node':>11} "
          f"{'aggregator':>11} {'ratio':>5}")
        n1 = 20_000 if q else 60_000
        nb = 100_000 if q else 300_000
        fleet.row("Falco sub, 1 subscriber", False, 1, n1, 1)
        fleet.row("Falco sub, 100 subscribers (fan-out)", False, 100, n1 // 50, 4)
        fleet.row("batched, 1 subscriber", True, 1, nb, 1)
        fleet.row("batched, 100 subscribers (fan-out)", True, 100, nb // 20, 4)
        fleet.row("batched, 1 subscriber, aggregator reads JetStream", True, 1, n1, 1, ring=1000)
        serving_path(20_000 if q else 100_000, 5)
        rates = sorted(n / s for n, s in fleet.catchup if n >= 10_000)
        print(f"aggregator start-up (stream read, checked and decoded into the ring): {rates[0]:,.0f} to "
              f"{rates[-1]:,.0f} alerts/s over {len(rates)} starts", flush=True)
    finally:
        bench.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
