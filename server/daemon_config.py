"""The daemon's configuration file: Falco's falco.yaml key names where the concept is the same, ours otherwise.

A Falco user should recognise the file: `rules_files` (files and rules.d directories, loaded in order),
`json_output`, `json_include_output_property`, `json_include_tags_property`, `priority`, `rule_matching`,
`stdout_output`, `file_output`, `syslog_output`, `http_output`, `program_output`, `grpc` (with `bind_address` as
a list, since we listen on several addresses at once), `grpc_output`, `outputs.rate`/`outputs.max_burst`,
`syscall_event_drops`, and `webserver` for the Prometheus endpoint. What Falco has no key for lives under
`sensor` (ring buffer size) and inside `grpc` (UNIX socket mode and group, the inputs allow-list, retention).

Parsing is separate from running so that a SIGHUP reload can parse a new file, and on any error keep the old
configuration. Every problem found is collected and reported at once, each as a sentence naming the key.
Relative paths are resolved against the configuration file's directory, so a config under /etc/falconet can
say `rules.d` and `certs/server.crt`.

Each block of the file has its own small reader (`_read_grpc`, ...) that takes every default from its
dataclass, so a default is written once, on the field. The value checks themselves (types, minimums, the
sentence for each problem) are `falconet.server.config_values`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from falconet.model.alert import Priority
from falconet.sensor.sensor import RINGBUF_MIN_BYTES, ringbuf_bytes_valid
from falconet.sensor.wakeup import DEFAULT_INTERVAL_MS
from falconet.server.daemon_sched import DEFAULT_NICE
from falconet.server.config import DEFAULT_LISTEN, parse_listen
from falconet.sensor.containers import EngineSettings
from falconet.server.config_engine import read_engine
from falconet.server.config_containers import parse_append_output, parse_container_engines, parse_metadata_wait
from falconet.server.dns_hosts import DnsConfig, parse_dns_section
from falconet.server.config_values import Problems, Section, show, yaml_problem
from falconet.server.errors import ConfigError
from falconet.server.fleet.output_config import NatsOutputConfig, read_nats_output
from falconet.server.fleet.rules_config import FleetRulesConfig, read_fleet_rules
from falconet.server.hub import DEFAULT_RETENTION
from falconet.server.store_schema import StoreConfig, read_store_section
from falconet.server.k8s_audit_config import K8sAuditConfig, parse_k8s_audit
from falconet.server.console.config import ConsoleConfig, parse_web_console
from falconet.server.limits import Limits
from falconet.server.overrides import Override, OverrideError, apply_overrides, blame

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "PACKAGED_CONFIG",
    "RULES_FILE_SUFFIXES",
    "ConfigError",
    "DaemonConfig",
    "DropsConfig",
    "FileOutputConfig",
    "GrpcConfig",
    "HttpOutputConfig",
    "MetricsConfig",
    "ProgramOutputConfig",
    "SyslogOutputConfig",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/falconet/falconet.yaml")
"""Where `falconet run` looks when no -c is given (the install step puts the packaged default there)."""

PACKAGED_CONFIG = Path(__file__).with_name("falconet.yaml")
"""The default configuration shipped as package data."""

RULES_FILE_SUFFIXES = (".yaml", ".yml")

# Keys Falco's falco.yaml has that we accept and ignore (with a warning), so a Falco config loads unchanged.
_FALCO_KEYS_IGNORED = frozenset(
    {
        "buffered_outputs",
        "log_stderr",
        "log_syslog",
        "log_level",
        "libs_logger",
        "load_plugins",
        "plugins",
        "watch_config_files",
        "output_timeout",
        "outputs_queue",
        "metrics",
        "base_syscalls",
        "config_files",
        "json_include_message_property",
        "json_include_output_fields_property",
        "syscall_event_timeouts",
        "static_fields",
        "capture",
        "plugins_hostinfo",
        "rules",
    }
)


_KNOWN_KEYS = frozenset(
    {
        "falco_libs",
        "rules_files",
        "rules_file",
        "priority",
        "rule_matching",
        "json_output",
        "json_include_output_property",
        "json_include_tags_property",
        "time_format_iso_8601",
        "stdout_output",
        "file_output",
        "program_output",
        "syslog_output",
        "http_output",
        "grpc",
        "grpc_output",
        "outputs",
        "syscall_event_drops",
        "webserver",
        "sensor",
        "alert_store",
        "container_engines",  # server/config_containers.py
        "append_output",  # server/config_containers.py
        "container_metadata_wait",  # server/config_containers.py
        "dns",  # server/dns_hosts.py
        "k8s_audit",
        "web_console",  # server/console/config.py
        "nats_output",  # server/fleet/output_config.py
        "fleet_rules",  # server/fleet/rules_config.py
        "engine",  # server/config_engine.py (engine.kind)
    }
)


@dataclass(frozen=True, slots=True)
class FileOutputConfig:
    enabled: bool = False
    filename: Path = Path("/var/log/falconet/events.txt")
    keep_alive: bool = False
    queue_size: int | None = None  # ours: this output's queue (default: outputs.queue_size)


@dataclass(frozen=True, slots=True)
class ProgramOutputConfig:
    enabled: bool = False
    program: str = ""
    keep_alive: bool = False
    queue_size: int | None = None


@dataclass(frozen=True, slots=True)
class SyslogOutputConfig:
    enabled: bool = False
    # Ours: where to send. A path is a UNIX datagram socket (the host's syslog at /dev/log by default);
    # "udp://HOST:PORT" sends RFC 3164 datagrams over UDP.
    address: str = "/dev/log"
    ident: str = "falconet"
    queue_size: int | None = None


@dataclass(frozen=True, slots=True)
class HttpOutputConfig:
    enabled: bool = False
    url: str = ""
    user_agent: str = "falcosecurity/falco"
    insecure: bool = False
    ca_cert: Path | None = None
    mtls: bool = False
    client_cert: Path | None = None
    client_key: Path | None = None
    compress_uploads: bool = False
    keep_alive: bool = True
    timeout: float = 5.0
    queue_size: int | None = None


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    enabled: bool = True
    bind_address: tuple[str, ...] = (DEFAULT_LISTEN,)
    private_key: Path | None = None
    cert_chain: Path | None = None
    root_certs: Path | None = None
    # Ours (Falco has no such keys).
    unix_socket_mode: int = 0o660
    unix_socket_group: str | None = None
    inputs_allowed_common_names: tuple[str, ...] = ()
    retention: int = DEFAULT_RETENTION
    limits: Limits = field(default_factory=Limits)
    crl: Path | None = None  # default: crl.pem next to root_certs


@dataclass(frozen=True, slots=True)
class DropsConfig:
    """Falco's `syscall_event_drops`: what a kernel drop does, and how often it may alert."""

    actions: tuple[str, ...] = ("log", "alert")
    rate: float = 0.03333
    max_burst: int = 1


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Falco's `webserver` block, used for the Prometheus endpoint (/metrics)."""

    enabled: bool = True
    listen_address: str = "127.0.0.1"
    listen_port: int = 9376


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    source: str = "<defaults>"
    rules_files: tuple[Path, ...] = ()
    priority: Priority = Priority.DEBUG
    rule_matching: Literal["first", "all"] = "first"
    json_output: bool = False
    json_include_output_property: bool = True
    json_include_tags_property: bool = True
    time_format_iso_8601: bool = False
    stdout_output: bool = True
    file_output: FileOutputConfig = field(default_factory=FileOutputConfig)
    program_output: ProgramOutputConfig = field(default_factory=ProgramOutputConfig)
    syslog_output: SyslogOutputConfig = field(default_factory=SyslogOutputConfig)
    http_output: HttpOutputConfig = field(default_factory=HttpOutputConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    grpc_output: bool = True
    outputs_rate: float = 0.0  # alerts per second; 0 disables rate limiting, as in Falco
    outputs_max_burst: int = 1000
    output_queue_size: int = 10_000  # ours: each output's bounded queue
    syscall_event_drops: DropsConfig = field(default_factory=DropsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ring_buffer_bytes: int = 8 << 20
    # Ours: keep opens no loaded rule can match in the kernel (Engine.open_path_prefixes); off = ship them all.
    open_path_filter: bool = True
    # Ours: the engine thread's nice value while it keeps up (server/daemon_sched.py); 0 (default): never yield.
    engine_nice: int = DEFAULT_NICE
    # Ours: while events keep coming the engine thread reads them this often, not woken per event (wakeup.py).
    poll_interval_ms: int = DEFAULT_INTERVAL_MS
    # Falco's falco_libs.snaplen: bytes of a read/recv/send buffer captured for evt.buffer (0: none).
    snaplen: int = 80
    # Ours: the persistent alert store behind the gRPC hub (server/store.py); no path = memory only.
    alert_store: StoreConfig = field(default_factory=StoreConfig)
    # Container runtimes (name -> settings) and Falco's append_output entries: server/config_containers.py.
    container_engines: tuple[tuple[str, EngineSettings], ...] = ()
    append_output: tuple[dict[str, Any], ...] = ()
    container_metadata_wait: float = 0.5  # seconds a new container's events may wait for its metadata
    # Ours: names the daemon resolves itself before the host's resolver (server/dns_hosts.py).
    dns: DnsConfig = field(default_factory=DnsConfig)
    # The k8s audit endpoint (server/k8s_audit_config.py); None: not enabled.
    k8s_audit: K8sAuditConfig | None = None
    # The web console (server/console/config.py); off unless enabled.
    web_console: ConsoleConfig = field(default_factory=ConsoleConfig)
    # Ours: forward every alert to NATS JetStream (server/fleet/output_config.py).
    nats_output: NatsOutputConfig = field(default_factory=NatsOutputConfig)
    # Rules pushed to the fleet (docs/fleet-rules.md): the `fleet_rules` block (None: not watched), and the files
    # of the pushed version this configuration runs, loaded after the local rules files (never from the file).
    fleet_rules: FleetRulesConfig | None = None
    fleet_rules_files: tuple[Path, ...] = ()
    # Falco's engine.kind, as a --source spelling (server/config_engine.py); None: --source or its default.
    engine_source: str | None = None
    warnings: tuple[str, ...] = ()

    def with_rules(self, rules: Sequence[Path]) -> DaemonConfig:
        """A copy whose rules come from the command line (-r), which replaces `rules_files` as in Falco."""
        return replace(self, rules_files=tuple(Path(r) for r in rules))

    def with_fleet_rules(self, files: Sequence[Path]) -> DaemonConfig:
        """A copy that runs these pushed files after its local ones (server/fleet/rules_node.py)."""
        return replace(self, fleet_rules_files=tuple(files))

    def rules_paths(self) -> list[Path]:
        """The rules files to load, in order: a directory contributes its *.yaml/*.yml files sorted by name;
        the pushed fleet files, if any, come last (so they may append to and override the local ones).

        Raises ConfigError for an entry that does not exist (a directory that does not exist is skipped, so a
        config can list an optional rules.d).
        """
        out: list[Path] = []
        problems: list[str] = []
        for entry in self.rules_files:
            if entry.is_dir():
                out.extend(
                    sorted(p for p in entry.iterdir() if p.is_file() and p.suffix in RULES_FILE_SUFFIXES)
                )
            elif entry.is_file():
                out.append(entry)
            elif entry.suffix in RULES_FILE_SUFFIXES:
                problems.append(f"The rules file {entry} listed in rules_files does not exist.")
        if problems:
            raise ConfigError(problems, source=self.source)
        return out + list(self.fleet_rules_files)


def load_config(path: Path, overrides: Sequence[Override] = ()) -> DaemonConfig:
    """Reads and validates a configuration file (with -o overrides applied); raises ConfigError listing every
    problem."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"The configuration file {path} does not exist."], source=source) from None
    except OSError as exc:
        problem = f"The configuration file {path} cannot be read: {exc.strerror}."
        raise ConfigError([problem], source=source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([_not_utf8(path, exc)], source=source) from None
    return parse_config(text, source=source, base_dir=path.resolve().parent, overrides=overrides)


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """Where a configuration file stops being UTF-8, as line and column (YAML files must be UTF-8 text)."""
    before = exc.object[: exc.start]
    line = before.count(b"\n") + 1
    column = exc.start - (before.rfind(b"\n") + 1) + 1
    return (
        f"The configuration file {path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at line {line}, "
        f"column {column} cannot be decoded (save the file as UTF-8)."
    )


def parse_config(
    text: str, *, source: str = "<string>", base_dir: Path | None = None, overrides: Sequence[Override] = ()
) -> DaemonConfig:
    """Validates configuration text (YAML) with -o overrides (server/overrides.py) applied on top; raises
    ConfigError listing every problem, each as a sentence (one about an overridden key names the override)."""
    if overrides:
        try:
            return _parse_config(text, source=source, base_dir=base_dir, overrides=overrides)
        except ConfigError as exc:
            raise ConfigError(blame(exc.problems, overrides), source=exc.source) from None
    return _parse_config(text, source=source, base_dir=base_dir)


def _parse_config(
    text: str, *, source: str, base_dir: Path | None, overrides: Sequence[Override] = ()
) -> DaemonConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc)], source=source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problem = f"The top level must be a mapping of keys to values, got {show(data)}."
        raise ConfigError([problem], source=source)
    if overrides:
        try:
            data = apply_overrides(data, list(overrides))
        except OverrideError as exc:
            raise ConfigError([str(exc)], source=source) from None
    top = Section(data, "", Problems(base_dir or Path.cwd()))
    _check_keys(top)
    d = DaemonConfig()
    outputs = top.section("outputs")
    ring_buffer_bytes, open_path_filter, engine_nice, poll_interval_ms = _read_sensor(top.section("sensor"), d)
    metrics = _read_webserver(top.section("webserver"))
    k8s_audit = _read_k8s_audit(data, top.problems, metrics.listen_port)
    alert_store = read_store_section(top.section("alert_store"))
    config = DaemonConfig(
        source=source,
        rules_files=_read_rules_files(top),
        priority=_read_priority(top, d.priority),
        rule_matching=_read_rule_matching(top, d.rule_matching),
        json_output=top.boolean("json_output", d.json_output),
        json_include_output_property=top.boolean("json_include_output_property", d.json_include_output_property),
        json_include_tags_property=top.boolean("json_include_tags_property", d.json_include_tags_property),
        time_format_iso_8601=top.boolean("time_format_iso_8601", d.time_format_iso_8601),
        stdout_output=top.section("stdout_output").boolean("enabled", d.stdout_output),
        file_output=_read_file_output(top.section("file_output")),
        program_output=_read_program_output(top.section("program_output")),
        syslog_output=_read_syslog_output(top.section("syslog_output")),
        http_output=_read_http_output(top.section("http_output")),
        grpc=_read_grpc(top.section("grpc")),
        grpc_output=top.section("grpc_output").boolean("enabled", d.grpc_output),
        outputs_rate=outputs.number("rate", d.outputs_rate),
        outputs_max_burst=outputs.integer("max_burst", d.outputs_max_burst, minimum=1),
        output_queue_size=outputs.integer("queue_size", d.output_queue_size, minimum=1),
        syscall_event_drops=_read_drops(top.section("syscall_event_drops")),
        metrics=metrics,
        alert_store=alert_store,
        ring_buffer_bytes=ring_buffer_bytes,
        open_path_filter=open_path_filter,
        engine_nice=engine_nice,
        poll_interval_ms=poll_interval_ms,
        snaplen=_read_falco_libs(top.section("falco_libs"), d),
        container_engines=parse_container_engines(top.problems, data),
        append_output=parse_append_output(top.problems, data),
        container_metadata_wait=parse_metadata_wait(top.problems, data),
        dns=parse_dns_section(data.get("dns"), top.problems),
        k8s_audit=k8s_audit,
        web_console=_read_web_console(data, top.problems),
        nats_output=read_nats_output(top.section("nats_output")),
        fleet_rules=read_fleet_rules(top.section("fleet_rules"), alert_store.path),
        engine_source=read_engine(data.get("engine"), top.problems),
        warnings=tuple(top.problems.warnings),
    )
    if config.nats_output.enabled and not config.grpc_output:
        top.problems.add("nats_output forwards the alert hub, which grpc_output.enabled: false leaves empty.")
    if top.problems.problems:
        raise ConfigError(top.problems.problems, source=source)
    return config


def _check_keys(top: Section) -> None:
    for key in top.data:
        if key in _FALCO_KEYS_IGNORED:
            top.problems.warnings.append(f"{key} is a Falco setting that Falconet does not use; it is ignored.")
        elif key not in _KNOWN_KEYS:
            # A key is shown as written when it is a plain name, quoted otherwise (never a raw control character)
            name = key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else show(key)
            top.problems.add(f"{name} is not a known setting (known: {', '.join(sorted(_KNOWN_KEYS))}).")


def _read_rules_files(top: Section) -> tuple[Path, ...]:
    # Falco also accepts the older singular rules_file.
    key = "rules_files" if "rules_files" in top.data else "rules_file"
    return tuple(top.problems.resolve(p) for p in top.strings(key) or ())


def _read_priority(top: Section, default: Priority) -> Priority:
    try:
        return Priority.parse(str(top.data.get("priority", default.name.lower())))
    except ValueError as exc:
        top.problems.add(f"priority: {str(exc).rstrip('.')}.")
        return default


def _read_rule_matching(top: Section, default: Literal["first", "all"]) -> Literal["first", "all"]:
    text = top.string("rule_matching", default)
    if text == "first":
        return "first"
    if text == "all":
        return "all"
    top.problems.add(f"rule_matching must be first or all, got {show(text)}.")
    return default


def _read_file_output(s: Section) -> FileOutputConfig:
    d = FileOutputConfig()
    config = FileOutputConfig(
        enabled=s.boolean("enabled", d.enabled),
        filename=s.path("filename") or d.filename,
        keep_alive=s.boolean("keep_alive", d.keep_alive),
        queue_size=s.queue_size(),
    )
    if config.enabled and not s.data.get("filename"):
        s.problems.add("file_output.filename must be set when file_output is enabled.")
    return config


def _read_program_output(s: Section) -> ProgramOutputConfig:
    d = ProgramOutputConfig()
    config = ProgramOutputConfig(
        enabled=s.boolean("enabled", d.enabled),
        program=s.string("program", d.program),
        keep_alive=s.boolean("keep_alive", d.keep_alive),
        queue_size=s.queue_size(),
    )
    if config.enabled and not config.program.strip():
        s.problems.add("program_output.program must be set when program_output is enabled.")
    return config


def _read_syslog_output(s: Section) -> SyslogOutputConfig:
    d = SyslogOutputConfig()
    config = SyslogOutputConfig(
        enabled=s.boolean("enabled", d.enabled),
        address=s.string("address", d.address),
        ident=s.string("ident", d.ident),
        queue_size=s.queue_size(),
    )
    if config.address.startswith("udp://"):
        host, _, port = config.address[len("udp://") :].rpartition(":")
        if not host or not port.isdigit():
            s.problems.add(
                f"syslog_output.address must be a socket path or udp://HOST:PORT, got {config.address!r}."
            )
    return config


def _read_http_output(s: Section) -> HttpOutputConfig:
    d = HttpOutputConfig()
    config = HttpOutputConfig(
        enabled=s.boolean("enabled", d.enabled),
        url=s.string("url", d.url),
        user_agent=s.string("user_agent", d.user_agent),
        insecure=s.boolean("insecure", d.insecure),
        ca_cert=s.path("ca_cert"),
        mtls=s.boolean("mtls", d.mtls),
        client_cert=s.path("client_cert"),
        client_key=s.path("client_key"),
        compress_uploads=s.boolean("compress_uploads", d.compress_uploads),
        keep_alive=s.boolean("keep_alive", d.keep_alive),
        timeout=s.number("timeout", d.timeout, minimum=0.001),
        queue_size=s.queue_size(),
    )
    if config.enabled and not config.url.startswith(("http://", "https://")):
        s.problems.add(f"http_output.url must start with http:// or https://, got {config.url!r}.")
    if config.enabled and config.mtls and not (config.client_cert and config.client_key):
        s.problems.add("http_output.mtls needs both http_output.client_cert and http_output.client_key.")
    return config


def _read_grpc(s: Section) -> GrpcConfig:
    d = GrpcConfig()
    bind = s.strings("bind_address") or d.bind_address
    at = s.prefix  # "grpc." for a node, "aggregate.grpc." for an aggregator: problems name the key as written
    tcp: list[str] = []
    for address in bind:
        try:
            if not parse_listen(address, what=f"{at}bind_address entry").is_unix:
                tcp.append(address)
        except ConfigError as exc:
            s.problems.add(f"{exc}.")
    group = s.data.get("unix_socket_group", d.unix_socket_group)
    if group is not None and not isinstance(group, str | int):
        s.problems.add(f"{at}unix_socket_group must be a group name or number, got {show(group)}.")
        group = d.unix_socket_group
    config = GrpcConfig(
        enabled=s.boolean("enabled", d.enabled),
        bind_address=bind,
        private_key=s.path("private_key"),
        cert_chain=s.path("cert_chain"),
        root_certs=s.path("root_certs"),
        unix_socket_mode=s.octal_mode("unix_socket_mode", d.unix_socket_mode),
        unix_socket_group=None if group is None else str(group),
        inputs_allowed_common_names=s.strings("inputs_allowed_common_names") or d.inputs_allowed_common_names,
        retention=s.integer("retention", d.retention, minimum=1),
        limits=_read_limits(s),
        crl=s.path("crl"),
    )
    if config.enabled and tcp and not (config.private_key and config.cert_chain and config.root_certs):
        s.problems.add(
            f"{at}bind_address has a TCP address ({tcp[0]}), which always uses mutual TLS: set {at}private_key, "
            f"{at}cert_chain and {at}root_certs."
        )
    return config


def _read_limits(s: Section) -> Limits:
    """The resource limits (falconet.server.limits), each key checked here so every problem is listed."""
    d = Limits()
    limits = Limits(
        handshake_timeout=s.number("handshake_timeout", d.handshake_timeout, minimum=0.1),
        max_connections=s.integer("max_connections", d.max_connections, minimum=1),
        max_streams_per_connection=s.integer("max_streams_per_connection", d.max_streams_per_connection, minimum=1),
        max_subscriptions_per_identity=s.integer(
            "max_subscriptions_per_identity", d.max_subscriptions_per_identity, minimum=1
        ),
        max_calls=s.integer("max_calls", d.max_calls, minimum=1),
    )
    for problem in limits.problems():
        s.problems.add(f"{s.prefix}{problem}.")
    return limits if not limits.problems() else d


DROP_ACTIONS = ("ignore", "log", "alert", "exit")


def _read_drops(s: Section) -> DropsConfig:
    d = DropsConfig()
    actions = s.strings("actions")
    for action in actions or ():
        if action not in DROP_ACTIONS:
            s.problems.add(
                f"syscall_event_drops.actions entry {action!r} must be one of {', '.join(DROP_ACTIONS)}."
            )
    return DropsConfig(
        actions=d.actions if actions is None else actions,
        rate=s.number("rate", d.rate),
        max_burst=s.integer("max_burst", d.max_burst, minimum=1),
    )


def _read_k8s_audit(data: dict[str, Any], problems: Problems, metrics_port: int) -> K8sAuditConfig | None:
    """The k8s audit endpoint from either of Falco's forms (server/k8s_audit_config.py)."""
    config, found, warnings = parse_k8s_audit(data, problems.resolve, metrics_port)
    for problem in found:
        problems.add(problem)
    problems.warnings.extend(warnings)
    if config is not None and config.form == "plugin":  # plugins/load_plugins served the k8saudit plugin
        problems.warnings[:] = [w for w in problems.warnings if not w.startswith(("plugins is a", "load_plugins is a"))]
    return config


def _read_web_console(data: dict[str, Any], problems: Problems) -> ConsoleConfig:
    config, found = parse_web_console(data.get("web_console"), problems.resolve)
    for problem in found:
        problems.add(problem)
    return config


def _read_webserver(s: Section) -> MetricsConfig:
    d = MetricsConfig()
    # Falco's webserver block serves more than metrics; ours only metrics, so either switch turns it off.
    enabled = s.boolean("enabled", d.enabled)
    enabled = s.boolean("prometheus_metrics_enabled", d.enabled) and enabled
    port = s.integer("listen_port", d.listen_port)
    if port > 65535:
        s.problems.add(f"{s.prefix}listen_port must be at most 65535, got {port}.")
    return MetricsConfig(enabled=enabled, listen_address=s.string("listen_address", d.listen_address), listen_port=port)


POLL_INTERVAL_MAX_MS = 1000  # the daemon's bound on sensor.poll_interval_ms (the sensor's own is a test's 60 s)
SNAPLEN_MAX = 4096  # the sensor's limit (falconet.sensor.sensor.SNAPLEN_MAX; not imported: bcc-free module)


def _read_falco_libs(s: Section, d: DaemonConfig) -> int:
    """falco_libs.snaplen (Falco's key); the section's other keys tune Falco's libraries and are ignored."""
    for key in s.data:
        if key != "snaplen":
            s.problems.warnings.append(f"falco_libs.{key} is a Falco setting that Falconet does not use; "
                                       "it is ignored.")
    snaplen = s.integer("snaplen", d.snaplen)
    if snaplen > SNAPLEN_MAX:
        s.problems.add(f"falco_libs.snaplen must be at most {SNAPLEN_MAX} bytes, got {snaplen}.")
    return snaplen


def _read_sensor(s: Section, d: DaemonConfig) -> tuple[int, bool, int, int]:
    """(ring_buffer_bytes, open_path_filter, engine_nice, poll_interval_ms): ours, under `sensor`, since Falco has
    no such keys."""
    ring = s.integer("ring_buffer_bytes", d.ring_buffer_bytes, minimum=RINGBUF_MIN_BYTES)
    if not ringbuf_bytes_valid(ring):  # the sensor owns the rule; below the minimum is reported above
        s.problems.add(f"sensor.ring_buffer_bytes must be a power of two, got {ring}.")
    nice = s.integer("engine_nice", d.engine_nice, minimum=0)
    if nice > 19:
        s.problems.add(f"sensor.engine_nice is a nice value from 0 to 19, got {nice}.")
    interval = s.integer("poll_interval_ms", d.poll_interval_ms, minimum=0)
    if interval > POLL_INTERVAL_MAX_MS:
        s.problems.add(f"sensor.poll_interval_ms is at most {POLL_INTERVAL_MAX_MS} (each event may wait that "
                       f"long to be read), got {interval}.")
    return ring, s.boolean("open_path_filter", d.open_path_filter), nice, interval
