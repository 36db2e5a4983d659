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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from falconet.model.alert import Priority
from falconet.server.k8s_audit_config import K8sAuditConfig, parse_k8s_audit

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
        "engine",
        "load_plugins",
        "plugins",
        "watch_config_files",
        "output_timeout",
        "outputs_queue",
        "metrics",
        "base_syscalls",
        "falco_libs",
        "container_engines",
        "config_files",
        "json_include_message_property",
        "json_include_output_fields_property",
        "syscall_event_timeouts",
        "append_output",
        "static_fields",
        "capture",
        "plugins_hostinfo",
        "rules",
    }
)


_KNOWN_KEYS = frozenset(
    {
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
        "k8s_audit",
    }
)


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found, each a full sentence."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


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
    bind_address: tuple[str, ...] = ("unix:///run/falconet/falconet.sock",)
    private_key: Path | None = None
    cert_chain: Path | None = None
    root_certs: Path | None = None
    # Ours (Falco has no such keys).
    unix_socket_mode: int = 0o660
    unix_socket_group: str | None = None
    inputs_allowed_common_names: tuple[str, ...] = ()
    retention: int = 10_000


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
    # The k8s audit endpoint (server/k8s_audit_config.py); None: not enabled.
    k8s_audit: K8sAuditConfig | None = None
    warnings: tuple[str, ...] = ()

    def with_rules(self, rules: Sequence[Path]) -> DaemonConfig:
        """A copy whose rules come from the command line (-r), which replaces `rules_files` as in Falco."""
        return replace(self, rules_files=tuple(Path(r) for r in rules))

    def rules_paths(self) -> list[Path]:
        """The rules files to load, in order: a directory contributes its *.yaml/*.yml files sorted by name.

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
            raise ConfigError(self.source, problems)
        return out


class _Reader:
    """Reads typed values out of nested mappings, recording a sentence per problem instead of raising."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def section(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{key} must be a mapping of keys to values, got {_show(value)}.")
            return {}
        return value

    def boolean(self, data: dict[str, Any], key: str, default: bool, where: str = "") -> bool:
        value = data.get(key, default)
        if isinstance(value, bool):
            return value
        self.problems.append(f"{where}{key} must be true or false, got {_show(value)}.")
        return default

    def string(self, data: dict[str, Any], key: str, default: str, where: str = "") -> str:
        value = data.get(key, default)
        if isinstance(value, str):
            return value
        self.problems.append(f"{where}{key} must be a string, got {_show(value)}.")
        return default

    def number(
        self, data: dict[str, Any], key: str, default: float, where: str = "", *, minimum: float = 0.0
    ) -> float:
        value = data.get(key, default)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= minimum:
            return float(value)
        self.problems.append(f"{where}{key} must be a number of at least {minimum:g}, got {_show(value)}.")
        return default

    def integer(self, data: dict[str, Any], key: str, default: int, where: str = "", *, minimum: int = 0) -> int:
        value = data.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        self.problems.append(f"{where}{key} must be a whole number of at least {minimum}, got {_show(value)}.")
        return default

    def queue_size(self, data: dict[str, Any], where: str) -> int | None:
        if data.get("queue_size") is None:
            return None
        return self.integer(data, "queue_size", 1, where, minimum=1)

    def path(self, data: dict[str, Any], key: str, where: str = "") -> Path | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.problems.append(f"{where}{key} must be a file path, got {_show(value)}.")
            return None
        return self.resolve(value)

    def resolve(self, text: str) -> Path:
        p = Path(os.path.expanduser(text))
        return p if p.is_absolute() else self.base_dir / p

    def strings(self, data: dict[str, Any], key: str, where: str = "") -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.problems.append(f"{where}{key} must be a string or a list of strings, got {_show(value)}.")
        return ()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_config(path: Path) -> DaemonConfig:
    """Reads and validates a configuration file; raises ConfigError listing every problem."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [f"The configuration file {path} does not exist."]) from None
    except OSError as exc:
        raise ConfigError(source, [f"The configuration file {path} cannot be read: {exc.strerror}."]) from None
    return parse_config(text, source=source, base_dir=path.resolve().parent)


def parse_config(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> DaemonConfig:
    """Validates configuration text (YAML); raises ConfigError listing every problem, each as a sentence."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"The file is not valid YAML{where}: {problem}."]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"The top level must be a mapping of keys to values, got {_show(data)}."])
    r = _Reader(base_dir or Path.cwd())

    for key in data:
        if key in _FALCO_KEYS_IGNORED:
            r.warnings.append(f"{key} is a Falco setting that Falconet does not use; it is ignored.")
        elif key not in _KNOWN_KEYS:
            r.problems.append(f"{key} is not a known setting (known: {', '.join(sorted(_KNOWN_KEYS))}).")

    # rules_files (Falco also accepts the older singular rules_file).
    rules_key = "rules_files" if "rules_files" in data else "rules_file"
    rules = tuple(r.resolve(p) for p in r.strings(data, rules_key))

    priority = Priority.DEBUG
    prio_text = data.get("priority", "debug")
    try:
        priority = Priority.parse(str(prio_text))
    except ValueError as exc:
        r.problems.append(f"priority: {str(exc).rstrip('.')}.")

    rule_matching_text = r.string(data, "rule_matching", "first")
    rule_matching: Literal["first", "all"] = "first"
    if rule_matching_text == "all":
        rule_matching = "all"
    elif rule_matching_text != "first":
        r.problems.append(f"rule_matching must be first or all, got {_show(rule_matching_text)}.")

    fo = r.section(data, "file_output")
    file_output = FileOutputConfig(
        enabled=r.boolean(fo, "enabled", False, "file_output."),
        filename=r.path(fo, "filename", "file_output.") or FileOutputConfig().filename,
        keep_alive=r.boolean(fo, "keep_alive", False, "file_output."),
        queue_size=r.queue_size(fo, "file_output."),
    )
    if file_output.enabled and not fo.get("filename"):
        r.problems.append("file_output.filename must be set when file_output is enabled.")

    so = r.section(data, "stdout_output")
    po = r.section(data, "program_output")
    program_output = ProgramOutputConfig(
        enabled=r.boolean(po, "enabled", False, "program_output."),
        program=r.string(po, "program", "", "program_output."),
        keep_alive=r.boolean(po, "keep_alive", False, "program_output."),
        queue_size=r.queue_size(po, "program_output."),
    )
    if program_output.enabled and not program_output.program.strip():
        r.problems.append("program_output.program must be set when program_output is enabled.")

    sl = r.section(data, "syslog_output")
    syslog_output = SyslogOutputConfig(
        enabled=r.boolean(sl, "enabled", False, "syslog_output."),
        address=r.string(sl, "address", "/dev/log", "syslog_output."),
        ident=r.string(sl, "ident", "falconet", "syslog_output."),
        queue_size=r.queue_size(sl, "syslog_output."),
    )
    if syslog_output.address.startswith("udp://"):
        host, _, port = syslog_output.address[6:].rpartition(":")
        if not host or not port.isdigit():
            r.problems.append(
                f"syslog_output.address must be a socket path or udp://HOST:PORT, got {syslog_output.address!r}."
            )

    ho = r.section(data, "http_output")
    http_output = HttpOutputConfig(
        enabled=r.boolean(ho, "enabled", False, "http_output."),
        url=r.string(ho, "url", "", "http_output."),
        user_agent=r.string(ho, "user_agent", "falcosecurity/falco", "http_output."),
        insecure=r.boolean(ho, "insecure", False, "http_output."),
        ca_cert=r.path(ho, "ca_cert", "http_output."),
        mtls=r.boolean(ho, "mtls", False, "http_output."),
        client_cert=r.path(ho, "client_cert", "http_output."),
        client_key=r.path(ho, "client_key", "http_output."),
        compress_uploads=r.boolean(ho, "compress_uploads", False, "http_output."),
        keep_alive=r.boolean(ho, "keep_alive", True, "http_output."),
        timeout=r.number(ho, "timeout", 5.0, "http_output.", minimum=0.001),
        queue_size=r.queue_size(ho, "http_output."),
    )
    if http_output.enabled and not http_output.url.startswith(("http://", "https://")):
        r.problems.append(f"http_output.url must start with http:// or https://, got {http_output.url!r}.")
    if http_output.enabled and http_output.mtls and not (http_output.client_cert and http_output.client_key):
        r.problems.append("http_output.mtls needs both http_output.client_cert and http_output.client_key.")

    go = r.section(data, "grpc")
    bind = r.strings(go, "bind_address", "grpc.") or GrpcConfig().bind_address
    for addr in bind:
        if not addr.startswith("unix://") and addr.rpartition(":")[2].isdigit() is False:
            r.problems.append(
                f"grpc.bind_address entry {addr!r} must be unix:///PATH or HOST:PORT (e.g. 0.0.0.0:5060)."
            )
    mode_raw = go.get("unix_socket_mode", "0660")
    unix_mode = 0o660
    try:
        unix_mode = int(str(mode_raw), 8) if not isinstance(mode_raw, int) else mode_raw
        if not 0 <= unix_mode <= 0o777:
            raise ValueError
    except ValueError:
        r.problems.append(f"grpc.unix_socket_mode must be an octal mode such as \"0660\", got {_show(mode_raw)}.")
    group = go.get("unix_socket_group")
    if group is not None and not isinstance(group, str | int):
        r.problems.append(f"grpc.unix_socket_group must be a group name or number, got {_show(group)}.")
    grpc = GrpcConfig(
        enabled=r.boolean(go, "enabled", True, "grpc."),
        bind_address=bind,
        private_key=r.path(go, "private_key", "grpc."),
        cert_chain=r.path(go, "cert_chain", "grpc."),
        root_certs=r.path(go, "root_certs", "grpc."),
        unix_socket_mode=unix_mode,
        unix_socket_group=None if group is None else str(group),
        inputs_allowed_common_names=r.strings(go, "inputs_allowed_common_names", "grpc."),
        retention=r.integer(go, "retention", 10_000, "grpc.", minimum=1),
    )
    tcp = [a for a in grpc.bind_address if not a.startswith("unix://")]
    if grpc.enabled and tcp and not (grpc.private_key and grpc.cert_chain and grpc.root_certs):
        r.problems.append(
            f"grpc.bind_address has a TCP address ({tcp[0]}), which always uses mutual TLS: set grpc.private_key, "
            "grpc.cert_chain and grpc.root_certs."
        )

    outs = r.section(data, "outputs")
    sed = r.section(data, "syscall_event_drops")
    actions = r.strings(sed, "actions", "syscall_event_drops.") if "actions" in sed else DropsConfig().actions
    for action in actions:
        if action not in ("ignore", "log", "alert", "exit"):
            r.problems.append(
                f"syscall_event_drops.actions entry {action!r} must be one of ignore, log, alert, exit."
            )
    ws = r.section(data, "webserver")
    sensor = r.section(data, "sensor")
    ring = r.integer(sensor, "ring_buffer_bytes", 8 << 20, "sensor.", minimum=4096)
    if ring & (ring - 1):
        r.problems.append(f"sensor.ring_buffer_bytes must be a power of two, got {ring}.")
    listen_port = r.integer(ws, "listen_port", 9376, "webserver.")
    if listen_port > 65535:
        r.problems.append(f"webserver.listen_port must be at most 65535, got {listen_port}.")

    k8s_audit, k8s_problems, k8s_warnings = parse_k8s_audit(data, r.resolve, listen_port)
    r.problems.extend(k8s_problems)
    r.warnings.extend(k8s_warnings)
    if k8s_audit is not None and k8s_audit.form == "plugin":  # plugins/load_plugins served the k8saudit plugin
        r.warnings = [w for w in r.warnings if not w.startswith(("plugins is a Falco", "load_plugins is a Falco"))]

    config = DaemonConfig(
        source=source,
        rules_files=rules,
        priority=priority,
        rule_matching=rule_matching,
        json_output=r.boolean(data, "json_output", False),
        json_include_output_property=r.boolean(data, "json_include_output_property", True),
        json_include_tags_property=r.boolean(data, "json_include_tags_property", True),
        time_format_iso_8601=r.boolean(data, "time_format_iso_8601", False),
        stdout_output=r.boolean(so, "enabled", True, "stdout_output."),
        file_output=file_output,
        program_output=program_output,
        syslog_output=syslog_output,
        http_output=http_output,
        grpc=grpc,
        grpc_output=r.boolean(r.section(data, "grpc_output"), "enabled", True, "grpc_output."),
        outputs_rate=r.number(outs, "rate", 0.0, "outputs."),
        outputs_max_burst=r.integer(outs, "max_burst", 1000, "outputs.", minimum=1),
        output_queue_size=r.integer(outs, "queue_size", 10_000, "outputs.", minimum=1),
        syscall_event_drops=DropsConfig(
            actions=actions,
            rate=r.number(sed, "rate", 0.03333, "syscall_event_drops."),
            max_burst=r.integer(sed, "max_burst", 1, "syscall_event_drops.", minimum=1),
        ),
        metrics=MetricsConfig(
            enabled=r.boolean(ws, "enabled", True, "webserver.")
            and r.boolean(ws, "prometheus_metrics_enabled", True, "webserver."),
            listen_address=r.string(ws, "listen_address", "127.0.0.1", "webserver."),
            listen_port=listen_port,
        ),
        ring_buffer_bytes=ring,
        open_path_filter=r.boolean(sensor, "open_path_filter", True, "sensor."),
        k8s_audit=k8s_audit,
        warnings=tuple(r.warnings),
    )
    if r.problems:
        raise ConfigError(source, r.problems)
    return config
