"""Issue 13's combined scenario, with every part real: a three-server JetStream cluster on loopback holding a
replicated stream (replicas 3); two `falconet run --source replay:FIFO` daemons (distinct host names, persistent
alert stores) each fed replayed events at about RATE alerts/s; `falconet aggregate` with two live subscribers
(falco-client's batched stream over mTLS, and Falco's own client-go `sub` over the UNIX socket).

Phases, each while both nodes publish:
1. the server leading the stream is killed (SIGKILL);
2. NATS stops entirely (all three servers) for OUTAGE_S, longer than the stream's duplicate window
   (DUPLICATE_WINDOW_S), and starts again. The issue says 30 s; what the phase proves is that the outage outlasts
   the window, so JetStream's message-id de-duplication cannot be what keeps alerts single (the forwarder's
   resume from the stream's last message is): 5 s of window and 8 s of outage prove it in less time;
3. one node is killed with SIGKILL and started again on its store.

After each phase the nodes are paused (not the cluster or the aggregator) and checked from outside: every alert
the node's store holds (its GetAll: what it produced durably, internal alerts included) is in the stream exactly
once, per host in the node's order (Falconet-Seq up by one within the epoch) except for alerts the node
reported forwarding out of order (docs/fleet.md, "Order": a leader change can store later alerts in flight but
not earlier ones, which the node then publishes again), and nothing else of the node is there; every subscriber
got every replayed alert of each host exactly once, in the stream's order. Every wait is
on a condition with a deadline; the outage's length is the one measured time, and it is a duration the test
imposes, not a synchronisation.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import nats
import nats.errors
import pytest
from aggregate_support import FALCO_CLIENT, REPO, AggregatorProcess
from nats_servers import NatsCluster
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from output_support import NodeProcess, StreamMsg, shadow_open, stream_count, wait_until
from test_aggregate import clientgo_probe  # noqa: F401 - the fixture, shared

from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc
from falconet.server.fleet.output import REORDERED_RULE
from falconet.server.fleet.names import (
    DEFAULT_STREAM,
    FLEET_TOKEN,
    HEADER_EPOCH,
    HEADER_MSG_ID,
    HEADER_SEQ,
    host_of_subject,
)

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.multilang, pytest.mark.timeout(1200)]

RATE = 1000.0
"""Replayed events (one alert each) per second per node."""
DUPLICATE_WINDOW_S = 5.0
OUTAGE_S = 8.0
HOSTS = ("scenario-a.example", "scenario-b")
RULE = "Fleet scenario"
RULES = f"""\
- rule: {RULE}
  desc: one alert per replayed open of /etc/shadow, numbered by the event
  condition: evt.type in (open, openat) and fd.name = /etc/shadow
  output: "scenario n=%evt.num"
  priority: WARNING
  tags: [fleet]
"""
_N = re.compile(r"scenario n=(\d+)")
DEADLINE = 120.0


class ScenarioNode:
    """One node daemon across restarts: the same work directory, store, FIFO and host name each time. A pacer
    thread replays numbered events into its FIFO at RATE while `running` is set (`sent_run` counts what the
    current process was given); a node killed meanwhile makes the pacer wait for the next process."""

    def __init__(self, workdir: Path, host: str, urls: list[str]) -> None:
        self.workdir, self.host = workdir, host
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yaml").write_text(RULES)
        self.fifo = workdir / "events.fifo"
        os.mkfifo(self.fifo)
        self.sock = workdir / "node.sock"
        self.conf = workdir / "falconet.yaml"
        self.conf.write_text(f"""
rules_files: [{workdir / 'rules.yaml'}]
stdout_output: {{enabled: false}}
grpc: {{enabled: true, bind_address: ["unix://{self.sock}"]}}
alert_store: {{path: {workdir / 'alerts.db'}}}
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0}}
nats_output:
  enabled: true
  servers: [{', '.join(urls)}]
  replicas: 3
  duplicate_window: {DUPLICATE_WINDOW_S}
  ack_timeout: 2
  max_in_flight: 256
