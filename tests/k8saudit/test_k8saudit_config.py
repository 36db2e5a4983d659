"""The k8s audit endpoint's settings: Falco 0.25's webserver keys and the k8saudit plugin's form, and a clear
sentence for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from falconet.server.daemon_config import parse_config
from falconet.server.errors import ConfigError



def test_falco_025_webserver_keys(tmp_path: Path) -> None:
    pem = tmp_path / "falco.pem"
    pem.write_text("x")
    cfg = parse_config("webserver: {k8s_audit_endpoint: /k8s-audit, ssl_enabled: true, ssl_certificate: falco.pem}",
                       base_dir=tmp_path).k8s_audit  # fmt: skip
    assert cfg is not None
    assert (cfg.port, cfg.path, cfg.tls_pem, cfg.listen_address) == (8765, "/k8s-audit", pem, "0.0.0.0")
    assert parse_config("webserver: {listen_port: 9376}").k8s_audit is None  # off unless the endpoint is set


def test_the_plugin_form_and_its_limits(tmp_path: Path) -> None:
    text = """
load_plugins: [k8saudit, json]
plugins:
  - name: k8saudit
    library_path: libk8saudit.so
    open_params: "http://:9765/k8s-audit"
    init_config: {maxEventSize: 1000, webhookMaxBatchSize: 50000}
  - name: json
    library_path: libjson.so
"""
    config = parse_config(text)
    cfg = config.k8s_audit
    assert cfg is not None and (cfg.port, cfg.path, cfg.max_event_size, cfg.max_batch_size) == (
        9765, "/k8s-audit", 1000, 50000)  # fmt: skip
    assert not any(w.startswith("plugins is a Falco") for w in config.warnings)
    assert any("accepts events from anyone" in w for w in config.warnings)
    not_loaded = parse_config(text.replace("[k8saudit, json]", "[json]"))
    assert not_loaded.k8s_audit is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("webserver: {listen_port: 8765, k8s_audit_endpoint: /k8s-audit}", "both use port 8765"),
        ("webserver: {k8s_audit_endpoint: k8s-audit}", "must be a URL path"),
        ("webserver: {k8s_audit_endpoint: /a, ssl_enabled: true}", "needs webserver.ssl_certificate"),
        ("webserver: {k8s_audit_endpoint: /a}\nk8s_audit: {client_ca: ca.crt}", "client_ca needs TLS"),
        ("webserver: {k8s_audit_endpoint: /a}\nk8s_audit: {token_file: missing.token}", "cannot be read"),
        ("webserver: {k8s_audit_endpoint: /a}\nk8s_audit: {queue_size: 0}", "queue_size must be a positive"),
        ("webserver: {k8s_audit_endpoint: /a}\nk8s_audit: {listen: x}", "k8s_audit.listen is not a known"),
        ("plugins: [{name: k8saudit, open_params: /var/log/audit.log}]", "Falconet does not read audit log files"),
        ("plugins: [{name: k8saudit, init_config: {maxEventSize: -1}}]", "maxEventSize must be a positive"),
        ("webserver: {k8s_audit_endpoint: /a}\nplugins: [{name: k8saudit}]", "configured twice"),
        ("k8s_audit: {queue_size: 10}", "no endpoint is enabled"),
    ],
)
def test_mistakes_are_named(text: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(text, base_dir=tmp_path)
