"""Rules pushed to the fleet, end to end: `falconet rules push` into a real JetStream server, two real
`falconet run --source replay:FIFO` daemons with distinct host names, events replayed after the push.

Each daemon is watched from outside, as an operator would: its stderr lines, its alerts file, its metrics
endpoint. Every wait is on a condition with a deadline (a log line, a metric, an alert), never a sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats_servers import NatsCluster, NatsServer, single_server
from output_support import wait_until

from falconet.model.event import Event, Fd, Process, User
from falconet.server.fleet.names import RULES_BUCKET, RULES_KEY, rules_version
from falconet.server.fleet.rules_bundle import RulesBundle, RulesFile, digest_of

pytestmark = [pytest.mark.nats, pytest.mark.slow]

LOCAL_RULES = """\
- rule: Local shadow read
  desc: the node's own rule
  condition: evt.type in (open, openat) and fd.name = /etc/shadow
  output: "shadow opened (proc.name=%proc.name fd.name=%fd.name)"
  priority: WARNING
  tags: [test]
"""
FLEET_RULES = """\
- rule: Fleet passwd read
  desc: pushed to every node
  condition: evt.type in (open, openat) and fd.name = /etc/passwd
  output: "passwd opened (proc.name=%proc.name fd.name=%fd.name)"
  priority: NOTICE
  tags: [fleet]
"""
FLEET_RULES_V2 = FLEET_RULES + """\
- rule: Fleet hosts read
  desc: the second version adds this one
  condition: evt.type in (open, openat) and fd.name = /etc/hosts
  output: "hosts opened (proc.name=%proc.name fd.name=%fd.name)"
  priority: NOTICE
  tags: [fleet]
"""
BROKEN_RULES = """\
- rule: Broken
  desc: reads a field that does not exist
  condition: evt.type = openat and proc.nmae = cat
  output: "never (proc.name=%proc.name)"
  priority: ERROR
"""
DEADLINE = 90.0


def wait_version(node: Node, version: str) -> None:
    wait_until(lambda: node.fleet_version() == version, f"{node.host} running fleet rules {version}", DEADLINE)


def open_event(num: int, path: str) -> dict[str, Any]:
    proc = Process(pid=4242, ppid=1, name="cat", exe="cat", exepath="/usr/bin/cat", args=[path], cwd="/root",
                   user=User(0, "root"))
    ev = Event(num=num, ts=1_700_000_000_000_000_000 + num, type="openat", tid=4242, res=3, proc=proc,
               args={"fd": 3, "dirfd": -100, "name": path, "flags": 1, "mode": 0},
               fd=Fd(num=3, type="file", name=path, nameraw=path, flags=1))
    return ev.to_dict()


class Node:
    """One `falconet run` on a FIFO replay source, with its own host name, work directory and fleet cache."""

    def __init__(self, workdir: Path, host: str, nats_urls: list[str], check_interval: float = 1.0,
                 auth: str = "") -> None:
        self.workdir = workdir
        self.host = host
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "local.yaml").write_text(LOCAL_RULES)
        self.alerts = workdir / "alerts.json"
        self.cache = workdir / "fleet_cache"
        (workdir / "falconet.yaml").write_text(f"""