""")
        self.proc: NodeProcess | None = None
        self.metrics_url = ""
        self.num = 0
        self.sent_run = 0
        self.running = threading.Event()
        self._writer: IO[str] | None = None
        self._lock = threading.Lock()
        self._quit = False
        self._pacer = threading.Thread(target=self._pace, name=f"pacer-{host}", daemon=True)

    def start(self) -> None:
        """A new daemon process on the same store; returns once it is ready and its FIFO open."""
        self.proc = NodeProcess(["run", "-c", str(self.conf), "--source", f"replay:{self.fifo}"], self.host,
                                self.workdir)
        writer = open(self.fifo, "w", encoding="utf-8")  # noqa: SIM115 - blocks until the daemon opens it
        self.proc.wait_for_line(r"falconet: ready", 120)
        self.metrics_url = self.proc.wait_for_line(r"metrics on (http://\S+)").group(1)
        with self._lock:
            self._writer, self.sent_run = writer, 0
        if not self._pacer.is_alive():
            self._pacer.start()

    def _pace(self) -> None:
        """RATE events/s in slices of 20 ms, as a paced source (the rate is the test's load, not a wait)."""
        slice_s, owed, last = 0.02, 0.0, time.monotonic()
        while not self._quit:
            now = time.monotonic()
            if not self.running.is_set():
                self.running.wait(0.1)
                last, owed = time.monotonic(), 0.0
                continue
            owed += (now - last) * RATE
            last = now
            n = int(owed)
            if n:
                owed -= n
                self._send(n)
            time.sleep(slice_s)  # the pacing slice of a rate

    def _send(self, n: int) -> None:
        with self._lock:
            writer = self._writer
            if writer is None or not self.running.is_set():
                return  # killed (the next process gets the events from then on), or paused meanwhile
            lines = []
            for _ in range(n):
                self.num += 1
                lines.append(shadow_open(self.num))
            try:
                writer.write("".join(lines))
                writer.flush()
            except BrokenPipeError:  # the daemon died (SIGKILL): this process gets no more
                self._close_writer()
                return
            self.sent_run += n

    def _close_writer(self) -> None:
        """Closes the FIFO's write end (lock held); what is still buffered for a dead reader is dropped."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except BrokenPipeError:
                pass  # closed all the same: only the flush of the buffer failed

    def kill(self) -> None:
        """SIGKILL of the daemon while its events flow."""
        assert self.proc is not None
        self.proc.kill()
        with self._lock:
            self._close_writer()

    def stop(self) -> None:
        self._quit = True
        self.running.set()
        if self._pacer.is_alive():
            self._pacer.join(10)
        with self._lock:
            self._close_writer()
        if self.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop()

    def metrics(self) -> dict[tuple[str, str], float]:
        """(sample name, its rule label or "") -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, str], float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                key = (s.name, s.labels.get("rule", ""))
                out[key] = out.get(key, 0.0) + s.value
        return out

    def quiesce(self) -> None:
        """Stops the events and waits until the daemon raised an alert for each one its process was given and
        every alert it holds is acknowledged by the stream."""
        self.running.clear()
        with self._lock:  # a slice under way finishes first; later ones see `running` clear under this lock
            sent = self.sent_run

        def settled() -> bool:
            m = self.metrics()
            return (m.get(("falco_events", RULE), 0.0) >= sent
                    and m.get(("falconet_nats_output_backlog", ""), -1.0) == 0
                    and m.get(("falconet_nats_output_connected", ""), 0.0) == 1)

        wait_until(settled, f"{self.host}: every alert raised and forwarded", DEADLINE)

    def produced(self) -> list[outputs_pb2.response]:
        """Every alert the daemon's store holds (its GetAll), oldest first."""
        with grpc.insecure_channel(f"unix://{self.sock}") as channel:
            out: list[outputs_pb2.response] = []
            for msg in alerts_pb2_grpc.AlertServiceStub(channel).GetAll(alerts_pb2.GetAllRequest(), timeout=120):
                out.extend(msg.alerts)
            return out


