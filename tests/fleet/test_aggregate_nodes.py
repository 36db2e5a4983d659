"""The aggregator's watch over the nodes: silent nodes and their return, and bad input on the stream or in the
node bucket (counted, reported, never fatal, never served as an alert). Real JetStream, real aggregators."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from aggregate_support import AggregatorProcess, ensure_stream, falco_client, node_alert, numbers, publish_node
from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.kv import KeyValue
from nats_servers import NatsServer

from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.convert import alert_to_wire
from falconet.server.fleet.names import NODES_BUCKET, Heartbeat, alert_subject, escape_host

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]


@pytest.fixture
def aggregators() -> Iterator[list[AggregatorProcess]]:
    started: list[AggregatorProcess] = []
    yield started
    for agg in started:
        agg.stop()


async def _kv_bucket(nc: NatsClient) -> KeyValue:
    js = nc.jetstream()
    try:
        return await js.key_value(NODES_BUCKET)
    except Exception:  # noqa: BLE001 - not there yet
        return await js.create_key_value(api.KeyValueConfig(bucket=NODES_BUCKET, history=1))


def beat(url: str, host: str, seq: int, *, raw: bytes | None = None, key: str | None = None) -> None:
    """One heartbeat as a node writes it (or `raw` bytes under `key`: a hostile one)."""

    async def main() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc)
            kv = await _kv_bucket(nc)
            value = raw if raw is not None else Heartbeat(host, f"ep-{host}", seq, time.time_ns()).to_json()
            await kv.put(key or escape_host(host), value)
        finally:
            await nc.close()

    asyncio.run(main())


def alerts(url: str, host: str, first: int, count: int) -> None:
    async def main() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc)
            await publish_node(nc, host, first, count)
        finally:
            await nc.close()

    asyncio.run(main())


def internal(agg: AggregatorProcess, rule: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in falco_client(agg, "unix", "get", "--rule", rule, "--output", "json")]


def wait_for(agg: AggregatorProcess, rule: str, n: int, timeout: float = 60.0) -> list[dict[str, object]]:
    """The alerts of `rule` once there are at least `n` (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    got: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        got = internal(agg, rule)
        if len(got) >= n:
            return got
        time.sleep(0.2)  # polling interval of a condition with a deadline
    raise AssertionError(f"{n} alerts of {rule!r} expected within {timeout}s, got {got}: {agg.log_tail()}")


def test_silent_node_alert_once_across_aggregators_and_back(nats_server: NatsServer, tmp_path: Path,
                                                           certs_dir: Path,
                                                           aggregators: list[AggregatorProcess]) -> None:
    url = nats_server.url
    alerts(url, "other", 1, 1)  # the stream exists (the aggregators wait for the nodes to create it)
    for name in ("agg-a", "agg-b"):
        aggregators.append(AggregatorProcess(url, tmp_path / "agg", certs_dir, name=name,
                                             extra=["--silence-timeout", "3"]).start())
    a, b = aggregators
    beat(url, "quiet-hb", 1)  # heartbeats only (once both aggregators run: neither starts during a silence)
    beat(url, "quiet-hb", 2)
    alerts(url, "quiet-alerts", 1, 3)  # alerts only
    silent = wait_for(a, "Falconet node silent", 3)
    # Both aggregators noticed the silences; JetStream kept one alert per silence (same message id).
    on_b = wait_for(b, "Falconet node silent", 3)
    assert sorted(str(d["hostname"]) for d in silent) == ["other", "quiet-alerts", "quiet-hb"]
    assert [d["cursor"] for d in on_b] == [d["cursor"] for d in silent]
    assert all(d["source"] == "internal" and d["priority"] == "Warning" for d in silent)
    # A host filter shows a node's silence with its alerts.
    assert numbers(falco_client(a, "unix", "get", "--hostname", "quiet-alerts", "--source", "syscall")) == [
        ("quiet-alerts", k) for k in (1, 2, 3)]
    assert len(falco_client(a, "unix", "get", "--hostname", "quiet-alerts", "--source", "internal")) == 1
    # The node comes back: one "back" alert, then (silent again) a second silence.
    beat(url, "quiet-hb", 3)
    back = wait_for(b, "Falconet node back", 1)
    assert [d["hostname"] for d in back] == ["quiet-hb"]
    again = wait_for(a, "Falconet node silent", 4)
    assert sorted(str(d["hostname"]) for d in again) == ["other", "quiet-alerts", "quiet-hb", "quiet-hb"]
    assert len(internal(b, "Falconet node back")) == 1


def test_bad_input_counted_reported_never_served(nats_server: NatsServer, tmp_path: Path, certs_dir: Path,
                                                 aggregators: list[AggregatorProcess]) -> None:
    url = nats_server.url

    async def hostile_messages() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc)
            js = nc.jetstream()
            await publish_node(nc, "good", 1, 5)
            await js.publish(alert_subject("evil"), b"\xff\xfe not protobuf")
            bad_priority = outputs_pb2.response.FromString(alert_to_wire(node_alert("evil", 1)))
            bad_priority.priority = 99  # type: ignore[assignment]
            await js.publish(alert_subject("evil"), bad_priority.SerializeToString())
            await js.publish("falconet.alerts.=41", alert_to_wire(node_alert("evil", 2)))  # no host escapes to it
            await js.publish("falconet.alerts.=fleet", alert_to_wire(node_alert("", 3)))  # fleet alert, no host
            await publish_node(nc, "good", 6, 5)
        finally:
            await nc.close()

    asyncio.run(hostile_messages())
    beat(url, "x", 0, raw=b"not json", key="hostile-1")
    beat(url, "x", 0, raw=Heartbeat("someone-else", "e", 1, 1).to_json(), key="hostile-2")
    beat(url, "x", 0, raw=b'{"host":"hostile-3","epoch":"e","seq":-1,"ts_ns":1}', key="hostile-3")
    beat(url, "x", 0, raw=b"[]" * 10_000, key="hostile-4")
    agg = AggregatorProcess(url, tmp_path / "agg", certs_dir, name="agg-bad", extra=["--silence-timeout", "60"])
    aggregators.append(agg.start())
    beat(url, "x", 0, raw=b'{"host": 5}', key="=41")  # while it runs, under a key no host escapes to
    # Only the good node's alerts are served as alerts, in order, each once.
    served = [json.loads(line) for line in falco_client(agg, "unix", "get", "--source", "syscall", "--output",
                                                        "json")]
    assert numbers(str(d["output"]) for d in served) == [("good", k) for k in range(1, 11)]
    assert {d["hostname"] for d in served} == {"good"}
    # Reported (counted, with examples), the aggregator still up; the report is rate-limited, so wait for the
    # one that has counted all of it.
    deadline = time.monotonic() + 60
    counts: tuple[object, object] = (None, None)
    while time.monotonic() < deadline:
        reports = internal(agg, "Falconet fleet bad input")
        if reports:
            fields = reports[-1]["output_fields"]
            assert isinstance(fields, dict)
            counts = (fields["falconet.bad_messages"], fields["falconet.bad_heartbeats"])
            if counts == (4, 5):
                break
        time.sleep(0.5)  # polling interval of a condition with a deadline
    assert counts == (4, 5), agg.log_tail()
    assert agg.proc is not None and agg.proc.poll() is None
    everything = falco_client(agg, "unix", "get")
    assert not any("n=evil" in line for line in everything)
    assert "not a valid alert" in agg.log_tail()
