"""Helpers for the `nats` output tests: node daemons as real subprocesses, and what the stream holds.

A node is `falconet serve --store FILE --nats-output FILE` (alerts published into it over its UNIX socket, each
recognisable by its number) or `falconet run` on a replayed FIFO; its host name comes from FALCO_HOSTNAME, so
several nodes share this machine. The stream is read back whole with an ephemeral consumer, and every check
is of the contract in server/fleet/names.py: per host, Falconet-Seq goes up by one in each epoch (no gap, no
duplicate), the payload is the node's serialized alert, and every alert the node acknowledged is there once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from falconet.model.alert import Alert, Priority
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, inputs_pb2, inputs_pb2_grpc
from falconet.sdk.convert import alert_to_proto
from falconet.server.fleet.names import (
    DEFAULT_STREAM,
    HEADER_EPOCH,
    HEADER_HOST,
    HEADER_MSG_ID,
    HEADER_SEQ,
    NODES_BUCKET,
    Heartbeat,
    escape_host,
    host_of_subject,
)

FALCONET = [sys.executable, "-m", "falconet.server.cli"]
TEST_RULE = "Fleet test"


def wait_until(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Polls `pred` until it returns something truthy (which it returns); fails naming `what` after `timeout`
    seconds. The one wait of the fleet tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)  # polling interval of a condition with a deadline


def nats_output_yaml(servers: Sequence[str], **keys: object) -> str:
    lines = ["nats_output:", "  enabled: true", f"  servers: [{', '.join(servers)}]"]
    lines += [f"  {k}: {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def fleet_alert(n: int) -> Alert:
    return Alert(time_ns=1_700_000_000_000_000_000 + n, rule=TEST_RULE, priority=Priority.WARNING, source="syscall",
                 output=f"fleet-test n={n}", output_fields={"n": n}, tags=["fleet"])


def number_of(resp: outputs_pb2.response) -> int | None:
    if resp.rule != TEST_RULE:
        return None
    return int(resp.output.split()[1].removeprefix("n="))


class NodeProcess:
    """A daemon subprocess (`falconet serve` or `falconet run`) whose stderr is collected line by line."""

    def __init__(self, argv: list[str], host: str, cwd: Path) -> None:
        env = dict(os.environ, FALCO_HOSTNAME=host, PYTHONUNBUFFERED="1")
        self.host = host
        self.proc = subprocess.Popen([*FALCONET, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=cwd)
        self.lines: list[str] = []
        self.out: list[str] = []
        self._cond = threading.Condition()
        self._pumps = [threading.Thread(target=self._pump, args=(s, into), daemon=True)
                       for s, into in ((self.proc.stderr, self.lines), (self.proc.stdout, self.out))]
        for t in self._pumps:
            t.start()

    def _pump(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 60.0, *, stdout: bool = False) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.out if stdout else self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if self.proc.poll() is not None and left > 0.3:
                    deadline = time.monotonic() + 0.3  # the pumps may still be delivering its last lines
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s (exit "
                                         f"{self.proc.poll()}):\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def matching(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        with self._cond:
            return [line for line in self.lines if rx.search(line)]

    def kill(self) -> None:
        """SIGKILL: a crash, no flush."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(20)
        self._close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self._close()
        return code

    def _close(self) -> None:
        for t in self._pumps:
            t.join(10)
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()


