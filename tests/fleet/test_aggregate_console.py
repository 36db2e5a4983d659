"""The web console of `falconet aggregate` (issue 15): the fleet's alerts, every host's, behind mutual TLS,
with stream sequences as the page's positions; on by default, but off (and saying so) without a credential."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import ssl
import time
from pathlib import Path

import nats
import pytest
from aggregate_support import AggregatorProcess, ensure_stream, publish_node
from nats_servers import NatsServer

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

HOSTS = ("node-a", "node.b.example")


def publish(url: str, plan: list[tuple[str, int, int]]) -> None:
    async def main() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc)
            for host, first, count in plan:
                await publish_node(nc, host, first, count)
        finally:
            await nc.close()

    asyncio.run(main())


def log_line(agg: AggregatorProcess, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    """A line of the aggregator's log matching `pattern`, waited for with a deadline."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        found = rx.search(agg.log_tail(200))
        if found:
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{agg.log_tail()}"
        time.sleep(0.05)  # polling a log file another process writes


def get(url: str, path: str, ctx: ssl.SSLContext, *, until_alerts: int = 0) -> tuple[int, list[dict[str, object]]]:
    """(status, alerts) of GET path; for the stream, reads until `until_alerts` alerts arrived."""
    host, port = url.removeprefix("https://").rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200 or not until_alerts:
            body = response.read()
            return response.status, [json.loads(body)] if body.startswith(b"{") else []
        alerts: list[dict[str, object]] = []
        buffer = b""
        while len(alerts) < until_alerts:
            chunk = response.read1(65536)
            assert chunk, "the stream ended"
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if b"event: alerts" in block:
                    alerts.extend(json.loads(block[block.index(b"data: ") + 6 :])["alerts"])
        return 200, alerts
    finally:
        conn.close()


def test_the_aggregator_serves_the_fleet_in_the_console(nats_server: NatsServer, tmp_path: Path,
                                                        certs_dir: Path) -> None:  # fmt: skip
    publish(nats_server.url, [(HOSTS[0], 1, 30), (HOSTS[1], 1, 20)])
    agg = AggregatorProcess(nats_server.url, tmp_path / "agg", certs_dir, name="agg-console",
                            extra=["--console", "127.0.0.1:0", "--console-allow-cn", "falconet-client"]).start()  # fmt: skip
    try:
        url = log_line(agg, r"web console on (https://127\.0\.0\.1:\d+/)").group(1)
        ctx = ssl.create_default_context(cafile=str(certs_dir / "ca.crt"))
        ctx.load_cert_chain(str(certs_dir / "client.crt"), str(certs_dir / "client.key"))
        status, info = get(url, "/api/info", ctx)
        assert status == 200 and info[0]["kind"] == "fleet"
        status, alerts = get(url, "/api/stream?backlog=100", ctx, until_alerts=50)
        assert sorted({str(a["hostname"]) for a in alerts}) == sorted(HOSTS)
        seqs = [a["cursor"]["sequence"] for a in alerts]  # type: ignore[index]
        assert seqs == list(range(1, 51))  # the stream's sequences are the page's positions
        status, only_b = get(url, f"/api/stream?backlog=100&host={HOSTS[1]}", ctx, until_alerts=20)
        assert {a["hostname"] for a in only_b} == {HOSTS[1]} and len(only_b) == 20
        # Published while a page is open: it resumes after the stream position it holds.
        position = f"{info[0]['epoch']}:50"
        publish(nats_server.url, [(HOSTS[0], 31, 5)])
        status, more = get(url, f"/api/stream?after={position}", ctx, until_alerts=5)
        assert [a["cursor"]["sequence"] for a in more] == [51, 52, 53, 54, 55]  # type: ignore[index]
        # Another CA's or no certificate: the handshake fails; an unlisted name: 403 (tests/console cover it).
        bare = ssl.create_default_context(cafile=str(certs_dir / "ca.crt"))
        with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
            get(url, "/api/info", bare)
    finally:
        agg.stop()


def test_on_by_default_but_never_without_a_credential(nats_server: NatsServer, tmp_path: Path,
                                                      certs_dir: Path) -> None:  # fmt: skip
    publish(nats_server.url, [(HOSTS[0], 1, 1)])
    agg = AggregatorProcess(nats_server.url, tmp_path / "agg", certs_dir, name="agg-default").start()
    try:
        log_line(agg, r"the web console is off: it is on by default on an aggregator, but only with a credential")
        assert "web console on" not in agg.log_tail(200)
    finally:
        agg.stop()
