"""`falconet run --source replay:...` as a real subprocess: alerts to every output and subscriber, SIGHUP reloads,
SIGTERM flushes, rate limits and stuck outputs counted and reported, start-up failures explained. No root needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


import pytest
from prometheus_client.parser import text_string_to_metric_families

from falconet.model.alert import Alert
from falconet.sdk import Client
from falconet.sdk.errors import FalconetError

from daemon_harness import (
    TEST_RULES,
    DaemonProcess,
    Fifo,
    base_config,
    open_event,
    read_json_lines,
    wait_until,
)
from resources import require_root

# ~1-2 s a test: each starts `falconet run` as a process and waits for what it must do (make unit skips them).
pytestmark = pytest.mark.slow
Start = Callable[..., tuple[DaemonProcess, Fifo]]


def rules_file(tmp_path: Path, text: str = TEST_RULES) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


class Subscriber:
    """An SDK subscription (from the oldest retained alert) collecting alerts in a background thread."""

    def __init__(self, socket_path: Path) -> None:
        self.client = Client(unix_socket=socket_path)
        self.alerts: list[Alert] = []
        self._iter = self.client.subscribe(start="oldest")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for alert in self._iter:
                self.alerts.append(alert)
        except Exception:  # the daemon went away at the end of the test
            pass

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    subs: list[Subscriber] = []
    yield subs
    for s in subs:
        s.close()


def test_replayed_events_reach_the_file_output_a_subscriber_and_metrics(
    tmp_path: Path, start_daemon: Start, subscribers: list[Subscriber]
) -> None:
    daemon, fifo = start_daemon(base_config(tmp_path, rules_file(tmp_path)))
    sub = Subscriber(tmp_path / "falconet.sock")
    subscribers.append(sub)
    fifo.send(open_event(1, "/etc/hostname"), open_event(2, "/etc/shadow", name="cat"), open_event(3, "/tmp/x"))
    fifo.send(open_event(4, "/etc/shadow", name="less", pid=4343))
    alerts = wait_until(lambda: len(read_json_lines(tmp_path / "alerts.json")) >= 2 and read_json_lines(
        tmp_path / "alerts.json"), what="two alerts in the file output")
    assert [a["rule"] for a in alerts] == ["Test shadow read", "Test shadow read"]
    assert alerts[0]["output"] == "shadow opened (proc.name=cat fd.name=/etc/shadow)"
    assert alerts[1]["output"] == "shadow opened (proc.name=less fd.name=/etc/shadow)"
    assert alerts[0]["priority"] == "Warning" and alerts[0]["hostname"] == "test-host"
    assert alerts[0]["tags"] == ["T1003", "test"] or sorted(alerts[0]["tags"]) == ["T1003", "test"]
    assert [a["cursor"]["sequence"] for a in alerts] == [1, 2]
    wait_until(lambda: len(sub.alerts) >= 2, what="the SDK subscriber to receive both alerts")
    assert [a.output for a in sub.alerts] == [a["output"] for a in alerts]
    assert [a.cursor.sequence for a in sub.alerts if a.cursor] == [1, 2]

    metrics = scrape(daemon.metrics_url)
    wait_until(lambda: scrape(daemon.metrics_url)["falconet_events_total"][0][1] == 4, what="4 events counted")
    (labels, value), = metrics["falco_events"]
    assert value == 2
    assert labels == {
        "rule": "Test shadow read",
        "priority": "4",
        "hostname": "test-host",
        "source": "syscall",
        "tags": ",T1003,test,",
        "k8s_ns_name": "",
        "k8s_pod_name": "",
    }
    assert metrics["falconet_rule_evaluation_seconds_count"][0][1] >= 1
    assert metrics["falconet_hub_alerts_published_total"][0][1] == 2
    fifo.close()
    assert daemon.wait() == 0


def test_a_malformed_replay_line_is_named_and_the_rest_still_replays(tmp_path: Path, start_daemon: Start) -> None:
    daemon, fifo = start_daemon(base_config(tmp_path, rules_file(tmp_path)))
    fifo.send(open_event(1, "/etc/shadow"))
    fifo.send_raw("{not json\n")
    fifo.send_raw(json.dumps({"num": 3}) + "\n")
    fifo.send(open_event(4, "/etc/shadow", name="vi"))
    fifo.close()
    assert daemon.wait() == 0
    err = daemon.stderr()
    assert f"replay {tmp_path / 'events.fifo'}:2:" in err and "line skipped" in err
    assert f"replay {tmp_path / 'events.fifo'}:3: event is missing key" in err
    assert [a["output_fields"]["proc.name"] for a in read_json_lines(tmp_path / "alerts.json")] == ["cat", "vi"]


def test_a_replayed_regular_file_is_processed_flushed_and_the_daemon_exits(tmp_path: Path) -> None:
    capture = tmp_path / "capture.jsonl"
    capture.write_text("".join(json.dumps(open_event(i, "/etc/shadow", pid=100 + i)) + "\n" for i in range(300)))
    daemon = DaemonProcess(tmp_path, base_config(tmp_path, rules_file(tmp_path)), f"replay:{capture}", [])
    try:
        assert daemon.wait() == 0, daemon.stderr()
    finally:
        daemon.kill()
    alerts = read_json_lines(tmp_path / "alerts.json")
    assert len(alerts) == 300
    assert [a["cursor"]["sequence"] for a in alerts] == list(range(1, 301))


def test_sighup_with_a_broken_rules_file_keeps_the_old_set_and_raises_an_internal_alert(
    tmp_path: Path, start_daemon: Start, subscribers: list[Subscriber]
) -> None:
    rules = rules_file(tmp_path)
    daemon, fifo = start_daemon(base_config(tmp_path, rules))
    sub = Subscriber(tmp_path / "falconet.sock")
    subscribers.append(sub)
    fifo.send(open_event(1, "/etc/shadow"))
    wait_until(lambda: len(sub.alerts) == 1, what="the first alert")
    epoch = sub.alerts[0].cursor.epoch if sub.alerts[0].cursor else None

    rules.write_text(TEST_RULES + "- rule: Broken\n  desc: x\n  condition: evt.type = openat and (\n"
                     "  output: x\n  priority: WARNING\n")
    daemon.signal(signal.SIGHUP)
    internal = wait_until(
        lambda: [a for a in read_json_lines(tmp_path / "alerts.json") if a["source"] == "internal"],
        what="the internal reload-failed alert",
    )
    assert internal[0]["rule"] == "Falconet internal: reload failed"
    assert internal[0]["priority"] == "Error"
    assert "the previous configuration and rules keep running" in internal[0]["output"]
    assert str(rules) in internal[0]["output_fields"]["error"]  # the error names the file (and its position)

    fifo.send(open_event(2, "/etc/shadow", name="old-set"))  # the old rules still run
    wait_until(lambda: len(sub.alerts) == 3, what="an alert from the old rule set after the failed reload")
    assert sub.alerts[1].rule == "Falconet internal: reload failed"
    assert sub.alerts[2].output == "shadow opened (proc.name=old-set fd.name=/etc/shadow)"

    rules.write_text(TEST_RULES.replace("shadow opened", "SHADOW READ"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line(r"falconet: reloaded")
    fifo.send(open_event(3, "/etc/shadow", name="new-set"))
    wait_until(lambda: len(sub.alerts) == 4, what="an alert from the new rule set")
    # Same stream, same epoch, sequence numbers carry on across both reloads.
    assert sub.alerts[3].output == "SHADOW READ (proc.name=new-set fd.name=/etc/shadow)"
    assert [a.cursor.sequence for a in sub.alerts if a.cursor] == [1, 2, 3, 4]
    assert {a.cursor.epoch for a in sub.alerts if a.cursor} == {epoch}
    metrics = scrape(daemon.metrics_url)
    assert metrics["falconet_rules_reload_failures_total"][0][1] == 1
    assert metrics["falconet_rules_reloads_total"][0][1] == 1
    fifo.close()
    assert daemon.wait() == 0


def test_sigterm_flushes_what_a_slow_output_still_holds(tmp_path: Path, start_daemon: Start) -> None:
    sink = tmp_path / "program.txt"
    # A slow sink: one short-lived process per alert, each taking a while.
    program = f"{{enabled: true, keep_alive: false, program: 'sleep 0.02; cat >> {sink}'}}"
    daemon, fifo = start_daemon(base_config(tmp_path, rules_file(tmp_path), program_output=program))
    n = 60
    fifo.send(*(open_event(i, "/etc/shadow", pid=1000 + i) for i in range(n)))
    wait_until(lambda: len(read_json_lines(tmp_path / "alerts.json")) == n, what="the fast file output")
    written_before = len(read_json_lines(sink))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    assert written_before < n  # the program output was still behind when SIGTERM arrived...
    assert len(read_json_lines(sink)) == n  # ...and everything it held was written before exit
    assert "falconet: stopped" in daemon.stderr()


def test_rate_limited_alerts_are_counted_and_reported(tmp_path: Path, start_daemon: Start) -> None:
    config = base_config(tmp_path, rules_file(tmp_path), outputs="{rate: 0.001, max_burst: 3}")
    daemon, fifo = start_daemon(config)
    fifo.send(*(open_event(i, "/etc/shadow", pid=1000 + i) for i in range(20)))
    internal = wait_until(
        lambda: [a for a in read_json_lines(tmp_path / "alerts.json") if a["source"] == "internal"],
        what="the rate-limit report",
    )
    alerts = read_json_lines(tmp_path / "alerts.json")
    assert len([a for a in alerts if a["rule"] == "Test shadow read"]) == 3
    assert internal[0]["rule"] == "Falconet internal: alerts rate-limited"
    assert internal[0]["output_fields"]["n_rate_limited"] == 17
    assert scrape(daemon.metrics_url)["falconet_alerts_rate_limited_total"][0][1] == 17
    fifo.close()
    assert daemon.wait() == 0


class _StuckHandler(BaseHTTPRequestHandler):
    gate = threading.Event()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.gate.wait(60)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def test_a_stuck_output_drops_and_reports_while_other_outputs_get_everything(
    tmp_path: Path, start_daemon: Start
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StuckHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        config = base_config(
            tmp_path,
            rules_file(tmp_path),
            http_output=f"{{enabled: true, url: '{url}', timeout: 60, queue_size: 4}}",
        )
        daemon, fifo = start_daemon(config)
        n = 200
        fifo.send(*(open_event(i, "/etc/shadow", pid=1000 + i) for i in range(n)))
        def reports() -> list[dict[str, Any]]:
            return [a for a in read_json_lines(tmp_path / "alerts.json") if a["source"] == "internal"]

        # The events may arrive in several reads, so the loss may be reported in several (once a second) reports.
        # One alert may already be inside the stuck POST when the rest arrive; `queue_size` (4) wait; the rest
        # are dropped.
        wait_until(
            lambda: sum(r["output_fields"]["n_dropped"] for r in reports()) >= n - 1 - 4,
            what="reports of every alert the stuck output dropped",
        )
        wait_until(lambda: len(read_json_lines(tmp_path / "alerts.json")) >= n + len(reports()),
                   what="every alert in the file output")
        alerts = [a for a in read_json_lines(tmp_path / "alerts.json") if a["source"] != "internal"]
        assert len(alerts) == n  # the engine and the file output were never held up by the stuck HTTP sink
        dropped = sum(r["output_fields"]["n_dropped"] for r in reports())
        assert dropped in (n - 4, n - 5)
        for report in reports():
            assert report["rule"] == "Falconet internal: output dropped alerts"
            assert report["priority"] == "Error"
            assert report["output_fields"]["output"] == "http"
            assert "the http output dropped" in report["output"]
        drops = {
            (labels["output"], labels["reason"]): value
            for labels, value in scrape(daemon.metrics_url)["falconet_output_alerts_dropped_total"]
        }
        assert drops[("http", "queue_full")] == dropped and drops[("file", "queue_full")] == 0
    finally:
        _StuckHandler.gate.set()
        server.shutdown()
        server.server_close()
    fifo.close()
    assert daemon.wait() == 0


def run_cli(*args: str, user: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "falconet.server.cli", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_start_up_failures_say_what_is_wrong(tmp_path: Path) -> None:
    rules = rules_file(tmp_path, "- rule: Bad\n  desc: x\n  condition: proc.nam = x\n  output: x\n  priority: INFO\n")
    config = tmp_path / "falconet.yaml"
    config.write_text(base_config(tmp_path, rules))
    bad_rules = run_cli("run", "-c", str(config), "--source", f"replay:{os.devnull}")
    assert bad_rules.returncode == 1
    assert "the rules failed to load" in bad_rules.stderr and f"{rules}:3" in bad_rules.stderr

    config.write_text(base_config(tmp_path, rules) + "prioritty: debug\n")
    bad_config = run_cli("run", "-c", str(config))
    assert bad_config.returncode == 1 and "prioritty is not a known setting" in bad_config.stderr

    missing = run_cli("run", "-c", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 1 and "absent.yaml does not exist" in missing.stderr


@pytest.mark.root
def test_the_ebpf_source_without_root_fails_at_once_saying_so() -> None:
    require_root("switching to an unprivileged user")
    # A directory the unprivileged user can read (pytest's own tmp_path is private to root).
    with tempfile.TemporaryDirectory(prefix="falconet-nonroot-") as name:
        work = Path(name)
        work.chmod(0o755)
        rules = rules_file(work)
        config = work / "falconet.yaml"
        config.write_text(base_config(work, rules))
        (work / "alerts.json").touch()
        for path in (rules, config, work / "alerts.json"):
            path.chmod(0o666)
        done = run_cli("run", "-c", str(config), user="65534", cwd=work)
    assert done.returncode == 1, done.stderr
    assert "the eBPF sensor needs root (running as uid 65534)" in done.stderr
    assert "--source replay:FILE" in done.stderr


def test_sighup_reloads_certificates_and_a_broken_certificate_keeps_the_old_one(
    tmp_path: Path, start_daemon: Start, certs_dir: Path
) -> None:
    import shutil

    from falconet.certs import init_certs

    certs = tmp_path / "certs"
    shutil.copytree(certs_dir, certs)
    config = base_config(tmp_path, rules_file(tmp_path)).replace(
        f"bind_address: [\"unix://{tmp_path / 'falconet.sock'}\"]",
        f"bind_address: [\"unix://{tmp_path / 'falconet.sock'}\", \"127.0.0.1:0\"]\n"
        f"  private_key: {certs / 'server.key'}\n  cert_chain: {certs / 'server.crt'}\n"
        f"  root_certs: {certs / 'ca.crt'}",
    )
    daemon, fifo = start_daemon(config)
    port = int(daemon.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)").group(1))

    def tls_client(directory: Path) -> Client:
        return Client(host="localhost", port=port, ca=directory / "ca.crt", cert=directory / "client.crt",
                      key=directory / "client.key")

    fifo.send(open_event(1, "/etc/shadow"))
    wait_until(lambda: read_json_lines(tmp_path / "alerts.json"), what="the first alert")
    with tls_client(certs) as client:
        assert [a.rule for a in client.get()] == ["Test shadow read"]

    (certs / "server.crt").write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    daemon.signal(signal.SIGHUP)
    internal = wait_until(
        lambda: [a for a in read_json_lines(tmp_path / "alerts.json") if a["source"] == "internal"],
        what="the certificate reload failure",
    )
    assert internal[0]["rule"] == "Falconet internal: reload failed"
    assert "certificate reload failed, the previous certificates stay in use" in internal[0]["output"]
    with tls_client(certs_dir) as client:  # the old certificate still serves new connections
        assert [a.rule for a in client.get()][0] == "Test shadow read"

    fresh = tmp_path / "fresh"
    init_certs(fresh)  # a new CA: after the reload only clients of the new CA get in
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(fresh / name, certs / name)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line(r"falconet: reloaded")
    wait_until(lambda: scrape(daemon.metrics_url)["falconet_rules_reloads_total"][0][1] == 2, what="two reloads")
    def new_ca_client_gets_in() -> list[str]:
        # A fresh channel per attempt: one CI run saw the first connection after the reload time out before
        # the server's SETTINGS frame (not reproduced since; see the closing note), so the condition is
        # "a client of the new CA gets in within the deadline", never an unbounded retry.
        try:
            with tls_client(fresh) as client:
                return [a.rule for a in client.get()]
        except FalconetError:
            return []

    rules = wait_until(new_ca_client_gets_in, timeout=30, what="a client of the new CA to get in")
    assert rules[0] == "Test shadow read"
    with tls_client(certs_dir) as client, pytest.raises(FalconetError):  # the old CA is no longer trusted
        client.get()
    fifo.close()
    assert daemon.wait() == 0


def test_command_line_rules_replace_the_configs_and_a_rules_d_loads_in_name_order(
    tmp_path: Path, start_daemon: Start
) -> None:
    rules_d = tmp_path / "rules.d"
    rules_d.mkdir()
    (rules_d / "10-base.yaml").write_text(TEST_RULES)
    # A later file overrides the output of the earlier file's rule, as Falco's `override` does.
    (rules_d / "20-local.yaml").write_text(
        "- rule: Test shadow read\n  output: \"local override (proc.name=%proc.name)\"\n  override:\n"
        "    output: replace\n"
    )
    config = base_config(tmp_path, tmp_path / "not-used.yaml")
    daemon, fifo = start_daemon(config, extra_args=["-r", str(rules_d)])
    fifo.send(open_event(1, "/etc/shadow"))
    alerts = wait_until(lambda: read_json_lines(tmp_path / "alerts.json"), what="an alert")
    assert alerts[0]["output"] == "local override (proc.name=cat)"
    fifo.close()
    assert daemon.wait() == 0


@pytest.mark.root
def test_the_ebpf_source_without_bpf_capabilities_fails_at_once_saying_which(tmp_path: Path) -> None:
    require_root("dropping capabilities from root")
    config = tmp_path / "falconet.yaml"
    config.write_text(base_config(tmp_path, rules_file(tmp_path)))
    cmd = ["setpriv", "--bounding-set=-bpf,-sys_admin,-perfmon", "--inh-caps=-bpf,-sys_admin,-perfmon", "--",
           sys.executable, "-m", "falconet.server.cli", "run", "-c", str(config)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "the eBPF sensor needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)" in done.stderr


def test_bpf_capabilities_are_read_from_the_effective_set() -> None:
    from falconet.server.daemon import missing_bpf_capabilities

    def status(eff: int) -> str:
        return f"Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t{eff:016x}\n"

    assert missing_bpf_capabilities(status(1 << 21)) is None  # CAP_SYS_ADMIN alone
    assert missing_bpf_capabilities(status(1 << 39 | 1 << 38)) is None  # CAP_BPF + CAP_PERFMON
    assert missing_bpf_capabilities(status(1 << 39)) == "CAP_PERFMON (or CAP_SYS_ADMIN)"
    assert missing_bpf_capabilities(status(0)) == "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"


def test_a_subscriber_that_falls_behind_is_counted_per_subscriber(tmp_path: Path, start_daemon: Start) -> None:
    import grpc

    from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc

    config = base_config(tmp_path, rules_file(tmp_path)).replace("grpc:\n  enabled: true\n",
                                                                 "grpc:\n  enabled: true\n  retention: 20\n")
    daemon, fifo = start_daemon(config)
    # A Falco client that opens `sub` and never reads: HTTP/2 flow control stops the stream, the hub moves on.
    channel = grpc.insecure_channel(f"unix://{tmp_path / 'falconet.sock'}", options=[("grpc.http2.bdp_probe", 0)])
    hold = threading.Event()

    def requests() -> Iterator[outputs_pb2.request]:
        yield outputs_pb2.request()
        hold.wait(60)

    call = outputs_pb2_grpc.serviceStub(channel).sub(requests())
    try:
        wait_until(lambda: any(labels["subscriber"].endswith(" sub") for labels, _ in
                               scrape(daemon.metrics_url).get("falconet_subscriber_alerts_dropped_total", [])),
                   what="the subscriber to be registered")
        n = 3000
        fifo.send(*(open_event(i, "/etc/shadow", pid=1000 + i) for i in range(n)))
        wait_until(lambda: len(read_json_lines(tmp_path / "alerts.json")) >= n, what="every alert in the file")

        def dropped() -> float:
            return sum(v for labels, v in scrape(daemon.metrics_url)["falconet_subscriber_alerts_dropped_total"]
                       if labels["subscriber"].endswith(" sub"))

        lost = wait_until(dropped, what="the stuck subscriber's losses to be counted")
        assert 0 < lost < n
        assert scrape(daemon.metrics_url)["falconet_subscribers_alerts_dropped_total"][0][1] >= lost
    finally:
        hold.set()
        call.cancel()
        channel.close()
    fifo.close()
    assert daemon.wait() == 0


def test_sighup_with_a_broken_config_keeps_everything_running(tmp_path: Path, start_daemon: Start) -> None:
    daemon, fifo = start_daemon(base_config(tmp_path, rules_file(tmp_path)))
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "outputs: {rate: fast}\n")
    daemon.signal(signal.SIGHUP)
    internal = wait_until(
        lambda: [a for a in read_json_lines(tmp_path / "alerts.json") if a["source"] == "internal"],
        what="the reload failure",
    )
    assert "outputs.rate must be a number of at least 0, got 'fast'." in internal[0]["output_fields"]["error"]
    assert str(daemon.config_path) in internal[0]["output"]
    fifo.send(open_event(1, "/etc/shadow"))
    wait_until(lambda: len(read_json_lines(tmp_path / "alerts.json")) == 2, what="an alert after the failed reload")
    fifo.close()
    assert daemon.wait() == 0
