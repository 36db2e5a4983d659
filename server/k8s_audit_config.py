"""The k8s audit endpoint's settings, read from the keys a Falco user knows, in either of Falco's two forms.

Falco 0.25 (`webserver` block):           The k8saudit plugin (Falco >= 0.32):
    webserver:                                load_plugins: [k8saudit, json]
      k8s_audit_endpoint: /k8s-audit          plugins:
      ssl_enabled: false                        - name: k8saudit
      ssl_certificate: /etc/falco/falco.pem       open_params: "http://:9765/k8s-audit"
      k8s_audit_port: 8765       # ours           init_config:
                                                    sslCertificate: /etc/falco/falco.pem
                                                    maxEventSize: 262144
                                                    webhookMaxBatchSize: 12582912

Falco 0.25 served the audit endpoint on `webserver.listen_port`; in Falconet that key is the Prometheus
endpoint's (it stays where it is), so the audit endpoint's port is `webserver.k8s_audit_port`, default 8765
(Falco's port). `ssl_certificate`/`sslCertificate` is one PEM file holding the private key and the certificate
(chain), as Falco's. What Falco had no key for lives in our own `k8s_audit` block, for either form:

    k8s_audit:
      listen_address: 0.0.0.0     # where the endpoint listens (Falco: every interface)
      client_ca: certs/ca.crt     # require client certificates signed by this CA (TLS only)
      token_file: audit.token     # require "Authorization: Bearer <the file's content>"
      queue_size: 100000          # audit events waiting for the engine; beyond it requests get 429

The endpoint is a door into the rule engine: without either authentication the daemon warns at start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORT = 8765
DEFAULT_PATH = "/k8s-audit"
DEFAULT_MAX_EVENT_SIZE = 262_144
DEFAULT_MAX_BATCH_SIZE = 12_582_912
DEFAULT_QUEUE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class K8sAuditConfig:
    """Where and how the audit endpoint listens. `port` 0 picks a free port (tests)."""

    listen_address: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    tls_pem: Path | None = None  # key and certificate in one PEM file; None: plain HTTP
    client_ca: Path | None = None
    token_file: Path | None = None
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    queue_size: int = DEFAULT_QUEUE_SIZE
    form: str = "webserver"  # which Falco form configured it: webserver (0.25) or plugin

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_pem else "http"
        return f"{scheme}://{self.listen_address}:{self.port}{self.path}"


Problems = list[str]


def parse_k8s_audit(
    data: dict[str, Any], resolve: Callable[[str], Path], metrics_port: int
) -> tuple[K8sAuditConfig | None, Problems, list[str]]:
    """The endpoint's settings from the whole configuration mapping, or None when neither form enables it.

    Returns (config, problems, warnings); each problem is a sentence naming the key. `resolve` turns a path from
    the file into one relative to the file's directory.
    """
    problems: Problems = []
    ours = data.get("k8s_audit") or {}
    if not isinstance(ours, dict):
        return None, ["k8s_audit must be a mapping (listen_address, client_ca, token_file, queue_size)."], []
    web = _webserver_form(data.get("webserver") or {}, resolve, problems)
    plugin = _plugin_form(data, resolve, problems)
    if web is not None and plugin is not None:
        problems.append(
            "The k8s audit endpoint is configured twice (webserver.k8s_audit_endpoint and the k8saudit plugin); "
            "keep one."
        )
    base = web or plugin
    if base is None:
        if ours:
            problems.append("k8s_audit is set but no endpoint is enabled: set webserver.k8s_audit_endpoint or "
                            "load the k8saudit plugin.")  # fmt: skip
        return None, problems, []
    cfg = _with_ours(base, ours, resolve, problems)
    if cfg.port == metrics_port and cfg.port != 0:
        problems.append(
            f"The k8s audit endpoint and the metrics endpoint (webserver.listen_port) both use port {cfg.port}; "
            "Falconet serves metrics on webserver.listen_port, so set webserver.k8s_audit_port (or the plugin's "
            "open_params port) to another port."
        )
    warnings = []
    if cfg.client_ca is None and cfg.token_file is None:
        warnings.append(
            f"the k8s audit endpoint {cfg.url} accepts events from anyone who can reach it; set "
            "k8s_audit.client_ca or k8s_audit.token_file to authenticate the API server."
        )
    return cfg, problems, warnings


def _webserver_form(ws: Any, resolve: Callable[[str], Path], problems: Problems) -> K8sAuditConfig | None:
    if not isinstance(ws, dict) or "k8s_audit_endpoint" not in ws:
        return None
    path = ws.get("k8s_audit_endpoint")
    if not isinstance(path, str) or not path.startswith("/"):
        problems.append(f"webserver.k8s_audit_endpoint must be a URL path such as /k8s-audit, got {path!r}.")
        path = DEFAULT_PATH
    port = _port(ws.get("k8s_audit_port", DEFAULT_PORT), "webserver.k8s_audit_port", problems)
    ssl = ws.get("ssl_enabled", False)
    if not isinstance(ssl, bool):
        problems.append(f"webserver.ssl_enabled must be true or false, got {ssl!r}.")
        ssl = False
    pem = None
    if ssl:
        cert = ws.get("ssl_certificate")
        if not isinstance(cert, str) or not cert:
            problems.append("webserver.ssl_enabled needs webserver.ssl_certificate (one PEM with key and certificate).")
        else:
            pem = resolve(cert)
    return K8sAuditConfig(port=port, path=path, tls_pem=pem, form="webserver")


def _plugin_form(data: dict[str, Any], resolve: Callable[[str], Path], problems: Problems) -> K8sAuditConfig | None:
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list):
        return None
    entry = next((p for p in plugins if isinstance(p, dict) and p.get("name") == "k8saudit"), None)
    if entry is None:
        return None
    load = data.get("load_plugins")
    if isinstance(load, list) and load and "k8saudit" not in load:
        return None  # Falco: a non-empty load_plugins loads only the plugins it names
    params = entry.get("open_params", "http://:9765/k8s-audit")
    init = entry.get("init_config") or {}
    if not isinstance(init, dict):
        problems.append("plugins[k8saudit].init_config must be a mapping (sslCertificate, maxEventSize, ...).")
        init = {}
    url = urlsplit(params) if isinstance(params, str) else None
    if url is None or url.scheme not in ("http", "https"):
        problems.append(
            f"plugins[k8saudit].open_params must be an http:// or https:// URL such as http://:9765/k8s-audit, got "
            f"{params!r} (Falconet does not read audit log files through the plugin; replay them with "
            "--source replay:FILE)."
        )
        return None
    try:
        port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    except ValueError:
        problems.append(f"plugins[k8saudit].open_params has an invalid port: {params!r}.")
        port = DEFAULT_PORT
    pem = None
    if url.scheme == "https":
        cert = init.get("sslCertificate", "/etc/falco/falco.pem")
        pem = resolve(str(cert))
    return K8sAuditConfig(
        listen_address=url.hostname or "0.0.0.0",
        port=port,
        path=url.path or "/",
        tls_pem=pem,
        max_event_size=_positive(init, "maxEventSize", DEFAULT_MAX_EVENT_SIZE, problems),
        max_batch_size=_positive(init, "webhookMaxBatchSize", DEFAULT_MAX_BATCH_SIZE, problems),
        form="plugin",
    )


def _with_ours(
    base: K8sAuditConfig, ours: dict[str, Any], resolve: Callable[[str], Path], problems: Problems
) -> K8sAuditConfig:
    known = {"listen_address", "client_ca", "token_file", "queue_size"}
    for key in ours:
        if key not in known:
            problems.append(f"k8s_audit.{key} is not a known setting (known: {', '.join(sorted(known))}).")
    address = ours.get("listen_address", base.listen_address if base.form == "plugin" else "0.0.0.0")
    if not isinstance(address, str) or not address:
        problems.append(f"k8s_audit.listen_address must be an address, got {address!r}.")
        address = "0.0.0.0"
    client_ca = resolve(str(ours["client_ca"])) if ours.get("client_ca") else None
    if client_ca is not None and base.tls_pem is None:
        problems.append("k8s_audit.client_ca needs TLS: set webserver.ssl_enabled (or an https:// open_params).")
    token_file = resolve(str(ours["token_file"])) if ours.get("token_file") else None
    if token_file is not None:
        try:
            if not token_file.read_text(encoding="utf-8").strip():
                problems.append(f"k8s_audit.token_file {token_file} is empty.")
        except OSError as exc:
            problems.append(f"k8s_audit.token_file {token_file} cannot be read: {exc.strerror}.")
    for path, key in ((base.tls_pem, "the TLS certificate"), (client_ca, "k8s_audit.client_ca")):
        if path is not None and not path.is_file():
            problems.append(f"{key} {path} does not exist.")
    queue = _positive(ours, "queue_size", DEFAULT_QUEUE_SIZE, problems, where="k8s_audit.")
    return K8sAuditConfig(
        listen_address=address, port=base.port, path=base.path, tls_pem=base.tls_pem, client_ca=client_ca,
        token_file=token_file, max_event_size=base.max_event_size, max_batch_size=base.max_batch_size,
        queue_size=queue, form=base.form,
    )  # fmt: skip


def _port(value: Any, key: str, problems: Problems) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        problems.append(f"{key} must be a port number (0 to 65535), got {value!r}.")
        return DEFAULT_PORT
    return value


def _positive(data: dict[str, Any], key: str, default: int, problems: Problems, where: str = "") -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{where or 'plugins[k8saudit].init_config.'}{key} must be a positive integer, got {value!r}.")
        return default
    return value
