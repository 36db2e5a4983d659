"""The daemon: an event source -> the rule engine -> the alert hub and the outputs, plus the gRPC alert server.

Threads and why:
- the *engine thread* polls the source (the eBPF sensor, or a replay file), runs the engine and hands each
  alert to the hub (`publish` never blocks) and to every output's bounded queue (`submit` never blocks), so
  nothing downstream can slow the engine; once a second it turns counters into reports (kernel drops become
  Falco's "Falco internal: syscall event drop" alert; output and rate-limit losses become internal alerts);
- the *main thread* runs the asyncio loop that serves gRPC (AlertServer) and handles signals;
- each output has its own worker thread (server/outputs.py), the metrics endpoint its own HTTP thread.

SIGHUP re-reads the configuration, the rules and the certificates; the new engine is built off to the side and
swapped in with one reference assignment, so the hub (its epoch and sequence numbers) and every open stream
carry on. If anything fails to load, the old set keeps running and an internal alert names the error. SIGTERM
stops the source, lets the engine finish its batch, flushes every output and stops the server gracefully.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from falconet.model.alert import Alert, Priority
from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.model.lines import events_from_line
from falconet.server.daemon_config import ConfigError, DaemonConfig, load_config
from falconet.server.metrics import DaemonMetrics
from falconet.server.outputs import Output, TokenBucket, build_outputs, check_writable, close_all

DROP_RULE = "Falco internal: syscall event drop"
RELOAD_RULE = "Falconet internal: reload failed"
OUTPUT_DROP_RULE = "Falconet internal: output dropped alerts"
RATE_LIMIT_RULE = "Falconet internal: alerts rate-limited"
ENGINE_ERROR_RULE = "Falconet internal: rule evaluation failed"
INTERNAL_SOURCE = "internal"
TICK_SECONDS = 1.0
POLL_MS = 100


class DaemonError(Exception):
    """The daemon cannot start; the message says what is missing or wrong."""


class EventSource(Protocol):
    """What the engine thread reads: the sensor, or a replayed capture."""

    name: str

    def start(self) -> None: ...
    def set_syscalls(self, names: set[str] | None) -> None: ...
    def set_open_prefixes(self, prefixes: dict[str, list[str]] | None) -> None: ...
    def poll(self, timeout_ms: int) -> list[Event | AuditEvent] | None:
        """Events (possibly none) within the timeout; None once the source is exhausted."""

    def counters(self) -> tuple[int, int]:
        """(events read, events dropped before user space), both cumulative."""

    def close(self) -> None: ...


class ReplaySource:
    """Events from a JSON-lines capture (a file or a FIFO), read incrementally, deterministically, without root.

    A malformed line is reported on stderr with its line number and skipped; the rest still replays.
    """

    name = "replay"
    BATCH = 512

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path = path
        self._log = log
        self._fd = -1
        self._buf = b""
        self._eof = False
        self._line = 0
        self.events = 0
        self.malformed = 0

    def start(self) -> None:
        try:
            # O_NONBLOCK so that opening a FIFO does not wait for a writer; select() paces the reads.
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise DaemonError(f"cannot open the replay file {self.path}: {exc.strerror}") from None

    def set_syscalls(self, names: set[str] | None) -> None:
        del names  # a capture holds what it holds; the engine's own index skips the rest

    def set_open_prefixes(self, prefixes: dict[str, list[str]] | None) -> None:
        del prefixes  # a capture was filtered (or not) when it was made

    def poll(self, timeout_ms: int) -> list[Event | AuditEvent] | None:
        import json

        if self._eof and not self._buf:
            return None
        if b"\n" not in self._buf and not self._eof:
            ready, _, _ = select.select([self._fd], [], [], timeout_ms / 1000)
            if ready:
                chunk = os.read(self._fd, 1 << 20)
                if chunk:
                    self._buf += chunk
                else:
                    # End of a regular file; for a FIFO, select() reports no-writer only once a writer has come
                    # and gone (Linux does not report a FIFO that never had a writer), so this is its end too.
                    self._eof = True
        lines = self._buf.split(b"\n")
        if self._eof:
            self._buf = b""
        else:
            self._buf = lines.pop()
        out: list[Event | AuditEvent] = []
        for raw in lines:
            self._line += 1
            if not raw.strip():
                continue
            try:
                # A syscall event, or a Kubernetes audit Event/EventList (numbered in file order).
                out.extend(events_from_line(json.loads(raw), self.events + len(out) + 1))
            except (ValueError, TypeError) as exc:
                self.malformed += 1
                self._log(f"replay {self.path}:{self._line}: {exc}; line skipped")
        self.events += len(out)
        return out

    def counters(self) -> tuple[int, int]:
        return self.events, 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SensorSource:
    """The eBPF sensor (falconet.sensor.Sensor) behind the EventSource protocol."""

    name = "ebpf"

    def __init__(self, ring_buffer_bytes: int, syscalls: set[str] | None) -> None:
        from falconet.sensor import Sensor, SensorConfig, SensorError

        try:
            self._sensor = Sensor(SensorConfig(ringbuf_bytes=ring_buffer_bytes, syscalls=syscalls))
        except SensorError as exc:  # a bad setting: the same clear start-up error as a sensor that cannot load
            raise DaemonError(f"the eBPF sensor cannot start: {exc}") from None

    def start(self) -> None:
        from falconet.sensor import SensorError

        try:
            self._sensor.start()
        except SensorError as exc:
            raise DaemonError(f"the eBPF sensor cannot start: {exc}") from None

    def set_syscalls(self, names: set[str] | None) -> None:
        self._sensor.set_syscalls(names)

    def set_open_prefixes(self, prefixes: dict[str, list[str]] | None) -> None:
        self._sensor.set_open_prefixes(prefixes)

    def poll(self, timeout_ms: int) -> list[Event] | None:
        return self._sensor.poll(timeout_ms)

    def counters(self) -> tuple[int, int]:
        stats = self._sensor.stats()
        return int(stats.events), int(stats.kernel_drops)

    def close(self) -> None:
        self._sensor.close()


def open_source(spec: str, config: DaemonConfig, syscalls: set[str] | None, log: Callable[[str], None]) -> Any:
    """`ebpf` or `replay:FILE`; for ebpf, checks root first so the failure is immediate and explicit."""
    if spec.startswith("replay:"):
        path = spec[len("replay:") :]
        if not path:
            raise DaemonError("--source replay:FILE needs a file name, e.g. --source replay:capture.jsonl")
        return ReplaySource(Path(path), log)
    if spec == "none":  # no syscall events: an audit-only daemon (the k8s audit endpoint), no root needed
        from falconet.server.k8s_audit import IdleSource

        return IdleSource()
    if spec != "ebpf":
        raise DaemonError(f"unknown source {spec!r}; expected ebpf, replay:FILE or none")
    if os.geteuid() != 0:
        raise DaemonError(
            f"the eBPF sensor needs root (running as uid {os.geteuid()}); run as root, "
            "or replay a capture without root with --source replay:FILE"
        )
    missing = missing_bpf_capabilities()
    if missing:
        raise DaemonError(
            f"the eBPF sensor needs {missing}, which this process does not have (root without them, e.g. in a "
            "restricted container or under a capability bounding set); grant them, "
            "or replay a capture with --source replay:FILE"
        )
    return SensorSource(config.ring_buffer_bytes, syscalls)


CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def missing_bpf_capabilities(status: str | None = None) -> str | None:
    """None when the effective capabilities allow loading and attaching tracing BPF programs, else what is
    missing: CAP_BPF with CAP_PERFMON (kernel 5.8 and later), or CAP_SYS_ADMIN, which covers both."""
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return None  # cannot tell; let the sensor say what fails
    eff = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), None)
    if eff is None:
        return None
    if eff >> CAP_SYS_ADMIN & 1 or (eff >> CAP_BPF & 1 and eff >> CAP_PERFMON & 1):
        return None
    lacking = [name for bit, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")) if not eff >> bit & 1]
    return " and ".join(lacking) + " (or CAP_SYS_ADMIN)"


def default_hostname() -> str:
    """Falco's rule: FALCO_HOSTNAME when set, else the machine's host name."""
    return os.environ.get("FALCO_HOSTNAME") or socket.gethostname()


class _DnsCache:
    """Name -> addresses for fd.*ip.name fields; results cached for a minute so the engine rarely waits."""

    TTL = 60.0

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, list[str]]] = {}

    def __call__(self, name: str) -> list[str]:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and now - hit[0] < self.TTL:
            return hit[1]
        try:
            addrs = sorted({str(info[4][0]) for info in socket.getaddrinfo(name, None)})
        except OSError:
            addrs = []
        self._cache[name] = (now, addrs)
        return addrs


def build_engine(config: DaemonConfig, hostname: str) -> Any:
    """Loads the configured rules; raises the engine's RulesLoadError (or ConfigError) on any error."""
    from falconet.rules.engine import Engine, Resolvers

    paths = config.rules_paths()
    if not paths:
        raise ConfigError(config.source, ["No rules files to load: set rules_files or pass -r FILE."])
    return Engine.from_files(
        paths,
        rule_matching=config.rule_matching,
        resolvers=Resolvers(hostname=lambda: hostname, dns=_DnsCache()),
        min_priority=config.priority,
    )


