"""`falconet serve` and `falconet publish` as real processes: readiness lines, publishing from stdin with a
malformed line, SIGHUP certificate reload with a stream open, SIGTERM."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_support import falco_request, mtls_credentials, start_oldest

from falconet.certs import init_certs
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc

FALCONET = [sys.executable, "-m", "falconet.server.cli"]


class Serve:
    """A `falconet serve` process and the addresses it announced."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*FALCONET, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True),  # type: ignore[arg-type]
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for thread in self._threads:
            thread.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 30) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r}; stderr: {''.join(self.stderr)}") from None
            if line.startswith(prefix):
                return line


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Serve, str, str, Path]]:
    certs = tmp_path / "certs"
    init_certs(certs)
    sock = Path(tempfile.mkdtemp(prefix="fn-", dir="/tmp")) / "sub" / "f.sock"
    serve = Serve(["--listen", f"unix://{sock}", "--listen", "127.0.0.1:0", "--certs", str(certs)])
    unix = serve.expect("listening on ").removeprefix("listening on ")
    tcp = serve.expect("listening on ").removeprefix("listening on ")
    yield serve, unix, tcp, certs
    serve.close()
    shutil.rmtree(sock.parent.parent, ignore_errors=True)


def test_serve_announces_addresses_and_makes_the_socket(served: tuple[Serve, str, str, Path]) -> None:
    serve, unix, tcp, _ = served
    path = Path(unix.removeprefix("unix://"))
    assert path.is_socket() and (path.stat().st_mode & 0o777) == 0o660
    assert tcp.startswith("127.0.0.1:") and int(tcp.rsplit(":", 1)[1]) > 0
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(15) == 0
    assert not path.exists()


