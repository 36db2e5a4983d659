"""What the aggregator tests share: the fleet stream, node-format messages, and `falconet aggregate` processes.

Messages are published exactly as server/fleet/names.py specifies a node's: the payload is the node's
serialized `falco.outputs.response` with the node's own cursor in it, the subject carries the escaped host, and
the message id and headers carry the node's epoch and sequence. Each alert's output names its host and its
per-host number (`n=HOST/K`), so a test checks per-host order and completeness from what any client prints.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api

from falconet.model.alert import Alert, Cursor, Priority
from falconet.sdk.convert import alert_to_wire
from falconet.server.fleet.names import (
    DEFAULT_STREAM,
    DEFAULT_SUBJECT_PREFIX,
    HEADER_EPOCH,
    HEADER_HOST,
    HEADER_MSG_ID,
    HEADER_SEQ,
    alert_subject,
    all_alerts,
    msg_id,
)

REPO = Path(__file__).resolve().parents[2]
FALCONET = [str(Path(sys.executable).parent / "falconet")]
FALCO_CLIENT = [str(Path(sys.executable).parent / "falco-client")]
_N = re.compile(r"n=([^ /]+)/(\d+)")


def node_alert(host: str, k: int, *, priority: Priority = Priority.WARNING, rule: str = "Fleet test") -> Alert:
    return Alert(time_ns=1_700_000_000_000_000_000 + k, rule=rule, priority=priority, source="syscall",
                 output=f"fleet alert n={host}/{k}", output_fields={"proc.name": "sh", "evt.num": k},
                 tags=["fleet", "test"], hostname=host)


def node_message(alert: Alert, epoch: str, seq: int) -> tuple[str, bytes, dict[str, str]]:
    """(subject, payload, headers) of one alert as its node's forwarder publishes it."""
    alert.cursor = Cursor(epoch, seq)
    headers = {HEADER_MSG_ID: msg_id(epoch, seq), HEADER_EPOCH: epoch, HEADER_SEQ: str(seq),
               HEADER_HOST: alert.hostname}
    return alert_subject(alert.hostname), alert_to_wire(alert), headers


def numbers(outputs: Iterable[str]) -> list[tuple[str, int]]:
    """(host, K) of each alert output, in the order given."""
    out: list[tuple[str, int]] = []
    for text in outputs:
        m = _N.search(text)
        if m:
            out.append((m.group(1), int(m.group(2))))
    return out


async def ensure_stream(nc: NatsClient, *, stream: str = DEFAULT_STREAM,
                        prefix: str = DEFAULT_SUBJECT_PREFIX) -> api.StreamInfo:
    js = nc.jetstream()
    return await js.add_stream(api.StreamConfig(name=stream, subjects=[all_alerts(prefix)],
                                                duplicate_window=120.0, storage=api.StorageType.FILE))


async def publish_node(nc: NatsClient, host: str, first: int, count: int, *, epoch: str = "") -> None:
    """Alerts K = first..first+count-1 of `host`, node sequence = K, awaited one by one (a forwarder's acks)."""
    js = nc.jetstream()
    epoch = epoch or f"ep-{host}"
    for k in range(first, first + count):
        subject, payload, headers = node_message(node_alert(host, k), epoch, k)
        await js.publish(subject, payload, headers=headers)


async def make_replicated_stream(url: str, *, replicas: int = 3) -> api.StreamInfo:
    """The fleet stream with `replicas` on a cluster, asked again until the cluster has elected its meta leader
    and placed the stream (within a deadline)."""
    nc = await nats.connect(url)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                return await nc.jetstream().add_stream(api.StreamConfig(
                    name=DEFAULT_STREAM, subjects=[all_alerts(DEFAULT_SUBJECT_PREFIX)], num_replicas=replicas,
                    duplicate_window=120.0))
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                if time.monotonic() > deadline:
                    raise
    finally:
        await nc.close()


