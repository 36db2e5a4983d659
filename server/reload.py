"""SIGHUP: a new configuration, new rules, new outputs and new certificates, or else the old ones untouched.

Everything new is built off to the side first (the file parsed, the rules compiled, the file output checked,
every output constructed); only when all of it succeeded is the new `Running` set swapped in, with one
reference assignment, so the hub (its epoch and sequence numbers) and every open gRPC stream carry on. If any
part fails, the running set is not touched, the new parts are released, and an internal alert names the
error. Certificates come last: they belong to the server, which keeps its old ones if the new files do not
fit together (and says so the same way).

A rules version pushed to the fleet (server/fleet/rules_node.py) goes through the same `reload`, given as a
`FleetCandidate`: the running configuration is rebuilt with the candidate's files in place of the pushed files
it runs (the configuration file is not re-read: a push changes rules, not settings), and a failure is reported
the same way, naming the version. A SIGHUP keeps the pushed files that run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from falconet.model.alert import Priority
from falconet.server import heap
from falconet.server.config import parse_listen
from falconet.server.daemon_config import DaemonConfig, load_config
from falconet.server.overrides import Override
from falconet.server.errors import ConfigError, describe_error
from falconet.server.metrics import DaemonMetrics
from falconet.server.outputs import build_outputs, check_writable, close_all
from falconet.server.pipeline import EngineBuilder, Pipeline, Running, apply_open_filter, load_warnings
from falconet.server.reports import RELOAD_RULE, Reporter
from falconet.server.source import KernelFilter, Log

CLOSE_SECONDS = 10.0
"""How long the old outputs may take to flush what they hold before their queued alerts count as lost."""


class CertificateReloader(Protocol):
    """The alert server's side of a reload (AlertServer is one)."""

    def reload_certificates(self) -> None:
        """Re-reads the TLS files for new connections; raises (keeping the old ones) if they do not fit."""


@dataclass(frozen=True, slots=True)
class ReloadFrom:
    """Where a reload reads: the configuration file (None: keep the start-up configuration) and the -r
    rules that replace its rules_files."""

    config_path: Path | None
    rules_override: tuple[Path, ...] = ()
    overrides: tuple[Override, ...] = ()  # -o KEY=VALUE, applied again on every reload


@dataclass(frozen=True, slots=True)
class FleetCandidate:
    """A pushed rules version to try: its files (loaded after the local ones) and its label for messages."""

    files: tuple[Path, ...]
    version: str