def test_publish_reports_malformed_lines_by_number_and_loses_nothing_else(
    served: tuple[Serve, str, str, Path]
) -> None:
    _, unix, _, _ = served
    lines = [
        '{"rule":"First","priority":"Warning","output":"one","time":"2024-01-01T00:00:00.000000001Z",'
        '"output_fields":{"proc.pid":7,"x":"7"}}',
        "{not json",
        '{"rule":"Second","priority":"Severe","output":"two"}',
        "",
        '{"rule":"Third","priority":"error","output":"three","tags":["a"]}',
    ]
    before = int(time.time())
    result = subprocess.run(
        [*FALCONET, "publish", "--unix-socket", unix.removeprefix("unix://")],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "line 2: not published: invalid JSON at column 2" in result.stderr
    assert "line 3: not published: unknown priority 'Severe'" in result.stderr
    assert "published 2 alerts" in result.stderr
    with grpc.insecure_channel(unix) as ch:
        got = list(outputs_pb2_grpc.serviceStub(ch).get(outputs_pb2.request(start=start_oldest())))
    assert [r.rule for r in got] == ["First", "Third"]
    assert (got[0].time.seconds, got[0].time.nanos) == (1704067200, 1)
    assert got[1].time.seconds >= before - 1  # no time in the line: the time it was read
    assert dict(got[0].output_fields) == {"proc.pid": "7", "x": "7"} and list(got[0].output_fields_json) == [
        "proc.pid"
    ]


def test_sighup_reloads_certificates_and_keeps_open_streams(served: tuple[Serve, str, str, Path]) -> None:
    serve, unix, tcp, certs = served
    old = certs.parent / "old"
    old.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (old / name).write_bytes((certs / name).read_bytes())
    requests: queue.Queue[outputs_pb2.request | None] = queue.Queue()
    requests.put(falco_request())

    def feed() -> Iterator[outputs_pb2.request]:
        while (item := requests.get()) is not None:
            yield item

    publish = [*FALCONET, "publish", "--unix-socket", unix.removeprefix("unix://")]
    with grpc.secure_channel(tcp, mtls_credentials(old)) as ch:
        stream = outputs_pb2_grpc.serviceStub(ch).sub(feed())
        subprocess.run(
            publish, input='{"rule":"before"}\n', text=True, check=True, capture_output=True, timeout=60
        )
        assert next(stream).rule == "before"
        init_certs(certs, force=True)
        os.kill(serve.proc.pid, signal.SIGHUP)
        serve.expect("certificates reloaded")
        subprocess.run(
            publish, input='{"rule":"after"}\n', text=True, check=True, capture_output=True, timeout=60
        )
        assert next(stream).rule == "after"  # the stream opened before the rotation continues
        stream.cancel()
    requests.put(None)
    with grpc.secure_channel(tcp, mtls_credentials(certs)) as ch:
        got = list(outputs_pb2_grpc.serviceStub(ch).get(outputs_pb2.request(start=start_oldest())))
    assert [r.rule for r in got] == ["before", "after"]


def test_serve_refuses_tcp_without_certificates() -> None:
    result = subprocess.run(
        [*FALCONET, "serve", "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "needs mutual TLS" in result.stderr and "plaintext TCP is not offered" in result.stderr


def test_publish_to_a_missing_server_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [*FALCONET, "publish", "--timeout", "1", "--unix-socket", str(tmp_path / "nope.sock")],
        input='{"rule":"x"}\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cannot connect to unix://" in result.stderr


@pytest.mark.slow  # ~2.5 s: a second `falconet serve` and two `falconet publish` processes
def test_publish_over_mtls_needs_an_allow_listed_cn(
    served: tuple[Serve, str, str, Path], tmp_path: Path
) -> None:
    serve, unix, tcp, certs = served
    port = tcp.rpartition(":")[2]
    mtls = ["--host", "localhost", "--port", port, "--ca", str(certs / "ca.crt")]
    mtls += ["--cert", str(certs / "client.crt"), "--key", str(certs / "client.key")]
    denied = subprocess.run(
        [*FALCONET, "publish", *mtls], input='{"rule":"x"}\n', capture_output=True, text=True, timeout=60
    )
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr and "allow-list" in denied.stderr
    other_sock = Path(tempfile.mkdtemp(prefix="fn-", dir="/tmp")) / "f.sock"
    allowed = Serve(
        ["--listen", f"unix://{other_sock}", "--listen", "127.0.0.1:0", "--certs", str(certs)]
        + ["--allow-input-cn", "falconet-client"]
    )
    try:
        allowed.expect("listening on ")
        port2 = allowed.expect("listening on ").rpartition(":")[2]
        mtls[3] = port2
        ok = subprocess.run(
            [*FALCONET, "publish", *mtls], input='{"rule":"x"}\n', capture_output=True, text=True, timeout=60
        )
        assert ok.returncode == 0 and "published 1 alerts" in ok.stderr
    finally:
        allowed.close()
        shutil.rmtree(other_sock.parent, ignore_errors=True)


def test_publish_batches_by_bytes_names_every_bad_line_and_publishes_the_rest(
    served: tuple[Serve, str, str, Path],
) -> None:
    """Issue 10, defect 3: 300 alerts of 20 KiB (6 MiB, over gRPC's 4 MiB message limit if sent as one
    request), lines that are not UTF-8, too long, or refused by the input checks: each bad line is named, every
    good line is published."""
    _, unix, _, _ = served
    big = "x" * 20_000

    def good(i: int) -> bytes:
        return f'{{"rule":"Big {i}","priority":"Notice","output":"{big}"}}'.encode()

    bad: dict[int, tuple[bytes, str]] = {
        3: (b'{"rule":"latin1 \xe9"}', "not UTF-8 (invalid byte 0xe9 at byte 17)"),
        50: (b'{"rule":"huge","output":"' + b"y" * (9 << 20) + b'"}', "over the limit of 8388608"),
        51: (b'{"rule":"wide","output":"' + b"z" * (2 << 20) + b'"}', "bytes on the wire, over the limit of"),
        100: (b'{"rule":"r","time":"+999999-01-01T00:00:00Z"}', "invalid time"),
        101: (b'{"rule":"r","output_fields":{"n":NaN}}', "output_fields['n']: nan is not a finite number"),
        102: (b'{"rule":"r","output_fields":{"n":100000000000000000000}}', "does not fit in 64 bits"),
        103: (b'{"rule":"","priority":"Warning"}', "rule: the rule name must be a non-empty string"),
        104: (b'{"rule":"r","priority":true}', "'priority' must be a priority name or number, not true"),
        105: (b'{"rule":"Falconet alerts lost","source":"internal"}', "source: 'internal' is reserved"),
    }
    lines: list[bytes] = []
    published: list[str] = []
    for number in range(1, 310):
        if number in bad:
            lines.append(bad[number][0])
        else:
            lines.append(good(number))
            published.append(f"Big {number}")
    result = subprocess.run(
        [*FALCONET, "publish", "--unix-socket", unix.removeprefix("unix://")],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=120,
    )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    for number, (_, reason) in bad.items():
        assert f"line {number}: not published: " in err and reason in err, (number, err)
    assert err.count("not published") == len(bad)
    assert f"published {len(published)} alerts" in err and f"{len(bad)} lines skipped" in err
    with grpc.insecure_channel(unix) as ch:
        got = list(outputs_pb2_grpc.serviceStub(ch).get(outputs_pb2.request(start=start_oldest())))
    assert [r.rule for r in got] == published
