"""The daemon: an event source -> the rule engine -> the alert hub and the outputs, plus the gRPC alert server.

This module wires the parts, each of which has one job:
- server/sources.py and source_*.py: where events come from (the eBPF sensor, a replayed capture), behind
  one interface (server/source.py);
- server/pipeline.py: the engine thread, which polls the source, runs the engine and hands each alert to
  the hub (`publish` never blocks) and to every output's bounded queue (`submit` never blocks), so nothing
  downstream can slow the engine;
- server/reports.py: once a second, counters become metrics and internal alerts (kernel drops become Falco's
  "Falco internal: syscall event drop"; output, rate-limit and engine losses our own);
- server/reload.py: SIGHUP builds a new configuration, rules and outputs completely and then swaps them in
  (and re-reads the certificates); if anything fails, the old set keeps running and an internal alert says why.

Threads: the engine thread; the main thread, which runs the asyncio loop that serves gRPC (AlertServer) and
handles signals; each output's worker (server/outputs.py); the metrics endpoint's HTTP thread. SIGTERM stops
the source, lets the engine finish its batch, flushes every output and stops the server gracefully.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from falconet.rules.hostname import default_hostname as default_hostname  # its one owner; re-exported
from falconet.server.daemon_config import DaemonConfig
from falconet.server.dns_hosts import hosts_resolver
from falconet.server import heap
from falconet.server.errors import ConfigError, DaemonError, describe_error
from falconet.server.fleet.rules_node import FleetRulesNode
from falconet.server.hub import Hub
from falconet.server.store import AlertStore, hub_with_store
from falconet.server.daemon_containers import with_containers
from falconet.server.daemon_sched import EngineNice
from falconet.server.k8s_audit import K8sAuditEndpoint
from falconet.server.metrics import DaemonMetrics
from falconet.server.metrics_falco import falco_collector
from falconet.server.overrides import Override
from falconet.server.outputs import build_outputs, check_writable, close_all
from falconet.server.pipeline import EngineBuilder, Pipeline, Running, apply_open_filter, engine_loop, load_warnings
from falconet.server.reload import Reloader, ReloadFrom, restart_needed
from falconet.server.reports import (
    DROP_RULE,
    ENGINE_ERROR_RULE,
    INTERNAL_SOURCE,
    OUTPUT_DROP_RULE,
    RATE_LIMIT_RULE,
    RELOAD_RULE,
    Reporter,
)
from falconet.server.source import EventSource, SourceCounters
from falconet.server.source_ebpf import SensorSource, missing_bpf_capabilities
from falconet.server.source_replay import ReplaySource
from falconet.server.sources import open_source, preflight

if TYPE_CHECKING:
    from falconet.rules.engine import Engine
    from falconet.server.app import AlertServer
    from falconet.server.config import ServerConfig
    from falconet.server.console.app import WebConsole
    from falconet.server.fleet.output import NatsForwarder

# Names that moved out of this module stay importable from it.
__all__ = [
    "DROP_RULE",
    "ENGINE_ERROR_RULE",
    "INTERNAL_SOURCE",
    "OUTPUT_DROP_RULE",
    "RATE_LIMIT_RULE",
    "RELOAD_RULE",
    "ConfigError",
    "Daemon",
    "DaemonError",
    "EventSource",
    "ReplaySource",
    "SensorSource",
    "SourceCounters",
    "build_engine",
    "default_hostname",
    "describe_error",
    "missing_bpf_capabilities",
    "open_source",
    "restart_needed",
]


def build_engine(config: DaemonConfig, hostname: str) -> Engine:
    """Loads the configured rules; raises the engine's RulesLoadError (or ConfigError) on any error."""
    from falconet.rules.blind import add_blind_warnings
    from falconet.rules.engine import Engine, Resolvers, system_dns

    paths = config.rules_paths()
    if not paths:
        raise ConfigError(["No rules files to load: set rules_files or pass -r FILE."], source=config.source)
    engine = Engine.from_files(
        paths,
        rule_matching=config.rule_matching,
        # The engine owns the DNS cache; a minute between refreshes, as the daemon's own cache had.
        # `dns` names (server/dns_hosts.py) answer first, the host's resolver the rest.
        resolvers=Resolvers(hostname=lambda: hostname, dns=hosts_resolver(config.dns, system_dns), dns_ttl=60.0),
        min_priority=config.priority,
        append_output=list(config.append_output) or None,
    )
    # Rules that read a field the live sensor never fills: logged with the other load warnings at start and
    # at every reload (a replayed capture comes from the same sensor, so it is as blind).
    add_blind_warnings(engine.load_result, engine.enabled_rules)
    return engine