class Reloader:
    """Builds and swaps in a new running set; one reload at a time (SIGHUPs in a row queue up)."""

    def __init__(
        self,
        origin: ReloadFrom,
        *,
        build_engine: EngineBuilder,
        hostname: str,
        pipeline: Pipeline,
        reporter: Reporter,
        metrics: DaemonMetrics,
        kernel_filter: KernelFilter | None,
        log: Log,
        stdout: IO[str] | None = None,
    ) -> None:
        self._origin = origin
        self._build_engine = build_engine
        self._hostname = hostname
        self._pipeline = pipeline
        self._reporter = reporter
        self._metrics = metrics
        self._kernel = kernel_filter
        self._log = log
        self._stdout = stdout
        self.certificates: CertificateReloader | None = None
        """The server whose certificates a reload refreshes, once it serves."""
        self._lock = threading.Lock()

    def reload(self, fleet: FleetCandidate | None = None) -> bool:
        """The new set in place (True), or the old one still running and an internal alert (False)."""
        with self._lock:
            try:
                new = self.build(self._pipeline.running.config, fleet)
            except Exception as exc:  # anything at all: the running set must survive a bad file or rule
                self._failed(exc, fleet)
                return False
            self._swap(new)
            heap.settle()  # the new rules out of the collector's way, the old ones collected (server/heap.py)
            cert_error = self._reload_certificates(new.config)
            self._metrics.rules_reloads += 1
            for warning in load_warnings(new.engine):
                self._log(f"rules warning: {warning}")
            if cert_error:
                self._log(f"certificate reload failed, keeping the previous certificates: {cert_error}")
                self._reporter.report(
                    RELOAD_RULE,
                    Priority.ERROR,
                    "Falconet internal: certificate reload failed, the previous certificates stay in use: "
                    f"{cert_error.splitlines()[0]}",
                    {"error": cert_error},
                )
            pushed = f" (fleet rules {fleet.version})" if fleet is not None else ""
            self._log(f"reloaded: {len(new.config.rules_paths())} rules files{pushed}")
            return True

    def build(self, current: DaemonConfig, fleet: FleetCandidate | None = None) -> Running:
        """The complete new set, not yet running; raises on the first part that cannot be built."""
        origin = self._origin
        if fleet is not None:
            config = current.with_fleet_rules(fleet.files)
        else:
            config = load_config(origin.config_path, origin.overrides) if origin.config_path is not None else current
            if origin.rules_override:
                config = config.with_rules(origin.rules_override)
            config = config.with_fleet_rules(current.fleet_rules_files)
        engine = self._build_engine(config, self._hostname)
        if config.file_output.enabled:
            problem = check_writable(config.file_output.filename)
            if problem:
                raise ConfigError([problem], source=config.source)
        return Running.of(config, engine, build_outputs(config, stdout=self._stdout))

    def _failed(self, exc: BaseException, fleet: FleetCandidate | None = None) -> None:
        self._metrics.rules_reload_failures += 1
        text = describe_error(exc)
        what = f"fleet rules {fleet.version} refused" if fleet is not None else "reload failed"
        self._log(f"{what}, keeping the previous configuration and rules:\n{text}")
        first = text.splitlines()[0] if text else type(exc).__name__
        fields = {"error": text} if fleet is None else {"error": text, "fleet_rules_version": fleet.version}
        self._reporter.report(
            RELOAD_RULE,
            Priority.ERROR,
            f"Falconet internal: {what}, the previous configuration and rules keep running: {first}",
            fields,
        )

    def _swap(self, new: Running) -> None:
        if restart_needed(self._pipeline.running.config, new.config):
            self._log("warning: grpc, webserver, ring buffer, container_engines, k8s audit endpoint, alert_store, "
                      "fleet_rules and nats_output changes take effect at the next restart")
        for out in new.outputs:
            out.start()
        # Filter and gates off while the engine changes, so neither rule set misses an event in between; the
        # new rules' filter and gates go on once their engine runs.
        if self._kernel is not None:
            self._kernel.set_open_prefixes(None)
            self._kernel.set_event_gates(None)
        old = self._pipeline.swap(new)
        if self._kernel is not None:
            self._kernel.set_syscalls(new.engine.event_types)
            apply_open_filter(self._kernel, new.engine, new.config.open_path_filter, self._log)
        late = close_all(old.outputs, CLOSE_SECONDS)
        self._reporter.retire(old.outputs)
        if late:
            lost = sum(o.abandoned for o in old.outputs)
            self._log(f"warning: outputs {', '.join(late)} did not flush within {CLOSE_SECONDS:g} s during reload; "
                      f"{lost} queued alerts abandoned (counted as dropped)")

    def _reload_certificates(self, config: DaemonConfig) -> str | None:
        """The error text when the server has TCP listeners and their new certificates cannot be used."""
        if self.certificates is None or all(_is_unix(a) for a in config.grpc.bind_address):
            return None
        try:
            self.certificates.reload_certificates()
        except Exception as exc:  # the server keeps its old certificates; the error is reported, not raised
            return describe_error(exc)
        return None


def _is_unix(address: str) -> bool:
    try:
        return parse_listen(address).is_unix
    except ConfigError:  # a configuration made in code, not read from a file: not a UNIX socket, then
        return False


def restart_needed(old: DaemonConfig, new: DaemonConfig) -> bool:
    """Settings a reload cannot apply to a running daemon (bound sockets, the sensor's ring buffer, the
    container engines' clients)."""
    return (
        old.grpc.bind_address != new.grpc.bind_address
        or old.grpc.enabled != new.grpc.enabled
        or old.metrics != new.metrics
        or old.ring_buffer_bytes != new.ring_buffer_bytes
        or old.poll_interval_ms != new.poll_interval_ms
        or old.container_engines != new.container_engines
        or old.alert_store != new.alert_store
        or old.k8s_audit != new.k8s_audit
        or old.fleet_rules != new.fleet_rules
        or old.nats_output != new.nats_output
    )

