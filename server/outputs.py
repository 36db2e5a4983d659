"""Alert outputs (stdout, file, program, syslog, HTTP), each behind its own bounded queue and worker thread.

The engine thread hands every alert to every output through `submit`, which never blocks: when an output's
queue is full (its sink is slow or stuck) the alert is dropped for that output only and counted. A write that
fails is counted too. The daemon turns those counts into metrics and into internal alerts, so a loss is never
silent. Rate limiting (Falco's `outputs.rate`/`outputs.max_burst`) is a token bucket in front of all outputs;
what it holds back is counted the same way.

Formatting follows Falco: a text line is `TIME: Priority output`, a JSON line is the alert JSON (with the
`output` and `tags` keys controlled by json_include_output_property / json_include_tags_property).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from falconet.model.alert import Alert, format_time
from falconet.model.text import escape_controls, json_safe
from falconet.server.daemon_config import (
    DaemonConfig,
    FileOutputConfig,
    HttpOutputConfig,
    ProgramOutputConfig,
    SyslogOutputConfig,
)

SYSLOG_FACILITY_USER = 1
"""Falco logs alerts with facility LOG_USER; its priority numbers are syslog severities already."""


@dataclass(frozen=True, slots=True)
class Formatter:
    """Renders an alert as one line, the way Falco's outputs do."""

    json_output: bool = False
    include_output: bool = True
    include_tags: bool = True
    iso8601: bool = False

    @classmethod
    def from_config(cls, config: DaemonConfig) -> Formatter:
        return cls(
            json_output=config.json_output,
            include_output=config.json_include_output_property,
            include_tags=config.json_include_tags_property,
            iso8601=config.time_format_iso_8601,
        )

    def line(self, alert: Alert) -> str:
        if self.json_output:
            data = alert.to_json_dict()
            if not self.include_output:
                data.pop("output", None)
            if not self.include_tags:
                data.pop("tags", None)
            return json_safe(json.dumps(data, separators=(",", ":")))
        # The output holds text monitored processes chose: escaped, so an alert is one line and no control
        # sequence reaches a terminal or a log reader.
        return escape_controls(f"{self._time(alert.time_ns)}: {alert.priority.falco_name} {alert.output}")

    def _time(self, time_ns: int) -> str:
        if self.iso8601:
            return format_time(time_ns)[:-1] + "+0000"
        secs, nanos = divmod(time_ns, 1_000_000_000)
        try:
            # Falco's default: local wall-clock time with nanoseconds.
            clock = time.strftime("%H:%M:%S", time.localtime(secs))
        except (OverflowError, OSError, ValueError):  # no local time for it: say it in UTC, in full
            return format_time(time_ns)
        return f"{clock}.{nanos:09d}"


