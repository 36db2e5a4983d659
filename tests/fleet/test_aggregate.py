"""`falconet aggregate` against a real JetStream server, read by real clients (falco-client, the Python SDK and
Falco's own client-go), each aggregator its own process.

Two hosts' alerts are published into the stream as their nodes' forwarders publish them (aggregate_support.py);
every client must receive every alert of both hosts once, in each host's order, with the stream's cursor.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from aggregate_support import (
    FALCO_CLIENT,
    FALCONET,
    REPO,
    AggregatorProcess,
    ensure_stream,
    falco_client,
    make_replicated_stream,
    numbers,
    publish_node,
    publish_retrying,
)
from nats_servers import NatsCluster, NatsServer
from resources import missing

from falconet.model.alert import Cursor
from falconet.sdk import Client

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

HOSTS = ("node-a", "node.b.example")


def publish(url: str, plan: list[tuple[str, int, int]], *, concurrent: bool = True) -> None:
    """Publishes (host, first, count) batches, the hosts at once as two nodes would."""

    async def main() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc)
            jobs = [publish_node(nc, host, first, count) for host, first, count in plan]
            if concurrent:
                await asyncio.gather(*jobs)
            else:
                for job in jobs:
                    await job
        finally:
            await nc.close()

    asyncio.run(main())


def expect_per_host(got: list[tuple[str, int]], want: dict[str, range]) -> None:
    """Every alert of each host once, in that host's order."""
    for host, ks in want.items():
        assert [k for h, k in got if h == host] == list(ks), host
    assert len(got) == sum(len(ks) for ks in want.values())


@pytest.fixture
def aggregators(tmp_path: Path, certs_dir: Path) -> Iterator[list[AggregatorProcess]]:
    started: list[AggregatorProcess] = []
    yield started
    for agg in started:
        agg.stop()


def start(started: list[AggregatorProcess], server: NatsServer, tmp_path: Path, certs: Path, name: str,
          *extra: str) -> AggregatorProcess:  # fmt: skip
    agg = AggregatorProcess(server.url, tmp_path / "agg", certs, name=name, extra=list(extra)).start()
    started.append(agg)
    return agg


