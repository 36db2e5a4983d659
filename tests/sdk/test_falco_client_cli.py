"""`falco-client` as users run it: a real subprocess against a real server (the shared `alert_server` fixture, or
`falconet serve` processes when the test restarts the server), real certificates, real signals."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from sdk_support import FALCO_CLIENT, FALCONET, Proc, make_alert, wait_until

from falconet.certs import init_certs, issue_client_window
from falconet.model.alert import Priority


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FALCO_CLIENT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def unix(server: Any) -> list[str]:
    return ["--unix-socket", str(server.unix_path)]


def mtls(server: Any, certs: Path | None = None, name: str = "client", ca: Path | None = None) -> list[str]:
    c = certs or server.certs
    return [
        "--host",
        server.tcp_host,
        "--port",
        str(server.tcp_port),
        "--ca",
        str(ca or c / "ca.crt"),
        "--cert",
        str(c / f"{name}.crt"),
        "--key",
        str(c / f"{name}.key"),
    ]


def test_version(alert_server: Any) -> None:
    res = run(*unix(alert_server), "version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("server ") and "rules engine" in res.stdout
    # Options also work after the command; json output is one object.
    res = run("version", *mtls(alert_server), "--output", "json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["version"] and info["engine_version"]


def test_get_json_with_filters(alert_server: Any) -> None:
    sent = [make_alert(i) for i in range(16)]
    for a in sent:
        alert_server.publish(a)
    res = run(*unix(alert_server), "get", "--output", "json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line) for line in res.stdout.splitlines()] == [a.to_json_dict() for a in sent]

    res = run("get", *mtls(alert_server), "--output", "json", "--min-priority", "warning", "--tag", "t1")
    want = [a.to_json_dict() for a in sent if a.priority <= Priority.WARNING and "t1" in a.tags]
    assert want and [json.loads(line) for line in res.stdout.splitlines()] == want

    res = run(
        "get", *unix(alert_server), "--output", "json", "--rule", "Rule 2", "--rule", "Rule 0", "--count", "3"
    )
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [g["rule"] for g in got] == [a.rule for a in sent if a.rule in ("Rule 2", "Rule 0")][:3]

    cursor = sent[12].cursor
    res = run("get", *unix(alert_server), "--output", "json", "--from", str(cursor))
    assert [json.loads(line)["cursor"]["sequence"] for line in res.stdout.splitlines()] == [14, 15, 16]


def test_subscribe_count_and_text_output(alert_server: Any) -> None:
    for i in range(5):
        alert_server.publish(make_alert(i))
    proc = Proc(FALCO_CLIENT, *unix(alert_server), "subscribe", "--from", "oldest", "--count", "8")
    try:
        lines = [proc.line() for _ in range(5)]
        for i in range(5, 12):  # more than --count asks for
            alert_server.publish(make_alert(i))
        lines += [proc.line() for _ in range(3)]
        assert proc.wait() == 0, proc.stderr
    finally:
        proc.kill()
    assert proc.lines.empty()
    first = make_alert(0)
    assert lines[0] == (
        f"{dt.datetime.fromtimestamp(first.time_ns // 10**9, dt.UTC):%Y-%m-%dT%H:%M:%S}.123456789Z: "
        f"{first.priority.falco_name} {first.output}  [{alert_server.hub.epoch}:1]"
    )
    assert lines[7].endswith(f"[{alert_server.hub.epoch}:8]")


def test_subscribe_filters_live(alert_server: Any) -> None:
    proc = Proc(
        FALCO_CLIENT,
        "subscribe",
        *mtls(alert_server),
        "--output",
        "json",
        "--min-priority",
        "ERROR",
        "--count",
        "2",
    )
    try:
        wait_until(lambda: len(alert_server.hub.stats().readers) == 1, what="the subscription")
        for i in range(16):
            alert_server.publish(make_alert(i))
        got = [json.loads(proc.line()) for _ in range(2)]
        assert proc.wait() == 0
    finally:
        proc.kill()
    assert [g["priority"] for g in got] == ["Emergency", "Alert"]


def test_ctrl_c_exits_zero_without_traceback(alert_server: Any) -> None:
    alert_server.publish(make_alert(1))
    proc = Proc(FALCO_CLIENT, *unix(alert_server), "subscribe", "--from", "oldest")
    try:
        proc.line()  # connected and streaming
        proc.popen.send_signal(signal.SIGINT)
        assert proc.wait() == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr


def test_refused_connections_say_what_and_why(tmp_path: Path, certs_dir: Path) -> None:
    res = run("--unix-socket", tmp_path / "none.sock", "subscribe")
    assert res.returncode == 1
    assert f"cannot connect to Falconet over the UNIX socket {tmp_path / 'none.sock'}" in res.stderr
    assert "does not exist" in res.stderr and "Traceback" not in res.stderr

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run(
        "--host", "127.0.0.1", "--port", str(port), "--ca", certs_dir / "ca.crt", "--cert",
        certs_dir / "client.crt", "--key", certs_dir / "client.key", "version",
    )  # fmt: skip
    assert res.returncode == 1
    assert f"mTLS to 127.0.0.1:{port}" in res.stderr and "nothing is listening" in res.stderr


def test_server_from_another_ca_is_named(alert_server: Any, tmp_path: Path) -> None:
    """Our files are self-consistent but from another CA than the server's: the handshake fails on the server's
    certificate, and the message says so."""
    other = tmp_path / "other"
    init_certs(other)
    res = run(*mtls(alert_server, certs=other), "version")
    assert res.returncode == 1
    assert "the server's certificate does not verify against the CA" in res.stderr, res.stderr


def test_wrong_server_name_is_named(alert_server: Any) -> None:
    res = run(*mtls(alert_server), "--server-name", "not-in-the-certificate.example", "version")
    assert res.returncode == 1
    assert "does not name the host dialed" in res.stderr and "--server-name" in res.stderr, res.stderr


def test_plaintext_port_is_named(certs_dir: Path) -> None:
    """A TCP port that answers, but not with TLS (here: an HTTP server's reply)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        res = run(
            "--host", "127.0.0.1", "--port", str(port), "--ca", certs_dir / "ca.crt", "--cert",
            certs_dir / "client.crt", "--key", certs_dir / "client.key", "version",
        )  # fmt: skip
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(10)
    assert not thread.is_alive()
    assert res.returncode == 1
    assert f"127.0.0.1:{port} does not speak TLS" in res.stderr, res.stderr
    # One sentence from us, not grpc's own log lines.
    assert res.stderr.count("\n") == 1, res.stderr


