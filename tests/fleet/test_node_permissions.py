"""A node runs with only the NATS permissions `names.node_permissions` lists (docs/fleet.md), and with them it
cannot publish alerts under another host's subject, write another node's heartbeat key, or push rules.

A real nats-server with per-user permissions in its config: an administrator creates the stream and the
buckets; a `falconet serve --nats-output` daemon logged in as `node-a` forwards its alerts and heartbeats with
nothing refused; then a client holding node-a's credentials tries another node's subject and key and the rules
bucket, and the server refuses each, while the same client's own key is accepted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js import api
from nats_servers import NatsServer, single_server
from output_support import ServeNode, heartbeat, host_numbers, nats_output_yaml, read_stream, wait_until

from falconet.server.fleet.names import (
    NODES_BUCKET,
    RULES_BUCKET,
    RULES_KEY,
    Heartbeat,
    alert_subject,
    escape_host,
    node_permissions,
)
from falconet.server.fleet.output_config import load_nats_output
from falconet.server.fleet.output_stream import wanted_stream

pytestmark = pytest.mark.nats

HOST, OTHER = "node-a", "node-b"


def server_with_users(base: Path) -> NatsServer:
    """An administrator with every right, and HOST with exactly node_permissions(HOST)."""
    perms = node_permissions(HOST)
    server = single_server(base)
    server.extra_config = (
        "authorization { users: [\n"
        '  {user: admin, password: admin-secret}\n'
        f'  {{user: "{HOST}", password: node-secret, permissions: {{'
        f'publish: {{allow: {json.dumps(perms["publish"])}}}, subscribe: {{allow: {json.dumps(perms["subscribe"])}}}'
        "}}\n] }")
    return server


def test_a_node_needs_only_its_own_subject_and_key(tmp_path: Path) -> None:
    server = server_with_users(tmp_path / "nats")
    server.start()
    admin = server.url.replace("nats://", "nats://admin:admin-secret@")
    (tmp_path / "node.pw").write_text("node-secret\n")
    conf = tmp_path / "nats.yaml"
    conf.write_text(nats_output_yaml([server.url], user=HOST, password_file=tmp_path / "node.pw"))

    async def prepare() -> None:
        nc = await nats.connect(admin)
        try:
            js = nc.jetstream()
            await js.add_stream(wanted_stream(load_nats_output(conf)))
            await js.create_key_value(api.KeyValueConfig(bucket=NODES_BUCKET, history=1))
            rules = await js.create_key_value(api.KeyValueConfig(bucket=RULES_BUCKET, history=16))
            await rules.put(RULES_KEY, b"{}")
        finally:
            await nc.close()

    asyncio.run(prepare())
    node = ServeNode(tmp_path / "node", HOST, conf.read_text())
    try:
        node.publish(list(range(20)))
        wait_until(lambda: host_numbers([admin], HOST) == 20, "the node's alerts in the stream", 60)
        wait_until(lambda: heartbeat([admin], HOST) is not None, "the node's heartbeat", 60)
        assert not node.matching(r"(?i)permission|violation|nats_output: cannot"), node.lines
    finally:
        assert node.stop() == 0

    refused = asyncio.run(as_the_node(server.url))
    for subject in (alert_subject(OTHER), f"$KV.{NODES_BUCKET}.{escape_host(OTHER)}", f"$KV.{RULES_BUCKET}.{RULES_KEY}"):
        assert any("permissions violation" in r and subject.lower() in r for r in refused), (subject, refused)
    assert not [m for m in read_stream([admin]) if m.host != HOST]
    assert heartbeat([admin], OTHER) is None
    server.stop()


async def as_the_node(url: str) -> list[str]:
    """What the server refused a client with HOST's credentials that tries another node's subject and key and a
    push of rules (each attempt must fail), after its own key was accepted."""
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc).lower())

    nc = await nats.connect(url, user=HOST, password="node-secret", error_cb=on_error)
    try:
        js = nc.jetstream(timeout=2)
        nodes = await js.key_value(NODES_BUCKET)
        beat = Heartbeat(HOST, "ep", 0, 1).to_json()
        await nodes.put(escape_host(HOST), beat)  # its own key: allowed
        rules = await js.key_value(RULES_BUCKET)
        assert (await rules.get(RULES_KEY)).value == b"{}"  # reading the rules: allowed
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(alert_subject(OTHER), b"forged", timeout=2)
        with pytest.raises(nats.errors.TimeoutError):
            await nodes.put(escape_host(OTHER), beat)
        with pytest.raises(nats.errors.TimeoutError):
            await rules.put(RULES_KEY, b"forged")
        await nc.flush()
    finally:
        await nc.close()
    return refused
