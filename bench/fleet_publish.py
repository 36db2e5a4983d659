"""The node side of the fleet (issue 13): what forwarding alerts to NATS JetStream costs and carries.

- Node-side cost per alert: CPU time of the node process per alert, from `Hub.publish_many` until JetStream
  acknowledged it through the `nats` output (server/fleet/output.py), against the local hub alone (the same
  alerts published and read by one local reader that takes each one's wire form, as a gRPC subscriber does).
- End-to-end alerts/s from N node processes (N = 1, 10, 50; each a hub holding the pre-built alerts, wire forms
  made, and a forwarder started when the clock starts: its connect and resume are timed too) into one
  JetStream server (a child nats-server), until every alert is acknowledged; against a bare nats-py
  publisher (`JetStreamContext.publish_async`, the same window of unacknowledged messages) publishing the very
  same subjects, headers and payloads from the same number of processes, in the same run.
- The bytes of a typical alert on the wire and in the stream, for sizing (docs/fleet.md).

    .venv/bin/python -m bench.fleet_publish [--quick] [--alerts N]
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
import urllib.request
from pathlib import Path
from typing import Any

WINDOW = 1024
STREAM = "FALCONET_ALERTS"


# -- a child nats-server ------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServerProcess:
    def __init__(self, base: Path) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise SystemExit("nats-server is not installed (make nats-system)")
        self.port, self.http = _free_port(), _free_port()
        conf = base / "nats.conf"
        conf.write_text(f'listen: "127.0.0.1:{self.port}"\nhttp: "127.0.0.1:{self.http}"\n'
                        f'jetstream {{ store_dir: "{base / "js"}", max_file_store: 8GB }}\n')
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz?js-enabled-only=true", timeout=2):
                    return
            except OSError:
                time.sleep(0.05)  # readiness poll with a deadline
        raise SystemExit("nats-server did not start")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def _reset_stream(url: str) -> None:
    """A fresh stream for each measurement (made as the node would make it), so none measures another's data."""
    import nats
    from nats.js.errors import NotFoundError

    from falconet.server.fleet.output_config import NatsOutputConfig
    from falconet.server.fleet.output_stream import wanted_stream

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    try:
        await js.delete_stream(STREAM)
    except NotFoundError:
        pass
    await js.add_stream(wanted_stream(NatsOutputConfig()))
    await nc.close()


async def _stream_messages(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    info = await nc.jetstream().stream_info(STREAM)
    await nc.close()
    return int(info.state.messages)


# -- the workers (one per node process) ---------------------------------------------------------------------


def _node_hub(host: str, count: int) -> tuple[object, list[object]]:
    from bench.server_throughput import make_alert
    from falconet.server.hub import Hub

    hub = Hub(retention=count + 16, hostname=host)
    return hub, [make_alert(i) for i in range(count)]


async def _forwarder_worker(url: str, host: str, count: int, backlog: bool) -> dict[str, float]:
    """`backlog`: the alerts are in the hub with their wire forms made before the clock starts, and the
    forwarder starts (connects, finds the stream, resumes) on "go"; else it is connected first and the clock
    covers publishing into the hub and each alert's conversion too (the node's whole cost)."""
    from falconet.server.fleet.connection import NatsConnection
    from falconet.server.fleet.output import NatsForwarder
    from falconet.server.fleet.output_config import NatsOutputConfig
    from falconet.server.hub import Hub

    hub, alerts = _node_hub(host, count)
    assert isinstance(hub, Hub)
    cfg = NatsOutputConfig(enabled=True, connection=NatsConnection(servers=(url,)), max_in_flight=WINDOW,
                           ack_timeout_s=30)
    fwd = NatsForwarder(cfg, hub, report=lambda a: None,
                        log=lambda m: None if "forwarding to" in m else print(f"{host}: {m}", file=sys.stderr))
    if backlog:
        hub.publish_many(alerts)  # type: ignore[arg-type]
        for e in hub.snapshot():
            e.wire()
        await _ready()
        cpu0, t0 = time.process_time(), time.time()
        fwd.start()
    else:
        fwd.start()
        while not fwd.stats.connected:
            await asyncio.sleep(0.01)  # readiness poll before the clock starts
        await _ready()
        cpu0, t0 = time.process_time(), time.time()
        hub.publish_many(alerts)  # type: ignore[arg-type]
    while fwd.stats.forwarded_seq < count:
        await asyncio.sleep(0.001)  # completion poll (1 ms granularity on runs of >= 100 ms)
    t1, cpu1 = time.time(), time.process_time()
    await fwd.close()
    return {"start": t0, "end": t1, "cpu": cpu1 - cpu0, "count": count, "failures": sum(fwd.stats.failures.values())}


async def _bare_worker(url: str, host: str, count: int) -> dict[str, float]:
    import nats

    from falconet.server.fleet.names import (
        HEADER_EPOCH,
        HEADER_HOST,
        HEADER_MSG_ID,
        HEADER_SEQ,
        alert_subject,
        escape_host,
        msg_id,
    )
    from falconet.server.hub import Hub

    hub, alerts = _node_hub(host, count)
    assert isinstance(hub, Hub)
    hub.publish_many(alerts)  # type: ignore[arg-type]
    subject, token = alert_subject(host), escape_host(host)
    messages = [(e.wire(), {HEADER_MSG_ID: msg_id(hub.epoch, e.seq), HEADER_EPOCH: hub.epoch,
                            HEADER_SEQ: str(e.seq), HEADER_HOST: token}) for e in hub.snapshot()]
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30, publish_async_max_pending=WINDOW)
    await _ready()
    cpu0, t0 = time.process_time(), time.time()
    futures = [await js.publish_async(subject, payload, headers=headers) for payload, headers in messages]
    acks = await asyncio.gather(*futures)
    t1, cpu1 = time.time(), time.process_time()
    assert len(acks) == count
    await nc.close()
    return {"start": t0, "end": t1, "cpu": cpu1 - cpu0, "count": count, "failures": 0}