rules_files: [{workdir / 'local.yaml'}]
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {self.alerts}}}
grpc: {{enabled: true, bind_address: ["unix://{workdir / 'falconet.sock'}"]}}
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0}}
fleet_rules:
  servers: [{", ".join(nats_urls)}]
  cache_dir: {self.cache}
  check_interval: {check_interval}
{auth}""")
        self.fifo = workdir / "events.fifo"
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._num = 0
        self._writer: Any = None
        self.proc: subprocess.Popen[str] | None = None
        self._pump_thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        self.lines.clear()
        env = dict(os.environ, FALCO_HOSTNAME=self.host, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(self.workdir / "falconet.yaml"),
             "--source", f"replay:{self.fifo}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=self.workdir)
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        self.wait_line(r"falconet: ready")

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                assert self.proc is not None
                if self.proc.poll() is not None and not self._cond.wait(0.5):
                    raise AssertionError(f"{self.host} exited ({self.proc.returncode}) without {pattern!r}:\n"
                                         + "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.host}: no line matching {pattern!r}:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.5))

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def metric(self, name: str) -> list[tuple[str, float]]:
        """(label text, value) of every sample named `name`."""
        url = self.wait_line(r"metrics on (http://\S+)").group(1)
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        out = []
        for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
            out.append((m.group(1) or "", float(m.group(2))))
        return out

    def wait_metric(self, name: str, value: float) -> None:
        wait_until(lambda: self.metric(name) == [("", value)], f"{self.host}: {name} = {value:g}", DEADLINE)

    def fleet_version(self) -> str:
        [(labels, value)] = self.metric("falconet_fleet_rules_info")
        assert value == 1
        m = re.search(r'version="([^"]*)"', labels)
        assert m is not None
        return m.group(1)

    def send(self, path: str) -> None:
        if self._writer is None:
            self._writer = open(self.fifo, "w", encoding="utf-8")  # noqa: SIM115 - kept open across sends
        self._num += 1
        self._writer.write(json.dumps(open_event(self._num, path)) + "\n")
        self._writer.flush()

    def alerts_read(self) -> list[dict[str, Any]]:
        if not self.alerts.exists():
            return []
        return [json.loads(line) for line in self.alerts.read_text().splitlines() if line.strip()]

    def rules_fired(self) -> list[str]:
        return [a["rule"] for a in self.alerts_read()]

    def wait_alert(self, rule: str, count: int = 1) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            hits = [a for a in self.alerts_read() if a["rule"] == rule]
            return hits if len(hits) >= count else []
        return wait_until(found, f"{count} alert(s) {rule!r} on {self.host}", DEADLINE)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._pump_thread is not None:  # it reads to the end of stderr, which the exit closed
            self._pump_thread.join(10)
            self._pump_thread = None
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def nodes(request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer) -> Iterator[list[Node]]:
    """Two nodes; parametrized indirectly, the value is their check_interval (the watch itself is immediate)."""
    interval = float(getattr(request, "param", 1.0))
    made = [Node(tmp_path / host, host, [nats_server.url], interval) for host in ("node-a.example", "node-b.example")]
    try:
        yield made
    finally:
        for node in made:
            node.stop()


def rules_cli(url: str | Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A `falconet rules` command against a server URL, or with a node's configuration file (a Path)."""
    where = ["-c", str(url)] if isinstance(url, Path) else ["--nats", url]
    return subprocess.run([sys.executable, "-m", "falconet.server.cli", "rules", command, *args, *where],
                          capture_output=True, text=True, timeout=120)


def push(tmp_path: Path, url: str | Path, text: str, *, name: str = "", extra: list[str] | None = None) -> str:
    """`falconet rules push` as a user runs it; returns the version label it printed."""
    path = tmp_path / "push" / "fleet.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    result = rules_cli(url, "push", str(path), *(["--name", name] if name else []), *(extra or []))
    assert result.returncode == 0, result.stderr
    # "unchanged (...)" too: after a retry whose first write went through but whose acknowledgement was lost.
    m = re.search(r"pushed (\d+-[0-9a-f]{12}):|already holds these files \((\d+-[0-9a-f]{12})\)", result.stdout)
    assert m is not None, result.stdout
    return m.group(1) or m.group(2)