@dataclass(frozen=True, slots=True)
class _Parts:
    """What prepare() made; the daemon runs only with all of it."""

    source: EventSource
    pipeline: Pipeline
    reporter: Reporter
    reloader: Reloader


class Daemon:
    """One running daemon. `run()` (in the main thread) returns the exit status.

    `source` is a --source text (`ebpf`, `replay:FILE`) or a source object (tests give one that drops on
    demand); `build_engine` loads the rules (tests wrap the real one).
    """

    def __init__(
        self,
        config: DaemonConfig,
        *,
        source: str | EventSource = "ebpf",
        config_path: Path | None = None,
        rules_override: Sequence[Path] = (),
        overrides: Sequence[Override] = (),
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        build_engine: EngineBuilder = build_engine,
    ) -> None:
        self._initial_config = config
        self.source_spec = source if isinstance(source, str) else source.name
        self._given_source = None if isinstance(source, str) else source
        self._origin = ReloadFrom(config_path, tuple(rules_override), tuple(overrides))
        self._stdout = stdout
        self._stderr = stderr or sys.stderr
        self._build_engine = build_engine
        self.hostname = default_hostname()
        self.metrics = DaemonMetrics()
        self.metrics.registry.register(falco_collector(self.metrics, self.hostname, self.source_spec))
        self.hub: Hub | None = None
        self.store: AlertStore | None = None
        self.server: AlertServer | None = None
        self.console: WebConsole | None = None  # the web console (server/console), when enabled
        self.nats_output: NatsForwarder | None = None
        self._parts: _Parts | None = None
        self._stop = threading.Event()
        self._k8s_audit: K8sAuditEndpoint | None = None  # the k8s audit endpoint, when configured
        self._engine_error: BaseException | None = None
        self.engine_nice = EngineNice(0)  # the engine thread's (server/daemon_sched.py), made when it starts
        self._exit_status = 0
        # Rules pushed to the fleet (server/fleet/rules_node.py): the cached version at start, the watch after.
        self.fleet_rules = FleetRulesNode(config.fleet_rules, self.log, self.metrics.registry) \
            if config.fleet_rules is not None else None

    @property
    def rules_version(self) -> str:
        """The pushed rules version this node runs ("" for local files only): names.Heartbeat.rules_version."""
        return self.fleet_rules.rules_version if self.fleet_rules is not None else ""

    @property
    def config(self) -> DaemonConfig:
        """The configuration running now (a reload replaces it)."""
        return self._parts.pipeline.running.config if self._parts is not None else self._initial_config

    @property
    def running(self) -> Running:
        """The configuration, rules and outputs running now, as one set (after prepare())."""
        return self._prepared().pipeline.running

    def log(self, message: str) -> None:
        self._stderr.write(f"falconet: {message}\n")
        self._stderr.flush()

    # -- start ---------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail before serving: config checks, rules, the source. Raises DaemonError."""
        config = self._initial_config
        for warning in config.warnings:
            self.log(f"warning: {warning}")
        if self._given_source is None:
            preflight(self.source_spec)  # no root, say, fails before the rules load
        if config.file_output.enabled:
            problem = check_writable(config.file_output.filename)
            if problem:
                raise DaemonError(problem)
        try:
            if self.fleet_rules is not None:  # the local files plus the cached pushed version, if it loads
                config, engine = self.fleet_rules.start_engine(config, self._build_engine, self.hostname)
            else:
                engine = self._build_engine(config, self.hostname)
        except ConfigError as exc:
            raise DaemonError(str(exc)) from None
        except Exception as exc:  # the engine's RulesLoadError: its text lists every error with its position
            raise DaemonError(f"the rules failed to load:\n{describe_error(exc)}") from None
        for warning in load_warnings(engine):
            self.log(f"rules warning: {warning}")
        source = self._given_source
        if source is None:
            source = open_source(self.source_spec, config, engine.event_types, self.log)
            # Container metadata (server/daemon_containers.py) wraps a live source; the daemon's only hook.
            source = with_containers(source, config, self.log, self.metrics.registry)
        if config.k8s_audit is not None:  # the k8s_audit source: its events join the engine thread's poll
            self._k8s_audit = K8sAuditEndpoint(config.k8s_audit, self.log)
            source = self._k8s_audit.wrap(source)
        source.start()
        kernel = source.kernel_filter()
        if kernel is not None:
            apply_open_filter(kernel, engine, config.open_path_filter, self.log)
            if isinstance(kernel, SensorSource):
                self.metrics.filtered = kernel.filtered_counts
        pipeline = Pipeline(Running.of(config, engine, ()), self.metrics, self.hostname)
        reporter = Reporter(pipeline, self.metrics, self.log, self._exit_on_drops)
        reloader = Reloader(
            self._origin,
            build_engine=self._build_engine,
            hostname=self.hostname,
            pipeline=pipeline,
            reporter=reporter,
            metrics=self.metrics,
            kernel_filter=kernel,
            log=self.log,
            stdout=self._stdout,
        )
        self._parts = _Parts(source, pipeline, reporter, reloader)
        if self.fleet_rules is not None:
            self.fleet_rules.attach(reloader, reporter)

    def _exit_on_drops(self) -> None:
        self._exit_status = 1
        self._stop.set()

    def _prepared(self) -> _Parts:
        if self._parts is None:
            raise RuntimeError("Daemon.prepare() must run first")
        return self._parts

    async def start_serving(self) -> list[str]:
        """The hub, the gRPC server, metrics and outputs; returns the gRPC addresses bound."""
        parts = self._prepared()
        cfg = parts.pipeline.running.config
        self.hub, self.store = hub_with_store(cfg.alert_store, cfg.grpc.retention, self.hostname)
        parts.pipeline.hub = self.hub
        if self.store is not None:
            self.metrics.store_stats = self.store.stats
            state = self.store.opened
            self.log(
                f"alert store {self.store.path}: epoch {state.epoch}, {state.count} alerts, newest {state.head}"
                if state is not None else f"alert store {self.store.path}: not usable, alerts kept in memory only"
            )
        bound: list[str] = []
        if cfg.grpc.enabled:
            from falconet.server.app import AlertServer

            try:
                self.server = AlertServer(server_config(cfg, self.hostname), self.hub)
                bound = await self.server.start()
            except Exception as exc:
                raise DaemonError(f"the gRPC server cannot start: {exc}") from None
            parts.reloader.certificates = self.server
        if cfg.web_console.enabled:
            from falconet.server.console.app import mount_console

            try:
                self.console = await mount_console(cfg.web_console, self.hub, kind="node", log_to=self.log)
            except Exception as exc:
                raise DaemonError(f"the web console cannot start: {exc}") from None
        if cfg.metrics.enabled:
            try:
                host, port = self.metrics.serve(cfg.metrics.listen_address, cfg.metrics.listen_port)
            except OSError as exc:
                raise DaemonError(
                    f"the metrics endpoint cannot listen on {cfg.metrics.listen_address}:{cfg.metrics.listen_port}:"
                    f" {exc.strerror}"
                ) from None
            self.log(f"metrics on http://{host}:{port}/metrics")
        if self._k8s_audit is not None:
            try:
                url = await self._k8s_audit.start()
            except (OSError, ValueError) as exc:  # ValueError/SSLError: an unusable certificate
                raise DaemonError(f"the k8s audit endpoint cannot start on {self._k8s_audit.config.url}: {exc}") from None
            self.metrics.registry.register(self._k8s_audit.collector())
            self.log(f"k8s audit endpoint on {url}")
        self.metrics.output_drops = parts.reporter.output_drop_counts
        self.metrics.subscriber_drops = parts.reporter.subscriber_drop_counts
        self.metrics.hub_totals = parts.reporter.hub_totals
        outputs = build_outputs(cfg, stdout=self._stdout)
        for out in outputs:
            out.start()
        parts.pipeline.swap(Running.of(cfg, parts.pipeline.running.engine, outputs))
        pipeline = parts.pipeline
        if self.store is not None:  # after the outputs, so that its reports reach them too
            self.store.start(self.hub, report=lambda alert: pipeline.emit(alert, internal=True))
        if cfg.nats_output.enabled:  # the hub (and its store) is the nats output's spool: server/fleet/output.py
            from falconet.server.fleet.output_start import start_forwarder

            self.nats_output = start_forwarder(cfg.nats_output, self.hub, log=self.log, registry=self.metrics.registry,
                                               report=lambda alert: pipeline.emit(alert, internal=True),
                                               rules_version=lambda: self.rules_version)
        return bound

    def reload(self) -> bool:
        """SIGHUP: new config, rules and certificates, or (on any error) the old ones and an internal alert."""
        reloaded = self._prepared().reloader.reload()
        if self.console is not None:
            self.console.reload_soon()  # its CRL (the console's listener keeps its start-time config)
        return reloaded

    # -- run -------------------------------------------------------------------------------------------------

    def _engine_main(self) -> None:
        parts = self._prepared()
        try:
            def tick(counters: SourceCounters) -> None:
                # for /healthz and scap metrics; an undecodable record is a drop there too
                self.metrics.engine_report(counters.events, counters.dropped + counters.undecoded)
                parts.reporter.tick(counters)

            # Yield the CPU to the workload while keeping up (server/daemon_sched.py): a live source only; a
            # replay has no workload to make room for. Set once at start (a reload keeps the thread's setting).
            live = parts.source.name != "replay"
            self.engine_nice = EngineNice(parts.pipeline.running.config.engine_nice if live else 0)
            self.engine_nice.start()
            engine_loop(parts.source, parts.pipeline, tick, self._stop, self.engine_nice.after_poll)
        except BaseException as exc:  # reported by _main(); the daemon then stops with an error status
            self._engine_error = exc

    async def _main(self) -> int:
        """Serves until SIGTERM/SIGINT or the end of the source, then stops in order: source, engine, outputs,
        subscribers, server. SIGHUP reloads in a worker thread (the loop keeps serving meanwhile)."""
        parts = self._prepared()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        done = asyncio.Event()
        bound = await self.start_serving()
        for addr in bound:
            print(f"listening on {addr}", file=self._stderr, flush=True)

        def engine_main() -> None:
            self._engine_main()
            loop.call_soon_threadsafe(done.set)

        # Everything start-up built is in place: out of the collector's way (server/heap.py: the latency stall).
        gc_before = heap.settle()
        engine_thread = threading.Thread(target=engine_main, name="falconet-engine", daemon=True)
        engine_thread.start()
        health = self.metrics.health  # /readyz (server/health.py)
        health.source_running = lambda: engine_thread.is_alive() and not self._stop.is_set()
        health.rules_loaded = lambda: bool(parts.pipeline.running.engine.enabled_rules)  # the set running now
        grpc_on = parts.pipeline.running.config.grpc.enabled
        health.grpc_listening = lambda: not grpc_on or (self.server is not None and bool(self.server.addresses))
        reloading: list[asyncio.Future[bool]] = []
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: reloading.append(loop.run_in_executor(None, self.reload)))
        fleet_task = asyncio.create_task(self.fleet_rules.run()) if self.fleet_rules is not None else None
        self.log(f"ready: source {self.source_spec}, hostname {self.hostname}")
        stop_task = asyncio.create_task(stop.wait())
        done_task = asyncio.create_task(done.wait())
        await asyncio.wait([stop_task, done_task], return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        done_task.cancel()
        self.log("stopping")
        heap.release(gc_before)
        self.metrics.health.stopping = True
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if fleet_task is not None and self.fleet_rules is not None:
            fleet_task.cancel()
            await asyncio.gather(fleet_task, return_exceptions=True)
            await self.fleet_rules.settle()
        if reloading:
            await asyncio.gather(*reloading, return_exceptions=True)
        if self._k8s_audit is not None:
            await self._k8s_audit.stop()  # no new audit events; the engine evaluates those already accepted
        self._stop.set()
        await loop.run_in_executor(None, engine_thread.join)
        outputs = parts.pipeline.running.outputs
        late = await loop.run_in_executor(None, close_all, outputs, 10.0)
        if late:
            lost = sum(o.abandoned for o in outputs)
            self.log(f"warning: outputs {', '.join(late)} did not flush within 10 s; {lost} queued alerts lost")
        for out in outputs:
            if out.close_error is not None:
                self.log(
                    f"warning: the {out.kind} output could not be closed cleanly ({out.close_error}); "
                    "alerts it had not yet written may be lost"
                )
        if self.console is not None:
            await self.console.stop()
        if self.nats_output is not None:
            await self.nats_output.close()
        if self.server is not None:
            await self._drain_subscribers()
            await self.server.stop(1.0)
        if self.store is not None:
            await loop.run_in_executor(None, self.store.close)
        self.metrics.close()
        parts.source.close()
        if self._engine_error is not None:
            err = self._engine_error
            self.log(f"the engine stopped on an error: {type(err).__name__}: {err}")
            return 1
        self.log("stopped")
        return self._exit_status

    async def _drain_subscribers(self, timeout: float = 5.0) -> None:
        """Lets open gRPC streams catch up with the hub before the server stops (a clean stop loses nothing)."""
        hub = self.hub
        if hub is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(r.next_seq > hub.newest for r in hub.stats().readers):
                return
            await asyncio.sleep(0.02)

    def run(self) -> int:
        """Prepares, serves until SIGTERM (or the end of a replay), and cleans up. Returns the exit status."""
        try:
            self.prepare()
        except DaemonError as exc:
            self.log(str(exc))
            return 1
        try:
            return asyncio.run(self._main())
        except DaemonError as exc:
            self.log(str(exc))
            self._stop.set()
            parts = self._prepared()
            close_all(parts.pipeline.running.outputs, 2.0)
            if self.store is not None:
                self.store.close()
            self.metrics.close()
            parts.source.close()
            return 1


def server_config(cfg: DaemonConfig, hostname: str) -> ServerConfig:
    """The alert server's settings from the daemon's grpc block."""
    from falconet.server.config import ServerConfig

    g = cfg.grpc
    return ServerConfig(
        listen=tuple(g.bind_address),
        tls_ca=g.root_certs,
        tls_cert=g.cert_chain,
        tls_key=g.private_key,
        unix_mode=g.unix_socket_mode,
        unix_group=g.unix_socket_group,
        input_allow_cns=frozenset(g.inputs_allowed_common_names),
        retention=g.retention,
        hostname=hostname,
        limits=g.limits,
        tls_crl=g.crl,
    )