class TokenBucket:
    """Falco's output rate limiter: `rate` tokens per second, at most `max_burst` saved up. rate 0 = no limit."""

    def __init__(self, rate: float, max_burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.max_burst = max_burst
        self._clock = clock
        self._tokens = float(max_burst)
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(self.max_burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


class Output(ABC):
    """One sink with a bounded queue and a worker thread; `submit` never blocks the caller."""

    kind: str = "output"

    def __init__(self, formatter: Formatter, queue_size: int) -> None:
        self.formatter = formatter
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)  # None: stop
        self._thread = threading.Thread(target=self._run, name=f"falconet-output-{self.kind}", daemon=True)
        self._started = False
        self._give_up = threading.Event()
        # Counters: written by one thread each (submit: the engine thread; the rest: the worker).
        self.submitted = 0
        self.dropped_queue_full = 0
        self.errors = 0
        self.delivered = 0
        self.abandoned = 0  # queued alerts given up when close() ran out of time
        self.last_error: str | None = None
        self.close_error: str | None = None  # why releasing the sink failed at close(), if it did

    @property
    def dropped(self) -> int:
        """Alerts this output lost: queue full, failed writes, or still queued when it was closed."""
        return self.dropped_queue_full + self.errors + self.abandoned

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def submit(self, alert: Alert) -> bool:
        """Queues an alert; False (and counted) when the queue is full. Never blocks."""
        self.submitted += 1
        try:
            self._queue.put_nowait(alert)
            return True
        except queue.Full:
            self.dropped_queue_full += 1
            return False

    def close(self, timeout: float = 5.0) -> bool:
        """Writes out what is queued, then stops; True when everything queued was handled within `timeout`."""
        if not self._started:
            self._safe_release()
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=0.05)
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        flushed = not self._thread.is_alive()
        if flushed:
            self._safe_release()
        else:
            # What is still queued will never be written: count it as dropped, so the loss is not silent, and
            # tell the worker to discard it (and exit) should its sink ever answer.
            self._give_up.set()
            self.abandoned = sum(1 for item in list(self._queue.queue) if item is not None)
        return flushed

    def reopen(self) -> None:
        """Called on SIGHUP: outputs holding files or processes reopen them (log rotation)."""

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._give_up.is_set():
                if self._give_up.is_set():
                    self._safe_release()  # close() gave up on this worker: nobody else will release
                return
            try:
                self._write(self.formatter.line(item), item)
                self.delivered += 1
            except Exception as exc:  # a failing sink loses this alert, counted; the worker carries on
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"

    @abstractmethod
    def _write(self, line: str, alert: Alert) -> None: ...

    def _release(self) -> None:
        """Frees what the output holds (files, sockets, processes)."""

    def _safe_release(self) -> None:
        """`_release` at shutdown, where a sink that fails (a full disk refusing the last flush, a program that
        will not exit) must not crash the daemon: the failure is kept in `close_error` for the daemon to log."""
        try:
            self._release()
        except Exception as exc:  # any sink error: reported by the caller, never raised into shutdown
            self.close_error = f"{type(exc).__name__}: {exc}"


class StdoutOutput(Output):
    kind = "stdout"

    def __init__(self, formatter: Formatter, queue_size: int, stream: IO[str] | None = None) -> None:
        super().__init__(formatter, queue_size)
        self._stream = stream

    def _write(self, line: str, alert: Alert) -> None:
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


