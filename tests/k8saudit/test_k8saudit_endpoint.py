"""The k8s audit endpoint of a real `falconet run`: Falco's sample events posted over HTTP and TLS become the
alerts Falco's rules define, received through falco-client and the Python SDK with source k8s_audit; bad
requests get their status and their counter and the daemon carries on; authentication keeps others out."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from audit_http import Start, wait_until
from audit_support import events_dir, falco025_rules

from falconet.certs import init_certs
from falconet.sdk import Client

pytestmark = [pytest.mark.k8saudit, pytest.mark.upstream, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent


def config(work: Path, rules: Path, *, webserver: str = "", k8s_audit: str = "", extra: str = "") -> str:
    return f"""
rules_files: [{rules}]
rule_matching: all
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {work / 'alerts.json'}}}
grpc: {{enabled: true, bind_address: ["unix://{work / 'falconet.sock'}"]}}
grpc_output: {{enabled: true}}
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0{webserver}}}
k8s_audit: {{listen_address: 127.0.0.1{k8s_audit}}}
{extra}
"""


WEB = ", k8s_audit_endpoint: /k8s-audit, k8s_audit_port: 0"


def sample(name: str) -> list[dict[str, Any]]:
    path = events_dir() / f"{name}.json"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def event_list(*names: str) -> str:
    items = [ev for n in names for ev in sample(n)]
    return json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})


def scrape(url: str) -> dict[str, float]:
    """Samples of the daemon's metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310 (loopback)
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


