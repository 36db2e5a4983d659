"""Outputs against real sinks: files, a real program, a local HTTP server, a syslog socket; drops and rate limits."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from falconet.model.alert import Alert, Cursor, Priority
from falconet.server.daemon_config import (
    FileOutputConfig,
    HttpOutputConfig,
    ProgramOutputConfig,
    SyslogOutputConfig,
)
from falconet.server.outputs import (
    FileOutput,
    Formatter,
    HttpOutput,
    ProgramOutput,
    SyslogOutput,
    TokenBucket,
)

JSON = Formatter(json_output=True)


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.005)


def make_alert(i: int, priority: Priority = Priority.WARNING) -> Alert:
    return Alert(
        time_ns=1_700_000_000_123_456_789 + i,
        rule="Read sensitive file untrusted",
        priority=priority,
        source="syscall",
        output=f"Sensitive file opened for reading (file=/etc/shadow n={i})",
        output_fields={"fd.name": "/etc/shadow", "proc.pid": 1000 + i, "k8s.ns.name": None},
        tags=["T1555", "filesystem"],
        hostname="h1",
        cursor=Cursor("ep", i + 1),
    )


def test_formatter_text_line_is_falcos_and_json_respects_the_include_switches() -> None:
    alert = make_alert(0)
    text = Formatter(iso8601=True).line(alert)
    assert text == "2023-11-14T22:13:20.123456789+0000: Warning " + alert.output
    plain = Formatter().line(alert)
    assert plain.endswith(".123456789: Warning " + alert.output)
    data = json.loads(JSON.line(alert))
    assert data == alert.to_json_dict()
    trimmed = json.loads(Formatter(json_output=True, include_output=False, include_tags=False).line(alert))
    assert "output" not in trimmed and "tags" not in trimmed and trimmed["rule"] == alert.rule


@pytest.mark.parametrize("keep_alive", [False, True])
def test_file_output_appends_every_alert_and_close_flushes(tmp_path: Path, keep_alive: bool) -> None:
    path = tmp_path / "events.json"
    out = FileOutput(FileOutputConfig(enabled=True, filename=path, keep_alive=keep_alive), JSON, 1000)
    out.start()
    for i in range(200):
        assert out.submit(make_alert(i))
    assert out.close(10)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["cursor"]["sequence"] for line in lines] == list(range(1, 201))
    assert (out.delivered, out.dropped) == (200, 0)


def test_file_output_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    out = FileOutput(FileOutputConfig(enabled=True, filename=path, keep_alive=True), Formatter(), 100)
    out.start()
    out.submit(make_alert(0))
    wait_until(lambda: out.delivered == 1)
    path.rename(tmp_path / "events.txt.1")
    out.reopen()
    out.submit(make_alert(1))
    assert out.close(10)
    assert "n=1)" in path.read_text() and "n=0)" in (tmp_path / "events.txt.1").read_text()


@pytest.mark.parametrize("keep_alive", [False, True])
def test_program_output_feeds_each_alert_to_the_program(tmp_path: Path, keep_alive: bool) -> None:
    sink = tmp_path / "sink.txt"
    cfg = ProgramOutputConfig(enabled=True, program=f"cat >> {sink}", keep_alive=keep_alive)
    out = ProgramOutput(cfg, JSON, 100)
    out.start()
    for i in range(5):
        out.submit(make_alert(i))
    assert out.close(20)
    assert [json.loads(x)["output_fields"]["proc.pid"] for x in sink.read_text().splitlines()] == [
        1000, 1001, 1002, 1003, 1004
    ]


def test_program_output_counts_a_failing_program() -> None:
    out = ProgramOutput(ProgramOutputConfig(enabled=True, program="exit 3"), JSON, 100)
    out.start()
    out.submit(make_alert(0))
    assert out.close(10)
    assert out.errors == 1 and out.last_error is not None and "status 3" in out.last_error


class _Collector(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Collector
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.entered.set()
        if self.server.gate is not None:
            self.server.gate.wait(30)
        self.server.requests.append(({k: v for k, v in self.headers.items()}, body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def http_collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    if server.gate is not None:
        server.gate.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("compress", [False, True])
def test_http_output_posts_falco_style_json(http_collector: _Collector, compress: bool) -> None:
    port = http_collector.server_address[1]
    cfg = HttpOutputConfig(enabled=True, url=f"http://127.0.0.1:{port}/falco", user_agent="ua/1",
                           compress_uploads=compress)
    out = HttpOutput(cfg, JSON, 100)
    out.start()
    for i in range(3):
        out.submit(make_alert(i))
    assert out.close(10)
    assert len(http_collector.requests) == 3
    headers, body = http_collector.requests[0]
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "ua/1"
    if compress:
        assert headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(body)
    assert json.loads(body) == make_alert(0).to_json_dict()


def test_http_output_text_and_error_status_is_counted(http_collector: _Collector) -> None:
    http_collector.status = 503
    port = http_collector.server_address[1]
    out = HttpOutput(HttpOutputConfig(enabled=True, url=f"http://127.0.0.1:{port}/"), Formatter(), 100)
    out.start()
    out.submit(make_alert(0))
    assert out.close(10)
    headers, body = http_collector.requests[0]
    assert headers["Content-Type"] == "text/plain" and body.decode().endswith(make_alert(0).output)
    assert out.errors == 1 and out.last_error is not None and "HTTP 503" in out.last_error


def test_a_stuck_output_drops_and_counts_and_never_blocks_the_caller(http_collector: _Collector) -> None:
    http_collector.gate = threading.Event()
    port = http_collector.server_address[1]
    out = HttpOutput(HttpOutputConfig(enabled=True, url=f"http://127.0.0.1:{port}/", timeout=30), JSON, 5)
    out.start()
    assert out.submit(make_alert(0))
    assert http_collector.entered.wait(10)  # the worker is now stuck inside a POST that never answers
    accepted = [out.submit(make_alert(i)) for i in range(1, 1000)]
    # The caller was never blocked: exactly the queue's capacity was accepted, the rest dropped and counted.
    assert accepted.count(True) == 5
    assert out.dropped_queue_full == 994 and out.dropped == 994
    http_collector.gate.set()
    assert out.close(10)
    assert out.delivered == 6 and len(http_collector.requests) == 6


def test_syslog_output_sends_rfc3164_with_the_priority_as_severity(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        out = SyslogOutput(SyslogOutputConfig(enabled=True, address=str(path)), Formatter(), 100)
        out.start()
        out.submit(make_alert(0, Priority.WARNING))
        out.submit(make_alert(1, Priority.CRITICAL))
        first, second = sock.recv(65536).decode(), sock.recv(65536).decode()
        assert out.close(10)
    finally:
        sock.close()
    # facility user (1) * 8 + severity: Warning 4 -> 12, Critical 2 -> 10.
    assert first.startswith("<12>") and second.startswith("<10>")
    assert " falconet[" in first and first.endswith("Warning " + make_alert(0).output)


def test_syslog_output_over_udp() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    try:
        port = sock.getsockname()[1]
        out = SyslogOutput(SyslogOutputConfig(enabled=True, address=f"udp://127.0.0.1:{port}"), JSON, 10)
        out.start()
        out.submit(make_alert(0, Priority.EMERGENCY))
        data = sock.recv(65536).decode()
        assert out.close(10)
    finally:
        sock.close()
    assert data.startswith("<8>")
    assert json.loads(data.split(": ", 1)[1])["rule"] == "Read sensitive file untrusted"


def test_syslog_to_a_missing_socket_counts_failed_writes(tmp_path: Path) -> None:
    out = SyslogOutput(SyslogOutputConfig(enabled=True, address=str(tmp_path / "none.sock")), Formatter(), 10)
    out.start()
    out.submit(make_alert(0))
    assert out.close(10)
    assert out.errors == 1 and out.dropped == 1


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, max_burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] += 1.0  # two new tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 100.0  # never more than the burst saved up
    assert sum(bucket.take() for _ in range(10)) == 3
    unlimited = TokenBucket(rate=0, max_burst=1, clock=lambda: now[0])
    assert all(unlimited.take() for _ in range(10_000))


def test_closing_a_stuck_output_counts_what_it_abandons(http_collector: _Collector) -> None:
    http_collector.gate = threading.Event()
    port = http_collector.server_address[1]
    out = HttpOutput(HttpOutputConfig(enabled=True, url=f"http://127.0.0.1:{port}/", timeout=30), JSON, 10)
    out.start()
    out.submit(make_alert(0))
    assert http_collector.entered.wait(10)
    for i in range(1, 8):
        assert out.submit(make_alert(i))
    assert not out.close(0.2)  # the sink never answers: close gives up...
    assert out.abandoned == 7 and out.dropped == 7  # ...and the 7 alerts still queued are counted as lost
    http_collector.gate.set()  # the sink answers at last: the worker writes nothing more and exits
    out._thread.join(10)
    assert not out._thread.is_alive()
    assert len(http_collector.requests) == 1 and out.delivered == 1