async def publish_retrying(nc: NatsClient, host: str, first: int, count: int) -> None:
    """As a forwarder does: an unacknowledged publish is sent again with its message id (kept once)."""
    js = nc.jetstream()
    for k in range(first, first + count):
        subject, payload, headers = node_message(node_alert(host, k), f"ep-{host}", k)
        deadline = time.monotonic() + 60
        while True:
            try:
                await js.publish(subject, payload, headers=headers, timeout=2)
                break
            except nats.errors.Error:  # no answer, no responders, no response from the stream: a leader lost
                if time.monotonic() > deadline:
                    raise


@dataclass
class AggregatorProcess:
    """`falconet aggregate` as its own process, on a UNIX socket and an mTLS port."""

    url: str
    workdir: Path
    certs: Path
    name: str = "agg"
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    unix_path: Path = Path()
    tcp_port: int = 0
    lines: list[str] = field(default_factory=list)
    argv: list[str] | None = None
    """The command's own arguments instead of the usual flags (e.g. `-c FILE`)."""
    expect_tcp: bool = True
    metrics_url: str = ""
    """Its /metrics URL (the usual flags ask for a free port; `-c` files say their own)."""
    _buf: bytes = b""

    def start(self, timeout: float = 60.0, *, until_metrics: bool = False) -> AggregatorProcess:
        """Until it listens (`until_metrics`: only until its metrics and probe endpoint does; `wait_listening`
        then waits for the rest)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.unix_path = self.workdir / f"{self.name}.sock"
        argv = self.argv if self.argv is not None else [
            "--servers", self.url, "--listen", f"unix://{self.unix_path}", "--listen", "127.0.0.1:0",
            "--certs", str(self.certs), "--hostname", self.name, "--metrics", "127.0.0.1:0", *self.extra]
        log = open(self.workdir / f"{self.name}.log", "a")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [*FALCONET, "aggregate", *argv],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self._buf = b""
        if until_metrics:
            self._read_until(lambda: bool(self.metrics_url), timeout, "its metrics endpoint")
            return self
        return self.wait_listening(timeout)

    def wait_listening(self, timeout: float = 60.0) -> AggregatorProcess:
        self._read_until(lambda: bool((self.tcp_port or not self.expect_tcp) and any(
            x.startswith("listening on unix://") for x in self.lines)), timeout, "listening")
        return self

    def _read_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Reads its stdout lines until `done()` (the pipe itself: a buffered reader could hold lines select
        cannot see)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not done():
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.stop()
                raise TimeoutError(f"falconet aggregate: no sign of {what} in {timeout}s: {self.log_tail()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"falconet aggregate exited ({self.proc.wait()}): {self.log_tail()}")
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for raw in lines:
                self._line(raw.decode(errors="replace").strip())

    def _line(self, line: str) -> None:
        self.lines.append(line)
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            self.tcp_port = int(m.group(1))
        if line.startswith("listening on unix://"):
            self.unix_path = Path(line[len("listening on unix://"):])
        if line.startswith("metrics on "):
            self.metrics_url = line[len("metrics on "):]

    def http(self, path: str) -> tuple[int, str]:
        """(status, body) of GET `path` on its metrics listener (/metrics, /healthz, /readyz)."""
        url = self.metrics_url.removesuffix("/metrics") + path
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def metrics(self) -> dict[str, float]:
        """Every unlabelled sample of its /metrics, by name."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.http("/metrics")
        assert status == 200, text
        return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}

    def log_tail(self, n: int = 30) -> str:
        path = self.workdir / f"{self.name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()

    def client_args(self, transport: str) -> list[str]:
        """falco-client's connection options for this aggregator."""
        if transport == "unix":
            return ["--unix-socket", str(self.unix_path)]
        return ["--host", "localhost", "--port", str(self.tcp_port), "--ca", str(self.certs / "ca.crt"),
                "--cert", str(self.certs / "client.crt"), "--key", str(self.certs / "client.key")]


def falco_client(agg: AggregatorProcess, transport: str, *args: str, timeout: float = 60.0) -> list[str]:
    """falco-client's stdout lines (it must exit 0)."""
    proc = subprocess.run([*FALCO_CLIENT, *agg.client_args(transport), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()
