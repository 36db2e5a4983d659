"""Soak: `falconet serve --store` at a steady publish rate for minutes, with live subscribers and one that stalls.

Default: 10 minutes at 2,000 alerts/s through InputService.Publish, 10 subscribers (8 on the batched stream, 2
on Falco `sub`, all over mTLS) and one Falco `sub` subscriber that reads nothing until the end and then reads
on. Reports the server's RSS every 30 s (the curve) and, per subscriber, received + reported lost against
published: "nothing lost unreported" means the two add up for every one of them.

Run: python -m bench.server_soak [--minutes 10] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from falconet.certs import init_certs
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, inputs_pb2, types_pb2

SUB = "/falco.outputs.service/sub"
SUBSCRIBE = "/falconet.v1.AlertService/Subscribe"
PUBLISH = "/falconet.v1.InputService/Publish"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def publisher(conn: Connection, target: str, rate: int, total: int) -> None:
    """Publishes `total` alerts at `rate`/s in requests of rate/10; sends (accepted, seconds)."""
    from bench.server_throughput import make_alert
    from falconet.sdk.convert import alert_to_proto

    per = max(1, rate // 10)
    template = [alert_to_proto(make_alert(i)) for i in range(per)]

    def requests() -> Any:
        t0 = time.monotonic()
        sent = 0
        while sent < total:
            n = min(per, total - sent)
            yield inputs_pb2.PublishRequest(alerts=template[:n]).SerializeToString()
            sent += n
            delay = t0 + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the publisher, not synchronisation

    with grpc.insecure_channel(target) as ch:
        call: grpc.StreamUnaryMultiCallable[bytes, inputs_pb2.PublishResponse] = ch.stream_unary(
            PUBLISH, request_serializer=None, response_deserializer=inputs_pb2.PublishResponse.FromString)
        t0 = time.monotonic()
        reply = call(requests(), timeout=7200)
        conn.send((reply.accepted, time.monotonic() - t0))


def subscribers(conn: Connection, target: str, tls: tuple[bytes, bytes, bytes], kinds: list[str],
                total: int, deadline_s: float) -> None:
    conn.send(asyncio.run(_subscribers(conn, target, tls, kinds, total, deadline_s)))


async def _subscribers(conn: Connection, target: str, tls: tuple[bytes, bytes, bytes], kinds: list[str],
                       total: int, deadline_s: float) -> list[tuple[str, int, int]]:
    loop = asyncio.get_running_loop()
    start = types_pb2.Start(position=types_pb2.Start.POSITION_OLDEST)

    async def one(kind: str) -> tuple[str, int, int]:
        received = lost = 0
        ch = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(*tls),
                                     options=[("grpc.ssl_target_name_override", "localhost")])
        if kind == "stalled":
            # Opens its stream and reads nothing until the publisher is done; then reads on.
            call: Any = ch.stream_stream(SUB, request_serializer=None,
                                         response_deserializer=outputs_pb2.response.FromString)()
            await call.write(outputs_pb2.request(start=start).SerializeToString())
            await loop.run_in_executor(None, conn.recv)  # "read now"
        elif kind == "sub":
            call = ch.stream_stream(SUB, request_serializer=None,
                                    response_deserializer=outputs_pb2.response.FromString)()
            await call.write(outputs_pb2.request(start=start).SerializeToString())
        else:
            batched: grpc.aio.UnaryStreamMultiCallable[bytes, alerts_pb2.SubscribeResponse] = ch.unary_stream(
                SUBSCRIBE, request_serializer=None, response_deserializer=alerts_pb2.SubscribeResponse.FromString)
            call = batched(alerts_pb2.SubscribeRequest(start=start).SerializeToString())
        end = time.monotonic() + deadline_s
        while received + lost < total and time.monotonic() < end:
            try:
                msg = await asyncio.wait_for(call.read(), max(0.1, end - time.monotonic()))
            except TimeoutError:
                break
            if msg is grpc.aio.EOF:
                break
            for alert in (msg.alerts if kind == "batched" else [msg]):
                if alert.source == "internal":
                    lost += int(alert.output_fields.get("falconet.lost") or 0)
                else:
                    received += 1
        call.cancel()
        await ch.close()
        return kind, received, lost

    return list(await asyncio.gather(*(one(k) for k in kinds)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fn-soak-"))
    certs = tmp / "certs"
    init_certs(certs)
    tls = ((certs / "ca.crt").read_bytes(), (certs / "client.key").read_bytes(), (certs / "client.crt").read_bytes())
    server = subprocess.Popen(
        [sys.executable, "-m", "falconet.server.cli", "serve", "--listen", f"unix://{tmp}/soak.sock",
         "--listen", "127.0.0.1:0", "--certs", str(certs), "--store", str(tmp / "alerts.db")],
        stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    server.stdout.readline()
    tcp = server.stdout.readline().split()[-1]
    total = int(args.rate * args.minutes * 60)
    ctx = mp.get_context("spawn")
    kinds_a = ["batched"] * 4 + ["sub"]
    kinds_b = ["batched"] * 4 + ["sub"]
    procs, pipes = [], []
    for kinds in (kinds_a, kinds_b, ["stalled"]):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=subscribers, args=(child, tcp, tls, kinds, total, args.minutes * 60 + 300))
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    pub_parent, pub_child = ctx.Pipe()
    pub = ctx.Process(target=publisher, args=(pub_child, f"unix://{tmp}/soak.sock", args.rate, total))
    t0 = time.monotonic()
    pub.start()
    print(f"soak: {args.rate:,} alerts/s for {args.minutes:g} min ({total:,} alerts), 10 subscribers + 1 stalled")
    print(f"{'t (s)':>6} {'server RSS (MiB)':>17}", flush=True)
    curve: list[tuple[float, float]] = []
    next_sample = t0
    while not pub_parent.poll(0.5):
        if time.monotonic() >= next_sample:
            mib = rss_kib(server.pid) / 1024
            curve.append((time.monotonic() - t0, mib))
            print(f"{time.monotonic() - t0:>6.0f} {mib:>17.1f}", flush=True)
            next_sample += 30
    accepted, seconds = pub_parent.recv()
    print(f"published {accepted:,} in {seconds:.0f} s ({accepted / seconds:,.0f}/s)")
    pipes[2].send("read now")
    results: list[tuple[str, int, int]] = []
    for pipe in pipes:
        results += pipe.recv()
    mib = rss_kib(server.pid) / 1024
    print(f"{time.monotonic() - t0:>6.0f} {mib:>17.1f}  (after the stalled subscriber read on)")
    ok = True
    for kind, received, lost in results:
        good = received + lost == accepted
        ok &= good
        print(f"  {kind:<8} received {received:>9,} reported lost {lost:>9,} "
              f"{'= published' if good else '!= published: LOST UNREPORTED'}")
    first = [m for t, m in curve if t >= 60][:1] or [curve[0][1]]
    print(f"RSS: first minute {first[0]:.1f} MiB, peak {max(m for _, m in curve):.1f} MiB, end {mib:.1f} MiB")
    server.terminate()
    server.wait(30)
    for proc in [*procs, pub]:
        proc.join(30)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
