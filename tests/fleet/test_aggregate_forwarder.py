"""The whole fleet path with the real parts: two daemons (`falconet serve --nats-output`, distinct host names)
forward to one JetStream server through the node's own forwarder, and `falconet aggregate` serves both; a
falco-client and Falco's client-go receive every alert of both hosts once, in each host's order. A node that
stops raises the silent-node alert from its real heartbeats."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aggregate_support import AggregatorProcess, falco_client
from nats_servers import NatsServer
from output_support import ServeNode, nats_output_yaml, stream_count, wait_until
from test_aggregate import clientgo_probe, probe  # noqa: F401 - the fixture, shared

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

HOSTS = ("fwd-node-1.example", "fwd-node-2")


def _per_host(docs: list[dict[str, object]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for d in docs:
        text = str(d["output"])
        if text.startswith("fleet-test n="):
            out.setdefault(str(d["hostname"]), []).append(int(text.split("n=")[1]))
    return out


@pytest.mark.multilang
def test_two_forwarding_daemons_through_the_aggregator(nats_server: NatsServer, tmp_path: Path, certs_dir: Path,
                                                       clientgo_probe: Path) -> None:  # noqa: F811
    block = nats_output_yaml([nats_server.url], max_in_flight=64)
    nodes = [ServeNode(tmp_path / f"n{i}", host, block) for i, host in enumerate(HOSTS)]
    agg: AggregatorProcess | None = None
    try:
        for k in range(0, 200, 50):  # before the aggregator starts...
            for node in nodes:
                node.publish(range(k, k + 50))
        wait_until(lambda: stream_count([nats_server.url]) >= 400, "both nodes' first alerts in the stream", 60)
        agg = AggregatorProcess(nats_server.url, tmp_path / "agg", certs_dir, name="agg-fwd").start()
        for k in range(200, 300, 25):  # ...and while it runs
            for node in nodes:
                node.publish(range(k, k + 25))
        want = {host: list(range(300)) for host in HOSTS}
        lines = falco_client(agg, "mtls", "subscribe", "--from", "oldest", "--count", "600", "--output", "json")
        assert _per_host([json.loads(line) for line in lines]) == want
        got = probe(clientgo_probe, agg, "unix", "sub", "--count", "600")
        assert _per_host(got) == want
        assert probe(clientgo_probe, agg, "unix", "get") == []
    finally:
        for node in nodes:
            node.stop()
        if agg is not None:
            agg.stop()


def test_stopped_daemon_is_reported_silent(nats_server: NatsServer, tmp_path: Path, certs_dir: Path) -> None:
    block = nats_output_yaml([nats_server.url])
    node = ServeNode(tmp_path / "n", HOSTS[0], block)
    agg: AggregatorProcess | None = None
    try:
        node.publish(range(3))
        wait_until(lambda: stream_count([nats_server.url]) >= 3, "the node's alerts in the stream", 60)
        agg = AggregatorProcess(nats_server.url, tmp_path / "agg", certs_dir, name="agg-silence",
                                extra=["--silence-timeout", "12"]).start()
        node.publish(range(3, 6))
        assert node.stop() == 0
        deadline = time.monotonic() + 90
        silent: list[str] = []
        while time.monotonic() < deadline and not silent:
            silent = falco_client(agg, "unix", "get", "--rule", "Falconet node silent", "--hostname", HOSTS[0])
            if not silent:
                time.sleep(0.5)  # polling interval of a condition with a deadline
        assert len(silent) == 1, agg.log_tail()
        assert f"node {HOSTS[0]} has sent no alert and no heartbeat" in silent[0]
    finally:
        if node.proc.poll() is None:
            node.stop()
        if agg is not None:
            agg.stop()
