"""Alert server throughput: alerts/s to subscribers in other processes, beside a plain grpc.aio baseline.

Two kinds of figure:
- capacity: a backlog already in the hub (wire forms cached, as after the first reader) is streamed to 1, 10
  or 100 subscribers; the baseline is a bare grpc.aio server streaming the same pre-serialized bytes over the
  same transport to the same client code. The ratio shows what the hub and services cost on top of gRPC.
- sustained: a producer thread publishes live at a fixed rate (conversion to protobuf included) while 100
  subscribers read; a rate holds if every subscriber receives every alert and none reports a loss. The highest
  rate that holds is reported, for Falco's `sub` and for the batched stream.

Run: python -m bench.server_throughput [--quick]. The server runs in this process (its own event loop thread,
as in the daemon); each client process runs several streams on its own connections.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import grpc

from falconet.certs import init_certs
from falconet.model.alert import Alert, Priority
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, types_pb2
from falconet.sdk.convert import alert_to_wire
from falconet.server.app import AlertServer
from falconet.server.config import ServerConfig
from falconet.server.hub import Hub, encode_varint
from falconet.server.store_schema import StoreConfig

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]

SUB = "/falco.outputs.service/sub"
SUBSCRIBE = "/falconet.v1.AlertService/Subscribe"
BASE_SINGLE = "/bench.Baseline/Single"
BASE_BATCH = "/bench.Baseline/Batch"
BATCH = 1000
MAX_LAG = 1.0


def make_alert(i: int) -> Alert:
    """A typical syscall alert (about 600 bytes on the wire)."""
    return Alert(
        time_ns=1_700_000_000_000_000_000 + i,
        rule="Read sensitive file untrusted",
        priority=Priority.WARNING,
        source="syscall",
        output=f"Sensitive file opened for reading by non-trusted program (file=/etc/shadow gparent=systemd "
        f"ggparent=<NA> gggparent=<NA> evt_type=openat user=root user_uid=0 user_loginuid=-1 "
        f"process=cat proc_exepath=/usr/bin/cat parent=bash command=cat /etc/shadow terminal=34816 "
        f"container_id=host container_name=host) seq={i}",
        output_fields={
            "evt.time": 1_700_000_000_000_000_000 + i,
            "evt.type": "openat",
            "fd.name": "/etc/shadow",
            "proc.cmdline": "cat /etc/shadow",
            "proc.exepath": "/usr/bin/cat",
            "proc.name": "cat",
            "proc.pid": 4000 + i % 1000,
            "proc.pname": "bash",
            "user.loginuid": -1,
            "user.name": "root",
            "user.uid": 0,
            "container.id": "host",
        },
        tags=["filesystem", "host", "maturity_stable", "mitre_credential_access", "T1555"],
        hostname="bench-host",
    )


class LoopThread:
    """An event loop in a background thread, as the daemon runs the server beside the engine thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- the baseline: a bare grpc.aio server streaming pre-serialized bytes ------------------------------------