@pytest.fixture(scope="module")
def clientgo_probe() -> Path:
    """Falco's client-go probe (tests/sdk_multilang/clientgo), as `make sdk-build` builds it."""
    out = REPO / ".tools" / "sdk-bin" / "clientgo-probe"
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if go is None:
        if out.exists():
            return out
        missing("Go is not installed (make sdk-build builds Falco's client-go probe)")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([go, "build", "-buildvcs=false", "-o", str(out), "."],
                          cwd=REPO / "tests/sdk_multilang/clientgo", capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return out


def probe(binary: Path, agg: AggregatorProcess, transport: str, mode: str, *extra: str) -> list[dict[str, object]]:
    if transport == "unix":
        args = ["--unix-socket", f"unix://{agg.unix_path}"]
    else:
        args = ["--host", "localhost", "--port", str(agg.tcp_port), "--ca", str(agg.certs / "ca.crt"),
                "--cert", str(agg.certs / "client.crt"), "--key", str(agg.certs / "client.key")]
    proc = subprocess.run([str(binary), "--mode", mode, "--timeout", "60s", *args, *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.multilang
def test_two_hosts_every_alert_once_in_order(nats_server: NatsServer, tmp_path: Path, certs_dir: Path,
                                             aggregators: list[AggregatorProcess], clientgo_probe: Path) -> None:
    publish(nats_server.url, [(HOSTS[0], 1, 120), (HOSTS[1], 1, 80)])
    agg = start(aggregators, nats_server, tmp_path, certs_dir, "agg-1")
    # Published after the aggregator caught up: the live feed, not only the start-up read.
    publish(nats_server.url, [(HOSTS[0], 121, 30), (HOSTS[1], 81, 20)])
    want = {HOSTS[0]: range(1, 151), HOSTS[1]: range(1, 101)}
    for transport in ("unix", "mtls"):
        lines = falco_client(agg, transport, "subscribe", "--from", "oldest", "--count", "250", "--output", "json")
        docs = [json.loads(line) for line in lines]
        expect_per_host(numbers(str(d["output"]) for d in docs), want)
        assert all(d["hostname"] in HOSTS for d in docs)
        seqs = [int(d["cursor"]["sequence"]) for d in docs]
        assert seqs == sorted(seqs) and len(set(seqs)) == 250
        batched = falco_client(agg, transport, "subscribe", "--batched", "--from", "oldest", "--count", "250")
        expect_per_host(numbers(batched), want)
        # Falco's client-go: sub drains this identity's queue (everything, first time), get then has nothing.
        subbed = probe(clientgo_probe, agg, transport, "sub", "--count", "250")
        expect_per_host(numbers(str(d["output"]) for d in subbed), want)
        assert probe(clientgo_probe, agg, transport, "get") == []
        version = probe(clientgo_probe, agg, transport, "version")
        assert version and version[0]["version"]
    # The Falco cursor lives in the bucket: new alerts, then get returns exactly those.
    publish(nats_server.url, [(HOSTS[1], 101, 5)])
    got = probe(clientgo_probe, agg, "unix", "get")
    assert numbers(str(d["output"]) for d in got) == [(HOSTS[1], k) for k in range(101, 106)]


def test_host_filter(nats_server: NatsServer, tmp_path: Path, certs_dir: Path,
                     aggregators: list[AggregatorProcess]) -> None:
    publish(nats_server.url, [(HOSTS[0], 1, 40), (HOSTS[1], 1, 40)])
    agg = start(aggregators, nats_server, tmp_path, certs_dir, "agg-f")
    only_b = falco_client(agg, "unix", "get", "--hostname", HOSTS[1])
    assert numbers(only_b) == [(HOSTS[1], k) for k in range(1, 41)]
    both = falco_client(agg, "mtls", "get", "--hostname", HOSTS[0], "--hostname", HOSTS[1])
    expect_per_host(numbers(both), {HOSTS[0]: range(1, 41), HOSTS[1]: range(1, 41)})
    assert falco_client(agg, "unix", "get", "--hostname", "no-such-node") == []
    with Client(unix_socket=agg.unix_path) as client:
        alerts = client.get(hosts=[HOSTS[0]], start="oldest")
    assert [a.hostname for a in alerts] == [HOSTS[0]] * 40


def _cursor(line: str) -> Cursor:
    doc = json.loads(line)
    return Cursor(doc["cursor"]["epoch"], int(doc["cursor"]["sequence"]))


def test_client_moves_between_aggregators_without_gap_or_duplicate(
        nats_server: NatsServer, tmp_path: Path, certs_dir: Path, aggregators: list[AggregatorProcess]) -> None:
    publish(nats_server.url, [(HOSTS[0], 1, 50), (HOSTS[1], 1, 50)])
    a = start(aggregators, nats_server, tmp_path, certs_dir, "agg-a")
    b = start(aggregators, nats_server, tmp_path, certs_dir, "agg-b", "--retention", "16")
    # The same alert has the same cursor on both.
    on_a = falco_client(a, "unix", "get", "--output", "json")
    on_b = falco_client(b, "mtls", "get", "--output", "json")
    assert on_a == on_b and len(on_a) == 100
    # A client reads part of the stream on A, then goes on from its cursor on B (whose ring holds only the
    # newest 16, so B reads the rest from JetStream), with more published meanwhile.
    first = falco_client(a, "unix", "subscribe", "--from", "oldest", "--count", "37", "--output", "json")
    publish(nats_server.url, [(HOSTS[0], 51, 25), (HOSTS[1], 51, 25)])
    rest = falco_client(b, "mtls", "subscribe", "--from", str(_cursor(first[-1])), "--count", "113",
                        "--output", "json")
    got = numbers(json.loads(line)["output"] for line in first + rest)
    expect_per_host(got, {HOSTS[0]: range(1, 76), HOSTS[1]: range(1, 76)})
    # And back to A with B's last cursor: nothing more until something is published, then exactly that.
    publish(nats_server.url, [(HOSTS[0], 76, 3)])
    back = falco_client(a, "unix", "subscribe", "--from", str(_cursor(rest[-1])), "--count", "3")
    assert numbers(back) == [(HOSTS[0], k) for k in (76, 77, 78)]


@pytest.mark.multilang
def test_falco_cursor_follows_identity_across_aggregators(
        nats_server: NatsServer, tmp_path: Path, certs_dir: Path, aggregators: list[AggregatorProcess],
        clientgo_probe: Path) -> None:
    publish(nats_server.url, [(HOSTS[0], 1, 30)])
    a = start(aggregators, nats_server, tmp_path, certs_dir, "agg-a")
    b = start(aggregators, nats_server, tmp_path, certs_dir, "agg-b")
    got_a = probe(clientgo_probe, a, "mtls", "get")
    assert numbers(str(d["output"]) for d in got_a) == [(HOSTS[0], k) for k in range(1, 31)]
    publish(nats_server.url, [(HOSTS[1], 1, 10)])
    got_b = probe(clientgo_probe, b, "mtls", "get")  # same client certificate, another aggregator
    assert numbers(str(d["output"]) for d in got_b) == [(HOSTS[1], k) for k in range(1, 11)]
    assert probe(clientgo_probe, a, "mtls", "get") == []
    # sub on B takes the next ones, and the queue is then empty on A.
    publish(nats_server.url, [(HOSTS[0], 31, 4)])
    subbed = probe(clientgo_probe, b, "mtls", "sub", "--count", "4")
    assert numbers(str(d["output"]) for d in subbed) == [(HOSTS[0], k) for k in range(31, 35)]
    assert _wait_empty_get(clientgo_probe, a)


def _wait_empty_get(binary: Path, agg: AggregatorProcess) -> bool:
    """After a `sub` ends, its cursor is written when the aggregator sees the call end: a `get` right after may
    race it, so the check is that the queue is empty once that write has happened, within a deadline."""

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if probe(binary, agg, "mtls", "get") == []:
            return True
    return False


def test_restart_resumes_from_cursor(nats_server: NatsServer, tmp_path: Path, certs_dir: Path,
                                     aggregators: list[AggregatorProcess]) -> None:
    publish(nats_server.url, [(HOSTS[0], 1, 20), (HOSTS[1], 1, 20)])
    agg = start(aggregators, nats_server, tmp_path, certs_dir, "agg-r", "--retention", "8")
    first = falco_client(agg, "unix", "subscribe", "--from", "oldest", "--count", "25", "--output", "json")
    agg.stop()
    publish(nats_server.url, [(HOSTS[0], 21, 10), (HOSTS[1], 21, 10)])
    again = start(aggregators, nats_server, tmp_path, certs_dir, "agg-r", "--retention", "8")
    rest = falco_client(again, "mtls", "subscribe", "--from", str(_cursor(first[-1])), "--count", "35",
                        "--output", "json")
    got = numbers(json.loads(line)["output"] for line in first + rest)
    expect_per_host(got, {HOSTS[0]: range(1, 31), HOSTS[1]: range(1, 31)})
    # The epoch is the stream's, so the cursor of the first run is valid in the second (no gap alert).
    assert all(json.loads(line)["source"] != "internal" for line in rest)
    assert _cursor(first[0]).epoch == _cursor(rest[0]).epoch


def test_config_file(nats_server: NatsServer, tmp_path: Path, certs_dir: Path) -> None:
    """`falconet aggregate -c FILE` alone: NATS, stream and both listeners from the file's `aggregate` block."""
    publish(nats_server.url, [(HOSTS[0], 1, 3)])
    sock = tmp_path / "from-file.sock"
    conf = tmp_path / "aggregate.yaml"
    conf.write_text(
        "aggregate:\n"
        f"  servers: [{nats_server.url}]\n"
        "  stream: FALCONET_ALERTS\n  subject_prefix: falconet.alerts\n  silence_timeout: 20\n"
        "  grpc:\n"
        f"    bind_address: [unix://{sock}]\n"
        f"    root_certs: {certs_dir / 'ca.crt'}\n"
        f"    cert_chain: {certs_dir / 'server.crt'}\n"
        f"    private_key: {certs_dir / 'server.key'}\n"
        "  webserver: {listen_address: 127.0.0.1, listen_port: 0}\n")
    agg = AggregatorProcess(nats_server.url, tmp_path / "agg", certs_dir, name="from-file")
    agg.argv = ["-c", str(conf)]
    agg.expect_tcp = False
    try:
        agg.start()
        assert agg.unix_path == sock
        assert numbers(falco_client(agg, "unix", "get")) == [(HOSTS[0], k) for k in (1, 2, 3)]
        assert agg.metrics_url.startswith("http://127.0.0.1:") and agg.http("/readyz")[0] == 200
    finally:
        agg.stop()


def test_bad_config_file_is_refused_whole(tmp_path: Path) -> None:
    conf = tmp_path / "aggregate.yaml"
    conf.write_text("aggregate:\n  servers: [http://nats]\n  stream: a.b\n  silence_timeout: no\n")
    proc = subprocess.run([*FALCONET, "aggregate", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    for part in ("aggregate.servers", "aggregate.stream", "aggregate.silence_timeout", str(conf)):
        assert part in proc.stderr, proc.stderr


def test_cluster_server_killed_while_publishing(nats_cluster: NatsCluster, tmp_path: Path, certs_dir: Path,
                                                aggregators: list[AggregatorProcess]) -> None:
    """A replicated stream on three servers: one is killed (the one the aggregator reached first) while both
    nodes publish; a subscriber of the aggregator still gets every alert once, in each host's order."""
    urls = nats_cluster.urls

    asyncio.run(make_replicated_stream(urls[1]))
    servers = [arg for url in urls for arg in ("--servers", url)]
    agg = AggregatorProcess(urls[0], tmp_path / "agg", certs_dir, name="agg-c", extra=servers[2:]).start()
    aggregators.append(agg)
    client = subprocess.Popen([*FALCO_CLIENT, *agg.client_args("unix"), "subscribe", "--from", "oldest",
                               "--count", "400", "--output", "json"], stdout=subprocess.PIPE, text=True)

    async def publish_through_kill() -> None:
        nc = await nats.connect(servers=urls[1:], max_reconnect_attempts=-1)
        try:
            await asyncio.gather(publish_retrying(nc, HOSTS[0], 1, 100), publish_retrying(nc, HOSTS[1], 1, 100))
            nats_cluster.servers[0].kill()
            await asyncio.gather(publish_retrying(nc, HOSTS[0], 101, 100),
                                 publish_retrying(nc, HOSTS[1], 101, 100))
        finally:
            await nc.close()

    try:
        asyncio.run(publish_through_kill())
        out, _ = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0
    docs = [json.loads(line) for line in out.splitlines()]
    expect_per_host(numbers(str(d["output"]) for d in docs), {HOSTS[0]: range(1, 201), HOSTS[1]: range(1, 201)})