class Subscribers:
    """falco-client (a subprocess) and the SDK, both subscribed from the oldest alert."""

    def __init__(self, socket_path: Path) -> None:
        self.cli: list[dict[str, Any]] = []
        self.sdk: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "falco-client"), "subscribe", "--unix-socket", str(socket_path), "--output", "json",
             "--from", "oldest"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._pump, daemon=True).start()
        self.client = Client(unix_socket=socket_path)
        self._iter = self.client.subscribe(start="oldest")
        threading.Thread(target=self._sdk, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.cli.append(json.loads(line))

    def _sdk(self) -> None:
        try:
            for alert in self._iter:
                self.sdk.append(alert.to_json_dict())
        except Exception:  # the client was closed at the end of the test
            pass

    def rules(self) -> tuple[Counter[str], Counter[str]]:
        return Counter(a["rule"] for a in list(self.cli)), Counter(a["rule"] for a in list(self.sdk))

    def close(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# What Falco 0.25's k8s_audit rules raise for these samples (its regression cases), with rule_matching all.
EXPECTED = Counter({
    "Create Privileged Pod": 1, "Attach/Exec Pod": 1, "Create Sensitive Mount Pod": 1,
    "Create/Modify Configmap With Private Credentials": 6, "K8s ConfigMap Created": 6,
    "Pod Created in Kube Namespace": 1, "Attach to cluster-admin Role": 1,
    "K8s Role/Clusterrolebinding Created": 1,
})  # fmt: skip
SAMPLES = ("create_nginx_pod_privileged", "exec_pod", "create_nginx_pod_sensitive_mount",
           "create_configmap_sensitive_values", "create_pod_kube_system_namespace", "attach_cluster_admin_role")  # fmt: skip


def _received_everything(subs: Subscribers) -> bool:
    cli, sdk = subs.rules()
    return cli == EXPECTED and sdk == EXPECTED


def test_samples_over_http_reach_falco_client_and_the_sdk(audit_daemon: Start, tmp_path: Path) -> None:
    d = audit_daemon(config(tmp_path, falco025_rules(), webserver=WEB))
    subs = Subscribers(tmp_path / "falconet.sock")
    try:
        # One Event per request (as a batching-off webhook sends), then the rest as one EventList.
        for ev in sample("create_nginx_pod_privileged"):
            assert d.post(json.dumps(ev)).status == 200
        reply = d.post(event_list(*SAMPLES[1:]))
        assert reply.status == 200 and reply.body["message"] == "10 events accepted"
        wait_until(lambda: _received_everything(subs), timeout=30, what="every alert at both subscribers")
        assert {a["source"] for a in subs.cli} == {"k8s_audit"} == {a["source"] for a in subs.sdk}
        priv = next(a for a in subs.sdk if a["rule"] == "Create Privileged Pod")
        assert priv["output_fields"]["ka.req.pod.containers.image"] == "nginx"
        assert priv["time"] == "2018-10-25T14:09:12.581541000Z"  # the event's stageTimestamp
        metrics = scrape(d.process.metrics_url)
        assert metrics['falconet_k8s_audit_events_total{outcome="accepted"}'] == 11
        assert metrics['falco_events{hostname="test-host",k8s_ns_name="",k8s_pod_name="",priority="4",'
                       'rule="Create Privileged Pod",source="k8s_audit",tags=",k8s,"}'] == 1  # fmt: skip
    finally:
        subs.close()


def _tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """(server PEM with key and certificate in one file, as Falco's ssl_certificate; the certs directory)."""
    certs = tmp_path / "certs"
    init_certs(certs)
    pem = tmp_path / "falconet.pem"
    pem.write_bytes((certs / "server.key").read_bytes() + (certs / "server.crt").read_bytes())
    return pem, certs


def _client_tls(certs: Path, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    return ctx


def test_tls_with_client_certificates_over_falcos_webserver_keys(audit_daemon: Start, tmp_path: Path) -> None:
    pem, certs = _tls_files(tmp_path)
    d = audit_daemon(
        config(tmp_path, falco025_rules(), webserver=WEB + f", ssl_enabled: true, ssl_certificate: {pem}",
               k8s_audit=f", client_ca: {certs / 'ca.crt'}"),
        tls=_client_tls(certs, with_cert=True),
    )  # fmt: skip
    assert d.url.startswith("https://127.0.0.1:")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        d.post(event_list("exec_pod"), tls=_client_tls(certs, with_cert=False))
    assert d.post(event_list("exec_pod")).status == 200
    client = Client(unix_socket=tmp_path / "falconet.sock")
    try:
        wait_until(lambda: [a.rule for a in client.get()] == ["Attach/Exec Pod"], timeout=30,
                   what="the alert of the event posted over TLS")  # fmt: skip
        assert [a.source for a in client.get()] == ["k8s_audit"]
    finally:
        client.close()


def test_the_plugin_form_with_a_token_refuses_requests_without_it(audit_daemon: Start, tmp_path: Path) -> None:
    token = tmp_path / "audit.token"
    token.write_text("s3cret-token\n")
    plugin = """
load_plugins: [k8saudit, json]
plugins:
  - name: k8saudit
    library_path: libk8saudit.so
    open_params: "http://127.0.0.1:0/k8s-audit"
  - name: json
    library_path: libjson.so
"""
    d = audit_daemon(config(tmp_path, falco025_rules(), k8s_audit=f", token_file: {token}", extra=plugin))
    assert "plugins is a Falco setting" not in d.process.stderr()
    body = event_list("exec_pod")
    for reply in (d.post(body), d.post(body, token="wrong")):
        assert reply.status == 401 and reply.headers["www-authenticate"].startswith("Bearer")
    assert d.post(body, token="s3cret-token").status == 200
    wait_until(lambda: (tmp_path / "alerts.json").exists() and "Attach/Exec Pod" in (tmp_path / "alerts.json").read_text(),
               timeout=30, what="the authenticated request's alert")  # fmt: skip
    assert (tmp_path / "alerts.json").read_text().count("Attach/Exec Pod") == 1
    assert scrape(d.process.metrics_url)['falconet_k8s_audit_requests_total{code="401"}'] == 2


def test_bad_requests_get_their_status_and_a_metric_and_the_daemon_carries_on(
    audit_daemon: Start, tmp_path: Path
) -> None:
    plugin = """
plugins:
  - name: k8saudit
    open_params: "http://127.0.0.1:0/k8s-audit"
    init_config: {maxEventSize: 4000, webhookMaxBatchSize: 20000}
"""
    d = audit_daemon(config(tmp_path, falco025_rules(), k8s_audit=", queue_size: 10", extra=plugin))
    big_event = dict(sample("exec_pod")[0], padding="x" * 5000)
    cases = [
        (d.post("{not json"), 400),
        (d.post(b"\xff\xfe not utf-8"), 400),
        (d.post("[" * 9000 + "]" * 9000), 400),  # nested deeper than any parser should follow
        (d.post(json.dumps({"kind": "Pod", "apiVersion": "v1"})), 400),
        (d.post(json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v2"})), 400),
        (d.post(json.dumps({"kind": "Event"})), 400),  # no stageTimestamp
        (d.post(event_list("exec_pod"), content_type="text/plain"), 415),
        (d.post("x" * 30000), 413),
        (d.post(json.dumps(big_event)), 413),
        (d.post(event_list("exec_pod"), method="GET"), 405),
        (d.post(event_list("exec_pod"), path="/elsewhere"), 404),
    ]
    for reply, status in cases:
        assert reply.status == status, reply.body
    # More events in one request than the queue can ever take: refused whole with 429, nothing half-taken.
    flood = json.dumps({"kind": "EventList", "items": sample("exec_pod") * 11})
    reply = d.post(flood)
    assert reply.status == 429 and reply.headers["retry-after"] == "1"
    # An EventList item over maxEventSize is dropped alone; the rest is evaluated.
    mixed = json.dumps({"kind": "EventList", "items": [big_event, *sample("create_nginx_pod_privileged")]})
    assert d.post(mixed).status == 200
    wait_until(lambda: "Create Privileged Pod" in _alerts_text(tmp_path), timeout=30, what="the alert after bad input")
    assert "Attach/Exec Pod" not in _alerts_text(tmp_path)
    m = scrape(d.process.metrics_url)
    for code, n in (("400", 6), ("413", 2), ("415", 1), ("429", 1), ("405", 1), ("404", 1), ("200", 1)):
        assert m[f'falconet_k8s_audit_requests_total{{code="{code}"}}'] == n, code
    assert m['falconet_k8s_audit_events_total{outcome="dropped_too_large"}'] == 1
    assert m['falconet_k8s_audit_events_total{outcome="refused_queue_full"}'] == 11
    assert d.process.proc.poll() is None  # still running


def _alerts_text(work: Path) -> str:
    path = work / "alerts.json"
    return path.read_text() if path.exists() else ""


def test_a_replayed_audit_file_raises_the_same_alerts(tmp_path: Path) -> None:
    capture = tmp_path / "audit.jsonl"
    capture.write_text("".join((events_dir() / f"{n}.json").read_text() for n in SAMPLES))
    work = tmp_path / "w"
    work.mkdir()
    cfg = config(work, falco025_rules()).replace("k8s_audit: {listen_address: 127.0.0.1}", "")
    (work / "falconet.yaml").write_text(cfg)
    proc = subprocess.run(
        [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(work / "falconet.yaml"), "--source",
         f"replay:{capture}"],
        capture_output=True, text=True, timeout=120, check=False, cwd=work,
        env=dict(os.environ, FALCO_HOSTNAME="test-host"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = Counter(json.loads(line)["rule"] for line in _alerts_text(work).splitlines() if line.strip())
    assert got == EXPECTED


def test_a_stuck_output_never_holds_up_the_webhook(audit_daemon: Start, tmp_path: Path) -> None:
    # An HTTP output whose server accepts connections and never answers: its worker waits, its small queue
    # fills and drops (counted). The webhook still answers every request, and the file output gets every alert.
    import socket

    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(64)
    port = stuck.getsockname()[1]
    try:
        extra = f"http_output: {{enabled: true, url: 'http://127.0.0.1:{port}/', timeout: 60, queue_size: 2}}"
        d = audit_daemon(config(tmp_path, falco025_rules(), webserver=WEB, extra=extra))
        for _ in range(30):
            assert d.post(event_list("create_configmap_sensitive_values")).status == 200
        expected = 30 * 6 * 2  # each event raises the credentials rule and K8s ConfigMap Created
        wait_until(lambda: len(_alerts_text(tmp_path).splitlines()) >= expected, timeout=60,
                   what="every alert in the file output")  # fmt: skip
        dropped = scrape(d.process.metrics_url)
        assert dropped['falconet_output_alerts_dropped_total{output="http",reason="queue_full"}'] > 0
    finally:
        stuck.close()