async def start_baseline(
    unix: str, tcp: str, creds: grpc.ServerCredentials, single: bytes, batch: bytes
) -> tuple[grpc.aio.Server, int]:
    async def stream_single(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> Any:
        for _ in range(int(request)):
            yield single

    async def stream_batch(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> Any:
        for _ in range(int(request) // BATCH):
            yield batch

    async def falco_sub(requests: Any, context: grpc.aio.ServicerContext[bytes, bytes]) -> Any:
        # Falco's method, bare: after the first request, the same pre-serialized alert until the client leaves.
        await requests.__anext__()
        while True:
            yield single

    server = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Single": grpc.unary_stream_rpc_method_handler(stream_single),
        "Batch": grpc.unary_stream_rpc_method_handler(stream_batch),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Baseline", handlers),))
    falco: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "sub": grpc.stream_stream_rpc_method_handler(falco_sub)
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("falco.outputs.service", falco),))
    server.add_insecure_port(unix)
    port = server.add_secure_port(tcp, creds)
    await server.start()
    return server, port


# -- client processes ---------------------------------------------------------------------------------------


@dataclass
class Spec:
    target: str
    tls: tuple[bytes, bytes, bytes] | None  # ca, key, cert
    method: str
    request: bytes
    streams: int
    expected: int
    timeout: float


def client_main(conn: Connection, spec: Spec) -> None:
    conn.send(asyncio.run(_client(conn, spec)))


async def _client(conn: Connection, spec: Spec) -> list[tuple[int, int, float, float]]:
    loop = asyncio.get_running_loop()
    options = [("grpc.max_receive_message_length", 64 << 20)]
    channels = []
    for _ in range(spec.streams):
        if spec.tls is not None:
            creds = grpc.ssl_channel_credentials(*spec.tls)
            channels.append(grpc.aio.secure_channel(spec.target, creds, options=options))
        else:
            channels.append(grpc.aio.insecure_channel(spec.target, options=options))
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    conn.send("ready")
    await loop.run_in_executor(None, conn.recv)  # "go"
    t0 = time.monotonic()

    async def one(ch: grpc.aio.Channel) -> tuple[int, int, float, float]:
        received = lost = 0
        deadline = t0 + spec.timeout
        if spec.method in (SUB, BASE_SINGLE):
            decode = outputs_pb2.response.FromString
            if spec.method == SUB:
                call: Any = ch.stream_stream(SUB, request_serializer=None, response_deserializer=decode)()
                await call.write(spec.request)
            else:
                single: grpc.aio.UnaryStreamMultiCallable[bytes, outputs_pb2.response] = ch.unary_stream(
                    spec.method, request_serializer=None, response_deserializer=decode
                )
                call = single(spec.request)
            while received + lost < spec.expected and time.monotonic() < deadline:
                try:
                    msg = await asyncio.wait_for(call.read(), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if msg is grpc.aio.EOF:
                    break
                if msg.source == "internal":
                    lost += int(msg.output_fields["falconet.lost"] or 0)
                else:
                    received += 1
        else:
            decode_batch = alerts_pb2.SubscribeResponse.FromString
            batched: grpc.aio.UnaryStreamMultiCallable[bytes, alerts_pb2.SubscribeResponse] = ch.unary_stream(
                spec.method, request_serializer=None, response_deserializer=decode_batch
            )
            call = batched(spec.request)
            while received + lost < spec.expected and time.monotonic() < deadline:
                try:
                    msg = await asyncio.wait_for(call.read(), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if msg is grpc.aio.EOF:
                    break
                for alert in msg.alerts:
                    if alert.source == "internal":
                        lost += int(alert.output_fields["falconet.lost"] or 0)
                    else:
                        received += 1
        # CLOCK_MONOTONIC is system-wide on Linux: the parent compares `end` with its own clock.
        end = time.monotonic()
        call.cancel()
        return received, lost, end - t0, end

    results = await asyncio.gather(*(one(ch) for ch in channels))
    for ch in channels:
        await ch.close()
    return list(results)


@dataclass
class Outcome:
    received: int
    lost: int
    expected_total: int
    elapsed: float
    last: float
    """Monotonic time (system-wide) at which the last subscriber finished."""

    @property
    def rate(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.lost == 0 and self.received == self.expected_total


def run_clients(spec: Spec, processes: int, before_go: Any = None, wait_registered: Any = None) -> Outcome:
    """Spreads `spec.streams` streams over `processes` client processes; returns what they received."""
    ctx = mp.get_context("spawn")
    per = [spec.streams // processes + (1 if k < spec.streams % processes else 0) for k in range(processes)]
    procs, pipes = [], []
    for n in per:
        if n == 0:
            continue
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_main, args=(child, Spec(**{**spec.__dict__, "streams": n})))
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    for p in pipes:
        if not p.poll(60):
            raise RuntimeError("a client process did not connect within 60 s")
        assert p.recv() == "ready"
    for p in pipes:
        p.send("go")
    if wait_registered is not None:
        wait_registered()
    if before_go is not None:
        before_go()
    results: list[tuple[int, int, float, float]] = []
    for p in pipes:
        if not p.poll(spec.timeout + 60):
            raise RuntimeError("a client process did not report")
        results += p.recv()
    for proc in procs:
        proc.join(30)
    return Outcome(
        received=sum(r[0] for r in results),
        lost=sum(r[1] for r in results),
        expected_total=spec.expected * spec.streams,
        elapsed=max(r[2] for r in results),
        last=max(r[3] for r in results),
    )


# -- the benchmark ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.tmp = Path(tempfile.mkdtemp(prefix="fn-bench-"))
        init_certs(self.tmp / "certs")
        c = self.tmp / "certs"
        self.client_tls = (
            (c / "ca.crt").read_bytes(),
            (c / "client.key").read_bytes(),
            (c / "client.crt").read_bytes(),
        )
        self.loop = LoopThread()
        sample = make_alert(0)
        Hub(epoch="bench").publish(sample)
        self.single = alert_to_wire(sample)
        framed = b"\x0a" + encode_varint(len(self.single)) + self.single
        self.batch = framed * BATCH
        server_creds = grpc.ssl_server_credentials(
            [((c / "server.key").read_bytes(), (c / "server.crt").read_bytes())],
            root_certificates=(c / "ca.crt").read_bytes(),
            require_client_auth=True,
        )
        self.base_unix = f"unix://{self.tmp}/base.sock"
        self.base_server, port = self.loop.run(
            start_baseline(f"unix:{self.tmp}/base.sock", "127.0.0.1:0", server_creds, self.single, self.batch)
        )
        self.base_tcp = f"127.0.0.1:{port}"

    def falconet(self, retention: int, store: bool = False) -> tuple[AlertServer, str, str]:
        """A server on a UNIX socket and mTLS; `store`: with a fresh persistent store (default settings)."""
        sock = self.tmp / f"f{time.monotonic_ns()}.sock"
        path = self.tmp / f"store-{time.monotonic_ns()}.db" if store else None
        config = ServerConfig.with_certs_dir(
            self.tmp / "certs",
            listen=(f"unix://{sock}", "127.0.0.1:0"),
            retention=retention,
            store=StoreConfig(path=path),
        )
        server = AlertServer(config)
        bound = self.loop.run(server.start())
        return server, bound[0], bound[1]

    def backlog(self, server: AlertServer, alerts: list[Alert]) -> None:
        """Publishes a backlog and waits until readers may see it (with a store: committed)."""
        last = server.hub.publish_many(alerts)
        assert last is not None
        self.loop.run(server.hub.wait_durable(last.sequence))

    def go_client(self) -> Path | None:
        """The Go SDK's example subscriber (a fast client: shows the server's side of one stream), if Go is here."""
        binary = REPO / ".tools/sdk-bin/falconet-subscribe"
        env = {**os.environ, "PATH": f"/usr/local/go/bin:{os.environ.get('PATH', '')}"}
        try:
            subprocess.run(
                ["go", "build", "-o", str(binary), "./cmd/falconet-subscribe"],
                cwd=REPO / "sdk/go",
                env=env,
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return binary

    def capacity_go(self, label: str, binary: Path, n: int) -> None:
        """One Falco `sub` stream over mTLS read by the Go client, beside the bare server read the same way."""
        server, _, tcp = self.falconet(retention=n)
        self.backlog(server, [make_alert(i) for i in range(n)])
        for entry in server.hub.snapshot():
            entry.wire()
        c = self.tmp / "certs"
        tls = ["--ca", str(c / "ca.crt"), "--cert", str(c / "client.crt"), "--key", str(c / "client.key")]
        common = [*tls, "--server-name", "localhost", "--count", str(n), "--output", "none", "--stats"]

        def rate(addr: str) -> float:
            proc = subprocess.run(
                [str(binary), "--addr", addr, "--from", "oldest", *common],
                capture_output=True,
                text=True,
                timeout=600,
            )
            m = re.search(r"received (\d+) alerts in ([0-9.]+) s", proc.stderr)
            if proc.returncode != 0 or m is None:
                raise RuntimeError(f"Go client failed: {proc.stderr}")
            return (int(m.group(1)) - 1) / float(m.group(2))

        ours = rate(tcp)
        base = rate(self.base_tcp)
        self.stop(server)
        print(f"{label:<44} {ours:>12,.0f} {base:>12,.0f} {ours / base:>7.2f}", flush=True)

    def stop(self, server: AlertServer) -> None:
        """Stops `server` and deletes its store's files (a store row writes about 40 MB per run: a run of
        several rounds left gigabytes behind)."""
        self.loop.run(server.stop(0.5))
        path = server.config.store.path
        if path is not None:
            for p in path.parent.glob(path.name + "*"):  # the index, its -wal/-shm/.lock, the -data directory
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    # capacity: a cached backlog streamed to n subscribers, beside the baseline
    def capacity(
        self, label: str, batched: bool, transport: str, streams: int, per_stream: int, procs: int,
        store: bool = False,
    ) -> float:
        """Prints the row; returns falconet's rate."""
        server, unix, tcp = self.falconet(retention=max(per_stream, 10_000), store=store)
        alerts = [make_alert(i) for i in range(per_stream)]
        self.backlog(server, alerts)
        for entry in server.hub.snapshot():
            entry.framed()  # as after the first reader: conversion is measured in the sustained runs
        tls = self.client_tls if transport == "mTLS" else None
        req: alerts_pb2.SubscribeRequest | outputs_pb2.request
        if batched:
            req = alerts_pb2.SubscribeRequest(start=types_pb2.Start(position=types_pb2.Start.POSITION_OLDEST))
            ours = Spec(
                tcp if tls else unix, tls, SUBSCRIBE, req.SerializeToString(), streams, per_stream, 300
            )
            base = Spec(
                self.base_tcp if tls else self.base_unix,
                tls,
                BASE_BATCH,
                str(per_stream).encode(),
                streams,
                per_stream,
                300,
            )
        else:
            # One subscriber: exactly what a Falco client sends (empty request, Falco cursor). Several: the same
            # method with a start position, so that subscribers of one identity do not split the backlog.
            req = outputs_pb2.request()
            if streams > 1:
                req.start.position = types_pb2.Start.POSITION_OLDEST
            ours = Spec(tcp if tls else unix, tls, SUB, req.SerializeToString(), streams, per_stream, 300)
            base = Spec(
                self.base_tcp if tls else self.base_unix,
                tls,
                BASE_SINGLE,
                str(per_stream).encode(),
                streams,
                per_stream,
                300,
            )
        b = run_clients(base, procs)
        o = run_clients(ours, procs)
        self.stop(server)
        status = "" if o.complete else f"  INCOMPLETE: {o.received}/{o.expected_total}, lost {o.lost}"
        print(f"{label:<44} {o.rate:>12,.0f} {b.rate:>12,.0f} {o.rate / b.rate:>7.2f}{status}", flush=True)
        return o.rate

    # sustained: live publishing at `rate` for `seconds` to n subscribers; True when nothing was lost
    def sustained(
        self, batched: bool, streams: int, rate: int, seconds: float, procs: int, store: bool = False
    ) -> tuple[Outcome, float]:
        """Returns what the subscribers received and how long after the last publish the slowest finished."""
        server, unix, tcp = self.falconet(retention=10_000, store=store)
        total = int(rate * seconds)
        alerts = [make_alert(i) for i in range(total)]
        req: alerts_pb2.SubscribeRequest | outputs_pb2.request
        if batched:
            req = alerts_pb2.SubscribeRequest(start=types_pb2.Start(position=types_pb2.Start.POSITION_NOW))
            spec = Spec(
                tcp, self.client_tls, SUBSCRIBE, req.SerializeToString(), streams, total, seconds + 30
            )
        else:
            req = outputs_pb2.request(start=types_pb2.Start(position=types_pb2.Start.POSITION_NOW))
            spec = Spec(tcp, self.client_tls, SUB, req.SerializeToString(), streams, total, seconds + 30)

        def registered() -> None:
            deadline = time.monotonic() + 60
            while len(server.hub.stats().readers) < streams:
                if time.monotonic() > deadline:
                    raise RuntimeError("subscribers did not register")
                time.sleep(0.01)

        produced_at: list[float] = []

        def produce() -> None:
            t0 = time.monotonic()
            sent = 0
            while sent < total:
                due = min(total, int((time.monotonic() - t0) * rate) + 1)
                while sent < due:
                    server.hub.publish(alerts[sent])
                    sent += 1
                time.sleep(0.002)  # pacing the producer, not synchronisation
            produced_at.append(time.monotonic())

        outcome = run_clients(spec, procs, before_go=produce, wait_registered=registered)
        self.stop(server)
        return outcome, outcome.last - produced_at[0]

    def close(self) -> None:
        self.loop.run(self.base_server.stop(0))
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--store-only", action="store_true", help="only the alert store rows (store off vs on)")
    parser.add_argument("--publish-only", action="store_true",
                        help="with --store-only: only the publish rows (not the subscriber rows)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved off/on rounds per store row, best of each (more on a loaded machine)")
    parser.add_argument("--payload-crc", choices=("on", "off"), default=None,
                        help="the store's records' CRC over the wire forms too (on, the default of "
                        "server/store_data.py's PAYLOAD_CRC) or over their frame only (off)")
    args = parser.parse_args(argv)
    if args.payload_crc is not None:
        from falconet.server import store_data

        store_data.PAYLOAD_CRC = args.payload_crc == "on"
    q = args.quick
    bench = Bench(q)
    try:
        if args.store_only:
            from bench.server_store import store_rows

            store_rows(bench, q, rounds=args.rounds, publish_only=args.publish_only)
            return 0
        print(
            "capacity: cached backlog streamed to subscribers in other processes (alerts/s, all subscribers)"
        )
        print(f"{'scenario':<44} {'falconet':>12} {'baseline':>12} {'ratio':>7}")
        n1 = 20_000 if q else 60_000
        bench.capacity("Falco sub, 1 subscriber, mTLS", False, "mTLS", 1, n1, 1)
        bench.capacity("Falco sub, 1 subscriber, UNIX socket", False, "unix", 1, n1, 1)
        bench.capacity("Falco sub, 10 subscribers, mTLS", False, "mTLS", 10, n1 // 10 * 2, 2)
        bench.capacity("Falco sub, 100 subscribers, mTLS", False, "mTLS", 100, n1 // 50, 4)
        go = bench.go_client()
        if go is not None:
            bench.capacity_go("Falco sub, 1 subscriber, mTLS, Go client", go, n1)
        else:
            print("(Go not found: the Go-client row is skipped)")
        nb = 100_000 if q else 300_000
        bench.capacity("batched, 1 subscriber, mTLS", True, "mTLS", 1, nb, 1)
        bench.capacity("batched, 1 subscriber, UNIX socket", True, "unix", 1, nb, 1)
        bench.capacity("batched, 100 subscribers, mTLS", True, "mTLS", 100, nb // 20, 4)

        print()
        print(
            "sustained: live publishing (conversion included) at a fixed rate to mTLS subscribers; a rate holds"
        )
        print(
            f"when every subscriber receives every alert, none is lost, and the slowest lags under {MAX_LAG} s"
        )
        seconds = 3.0 if q else 6.0
        ladders = (
            ("Falco sub", False, 1, (2000, 4000, 6000, 8000, 10000, 12000)),
            ("Falco sub", False, 100, (20, 50, 100, 200, 400)),
            ("batched", True, 1, (10_000, 20_000, 40_000, 80_000)),
            ("batched", True, 100, (500, 1000, 2000, 4000, 8000)),
        )
        for kind, batched, streams, rates in ladders:
            best = 0
            for rate in rates:
                o, lag = bench.sustained(batched, streams, rate, seconds, min(4, streams))
                ok = o.complete and lag <= MAX_LAG
                print(
                    f"{kind:<10} {rate:>7,}/s to each of {streams:>3} ({rate * streams:>9,} deliveries/s): "
                    f"{'holds' if ok else 'FAILS'} (received {o.received:,}/{o.expected_total:,}, lost {o.lost:,}, "
                    f"lag {lag:.2f} s)",
                    flush=True,
                )
                if not ok:
                    break
                best = rate
            print(
                f"{kind:<10} highest sustained rate: {best:,}/s to each of {streams} subscriber(s)",
                flush=True,
            )
        from bench.server_store import store_rows

        store_rows(bench, q, rounds=args.rounds)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
