"""The persistent alert store's cost: the rows the store may slow down, each measured with the store off and on
in the same run (part of `python -m bench.server_throughput`; `--store-only` runs just these).

- Falco `sub`, one mTLS stream: capacity (cached backlog) and the highest sustained live rate;
- the batched stream's capacity (one mTLS subscriber);
- publish cost per alert: through `InputService.Publish` from another process over the UNIX socket, until
  acknowledged (with the store, the ack waits for the commit); the engine thread's `Hub.publish` calls while
  one subscriber receives the alerts (its first read converts them without a store, the writer thread does with
  one: both compete with the engine thread for the GIL); and publishing until each alert is ready to send (wire
  form made: by the first reader without a store, by the writer with one);
- the latency a store adds before an alert becomes visible (the commit window plus the commit).

Each publish row also reports the CPU time this process (the server; publishing clients run elsewhere) spent
per alert, off and on: on a machine other work loads, wall-clock rates move by 2x between rounds while CPU per
alert stays within a few percent, so it shows what the store costs even when the rates cannot.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.server_throughput import Bench
    from falconet.model.alert import Alert
    from falconet.server.app import AlertServer

INPUT_PUBLISH = "/falconet.v1.InputService/Publish"
CPU_PER_ALERT: list[float] = []
"""The publish rows append this process's CPU µs per alert of each run here (read by `store_rows`)."""


def publish_client(conn: Connection, target: str, n: int, batch: int) -> None:
    """Publishes `n` alerts in requests of `batch` (serialized before the clock starts); sends (accepted, s)."""
    import grpc

    from bench.server_throughput import make_alert
    from falconet.sdk.api.falconet.v1 import inputs_pb2
    from falconet.sdk.convert import alert_to_proto

    requests = [
        inputs_pb2.PublishRequest(
            alerts=[alert_to_proto(make_alert(i)) for i in range(k, min(n, k + batch))]
        ).SerializeToString()
        for k in range(0, n, batch)
    ]
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(30)
        call: grpc.StreamUnaryMultiCallable[bytes, inputs_pb2.PublishResponse] = channel.stream_unary(
            INPUT_PUBLISH, request_serializer=None, response_deserializer=inputs_pb2.PublishResponse.FromString
        )
        t0 = time.perf_counter()
        reply = call(iter(requests), timeout=600)
        conn.send((reply.accepted, time.perf_counter() - t0))


def publish_rate(bench: Bench, store: bool, n: int) -> float:
    """Alerts/s through InputService.Publish, acknowledged."""
    server, unix, _ = bench.falconet(retention=10_000, store=store)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=publish_client, args=(child, unix, n, 500))
    proc.start()
    cpu0 = time.process_time()
    if not parent.poll(300):
        raise RuntimeError("the publishing client did not report")
    accepted, seconds = parent.recv()
    cpu = time.process_time() - cpu0
    proc.join(30)
    bench.stop(server)
    if accepted != n:
        raise RuntimeError(f"published {accepted} of {n}")
    CPU_PER_ALERT.append(cpu / n * 1e6)
    return float(n / seconds)


ENGINE_CPU_PER_CALL: list[float] = []
"""The engine thread's own CPU µs per `Hub.publish` call of each run of `engine_publish_rate`."""


