"""`falconet aggregate`'s settings: the `aggregate` block of a YAML file, then command-line flags over it.

    aggregate:
      servers: [nats://nats-0:4222]        # and every other NATS connection key (server/fleet/connection.py)
      stream: FALCONET_ALERTS
      subject_prefix: falconet.alerts
      silence_timeout: 30                  # seconds without an alert or heartbeat before a node is "silent"
      hostname: aggregator-0               # put on the aggregator's own alerts (default: this host's name)
      grpc:                                # the node's `grpc` keys: bind_address, private_key, cert_chain,
        bind_address: [unix:///run/falconet/aggregate.sock, 0.0.0.0:5060]   # root_certs, retention, limits...
        root_certs: /etc/falconet/certs/ca.crt
      webserver:                           # the node's keys: /metrics, /healthz, /readyz (default port 9377)
        listen_address: 0.0.0.0

Other top-level keys are left to their owners, so only `aggregate` is read (`falconet run` refuses keys it does
not know: the aggregator has a file of its own);
inside it every key is checked and every problem is reported at once, as the node's reader does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from falconet.server.config import ServerConfig
from falconet.server.config_values import Problems, Section, show, yaml_problem
from falconet.server.console.config import ConsoleConfig
from falconet.server.console.fleet import read_fleet_block
from falconet.server.daemon_config import GrpcConfig, MetricsConfig, _read_grpc, _read_webserver
from falconet.server.errors import ConfigError
from falconet.server.fleet.connection import NatsConnection, read_connection
from falconet.server.fleet.names import DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX, HEARTBEAT_SECONDS
from falconet.server.hub import default_hostname

DEFAULT_AGGREGATE_LISTEN = "unix:///run/falconet/aggregate.sock"
DEFAULT_SILENCE_TIMEOUT = 6 * HEARTBEAT_SECONDS
DEFAULT_METRICS_PORT = 9377
"""The node's is 9376: a node and an aggregator on one host do not collide."""
_KEYS = frozenset({"servers", "credentials", "nkey_seed", "user", "password_file", "token_file", "tls",
                   "connect_timeout", "stream", "subject_prefix", "silence_timeout", "hostname", "grpc",
                   "webserver", "web_console"})


@dataclass(frozen=True)
class AggregateConfig:
    nats: NatsConnection = field(default_factory=lambda: NatsConnection(name="falconet-aggregate"))
    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    silence_timeout: float = DEFAULT_SILENCE_TIMEOUT
    hostname: str = field(default_factory=default_hostname)
    grpc: GrpcConfig = field(default_factory=lambda: GrpcConfig(bind_address=(DEFAULT_AGGREGATE_LISTEN,)))
    metrics: MetricsConfig = field(default_factory=lambda: MetricsConfig(listen_port=DEFAULT_METRICS_PORT))
    # The web console (server/console/fleet.py): on by default, settled against the grpc TLS files at start.
    web_console: ConsoleConfig = field(default_factory=lambda: ConsoleConfig(enabled=True))
    web_console_explicit: bool = False

    def server_config(self) -> ServerConfig:
        """The alert server's settings from the grpc block, as the node's daemon makes them (daemon.server_config)."""
        g = self.grpc
        return ServerConfig(
            listen=tuple(g.bind_address), tls_ca=g.root_certs, tls_cert=g.cert_chain, tls_key=g.private_key,
            unix_mode=g.unix_socket_mode, unix_group=g.unix_socket_group, retention=g.retention,
            hostname=self.hostname, limits=g.limits, tls_crl=g.crl,
        )


def _stream_name(s: Section, default: str) -> str:
    name = s.string("stream", default)
    if not name or any(c in name for c in ".*> \t\r\n/\\") or not name.isprintable():
        s.problems.add(f"{s.prefix}stream must be a JetStream stream name (no '.', '*', '>', '/', spaces), "
                       f"got {show(name)}.")
        return default
    return name


def _prefix(s: Section, default: str) -> str:
    prefix = s.string("subject_prefix", default)
    tokens = prefix.split(".")
    if not prefix or any(not t or t in ("*", ">") or not t.isprintable() or any(c.isspace() for c in t)
                         for t in tokens):
        s.problems.add(f"{s.prefix}subject_prefix must be NATS subject tokens without wildcards, "
                       f"got {show(prefix)}.")
        return default
    return prefix


def read_aggregate(s: Section) -> AggregateConfig:
    d = AggregateConfig()
    for key in s.data:
        if key not in _KEYS:
            s.problems.add(f"{s.prefix}{show(key)} is not a known setting (known: {', '.join(sorted(_KEYS))}).")
    nats = read_connection(s, name="falconet-aggregate")
    grpc_block = s.section("grpc")
    grpc = _read_grpc(grpc_block)
    if "bind_address" not in grpc_block.data:
        grpc = replace(grpc, bind_address=d.grpc.bind_address)
    web = s.section("webserver")
    metrics = _read_webserver(web)
    if "listen_port" not in web.data:
        metrics = replace(metrics, listen_port=d.metrics.listen_port)
    hostname = s.string("hostname", d.hostname)
    if not hostname or hostname != hostname.strip() or not hostname.isprintable():
        s.problems.add(f"{s.prefix}hostname must be a non-empty name without spaces around it, got {show(hostname)}.")
        hostname = d.hostname
    console, explicit, found = read_fleet_block(s.data.get("web_console"), s.problems.resolve)
    for problem in found:
        s.problems.add(problem)
    return AggregateConfig(
        nats=nats,
        stream=_stream_name(s, d.stream),
        subject_prefix=_prefix(s, d.subject_prefix),
        silence_timeout=s.number("silence_timeout", d.silence_timeout, minimum=0.1),
        hostname=hostname,
        grpc=grpc,
        metrics=metrics,
        web_console=console,
        web_console_explicit=explicit,
    )


def parse_aggregate(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> AggregateConfig:
    """The `aggregate` block of a YAML document; ConfigError listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc)], source=source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"The top level must be a mapping of keys to values, got {show(data)}."], source=source)
    top = Section(data, "", Problems(base_dir or Path.cwd()))
    config = read_aggregate(top.section("aggregate"))
    if top.problems.problems:
        raise ConfigError(top.problems.problems, source=source)
    return config


def load_aggregate(path: Path) -> AggregateConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError([f"The configuration file {path} cannot be read: {reason}."], source=str(path)) from None
    return parse_aggregate(text, source=str(path), base_dir=path.resolve().parent)