async def _ready() -> None:
    """Tells the parent this worker is connected and waits for its "go" (so all start together)."""
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def worker_main(mode: str, url: str, host: str, count: int) -> None:
    if mode == "bare":
        result = asyncio.run(_bare_worker(url, host, count))
    else:
        result = asyncio.run(_forwarder_worker(url, host, count, backlog=mode == "backlog"))
    print(json.dumps(result), flush=True)


def start_workers(into: list[subprocess.Popen[str]], mode: str, url: str, hosts: list[str], per_node: int) -> None:
    """A worker process of `mode` per host name, each added to `into` as it starts (so the caller's cleanup
    holds them all even when one fails); returns once every one is ready to publish."""
    into.extend(
        subprocess.Popen([sys.executable, "-m", "bench.fleet_publish", "--worker", mode, "--url", url, "--host", host,
                          "--alerts", str(per_node)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for host in hosts
    )  # fmt: skip
    for p in into:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"a {mode} worker did not start: {line!r}")


def run_workers(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Tells every ready worker to go at once; their results, each read once it has published everything."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        assert p.stdout is not None
        results.append(json.loads(p.stdout.readline()))
        p.wait(60)
    return results


def run_nodes(mode: str, url: str, nodes: int, per_node: int) -> tuple[float, float]:
    """(aggregate alerts/s, node CPU µs per alert) for `nodes` worker processes of `mode`, started together."""
    asyncio.run(_reset_stream(url))
    procs: list[subprocess.Popen[str]] = []
    start_workers(procs, mode, url, [f"node-{i}" for i in range(nodes)], per_node)
    results = run_workers(procs)
    total = sum(r["count"] for r in results)
    held = asyncio.run(_stream_messages(url))
    if held != total:
        raise SystemExit(f"{mode}: the stream holds {held} messages, not the {total} published")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    cpu = sum(r["cpu"] for r in results)
    if any(r["failures"] for r in results):
        print(f"  warning: {mode} workers reported failures: {[r['failures'] for r in results]}")
    return total / wall, cpu / total * 1e6


# -- node-side cost against the local hub alone -----------------------------------------------------------


def hub_alone_cost(count: int) -> float:
    """CPU µs per alert: publish into a memory hub and read each alert's wire form with one local reader."""
    from falconet.server.hub import Hub

    hub, alerts = _node_hub("bench-host", count)
    assert isinstance(hub, Hub)
    reader = hub.reader(1)
    cpu0 = time.process_time()
    hub.publish_many(alerts)  # type: ignore[arg-type]
    taken = 0
    while taken < count:
        entries, _ = reader.take(512)
        for e in entries:
            e.wire()
        taken += len(entries)
    return (time.process_time() - cpu0) / count * 1e6


def alert_bytes(url: str) -> tuple[int, int]:
    """(wire bytes of the typical alert, bytes the stream holds per such alert: payload, subject, headers)."""
    from bench.server_throughput import make_alert
    from falconet.server.hub import Hub

    hub = Hub(hostname="node-0001.eu-west.example.com")
    hub.publish(make_alert(1))
    wire = len(hub.snapshot()[0].wire())

    async def stored() -> int:
        import nats

        from falconet.server.fleet.names import DEFAULT_STREAM

        nc = await nats.connect(url)
        info = await nc.jetstream().stream_info(DEFAULT_STREAM)
        await nc.close()
        return int(info.state.bytes / max(1, info.state.messages))

    return wire, asyncio.run(stored())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fleet_publish")
    ap.add_argument("--quick", action="store_true", help="fewer alerts and no 50-node row")
    ap.add_argument("--alerts", type=int, default=0, help="alerts per scenario (all nodes together)")
    ap.add_argument("--worker", choices=("forwarder", "backlog", "bare"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.url, args.host, args.alerts)
        return 0
    total = args.alerts or (20_000 if args.quick else 60_000)
    base = Path(tempfile.mkdtemp(prefix="falconet-fleet-bench-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the nats-server child
    server = NatsServerProcess(base)
    try:
        print(f"load average {os.getloadavg()[0]:.1f}; {total} alerts per scenario; window {WINDOW}")
        hub_cost = hub_alone_cost(total)
        _, node_cost = run_nodes("forwarder", server.url, 1, total)
        print(f"node-side CPU per alert: hub alone {hub_cost:.1f} us, hub + nats output until acknowledged "
              f"{node_cost:.1f} us ({node_cost / hub_cost:.1f}x)")
        wire, stored = alert_bytes(server.url)
        print(f"typical alert: {wire} B on the wire, {stored} B per message in the stream (subject and headers "
              "included)")
        print(f"{'nodes':>5} {'falconet alerts/s':>18} {'bare nats-py alerts/s':>22} {'ratio':>6}")
        for nodes in (1, 10) if args.quick else (1, 10, 50):
            ours, _ = run_nodes("backlog", server.url, nodes, total // nodes)
            bare, _ = run_nodes("bare", server.url, nodes, total // nodes)
            print(f"{nodes:>5} {ours:>18,.0f} {bare:>22,.0f} {ours / bare:>6.2f}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