def engine_publish_rate(bench: Bench, store: bool, n: int) -> float:
    """Alerts/s of `Hub.publish` calls on one thread (the engine thread), while one subscriber on the event loop
    receives them, as in the daemon.

    Like for like: every delivered alert is converted once, by the subscriber's first read without a store (on
    the event loop) and by the writer thread with one, and either shares the GIL with the engine thread. (Until
    session 5 this row had no subscriber: the store-off side then converted nothing, and compared a call that
    only appends with one whose alerts the writer converts at once: 0.37-0.66.) The process's CPU per alert is
    counted until the subscriber has taken every alert, and the engine thread's own CPU per call is kept."""
    import asyncio

    from bench.server_throughput import make_alert

    server, _, _ = bench.falconet(retention=n, store=store)
    hub = server.hub
    alerts = [make_alert(i) for i in range(n)]
    reader = hub.reader(hub.start_now().next_seq, name="bench")

    async def subscriber() -> None:
        # What a subscriber's stream does per wake-up: take what is visible, and its wire forms (cached with a
        # store; made here, once, without one).
        while reader.next_seq <= n:
            await reader.wait()
            entries, _ = reader.take(1000)
            for entry in entries:
                entry.wire()

    done = asyncio.run_coroutine_threadsafe(subscriber(), bench.loop.loop)
    publish = hub.publish
    cpu0 = time.process_time()
    own0 = time.thread_time()
    t0 = time.perf_counter()
    for alert in alerts:
        publish(alert)
    calls = time.perf_counter() - t0
    ENGINE_CPU_PER_CALL.append((time.thread_time() - own0) / n * 1e6)
    done.result(120)
    CPU_PER_ALERT.append((time.process_time() - cpu0) / n * 1e6)  # until delivered: the conversion included
    reader.close()
    bench.stop(server)
    return n / calls


def until_ready(bench: Bench, server: AlertServer, store: bool, alerts: list[Alert]) -> tuple[float, float]:
    """Publishes `alerts` by `Hub.publish` until each is ready to send; returns (wall seconds, this process's CPU
    seconds). "Ready": its wire form made, and with a store committed. Without a store the first reader would
    convert each alert (made here, in the publishing thread, once all are visible); with one, the writer thread
    does before committing, and readers reuse it. The timing of the "until ready" row, shared with
    bench.store_ready_split, which splits the same run by thread and step."""
    publish = server.hub.publish
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for alert in alerts:
        publish(alert)
    bench.loop.run(server.hub.wait_durable(len(alerts)))
    if not store:
        for entry in server.hub.snapshot():
            entry.wire()
    return time.perf_counter() - t0, time.process_time() - cpu0


def ready_rate(bench: Bench, store: bool, n: int) -> float:
    """Alerts/s from `Hub.publish` until each is ready to send (`until_ready`): the same work in both cases."""
    from bench.server_throughput import make_alert

    server, _, _ = bench.falconet(retention=n, store=store)
    seconds, cpu = until_ready(bench, server, store, [make_alert(i) for i in range(n)])
    if server.store is not None and server.store.failures:
        raise RuntimeError(f"the store failed during the row: {server.store.last_error}")
    CPU_PER_ALERT.append(cpu / n * 1e6)
    bench.stop(server)
    return n / seconds


def visible_latency_ms(bench: Bench, store: bool, samples: int) -> tuple[float, float]:
    """Median and 99th percentile of publish -> visible to readers, one alert at a time (ms)."""
    from bench.server_throughput import make_alert

    server, _, _ = bench.falconet(retention=10_000, store=store)
    hub = server.hub

    async def one(i: int) -> float:
        t0 = time.perf_counter()
        cursor = hub.publish(make_alert(i))
        await hub.wait_durable(cursor.sequence)
        return (time.perf_counter() - t0) * 1000

    lat = [bench.loop.run(one(i)) for i in range(samples)]
    bench.stop(server)
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


def sustained_ladder(bench: Bench, store: bool, rates: tuple[int, ...], seconds: float) -> int:
    from bench.server_throughput import MAX_LAG

    best = 0
    for rate in rates:
        o, lag = bench.sustained(False, 1, rate, seconds, 1, store=store)
        ok = o.complete and lag <= MAX_LAG
        print(
            f"  Falco sub {rate:>6,}/s, 1 mTLS stream, store {'on ' if store else 'off'}: "
            f"{'holds' if ok else 'FAILS'} (received {o.received:,}/{o.expected_total:,}, lost {o.lost:,}, "
            f"lag {lag:.2f} s)",
            flush=True,
        )
        if not ok:
            break
        best = rate
    return best