class Subscriber:
    """A live subscriber of the aggregator (a child process printing one JSON alert per line): what it got of
    RULE, per host, in arrival order."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.got: dict[str, list[int]] = {}
        self._cond = threading.Condition()
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            doc = json.loads(line)
            m = _N.search(str(doc.get("output", "")))
            if doc.get("rule") == RULE and m:
                with self._cond:
                    self.got.setdefault(str(doc["hostname"]), []).append(int(m.group(1)))

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {h: len(v) for h, v in self.got.items()}

    def snapshot(self) -> dict[str, list[int]]:
        with self._cond:
            return {h: list(v) for h, v in self.got.items()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._thread.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def _read_all(urls: list[str]) -> list[StreamMsg]:
    nc = await nats.connect(servers=urls, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        total = (await js.stream_info(DEFAULT_STREAM)).state.messages
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, mem_storage=True,
                                num_replicas=1, inactive_threshold=60.0)
        sub = await js.pull_subscribe("falconet.alerts.*", stream=DEFAULT_STREAM, config=config)
        out: list[StreamMsg] = []
        seen = 0
        while seen < total:
            for m in await sub.fetch(min(2000, total - seen), timeout=10):
                seen += 1
                if m.subject.endswith(f".{FLEET_TOKEN}"):
                    continue  # the aggregators' own alerts
                h = m.headers or {}
                out.append(StreamMsg(host_of_subject(m.subject), h[HEADER_EPOCH], int(h[HEADER_SEQ]),
                                     h[HEADER_MSG_ID], None, "", m.data))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def read_all(urls: list[str]) -> list[StreamMsg]:
    """Every node message the stream holds, in stream order; asked again while a cluster that lost a server
    does not answer yet (a leader election), within a deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return asyncio.run(_read_all(urls))
        except (nats.errors.Error, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise


def _leader(urls: list[str]) -> str:
    async def go() -> str:
        nc = await nats.connect(servers=urls, connect_timeout=5)
        try:
            info = await nc.jetstream(timeout=10).stream_info(DEFAULT_STREAM)
            assert info.config.num_replicas == 3 and info.config.duplicate_window == DUPLICATE_WINDOW_S
            assert info.cluster is not None and info.cluster.leader
            return str(info.cluster.leader)
        finally:
            await nc.close()
    return asyncio.run(go())


def _replicas_current(urls: list[str]) -> bool:
    """The stream has a leader and every other replica is current (False while the cluster does not answer)."""
    async def go() -> bool:
        nc = await nats.connect(servers=urls, connect_timeout=5)
        try:
            cluster = (await nc.jetstream(timeout=5).stream_info(DEFAULT_STREAM)).cluster
            replicas = cluster.replicas or [] if cluster is not None else []
            return bool(cluster is not None and cluster.leader and len(replicas) == len(urls) - 1
                        and all(r.current and not r.offline for r in replicas))
        finally:
            await nc.close()
    try:
        return asyncio.run(go())
    except (nats.errors.Error, asyncio.TimeoutError):
        return False


def _grows(urls: list[str], by: int, what: str) -> None:
    """Until the stream holds `by` more messages than when first asked (0 means it did not answer: ask again)."""
    before = int(wait_until(lambda: stream_count(urls), f"the stream to answer ({what})", DEADLINE))
    wait_until(lambda: stream_count(urls) >= before + by, what, DEADLINE)


def _lines(node: ScenarioNode, pattern: str) -> int:
    assert node.proc is not None
    return len(node.proc.matching(pattern))


def _wait_more(node: ScenarioNode, pattern: str, before: int) -> None:
    wait_until(lambda: _lines(node, pattern) > before, f"{node.host}: a new line matching {pattern!r}", DEADLINE)


def out_of_order(seqs: list[int]) -> list[int]:
    """The numbers stored after a greater one (the stream's order is otherwise the node's)."""
    late: list[int] = []
    top = 0
    for seq in seqs:
        if seq < top:
            late.append(seq)
        top = max(top, seq)
    return late


def reordered_reported(produced: list[outputs_pb2.response]) -> int:
    """How many alerts the node reported forwarding out of order (its internal alerts, kept in its store across
    restarts): the one case docs/fleet.md allows, when a leader change stored later alerts but not earlier ones
    in flight and the node published those again."""
    return sum(int(r.output_fields.get("reordered", "0")) for r in produced if r.rule == REORDERED_RULE)


def diagnosis(sub: Subscriber, subscribers: list[Subscriber], want: dict[str, list[int]],
              agg: AggregatorProcess) -> str:
    """What a subscriber that did not get everything got, what the others got, and the aggregator's view."""
    lines = [f"{s.name}: {s.counts()} of {({h: len(ns) for h, ns in want.items()})}" for s in subscribers]
    try:
        m = agg.metrics()
        lines.append("aggregator: " + ", ".join(f"{k}={m[k]:g}" for k in sorted(m) if k.startswith(
            ("falconet_aggregate_", "falconet_subscribers_"))))
    except Exception as exc:  # noqa: BLE001 - a diagnosis never hides the failure it explains
        lines.append(f"aggregator metrics unavailable: {exc}")
    lines.append("aggregator log:\n" + agg.log_tail(15))
    return "\n".join(lines)


def check(phase: str, urls: list[str], nodes: list[ScenarioNode], subscribers: list[Subscriber],
          agg: AggregatorProcess) -> None:
    """The phase's promise (module docstring), with the nodes paused; they run again afterwards."""
    for node in nodes:
        node.quiesce()
    produced = {node.host: node.produced() for node in nodes}
    msgs = read_all(urls)
    for node in nodes:
        held = [(r.cursor.epoch, r.cursor.sequence) for r in produced[node.host]]
        mine = [m for m in msgs if m.host == node.host]
        keys = [(m.epoch, m.seq) for m in mine]
        assert len(set(keys)) == len(keys), f"{phase}: an alert of {node.host} is in the stream twice"
        assert len({m.epoch for m in mine}) == 1, f"{phase}: {node.host}'s store epoch changed"
        reported = reordered_reported(produced[node.host])
        late = out_of_order([m.seq for m in mine])
        assert len(late) <= reported, (f"{phase}: {node.host}: {len(late)} alerts stored after later ones "
                                       f"({late[:10]}), {reported} reported by the node")
        missing = sorted(set(held) - set(keys))
        assert not missing, f"{phase}: {len(missing)} of {node.host}'s alerts are not in the stream: {missing[:10]}"
        extra = sorted(set(keys) - set(held))
        assert not extra, f"{phase}: the stream holds alerts {node.host} does not: {extra[:10]}"
    want: dict[str, list[int]] = {}
    for m in msgs:
        resp = outputs_pb2.response.FromString(m.data)
        hit = _N.search(resp.output)
        if resp.rule == RULE and hit:
            want.setdefault(m.host, []).append(int(hit.group(1)))
    for host, ns in want.items():
        assert len(ns) == len(set(ns)), f"{phase}: an alert of {host} is in the stream twice"
        assert len(out_of_order(ns)) <= reordered_reported(produced[host]), \
            f"{phase}: {host}'s alerts are out of the node's order in the stream, more than it reported"
    for sub in subscribers:
        try:
            wait_until(lambda s=sub: all(s.counts().get(h, 0) >= len(ns) for h, ns in want.items()),  # type: ignore[misc]
                       f"{phase}: {sub.name} to receive every alert", DEADLINE)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnosis(sub, subscribers, want, agg)}") from None
        got = sub.snapshot()
        for host, ns in want.items():
            assert got.get(host) == ns, (f"{phase}: {sub.name} got {host}'s alerts otherwise than once each in "
                                        f"order ({len(got.get(host, []))} vs {len(ns)})")
        assert set(got) == set(want), f"{phase}: {sub.name} got alerts of hosts {set(got) - set(want)}"
    for node in nodes:
        node.running.set()


