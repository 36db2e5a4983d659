"""The fleet rules version a node runs is in its heartbeat: two real `falconet run` daemons with both
`fleet_rules` and `nats_output`, a real `falconet rules push`, and the heartbeats read back from the node bucket
as an aggregator reads them. A broken version pushed is refused, and the heartbeat keeps the running one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from nats_servers import NatsServer
from output_support import heartbeat, wait_until
from test_rules_push import BROKEN_RULES, DEADLINE, FLEET_RULES, Node, push, put_raw, wait_version

from falconet.server.fleet.names import Heartbeat
from falconet.server.fleet.rules_bundle import RulesBundle, RulesFile

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def wait_beat(url: str, host: str, ok: Callable[[Heartbeat], bool], what: str) -> Heartbeat:
    """The node's heartbeat in the bucket once one satisfies `ok` (nodes write one every 5 s)."""

    def found() -> Heartbeat | None:
        beat = heartbeat([url], host)
        return beat if beat is not None and ok(beat) else None

    got: Heartbeat = wait_until(found, f"{host}: {what}", DEADLINE)
    return got


def newer_than(first: Heartbeat) -> Callable[[Heartbeat], bool]:
    return lambda beat: beat.ts_ns > first.ts_ns


def test_heartbeat_carries_the_pushed_rules_version(tmp_path: Path, nats_server: NatsServer) -> None:
    url = nats_server.url
    forward = f"nats_output:\n  enabled: true\n  servers: [{url}]\n"
    nodes = [Node(tmp_path / host, host, [url], 600.0, auth=forward) for host in ("hb-a.example", "hb-b")]
    try:
        for node in nodes:
            node.start()
            node.wait_line(r"fleet rules: watching bucket falconet_rules")
            beat = wait_beat(url, node.host, lambda b: True, "its first heartbeat")
            assert beat.rules_version == ""  # local files only
        version = push(tmp_path, url, FLEET_RULES, name="release-hb")
        for node in nodes:
            wait_version(node, version)  # the daemon runs it (its metric)...
            # ...and says so in its heartbeat (Daemon.rules_version, written every 5 s).
            wait_beat(url, node.host, lambda b: b.rules_version == version, f"a heartbeat naming {version}")
        # Well formed but not loadable, written past the CLI's validation (which would refuse it).
        put_raw(url, RulesBundle(files=(RulesFile("fleet.yaml", BROKEN_RULES),), name="oops").encode())
        for node in nodes:
            node.wait_metric("falconet_fleet_rules_refused_total", 1.0)
            # A heartbeat written after the refusal still names the version that runs.
            first = heartbeat([url], node.host)
            assert first is not None
            beat = wait_beat(url, node.host, newer_than(first), "its next heartbeat")
            assert beat.rules_version == version and node.fleet_version() == version
    finally:
        for node in nodes:
            node.stop()