@pytest.fixture(scope="module")
def bad_certs(certs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Problem files beside a copy of the shared CA: an expired client, a mismatched key, a foreign client."""
    d = tmp_path_factory.mktemp("bad")
    for name in ("ca.crt", "ca.key", "client.crt", "server.crt", "server.key"):
        (d / name).write_bytes((certs_dir / name).read_bytes())
    now = dt.datetime.now(dt.UTC)
    issue_client_window(
        d, "expired", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
    )
    (d / "client.key").write_bytes((certs_dir / "server.key").read_bytes())  # the wrong key for client.crt
    foreign = d / "foreign"
    init_certs(foreign)
    (d / "foreigner.crt").write_bytes((foreign / "client.crt").read_bytes())
    (d / "foreigner.key").write_bytes((foreign / "client.key").read_bytes())
    return d


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("expired", "the client certificate {d}/expired.crt expired on"),
        ("client", "the key {d}/client.key does not belong to the certificate {d}/client.crt"),
        ("foreigner", "the client certificate {d}/foreigner.crt does not chain to the CA {d}/ca.crt"),
        (
            "server",
            "the client certificate {d}/server.crt does not chain to the CA {d}/ca.crt: its ExtendedKeyUsage does not allow client",
        ),
    ],
)
def test_mtls_prechecks_name_the_problem(alert_server: Any, bad_certs: Path, name: str, message: str) -> None:
    res = run(*mtls(alert_server, certs=bad_certs, name=name), "subscribe")
    assert res.returncode == 1
    assert "falco-client: error: " + message.format(d=bad_certs) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not alert_server.hub.stats().readers


def test_usage_errors_exit_2() -> None:
    res = run("subscribe", "--count", "0")
    assert res.returncode == 2 and "at least 1" in res.stderr
    res = run("subscribe", "--from", "yesterday", "--unix-socket", "/nonexistent")
    assert res.returncode == 1 and "invalid start 'yesterday'" in res.stderr


def test_help_ends_with_worked_examples() -> None:
    for args in (["--help"], ["subscribe", "--help"], ["get", "--help"]):
        res = run(*args)
        assert res.returncode == 0
        tail = res.stdout.rstrip().splitlines()
        assert tail[-1].strip().startswith("the version of a remote server")
        assert any(line.startswith("examples:") for line in tail)


class ServeProcess:
    """`falconet serve` on a given UNIX socket, started and stopped like a daemon restart."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc(FALCONET, "serve", "--listen", f"unix://{self.sock}")
        self.proc.wait_line(lambda line: line.startswith("listening on"))

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.popen.send_signal(signal.SIGTERM)
        assert self.proc.wait() == 0, self.proc.stderr
        self.proc = None

    def publish(self, *indexes: int) -> None:
        lines = "".join(json.dumps(make_alert(i).to_json_dict()) + "\n" for i in indexes)
        res = subprocess.run(
            [FALCONET, "publish", "--unix-socket", str(self.sock)], input=lines, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr


@pytest.mark.slow  # ~3.5 s: waits out the client's reconnect back-off across a server restart
def test_subscribe_survives_a_server_restart_on_the_same_socket() -> None:
    sock = Path(tempfile.mkdtemp(prefix="fn-cli-")) / "falconet.sock"
    server = ServeProcess(sock)
    server.start()
    client: Proc | None = None
    try:
        server.publish(0, 1, 2)
        client = Proc(FALCO_CLIENT, "--unix-socket", str(sock), "subscribe", "--from", "oldest", "--output", "json",
                      "--count", "7")  # fmt: skip
        before = [json.loads(client.line()) for _ in range(3)]
        server.stop()
        server.start()  # a new run: a new epoch, the old alerts are gone
        server.publish(3, 4, 5)
        after = [json.loads(client.line()) for _ in range(4)]
        assert client.wait() == 0, client.stderr
    finally:
        if client is not None:
            client.kill()
        if server.proc is not None:
            server.stop()
    assert [a["output"] for a in before] == [make_alert(i).output for i in range(3)]
    # The stale cursor is recognised by the new server: an internal alert reports the gap, then every new alert.
    gap, *new = after
    assert gap["source"] == "internal" and before[-1]["cursor"]["epoch"] in gap["output"]
    assert [a["output"] for a in new] == [make_alert(i).output for i in range(3, 6)]
    assert len({a["cursor"]["epoch"] for a in new} | {before[0]["cursor"]["epoch"]}) == 2
    assert "reconnecting in" in client.stderr and "resuming after" in client.stderr


def test_closed_pipe_is_not_an_error(alert_server: Any) -> None:
    """`falco-client ... | head -1`: the reader leaves early; no traceback, no complaint."""
    for i in range(2000):
        alert_server.publish(make_alert(i))
    res = subprocess.run(
        f"set -o pipefail; '{FALCO_CLIENT}' --unix-socket '{alert_server.unix_path}' get --output json | head -n 1",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0  # pipefail: falco-client's own status
    assert json.loads(res.stdout)["output"] == make_alert(0).output
    assert res.stderr == ""