class ServeNode(NodeProcess):
    """`falconet serve --store --nats-output` on a UNIX socket; alerts go in through its InputService."""

    def __init__(self, workdir: Path, host: str, nats_yaml: str, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.sock = workdir / "node.sock"
        conf = workdir / "nats.yaml"
        conf.write_text(nats_yaml)
        super().__init__(["serve", "--listen", f"unix://{self.sock}", "--store", str(workdir / "alerts.db"),
                          "--nats-output", str(conf), *extra], host, workdir)
        self.wait_for_line(r"^listening on", stdout=True)
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")

    def publish(self, numbers: Sequence[int]) -> None:
        """One Publish call; returns once the node acknowledged (committed) them."""
        req = inputs_pb2.PublishRequest(alerts=[alert_to_proto(fleet_alert(n)) for n in numbers])
        inputs_pb2_grpc.InputServiceStub(self.channel).Publish(iter([req]), timeout=30)

    def get_all(self) -> list[outputs_pb2.response]:
        out: list[outputs_pb2.response] = []
        for msg in alerts_pb2_grpc.AlertServiceStub(self.channel).GetAll(alerts_pb2.GetAllRequest(), timeout=60):
            out.extend(msg.alerts)
        return out

    def _close(self) -> None:
        self.channel.close()
        super()._close()


class Publisher:
    """Publishes numbered alerts into a node from a thread at about `rate` alerts/s until stopped; `acked`
    holds the numbers the node acknowledged. Pacing is a rate, not synchronisation."""

    def __init__(self, node: ServeNode, first: int, rate: float, batch: int = 20) -> None:
        self.node, self.next, self.rate, self.batch = node, first, rate, batch
        self.acked: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            numbers = list(range(self.next, self.next + self.batch))
            try:
                self.node.publish(numbers)
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")
                return
            self.next += self.batch
            self.acked.extend(numbers)
            sent += self.batch
            ahead = sent / self.rate - (time.monotonic() - start)
            if ahead > 0:
                self._stop.wait(ahead)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()
        assert self.errors == [], self.errors
        return self.acked

    def stop_after_kill(self) -> list[int]:
        """After the node was killed: the publish in flight fails (UNAVAILABLE), which is expected."""
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()
        assert all(e.startswith(("UNAVAILABLE", "CANCELLED")) for e in self.errors), self.errors
        return list(self.acked)


@dataclass(frozen=True)
class StreamMsg:
    host: str
    epoch: str
    seq: int
    msg_id: str
    number: int | None
    rule: str
    data: bytes


async def _read_stream(servers: Sequence[str], stream: str, subject: str) -> list[StreamMsg]:
    nc = await nats.connect(servers=list(servers), connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(stream)
        total = info.state.messages
        sub = await js.pull_subscribe(subject, stream=stream,
                                      config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                                                            mem_storage=True, num_replicas=1))
        out: list[StreamMsg] = []
        while len(out) < total:
            for m in await sub.fetch(min(1000, total - len(out)), timeout=10):
                h = m.headers or {}
                resp = outputs_pb2.response.FromString(m.data)
                assert h.get(HEADER_HOST) == escape_host(host_of_subject(m.subject))
                out.append(StreamMsg(host_of_subject(m.subject), h[HEADER_EPOCH], int(h[HEADER_SEQ]),
                                     h[HEADER_MSG_ID], number_of(resp), resp.rule, m.data))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def read_stream(servers: Sequence[str], stream: str = DEFAULT_STREAM, subject: str = "falconet.alerts.*",
                retry_for: float = 90.0) -> list[StreamMsg]:
    """Every message of the stream, in stream order.

    Reading is idempotent, so an API call that times out (a cluster that lost a server may still be placing the
    reader's consumer, more so on a loaded machine) is retried whole until a deadline.
    """
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return asyncio.run(_read_stream(servers, stream, subject))
        except (nats.errors.TimeoutError, nats.js.errors.APIError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise


def stream_count(servers: Sequence[str], stream: str = DEFAULT_STREAM) -> int:
    async def go() -> int:
        nc = await nats.connect(servers=list(servers), connect_timeout=5)
        try:
            try:
                return int((await nc.jetstream(timeout=5).stream_info(stream)).state.messages)
            except (nats.js.errors.NotFoundError, nats.errors.TimeoutError, asyncio.TimeoutError):
                return 0  # no stream yet, or (a cluster electing a leader) no answer yet: ask again
        finally:
            await nc.close()
    return asyncio.run(go())


def heartbeat(servers: Sequence[str], host: str) -> Heartbeat | None:
    async def go() -> Heartbeat | None:
        nc = await nats.connect(servers=list(servers), connect_timeout=5)
        try:
            kv = await nc.jetstream(timeout=5).key_value(NODES_BUCKET)
            entry = await kv.get(escape_host(host))
            return Heartbeat.from_json(entry.value) if entry.value else None
        except nats.js.errors.NotFoundError:
            return None
        finally:
            await nc.close()
    return asyncio.run(go())


def host_numbers(servers: Sequence[str], host: str) -> int:
    """How many of `host`'s test alerts the stream holds (0 while a cluster cannot answer yet)."""
    try:
        return sum(1 for m in read_stream(servers, retry_for=0) if m.host == host and m.number is not None)
    except (nats.errors.Error, asyncio.TimeoutError):
        return 0


def check_host(msgs: list[StreamMsg], host: str, acked: Sequence[int]) -> list[StreamMsg]:
    """The stream holds `host`'s alerts exactly once and in order: Falconet-Seq goes up by one within an epoch
    (and the message id is epoch-seq), every acknowledged number is there, none twice. Returns them."""
    mine = [m for m in msgs if m.host == host]
    assert mine, f"no alert of {host} in the stream"
    for prev, cur in zip(mine, mine[1:], strict=False):
        if cur.epoch == prev.epoch:
            assert cur.seq == prev.seq + 1, f"{host}: after {prev.epoch}:{prev.seq} came {cur.seq} (gap or duplicate)"
    assert all(m.msg_id == f"{m.epoch}-{m.seq}" for m in mine)
    numbers = [m.number for m in mine if m.number is not None]
    assert len(numbers) == len(set(numbers)), f"{host}: an alert is in the stream twice"
    missing = sorted(set(acked) - set(numbers))
    assert not missing, f"{host}: {len(missing)} acknowledged alerts are not in the stream: {missing[:20]}"
    return mine


SHADOW_RULES = """\
- rule: Fleet shadow read
  desc: a file below /etc named shadow was opened
  condition: evt.type in (open, openat) and fd.name = /etc/shadow
  output: "shadow opened (proc.name=%proc.name fd.name=%fd.name)"
  priority: WARNING
  tags: [test]
"""


def shadow_open(num: int) -> str:
    """One replayed openat of /etc/shadow (the rule above raises an alert for it), as a JSON line."""
    import json

    from falconet.model.event import Event, Fd, Process, User

    proc = Process(pid=4242, ppid=1, name="cat", exe="cat", exepath="/usr/bin/cat", args=["/etc/shadow"],
                   cwd="/root", user=User(0, "root"))
    ev = Event(num=num, ts=1_700_000_000_000_000_000 + num, type="openat", tid=4242, res=3, proc=proc,
               args={"fd": 3, "dirfd": -100, "name": "/etc/shadow", "flags": 1, "mode": 0},
               fd=Fd(num=3, type="file", name="/etc/shadow", nameraw="/etc/shadow", flags=1))
    return json.dumps(ev.to_dict()) + "\n"


class RunNode(NodeProcess):
    """`falconet run` on a replayed FIFO with a `nats_output` block, alerts also to a JSON file, metrics on a
    free port; `send(n)` replays n more /etc/shadow opens (one alert each)."""

    def __init__(self, workdir: Path, host: str, nats_block: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yaml").write_text(SHADOW_RULES)
        self.fifo = workdir / "events.fifo"
        os.mkfifo(self.fifo)
        self.alerts = workdir / "alerts.json"
        conf = workdir / "falconet.yaml"
        conf.write_text(f"""
rules_files: [{workdir / 'rules.yaml'}]
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {self.alerts}}}
grpc: {{enabled: true, bind_address: ["unix://{workdir / 'node.sock'}"]}}
alert_store: {{path: {workdir / 'alerts.db'}}}
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0}}
{nats_block}""")
        super().__init__(["run", "-c", str(conf), "--source", f"replay:{self.fifo}"], host, workdir)
        self._events = open(self.fifo, "w", encoding="utf-8")  # noqa: SIM115 - open for the node's life
        self.sent = 0
        self.wait_for_line(r"falconet: ready")
        self.metrics_url = self.wait_for_line(r"metrics on (http://\S+)").group(1)

    def send(self, n: int) -> None:
        for _ in range(n):
            self.sent += 1
            self._events.write(shadow_open(self.sent))
        self._events.flush()

    def alert_rules(self) -> list[str]:
        """The rule of every alert the node's file output wrote (its own outputs: it serves locally)."""
        import json

        if not self.alerts.exists():
            return []
        return [json.loads(line)["rule"] for line in self.alerts.read_text().splitlines() if line.strip()]

    def metrics(self) -> dict[tuple[str, str], float]:
        """(sample name, reason label or "") -> value."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        return {(s.name, s.labels.get("reason", "")): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def _close(self) -> None:
        self._events.close()
        super()._close()