def describe_error(exc: BaseException) -> str:
    """The full text of a load error (RulesLoadError renders every error with its position)."""
    text = str(exc).strip()
    return text or type(exc).__name__


@dataclass
class _Reports:
    """Cumulative counters as last reported, to turn them into per-tick deltas."""

    events: int = 0
    drops: int = 0
    rate_limited: int = 0


class Daemon:
    """One running daemon. `run()` (in the main thread) returns the exit status."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        source: str = "ebpf",
        config_path: Path | None = None,
        rules_override: Sequence[Path] = (),
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.config = config
        self.source_spec = source
        self.config_path = config_path
        self.rules_override = tuple(rules_override)
        self._stdout = stdout
        self._stderr = stderr or sys.stderr
        self.hostname = default_hostname()
        self.metrics = DaemonMetrics()
        self.hub: Any = None
        self.server: Any = None
        self.engine: Any = None
        self.outputs: list[Output] = []
        self._limiter = TokenBucket(config.outputs_rate, config.outputs_max_burst)
        self._drop_limiter = TokenBucket(config.syscall_event_drops.rate, config.syscall_event_drops.max_burst)
        self._source: Any = None
        self._k8s_audit: Any = None  # the k8s audit endpoint (server/k8s_audit.py), when configured
        self._stop = threading.Event()
        self._engine_thread: threading.Thread | None = None
        self._engine_error: BaseException | None = None
        self._exit_status = 0
        self._reports = _Reports()
        self._output_reported: dict[int, int] = {}
        self._retired_drops: dict[str, tuple[int, int]] = {}
        self._last_engine_error: str | None = None
        self._engine_errors_reported = 0
        self._reload_lock = threading.Lock()
        self._emit_lock = threading.Lock()

    # -- logging -------------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        self._stderr.write(f"falconet: {message}\n")
        self._stderr.flush()

    # -- start ---------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail before serving: config checks, rules, the source. Raises DaemonError."""
        for warning in self.config.warnings:
            self.log(f"warning: {warning}")
        if self.source_spec == "ebpf" and (os.geteuid() != 0 or missing_bpf_capabilities()):
            open_source(self.source_spec, self.config, None, self.log)  # raises, saying what is missing
        if self.config.file_output.enabled:
            problem = check_writable(self.config.file_output.filename)
            if problem:
                raise DaemonError(problem)
        try:
            self.engine = build_engine(self.config, self.hostname)
        except ConfigError as exc:
            raise DaemonError(str(exc)) from None
        except Exception as exc:  # the engine's RulesLoadError: its text lists every error with its position
            raise DaemonError(f"the rules failed to load:\n{describe_error(exc)}") from None
        for warning in _load_warnings(self.engine):
            self.log(f"rules warning: {warning}")
        self._source = open_source(self.source_spec, self.config, _syscalls(self.engine), self.log)
        if self.config.k8s_audit is not None:  # the k8s_audit source: its events join the engine thread's poll
            from falconet.server.k8s_audit import K8sAuditEndpoint

            self._k8s_audit = K8sAuditEndpoint(self.config.k8s_audit, self.log)
            self._source = self._k8s_audit.wrap(self._source)
        self._source.start()
        self._apply_open_filter(self.engine, self.config)

    def _apply_open_filter(self, engine: Any, config: DaemonConfig) -> None:
        """The sensor's kernel-side open filter from the rules' prefixes, or off when some rule (or the config)
        says every open may matter."""
        if getattr(self._source, "name", "") != "ebpf":
            return  # a replayed capture was filtered (or not) when it was made
        prefixes = open_prefixes(engine) if config.open_path_filter else None
        if config.open_path_filter and prefixes is None:
            blockers: list[str] = getattr(engine, "open_path_blockers", lambda: [])()
            self.log(
                "open path filter off: these rules may match an open of any path: " + ", ".join(blockers)
                if blockers else "open path filter off: the rules may match an open of any path"
            )
        elif prefixes is not None:
            self.log(f"open path filter on: {len(prefixes)} path prefixes from the rules")
        self._source.set_open_prefixes(prefixes)

    async def start_serving(self) -> list[str]:
        """The hub, the gRPC server, metrics and outputs; returns the gRPC addresses bound."""
        from falconet.server.hub import Hub

        cfg = self.config
        self.hub = Hub(retention=cfg.grpc.retention, hostname=self.hostname)
        bound: list[str] = []
        if cfg.grpc.enabled:
            from falconet.server.app import AlertServer

            try:
                self.server = AlertServer(_server_config(cfg, self.hostname), self.hub)
                bound = await self.server.start()
            except Exception as exc:
                raise DaemonError(f"the gRPC server cannot start: {exc}") from None
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
                where = self.config.k8s_audit.url if self.config.k8s_audit else "?"
                raise DaemonError(f"the k8s audit endpoint cannot start on {where}: {exc}") from None
            self.metrics.registry.register(self._k8s_audit.collector())
            self.log(f"k8s audit endpoint on {url}")
        self.metrics.output_drops = self._output_drop_counts
        self.metrics.subscriber_drops = self._subscriber_drop_counts
        self.metrics.hub_totals = self._hub_totals
        self.outputs = build_outputs(cfg, stdout=self._stdout)
        for out in self.outputs:
            out.start()
        return bound

    # -- the engine thread -----------------------------------------------------------------------------------

    def _engine_loop(self) -> None:
        source = self._source
        next_tick = time.monotonic() + TICK_SECONDS
        try:
            while not self._stop.is_set():
                events = source.poll(POLL_MS)
                if events is None:
                    break
                if events:
                    self._process(events)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_SECONDS
                    self._tick()
            self._tick()
        except BaseException as exc:  # reported by run(); the daemon then stops with an error status
            self._engine_error = exc

    def _process(self, events: list[Event | AuditEvent]) -> None:
        engine = self.engine  # one read per batch: a reload swaps the reference, never mutates the engine
        clock = time.perf_counter
        spent = 0.0
        for ev in events:
            t0 = clock()
            try:
                alerts = engine.process(ev)
            except Exception as exc:  # one event the engine cannot evaluate must not stop the daemon: counted
                self.metrics.engine_errors += 1
                self._last_engine_error = f"{type(exc).__name__}: {exc} (event {ev.num}, {ev.type})"
                alerts = []
            spent += clock() - t0
            for alert in alerts:  # at once, not after the batch: a big batch must not delay its first alerts
                self.emit(alert)
        self.metrics.observe_batch(len(events), spent)

    def emit(self, alert: Alert, *, internal: bool = False, skip: Output | None = None) -> None:
        """Hands an alert to the hub and every output; rate-limited unless internal. Never blocks."""
        if not internal and not self._limiter.take():
            self.metrics.alerts_rate_limited += 1
            return
        if not alert.hostname:
            alert.hostname = self.hostname
        with self._emit_lock:  # internal alerts come from other threads too (reload); keep hub order = output order
            self.metrics.count_alert(alert)
            if self.config.grpc_output and self.hub is not None:
                self.hub.publish(alert)
            for out in self.outputs:
                if out is not skip:
                    out.submit(alert)

    def internal_alert(self, rule: str, priority: Priority, output: str, fields: dict[str, Any]) -> Alert:
        alert = Alert(
            time_ns=time.time_ns(),
            rule=rule,
            priority=priority,
            source=INTERNAL_SOURCE,
            output=output,
            output_fields=fields,
            tags=[],
            hostname=self.hostname,
        )
        return alert

    def _tick(self) -> None:
        """Once a second: kernel drops, output losses and rate limiting become metrics and internal alerts."""
        events, drops = self._source.counters()
        d_events, d_drops = events - self._reports.events, drops - self._reports.drops
        self._reports.events, self._reports.drops = events, drops
        if d_drops > 0:
            self.metrics.kernel_drops += d_drops
            self._on_kernel_drops(d_events, d_drops)
        limited = self.metrics.alerts_rate_limited
        if limited > self._reports.rate_limited:
            n = limited - self._reports.rate_limited
            self._reports.rate_limited = limited
            self.emit(
                self.internal_alert(
                    RATE_LIMIT_RULE,
                    Priority.WARNING,
                    f"Falconet internal: {n} alerts were rate-limited (outputs.rate={self.config.outputs_rate:g}/s, "
                    f"outputs.max_burst={self.config.outputs_max_burst}) and sent to no output",
                    {"n_rate_limited": n, "n_rate_limited_total": limited},
                ),
                internal=True,
            )
        errors = self.metrics.engine_errors
        if errors > self._engine_errors_reported:
            n = errors - self._engine_errors_reported
            self._engine_errors_reported = errors
            self.log(f"the engine failed on {n} events; last: {self._last_engine_error}")
            self.emit(
                self.internal_alert(
                    ENGINE_ERROR_RULE,
                    Priority.ERROR,
                    f"Falconet internal: the rule engine failed on {n} events, which raised no alert; "
                    f"last error: {self._last_engine_error}",
                    {"n_failed": n, "n_failed_total": errors, "last_error": self._last_engine_error},
                ),
                internal=True,
            )
        for out in self.outputs:
            before = self._output_reported.get(id(out), 0)
            now = out.dropped
            if now > before:
                self._output_reported[id(out)] = now
                self.emit(
                    self.internal_alert(
                        OUTPUT_DROP_RULE,
                        Priority.ERROR,
                        f"Falconet internal: the {out.kind} output dropped {now - before} alerts "
                        f"({out.dropped_queue_full} queue full, {out.errors} failed writes in total)"
                        + (f"; last error: {out.last_error}" if out.last_error else ""),
                        {
                            "output": out.kind,
                            "n_dropped": now - before,
                            "n_dropped_queue_full": out.dropped_queue_full,
                            "n_failed_writes": out.errors,
                            "last_error": out.last_error,
                        },
                    ),
                    internal=True,
                    skip=out,  # a stuck output would only drop its own report again
                )

    def _on_kernel_drops(self, n_evts: int, n_drops: int) -> None:
        actions = self.config.syscall_event_drops.actions
        message = f"{DROP_RULE}. {n_drops} system calls dropped in last second."
        if "log" in actions:
            self.log(message)
        if "alert" in actions and self._drop_limiter.take():
            # Falco's counters, as strings, as Falco sends them; only the ring buffer can drop here.
            fields: dict[str, Any] = {
                "n_evts": str(n_evts + n_drops),
                "n_drops": str(n_drops),
                "n_drops_buffer_total": str(n_drops),
                "n_drops_scratch_map": "0",
                "n_drops_page_faults": "0",
                "n_drops_bug": "0",
                "ebpf_enabled": "1",
            }
            self.emit(self.internal_alert(DROP_RULE, Priority.DEBUG, message, fields), internal=True)
        if "exit" in actions:
            self.log("exiting: syscall_event_drops.actions includes exit")
            self._exit_status = 1
            self._stop.set()

    # -- counters read at scrape time ------------------------------------------------------------------------

    def _output_drop_counts(self) -> dict[str, tuple[int, int]]:
        """(queue full or abandoned at close, failed writes) per output kind, outputs retired by reloads included,
        so the counters never go back."""
        out = dict(self._retired_drops)
        for o in self.outputs:
            full, failed = out.get(o.kind, (0, 0))
            out[o.kind] = (full + o.dropped_queue_full + o.abandoned, failed + o.errors)
        return out

    def _hub_totals(self) -> tuple[int, int, int]:
        if self.hub is None:
            return 0, 0, 0
        stats = self.hub.stats()
        return stats.published, stats.delivered_total, stats.dropped_total

    def _subscriber_drop_counts(self) -> dict[str, int]:
        if self.hub is None:
            return {}
        counts: dict[str, int] = {}
        for r in self.hub.stats().readers:
            # The client's identity (certificate CN, or UNIX peer) and the kind of stream; streams that share
            # both are summed.
            name = f"{r.identity or '?'} {r.name or 'stream'}"
            counts[name] = counts.get(name, 0) + r.dropped
        return counts

    # -- reload ----------------------------------------------------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: new config, rules and certificates, or (on any error) the old ones and an internal alert."""
        with self._reload_lock:
            try:
                config = load_config(self.config_path) if self.config_path is not None else self.config
                if self.rules_override:
                    config = config.with_rules(self.rules_override)
                engine = build_engine(config, self.hostname)
                if config.file_output.enabled:
                    problem = check_writable(config.file_output.filename)
                    if problem:
                        raise ConfigError(config.source, [problem])
            except Exception as exc:
                self.metrics.rules_reload_failures += 1
                text = describe_error(exc)
                self.log(f"reload failed, keeping the previous configuration and rules:\n{text}")
                first = text.splitlines()[0] if text else type(exc).__name__
                self.emit(
                    self.internal_alert(
                        RELOAD_RULE,
                        Priority.ERROR,
                        f"Falconet internal: reload failed, the previous configuration and rules keep running: "
                        f"{first}",
                        {"error": text},
                    ),
                    internal=True,
                )
                return False
            old_outputs = self.outputs
            if _restart_needed(self.config, config):
                self.log("warning: grpc and webserver address changes take effect at the next restart")
            self.config = config
            self._limiter = TokenBucket(config.outputs_rate, config.outputs_max_burst)
            self._drop_limiter = TokenBucket(config.syscall_event_drops.rate, config.syscall_event_drops.max_burst)
            new_outputs = build_outputs(config, stdout=self._stdout)
            for out in new_outputs:
                out.start()
            # Filter off while the engine changes, so neither rule set misses an open in between; the new
            # rules' filter goes on once their engine runs.
            self._source.set_open_prefixes(None)
            with self._emit_lock:
                self.engine = engine
                self.outputs = new_outputs
            self._source.set_syscalls(_syscalls(engine))
            self._apply_open_filter(engine, config)
            late = close_all(old_outputs, 10.0)
            for o in old_outputs:
                full, failed = self._retired_drops.get(o.kind, (0, 0))
                self._retired_drops[o.kind] = (full + o.dropped_queue_full + o.abandoned, failed + o.errors)
            if late:
                lost = sum(o.abandoned for o in old_outputs)
                self.log(f"warning: outputs {', '.join(late)} did not flush within 10 s during reload; "
                         f"{lost} queued alerts abandoned (counted as dropped)")
            cert_error = None
            if self.server is not None and any(not a.startswith("unix:") for a in config.grpc.bind_address):
                try:
                    self.server.reload_certificates()
                except Exception as exc:
                    cert_error = describe_error(exc)
            self.metrics.rules_reloads += 1
            for warning in _load_warnings(engine):
                self.log(f"rules warning: {warning}")
            if cert_error:
                self.log(f"certificate reload failed, keeping the previous certificates: {cert_error}")
                self.emit(
                    self.internal_alert(
                        RELOAD_RULE,
                        Priority.ERROR,
                        f"Falconet internal: certificate reload failed, the previous certificates stay in use: "
                        f"{cert_error.splitlines()[0]}",
                        {"error": cert_error},
                    ),
                    internal=True,
                )
            self.log(f"reloaded: {len(config.rules_paths())} rules files")
            return True

    # -- run -------------------------------------------------------------------------------------------------

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        done = asyncio.Event()
        bound = await self.start_serving()
        for addr in bound:
            print(f"listening on {addr}", file=self._stderr, flush=True)

        def engine_main() -> None:
            self._engine_loop()
            loop.call_soon_threadsafe(done.set)

        self._engine_thread = threading.Thread(target=engine_main, name="falconet-engine", daemon=True)
        self._engine_thread.start()
        reloading: list[asyncio.Future[bool]] = []
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: reloading.append(loop.run_in_executor(None, self.reload)))
        self.log(f"ready: source {self.source_spec}, hostname {self.hostname}")
        stop_task = asyncio.create_task(stop.wait())
        done_task = asyncio.create_task(done.wait())
        await asyncio.wait([stop_task, done_task], return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        done_task.cancel()
        self.log("stopping")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if reloading:
            await asyncio.gather(*reloading, return_exceptions=True)
        if self._k8s_audit is not None:
            await self._k8s_audit.stop()  # no new audit events; those queued are still evaluated below
        self._stop.set()
        await loop.run_in_executor(None, self._engine_thread.join)
        late = await loop.run_in_executor(None, close_all, self.outputs, 10.0)
        if late:
            lost = sum(o.abandoned for o in self.outputs)
            self.log(f"warning: outputs {', '.join(late)} did not flush within 10 s; {lost} queued alerts lost")
        if self.server is not None:
            await self._drain_subscribers()
            await self.server.stop(1.0)
        self.metrics.close()
        self._source.close()
        if self._engine_error is not None:
            err = self._engine_error
            self.log(f"the engine stopped on an error: {type(err).__name__}: {err}")
            return 1
        self.log("stopped")
        return self._exit_status

    async def _drain_subscribers(self, timeout: float = 5.0) -> None:
        """Lets open gRPC streams catch up with the hub before the server stops (a clean stop loses nothing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readers = self.hub.stats().readers
            if all(r.next_seq > self.hub.newest for r in readers):
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
            close_all(self.outputs, 2.0)
            self.metrics.close()
            if self._source is not None:
                self._source.close()
            return 1


def _syscalls(engine: Any) -> set[str] | None:
    types = getattr(engine, "event_types", None)
    return None if types is None else set(types)


def open_prefixes(engine: Any) -> dict[str, list[str]] | None:
    derive = getattr(engine, "open_path_prefixes", None)
    return None if derive is None else derive()  # type: ignore[no-any-return]


def _load_warnings(engine: Any) -> list[str]:
    result = getattr(engine, "load_result", None)
    warnings = getattr(result, "warnings", None) or []
    return [str(w) for w in warnings]


def _restart_needed(old: DaemonConfig, new: DaemonConfig) -> bool:
    return (
        old.grpc.bind_address != new.grpc.bind_address
        or old.grpc.enabled != new.grpc.enabled
        or old.metrics != new.metrics
        or old.ring_buffer_bytes != new.ring_buffer_bytes
        or old.k8s_audit != new.k8s_audit
    )


def _server_config(cfg: DaemonConfig, hostname: str) -> Any:
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
    )