class FileOutput(Output):
    kind = "file"

    def __init__(self, config: FileOutputConfig, formatter: Formatter, queue_size: int) -> None:
        super().__init__(formatter, queue_size)
        self.config = config
        self._file: IO[str] | None = None
        self._reopen = threading.Event()

    def reopen(self) -> None:
        self._reopen.set()

    def _write(self, line: str, alert: Alert) -> None:
        if self._reopen.is_set():
            self._reopen.clear()
            self._release()
        if not self.config.keep_alive:
            with open(self.config.filename, "a", encoding="utf-8") as f:
                f.write(line + "\n")
            return
        if self._file is None:
            self._file = open(self.config.filename, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._file.write(line + "\n")
        self._file.flush()

    def _release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()  # may raise (ENOSPC on the final flush); the file is closed either way


class ProgramOutput(Output):
    """Each alert on a program's stdin: one process per alert, or (keep_alive) one process for all of them."""

    kind = "program"

    def __init__(self, config: ProgramOutputConfig, formatter: Formatter, queue_size: int) -> None:
        super().__init__(formatter, queue_size)
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None

    def _write(self, line: str, alert: Alert) -> None:
        data = (line + "\n").encode()
        if not self.config.keep_alive:
            done = subprocess.run(["/bin/sh", "-c", self.config.program], input=data, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"program exited with status {done.returncode}")
            return
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(["/bin/sh", "-c", self.config.program], stdin=subprocess.PIPE)
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def reopen(self) -> None:
        # The worker owns the process; closing its stdin makes it exit and the next alert starts a new one.
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()

    def _release(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class SyslogOutput(Output):
    """RFC 3164 datagrams to the host's syslog socket (or a UDP address), facility user, severity = priority."""

    kind = "syslog"

    def __init__(self, config: SyslogOutputConfig, formatter: Formatter, queue_size: int) -> None:
        super().__init__(formatter, queue_size)
        self.config = config
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        addr = self.config.address
        if addr.startswith("udp://"):
            host, _, port = addr[6:].rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            target: str | tuple[str, int] = (host, int(port))
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            target = addr
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        return sock

    def _write(self, line: str, alert: Alert) -> None:
        pri = SYSLOG_FACILITY_USER * 8 + int(alert.priority)
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(alert.time_ns // 1_000_000_000))
        msg = f"<{pri}>{stamp} {self.config.ident}[{os.getpid()}]: {line}".encode()
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.send(msg)
        except OSError:
            # The syslog daemon may have restarted (new socket): reconnect once, then give up on this alert.
            self._release()
            self._sock = self._connect()
            self._sock.send(msg)

    def _release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class HttpOutput(Output):
    """Falco's http_output: one POST per alert, JSON (application/json) or the text line (text/plain)."""

    kind = "http"

    def __init__(self, config: HttpOutputConfig, formatter: Formatter, queue_size: int) -> None:
        super().__init__(formatter, queue_size)
        self.config = config
        self._url = urllib.parse.urlsplit(config.url)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        host = self._url.hostname or "localhost"
        if self._url.scheme == "https":
            ctx = ssl.create_default_context(cafile=str(self.config.ca_cert) if self.config.ca_cert else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.config.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.config.mtls and self.config.client_cert and self.config.client_key:
                ctx.load_cert_chain(str(self.config.client_cert), str(self.config.client_key))
            return http.client.HTTPSConnection(host, self._url.port, timeout=self.config.timeout, context=ctx)
        return http.client.HTTPConnection(host, self._url.port, timeout=self.config.timeout)

    def _write(self, line: str, alert: Alert) -> None:
        body = line.encode()
        headers = {
            "Content-Type": "application/json" if self.formatter.json_output else "text/plain",
            "User-Agent": self.config.user_agent,
        }
        if self.config.compress_uploads:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if not self.config.keep_alive:
            headers["Connection"] = "close"
        path = self._url.path or "/"
        if self._url.query:
            path += "?" + self._url.query
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._connection()
            try:
                self._conn.request("POST", path, body=body, headers=headers)
                resp = self._conn.getresponse()
                resp.read()
            except (http.client.HTTPException, OSError):
                self._release()
                if attempt:
                    raise
                continue  # a kept-alive connection the server closed: retry once on a fresh one
            if not self.config.keep_alive or resp.will_close:
                self._release()
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"HTTP {resp.status} {resp.reason} from {self.config.url}")
            return

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def build_outputs(config: DaemonConfig, *, stdout: IO[str] | None = None) -> list[Output]:
    """The outputs the configuration enables (not started)."""
    fmt = Formatter.from_config(config)
    size = config.output_queue_size
    outs: list[Output] = []
    if config.stdout_output:
        outs.append(StdoutOutput(fmt, size, stdout))
    if config.file_output.enabled:
        outs.append(FileOutput(config.file_output, fmt, config.file_output.queue_size or size))
    if config.program_output.enabled:
        outs.append(ProgramOutput(config.program_output, fmt, config.program_output.queue_size or size))
    if config.syslog_output.enabled:
        outs.append(SyslogOutput(config.syslog_output, fmt, config.syslog_output.queue_size or size))
    if config.http_output.enabled:
        outs.append(HttpOutput(config.http_output, fmt, config.http_output.queue_size or size))
    return outs


def close_all(outputs: Iterable[Output], timeout: float) -> list[str]:
    """Flushes and closes every output within a shared deadline; returns the kinds that did not finish."""
    deadline = time.monotonic() + timeout
    late: list[str] = []
    for out in outputs:
        if not out.close(max(0.05, deadline - time.monotonic())):
            late.append(out.kind)
    return late


def check_writable(path: Path) -> str | None:
    """A sentence if a file output's path cannot be appended to, else None (checked before starting)."""
    try:
        with open(path, "a", encoding="utf-8"):
            return None
    except OSError as exc:
        return f"file_output.filename {path} cannot be opened for appending: {exc.strerror}."
