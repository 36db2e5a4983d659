"""Bad input to the `nats` output: an unreachable NATS, wrong credentials, missing stream permissions, an
existing stream of another shape, and alerts the store dropped before they could be forwarded. Each gives one
clear log line (not one per retry), a metric and an internal alert; the daemon keeps serving locally; recovery
is reported too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig
from nats_servers import NatsServer, single_server
from output_support import (
    RunNode,
    ServeNode,
    check_host,
    host_numbers,
    nats_output_yaml,
    read_stream,
    stream_count,
    wait_until,
)

from falconet.server.fleet.names import DEFAULT_STREAM, all_alerts
from falconet.server.fleet.output import FAILING_RULE, RECOVERED_RULE, SHAPE_RULE, UNFORWARDED_RULE

pytestmark = pytest.mark.nats


def _block(url: str, **keys: object) -> str:
    return nats_output_yaml([url], ack_timeout=1, **keys)


def _failures(node: RunNode, reason: str) -> float:
    return node.metrics().get(("falconet_nats_output_failures_total", reason), 0.0)


def test_unreachable_nats_is_reported_once_and_recovery_too(tmp_path: Path) -> None:
    server = single_server(tmp_path / "nats")  # ports chosen, not started yet: nobody listens
    node = RunNode(tmp_path / "node", "run-node", _block(server.url))
    try:
        node.send(5)
        wait_until(lambda: node.alert_rules().count("Fleet shadow read") == 5, "alerts served locally", 30)
        wait_until(lambda: _failures(node, "unreachable") >= 3, "three refused connection attempts", 60)
        assert len(node.matching(r"nats_output: cannot connect to .*alerts stay in the local store")) == 1, node.lines
        assert node.metrics()[("falconet_nats_output_connected", "")] == 0
        assert FAILING_RULE in node.alert_rules()
        server.start()
        node.wait_for_line(r"nats_output: recovered: forwarding to")
        node.send(5)
        wait_until(lambda: node.metrics()[("falconet_nats_output_backlog", "")] == 0
                   and node.metrics()[("falconet_nats_output_alerts_forwarded_total", "")] >= 12,
                   "10 alerts and the two reports forwarded", 60)
        mine = check_host(read_stream([server.url]), "run-node", [])
        rules = [m.rule for m in mine]
        assert rules.count("Fleet shadow read") == 10
        assert FAILING_RULE in rules and RECOVERED_RULE in rules
        assert node.metrics()[("falconet_nats_output_connected", "")] == 1
        assert node.stop() == 0
    finally:
        node.kill()
        server.stop()


def test_wrong_credentials(tmp_path: Path) -> None:
    server = single_server(tmp_path / "nats")
    server.extra_config = 'authorization { token: "s3cret" }'
    server.start()
    (tmp_path / "token").write_text("not-the-token\n")
    node = RunNode(tmp_path / "node", "auth-node", _block(server.url, token_file=tmp_path / "token"))
    try:
        node.send(3)
        wait_until(lambda: _failures(node, "auth") >= 3, "three refused attempts", 60)
        lines = node.matching(r"nats_output: ")
        assert len(lines) == 1 and "Authorization Violation" in lines[0], node.lines
        assert node.alert_rules().count("Fleet shadow read") == 3  # served locally all along
        assert FAILING_RULE in node.alert_rules()
    finally:
        node.kill()
        server.stop()


def test_missing_stream_permissions(tmp_path: Path) -> None:
    server = single_server(tmp_path / "nats")
    server.extra_config = ('authorization { users: [ {user: node, password: pw, '
                           'permissions: {publish: {deny: ["$JS.API.>"]}}} ] }')
    server.start()
    (tmp_path / "pw").write_text("pw\n")
    node = RunNode(tmp_path / "node", "perm-node", _block(server.url, user="node", password_file=tmp_path / "pw"))
    try:
        node.send(3)
        wait_until(lambda: _failures(node, "permission") >= 2, "two refused sessions", 60)
        lines = node.matching(r"nats_output: ")
        assert len(lines) == 1 and "permissions violation" in lines[0].lower(), node.lines
        assert node.alert_rules().count("Fleet shadow read") == 3
        assert FAILING_RULE in node.alert_rules()
    finally:
        node.kill()
        server.stop()


def test_an_existing_stream_of_another_shape_is_reported_and_left_alone(nats_server: NatsServer,
                                                                        tmp_path: Path) -> None:
    async def precreate() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(StreamConfig(name=DEFAULT_STREAM, subjects=[all_alerts()],
                                                     duplicate_window=60, max_age=3600))
        await nc.close()

    asyncio.run(precreate())
    node = ServeNode(tmp_path / "n", "shape-node", nats_output_yaml([nats_server.url]))
    try:
        node.publish(list(range(50)))
        wait_until(lambda: host_numbers([nats_server.url], "shape-node") == 50, "forwarding", 60)
        lines = node.matching(r"exists with another shape")
        assert len(lines) == 1 and "duplicate_window 60 (configured 120)" in lines[0], node.lines
        assert "max_age 3600 (configured 604800)" in lines[0]
        assert SHAPE_RULE in {m.rule for m in read_stream([nats_server.url])}

        async def config() -> StreamConfig:
            nc = await nats.connect(nats_server.url)
            info = await nc.jetstream().stream_info(DEFAULT_STREAM)
            await nc.close()
            return info.config

        assert asyncio.run(config()).duplicate_window == 60  # not changed by the node
    finally:
        assert node.stop() == 0


def test_alerts_the_store_dropped_before_forwarding_are_counted_and_reported(tmp_path: Path) -> None:
    server = single_server(tmp_path / "nats")  # not started: the node spools
    node = ServeNode(tmp_path / "n", "spool-node", _block(server.url), "--retention", "50",
                     "--store-max-alerts", "200")
    try:
        for i in range(0, 2000, 100):
            node.publish(list(range(i, i + 100)))
        wait_until(lambda: len(node.get_all()) < 1000, "the store's retention to drop the oldest", 30)
        server.start()
        line = node.wait_for_line(r"nats_output: (\d+) alerts \(\S+\) left the node's alert store")
        lost = int(line.group(1))
        wait_until(lambda: stream_count([server.url]) > 0 and host_numbers([server.url], "spool-node") + lost >= 2000,
                   "what the store kept to be forwarded", 60)
        msgs = read_stream([server.url])
        numbers = sorted(m.number for m in msgs if m.number is not None)
        assert numbers == list(range(2000 - len(numbers), 2000)), "not the newest alerts, or not each once"
        assert UNFORWARDED_RULE in {m.rule for m in msgs}
        mine = check_host(msgs, "spool-node", numbers)
        # Exactly the alerts before the first one forwarded are reported lost (the node's own "failing"
        # alert among them: it was raised first, while NATS was away).
        assert mine[0].seq == lost + 1
        assert 2000 - len(numbers) <= lost <= 2000 - len(numbers) + 1
    finally:
        assert node.stop() == 0
        server.stop()