async def _put_raw(url: str, value: bytes) -> int:
    """Writes a value straight into the bucket, as a hostile or buggy writer would (no CLI, no validation)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        kv = await js.key_value(RULES_BUCKET)  # made by the first `rules push`
        return int(await kv.put(RULES_KEY, value))
    finally:
        await nc.close()


def raw_bundle(files: list[tuple[str, str]]) -> bytes:
    """A value in the bundle format with a correct digest, but none of the checks `encode` makes."""
    doc = {"format": 1, "name": "", "pushed_by": "", "pushed_at_ns": 0,
           "digest": digest_of([RulesFile(n, t) for n, t in files]),
           "files": [{"name": n, "text": t} for n, t in files]}
    return zlib.compress(json.dumps(doc).encode())


def put_raw(url: str, value: bytes) -> int:
    import asyncio

    return asyncio.run(_put_raw(url, value))


# check_interval 600: only the watch can bring the versions in within the test's deadlines.
@pytest.mark.parametrize("nodes", [600.0], indirect=True)
def test_pushed_rules_reach_both_nodes_and_fire(tmp_path: Path, nats_server: NatsServer, nodes: list[Node]) -> None:
    for node in nodes:
        node.start()
        node.wait_line(r"fleet rules: no cached version")
        node.wait_line(r"fleet rules: watching bucket falconet_rules")
        assert node.fleet_version() == ""
        node.send("/etc/passwd")  # no pushed rule yet: nothing fires for it
        node.send("/etc/shadow")
        node.wait_alert("Local shadow read")
        assert "Fleet passwd read" not in node.rules_fired()

    version = push(tmp_path, nats_server.url, FLEET_RULES, name="release-1")
    for node in nodes:
        wait_version(node, version)
        node.wait_line(rf"fleet rules: running {version} \(release-1\): 1 files")
        assert node.metric("falconet_fleet_rules_applied_total") == [("", 1.0)]
        node.send("/etc/passwd")
        node.send("/etc/shadow")
        [alert] = node.wait_alert("Fleet passwd read")
        assert alert["hostname"] == node.host
        node.wait_alert("Local shadow read", count=2)  # local files keep running beside the pushed ones

    v2 = push(tmp_path, nats_server.url, FLEET_RULES_V2, name="release-2")
    assert int(v2.split("-")[0]) > int(version.split("-")[0])
    for node in nodes:
        wait_version(node, v2)
        node.send("/etc/hosts")
        node.wait_alert("Fleet hosts read")

    # The same files again: the CLI says so and publishes nothing, unless forced; forced, the nodes move to the
    # new revision without rebuilding anything.
    again = rules_cli(nats_server.url, "push", str(tmp_path / "push" / "fleet.yaml"))
    assert again.returncode == 0 and f"unchanged: revision {v2.split('-')[0]} already holds" in again.stdout
    forced = push(tmp_path, nats_server.url, FLEET_RULES_V2, extra=["--force"])
    assert forced.split("-")[1] == v2.split("-")[1]
    for node in nodes:
        node.wait_line(rf"fleet rules: {forced} holds the files that run; no reload needed")
        assert node.fleet_version() == forced
    listed = rules_cli(nats_server.url, "pushed")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [r[0] for r in rows] == [version, v2, forced]
    assert rows[0][3] == '"release-1"' and rows[0][4] == "fleet.yaml"


def test_a_broken_version_is_refused_by_both_which_keep_running(
    tmp_path: Path, nats_server: NatsServer, nodes: list[Node]
) -> None:
    version = push(tmp_path, nats_server.url, FLEET_RULES)
    for node in nodes:
        node.start()
        wait_version(node, version)

    # A bundle that is well formed but whose rules do not load, written past the CLI's validation.
    broken = RulesBundle(files=(RulesFile("fleet.yaml", BROKEN_RULES),), name="oops")
    revision = put_raw(nats_server.url, broken.encode())
    bad = rules_version(revision, broken.digest)
    for node in nodes:
        node.wait_line(rf"fleet rules {bad} refused, keeping the previous configuration and rules")
        node.wait_line(r"proc\.nmae")  # the loader's own message, with the file and position
        node.wait_metric("falconet_fleet_rules_refused_total", 1.0)
        internal = node.wait_alert("Falconet internal: reload failed")
        assert bad in internal[0]["output"] and internal[0]["output_fields"]["fleet_rules_version"] == bad
        assert node.fleet_version() == version
        node.send("/etc/passwd")  # the previous set still runs
        node.wait_alert("Fleet passwd read")

    # Hostile values: not a bundle at all; a bundle whose file name climbs out of the cache; a zlib bomb.
    hostile = [
        (b"\x1b[2J not zlib", "not zlib-compressed"),
        (raw_bundle([("../../escape.yaml", FLEET_RULES)]), "is not a plain rules file name"),
        (zlib.compress(b"[" * 200 + b" " * (60 << 20), 9), "decompresses to more than"),
        (raw_bundle([("fleet.yaml", "- rule: x\x1b]0;owned\x07")]),
         r"fleet\.yaml:1:10: control character \\x1b"),
    ]
    for value, reason in hostile:
        revision = put_raw(nats_server.url, value)
        for node in nodes:
            line = node.wait_line(rf"fleet rules revision {revision} refused, keeping {version}: .*{reason}")
            assert "\x1b" not in line.string
    for node in nodes:
        assert not (node.cache.parent / "escape.yaml").exists() and not (node.workdir / "escape.yaml").exists()
        assert node.fleet_version() == version
        assert node.metric("falconet_fleet_rules_refused_total") == [("", 5.0)]

    # A SIGHUP re-reads the local files and keeps the pushed ones that run.
    node = nodes[0]
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    node.wait_line(r"^falconet: reloaded: 2 rules files$")
    node.send("/etc/passwd")
    node.wait_alert("Fleet passwd read", count=2)
    assert node.fleet_version() == version


def test_restart_with_nats_down_runs_the_cached_version_then_follows_pushes(
    tmp_path: Path, nats_server: NatsServer, nodes: list[Node]
) -> None:
    node, fresh = nodes
    node.start()
    version = push(tmp_path, nats_server.url, FLEET_RULES)
    wait_version(node, version)
    node.stop()
    nats_server.stop()

    node.start()  # NATS is down: the cached version runs anyway
    node.wait_line(rf"fleet rules: running the cached version {version} \(1 files\)")
    assert node.fleet_version() == version
    assert node.metric("falconet_fleet_rules_connected") == [("", 0.0)]
    node.send("/etc/passwd")
    node.wait_alert("Fleet passwd read")
    fresh.start()  # no cache and no NATS: the local files run
    fresh.wait_line(r"fleet rules: no cached version")
    assert fresh.fleet_version() == ""

    nats_server.start()
    v2 = push(tmp_path, node.workdir / "falconet.yaml", FLEET_RULES_V2)  # the node's own fleet_rules block
    for n in (node, fresh):
        wait_version(n, v2)
        n.send("/etc/hosts")
        n.wait_alert("Fleet hosts read")


def test_a_replicated_bucket_on_a_cluster_survives_losing_a_server(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    urls = nats_cluster.urls
    made = [Node(tmp_path / host, host, urls) for host in ("node-a.example", "node-b.example")]
    try:
        for node in made:
            node.start()
        version = push(tmp_path, urls[2], FLEET_RULES, extra=["--replicas", "3"])
        for node in made:
            wait_version(node, version)
        nats_cluster.servers[0].kill()  # some node was likely connected to it; all must carry on
        v2 = push(tmp_path, urls[1], FLEET_RULES_V2)
        for node in made:
            wait_version(node, v2)
            node.send("/etc/hosts")
            node.wait_alert("Fleet hosts read")
    finally:
        for node in made:
            node.stop()


# What docs/fleet-rules.md says a node needs: read access only. The node user below may do nothing else.
NODE_ONLY_READS = """
accounts {
  FLEET {
    jetstream: enabled
    users: [
      {user: pusher, password: pusher-secret}
      {user: node, password: node-secret, permissions: {
        publish: {allow: ["$JS.API.STREAM.INFO.KV_falconet_rules", "$JS.API.DIRECT.GET.KV_falconet_rules.>",
                          "$JS.API.STREAM.MSG.GET.KV_falconet_rules"]}
        subscribe: {allow: ["$KV.falconet_rules.current", "_INBOX.>"]}
      }}
    ]
  }
}
"""


def test_a_node_needs_only_read_access_and_cannot_push(tmp_path: Path) -> None:
    server = single_server(tmp_path / "nats")
    server.extra_config = NODE_ONLY_READS
    server.start()
    try:
        (tmp_path / "pusher.pw").write_text("pusher-secret\n")
        (tmp_path / "node.pw").write_text("node-secret\n")
        node = Node(tmp_path / "node-a", "node-a", [server.url],
                    auth=f"  user: node\n  password_file: {tmp_path / 'node.pw'}\n")
        node.start()
        version = push(tmp_path, server.url, FLEET_RULES,
                       extra=["--user", "pusher", "--password-file", str(tmp_path / "pusher.pw")])
        wait_version(node, version)
        node.send("/etc/passwd")
        node.wait_alert("Fleet passwd read")

        # The node's credentials cannot publish a version (a stolen node cannot rewrite the fleet's rules).
        denied = rules_cli(server.url, "push", str(tmp_path / "push" / "fleet.yaml"), "--force", "--retry-for", "0", "--timeout", "2",
                           "--user", "node", "--password-file", str(tmp_path / "node.pw"))
        assert denied.returncode == 1 and "falconet rules: NATS:" in denied.stderr, denied.stderr
        assert 'permissions violation for publish to "$kv.falconet_rules.current"' in denied.stderr.lower()
        assert "Traceback" not in denied.stderr
        node.stop()
    finally:
        server.stop()