@pytest.fixture
def scenario_nodes(tmp_path: Path, nats_cluster: NatsCluster) -> Iterator[list[ScenarioNode]]:
    made = [ScenarioNode(tmp_path / host, host, nats_cluster.urls) for host in HOSTS]
    try:
        yield made
    finally:
        for node in made:
            node.stop()


# On Debian's nats-server 2.9.10 this failed about 1 run in 4 in phase 2 (all of NATS stopped and started): a
# subscriber's alerts differed from what the stream held afterwards, as if the stream had served messages at
# sequences it later held otherwise. On the pinned 2.15.3 (make nats-tools) it passed 15 runs of 15, 9 of them
# side by side with 2.9.10 runs, one of which failed so (docs/fleet.md, "NATS versions"): no longer marked as a
# known failure. If it fails again on 2.15.3, the aggregator needs the check docs/aggregate.md's "Not done yet"
# describes.
def test_cluster_kill_outage_and_node_crash(nats_cluster: NatsCluster, scenario_nodes: list[ScenarioNode],
                                            tmp_path: Path, certs_dir: Path,
                                            clientgo_probe: Path) -> None:  # noqa: F811
    urls = nats_cluster.urls
    for node in scenario_nodes:
        node.start()
        node.running.set()
    wait_until(lambda: stream_count(urls) >= 1000, "both nodes forwarding", DEADLINE)
    _leader(urls)  # the nodes made the stream as configured
    servers = [arg for url in urls[1:] for arg in ("--servers", url)]
    agg = AggregatorProcess(urls[0], tmp_path / "agg", certs_dir, name="agg-scenario", extra=servers).start()
    subscribers: list[Subscriber] = []
    try:
        subscribers.append(Subscriber("falco-client", [*FALCO_CLIENT, *agg.client_args("mtls"), "subscribe",
                                                       "--from", "oldest", "--output", "json"],
                                      tmp_path / "falco-client.log"))
        subscribers.append(Subscriber("client-go", [str(clientgo_probe), "--mode", "sub", "--count", "1000000000",
                                                    "--timeout", "60m", "--unix-socket", f"unix://{agg.unix_path}"],
                                      tmp_path / "client-go.log"))

        # 1. The server leading the stream killed while both nodes publish.
        leader = _leader(urls)
        victim = next(s for s in nats_cluster.servers if s.name == leader)
        victim.kill()
        rest = [s.url for s in nats_cluster.servers if s is not victim]
        _grows(rest, 2000, "forwarding to go on after the leader was killed")
        check("server killed", rest, scenario_nodes, subscribers, agg)
        victim.start()
        # Phase 2 starts from a whole cluster: the restarted server has caught up with the stream. Stopping NATS
        # while it still restores is another scenario (JetStream 2.9.10 then once let the stale server lead the
        # stream for a moment, and subscribers' alerts at some sequences differed from what the stream held).
        wait_until(lambda: _replicas_current(urls), "the restarted server to catch up with the stream", DEADLINE)

        # 2. NATS stopped entirely for longer than the duplicate window, then started again.
        _grows(urls, 2000, "forwarding with the cluster whole again")
        taken = {n.host: n.metrics().get(("falco_events", RULE), 0.0) for n in scenario_nodes}
        down, back = r"nats_output: .*alerts stay in the local store", r"nats_output: recovered: forwarding to"
        seen = {n.host: (_lines(n, down), _lines(n, back)) for n in scenario_nodes}
        nats_cluster.stop()
        down_at = time.monotonic()
        for node in scenario_nodes:
            _wait_more(node, down, seen[node.host][0])
        wait_until(lambda: time.monotonic() - down_at >= OUTAGE_S, "the outage to last", OUTAGE_S + 10)
        for node in scenario_nodes:  # the nodes kept raising alerts into their stores meanwhile
            assert node.metrics().get(("falco_events", RULE), 0.0) > taken[node.host] + 1000, node.host
        nats_cluster.start()
        for node in scenario_nodes:
            _wait_more(node, back, seen[node.host][1])
        check("NATS outage", urls, scenario_nodes, subscribers, agg)

        # 3. A node killed with SIGKILL while publishing, and started again on its store.
        _grows(urls, 2000, "forwarding after the outage")
        crashed = scenario_nodes[0]
        crashed.kill()
        _grows(urls, 1000, "the other node forwarding on")
        crashed.start()
        assert crashed.proc is not None
        crashed.proc.wait_for_line(r"forwarding to .* after the stream's last message")
        _grows(urls, 2000, "both nodes forwarding after the restart")
        check("node killed", urls, scenario_nodes, subscribers, agg)
        assert all(s.proc.poll() is None for s in subscribers), "a subscriber ended"
    finally:
        for sub in subscribers:
            sub.stop()
        agg.stop()
