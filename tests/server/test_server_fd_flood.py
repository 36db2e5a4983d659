"""A flood of idle TCP connections must not lock out local clients (issue 10, defect 5), against a real
`falconet serve` process whose open-files limit is small enough for the flood to exhaust it."""

from __future__ import annotations

import queue
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_support import mtls_credentials, wait_until
from test_server_serve_cli import FALCONET, Serve
from falconet.certs import init_certs

pytestmark = pytest.mark.slow  # ~3 s: a `falconet serve` process and 700 connections

NOFILE = 512
FLOOD = 700
"""More idle connections than the process may open files: without a TCP budget they exhaust them."""


def _small_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


class LimitedServe(Serve):
    """`falconet serve` with RLIMIT_NOFILE soft = hard = NOFILE (so raising the soft limit cannot help)."""

    def __init__(self, args: list[str]) -> None:  # noqa: D107 - Serve's, with the limit set in the child
        self.proc = subprocess.Popen(
            [*FALCONET, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_small_nofile,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True),  # type: ignore[arg-type]
        ]
        for thread in self._threads:
            thread.start()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[LimitedServe, str, str, Path]]:
    certs = tmp_path / "certs"
    init_certs(certs)
    sock = Path(tempfile.mkdtemp(prefix="fn-", dir="/tmp")) / "f.sock"
    serve = LimitedServe(
        ["--listen", f"unix://{sock}", "--listen", "127.0.0.1:0", "--certs", str(certs), "--handshake-timeout", "60"]
    )
    try:
        unix = serve.expect("listening on ").removeprefix("listening on ")
        tcp = serve.expect("listening on ").removeprefix("listening on ")
        yield serve, unix, tcp, certs
    finally:
        serve.close()
        shutil.rmtree(sock.parent, ignore_errors=True)


def _healthy(channel: grpc.Channel) -> bool:
    # types-grpcio-health-checking's HealthStub declares no methods
    check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
    reply = check(health_pb2.HealthCheckRequest(), timeout=10)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_idle_tcp_flood_leaves_unix_clients_served_and_is_logged(
    limited: tuple[LimitedServe, str, str, Path],
) -> None:
    serve, unix, tcp, certs = limited
    host, _, port = tcp.rpartition(":")
    with ExitStack() as flood:
        established = flood.enter_context(grpc.secure_channel(tcp, mtls_credentials(certs)))
        assert _healthy(established)
        for _ in range(FLOOD):
            flood.enter_context(socket.create_connection((host, int(port)), timeout=10))
        with grpc.insecure_channel(unix) as channel:
            assert _healthy(channel), "".join(serve.stderr)
        assert _healthy(established)  # an mTLS connection made before the flood keeps working through it

        def logged() -> bool:
            return any("refused" in line and "127.0.0.1" in line for line in serve.stderr)

        wait_until(logged, timeout=20, what=f"a log line naming the refused peer; stderr: {serve.stderr[-3:]}")
        # Reports come at most once per 10 s: the one after the budget filled up says so.
        wait_until(lambda: "at the connection limit" in "".join(serve.stderr), timeout=30, what="the at-limit report")
    # The flood gone, mTLS clients are served again.
    with grpc.secure_channel(tcp, mtls_credentials(certs)) as channel:
        wait_until(lambda: _retry_healthy(channel), timeout=20, what="an mTLS client after the flood")
    assert serve.proc.poll() is None


def _retry_healthy(channel: grpc.Channel) -> bool:
    try:
        return _healthy(channel)
    except grpc.RpcError:
        return False