def store_rows(bench: Bench, quick: bool, rounds: int = 3, publish_only: bool = False) -> None:
    """Each row with the store off, then on (interleaved rounds, best of each; the sustained ladder once); the
    summary table at the end (target: on/off >= 0.90)."""
    print()
    print("alert store: each row with the store off and on, in this run (synchronous=normal, 2 ms window)")
    summary: list[tuple[str, float, float, str]] = []
    cpu_rows: list[tuple[str, float, float]] = []
    n1 = 20_000 if quick else 60_000
    nb = 100_000 if quick else 300_000
    subscriber_rows: list[tuple[str, Callable[[bool], float]]] = [
        ("Falco sub capacity, 1 mTLS stream", lambda st: bench.capacity(
            f"Falco sub, 1 subscriber, mTLS, store {'on' if st else 'off'}", False, "mTLS", 1, n1, 1, store=st)),
        ("batched capacity, 1 mTLS stream", lambda st: bench.capacity(
            f"batched, 1 subscriber, mTLS, store {'on' if st else 'off'}", True, "mTLS", 1, nb, 1, store=st)),
    ]
    publish_rows: list[tuple[str, Callable[[bool], float]]] = [
        ("publish via InputService (acked)", lambda st: publish_rate(bench, st, 50_000 if quick else 200_000)),
        ("Hub.publish calls, 1 subscriber", lambda st: engine_publish_rate(bench, st, 50_000 if quick else 200_000)),
        ("publish until ready to send", lambda st: ready_rate(bench, st, 50_000 if quick else 200_000)),
    ]
    # Interleaved off/on rounds, best of each: on a shared machine the load moves between runs, and the best of
    # several is the figure least disturbed by it (the same for both sides).
    for name, run in ([] if publish_only else subscriber_rows) + publish_rows:
        offs: list[float] = []
        ons: list[float] = []
        cpu_off: list[float] = []
        cpu_on: list[float] = []
        own: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            CPU_PER_ALERT.clear()
            ENGINE_CPU_PER_CALL.clear()
            offs.append(run(False))
            own[False].extend(ENGINE_CPU_PER_CALL)
            ENGINE_CPU_PER_CALL.clear()
            cpu_off.extend(CPU_PER_ALERT)
            CPU_PER_ALERT.clear()
            ons.append(run(True))
            cpu_on.extend(CPU_PER_ALERT)
            own[True].extend(ENGINE_CPU_PER_CALL)
        print(f"  {name}: off {', '.join(f'{x:,.0f}' for x in offs)}; on {', '.join(f'{x:,.0f}' for x in ons)}",
              flush=True)
        if own[False] and own[True]:
            print(f"  {name}: the engine thread's own CPU per call (µs, least of rounds): "
                  f"off {min(own[False]):.3f}, on {min(own[True]):.3f}", flush=True)
        summary.append((name, max(offs), max(ons), f"alerts/s, best of {rounds}"))
        if cpu_off and cpu_on:
            cpu_rows.append((name, min(cpu_off), min(cpu_on)))
    if not publish_only:
        rates = (4000, 6000, 8000, 10_000, 12_000, 14_000)
        seconds = 3.0 if quick else 6.0
        off, on = sustained_ladder(bench, False, rates, seconds), sustained_ladder(bench, True, rates, seconds)
        summary.append(("Falco sub sustained, 1 mTLS stream", off, on, "alerts/s held"))
    lat_off, lat_on = visible_latency_ms(bench, False, 200), visible_latency_ms(bench, True, 200)
    print()
    print(f"{'row':<40} {'store off':>12} {'store on':>12} {'on/off':>7}")
    for name, a, b, unit in summary:
        print(f"{name:<40} {a:>12,.0f} {b:>12,.0f} {b / a if a else 0:>7.2f}  {unit}", flush=True)
    print(
        f"{'publish -> visible latency (ms)':<40} {lat_off[0]:>7.3f} p50 {lat_on[0]:>7.3f} p50    "
        f"(p99 {lat_off[1]:.3f} off, {lat_on[1]:.3f} on)",
        flush=True,
    )
    print()
    print(f"{'server CPU per alert (µs, least of rounds)':<44} {'off':>8} {'on':>8} {'off/on':>7}")
    for name, a, b in cpu_rows:
        print(f"{name:<44} {a:>8.2f} {b:>8.2f} {a / b if b else 0:>7.2f}", flush=True)
