"""Issue 10, defect 8, as users meet them: each through the real command, over real sockets and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sdk_support import FALCO_CLIENT, FALCONET, Proc, make_alert, wait_until

from falconet.certs import init_certs


def test_falco_client_json_is_the_canonical_compact_line(alert_server: Any) -> None:
    sent = [make_alert(i, output_fields={"z": 1, "a": "x", "m": None}) for i in range(3)]
    for alert in sent:
        alert_server.publish(alert)
    res = subprocess.run(
        [FALCO_CLIENT, "--unix-socket", str(alert_server.unix_path), "get", "--output", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines == [a.to_json_line() for a in sent]  # the hub set each alert's cursor
    for line in lines:
        doc = json.loads(line)
        assert list(doc) == ["time", "rule", "priority", "source", "hostname", "output", "output_fields", "tags",
                             "cursor"]  # fmt: skip
        assert list(doc["output_fields"]) == ["a", "m", "z"]
        assert json.dumps(doc, separators=(",", ":"), ensure_ascii=False) == line


def test_config_that_is_not_utf8_is_named_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "falconet.yaml"
    config.write_bytes(b"json_output: true\n# caf\xe9\n")
    res = subprocess.run(
        [FALCONET, "run", "-c", str(config), "--source", "replay:/dev/null"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert f"{config} is not UTF-8 text: byte 0xe9 at line 2, column 6" in res.stderr


def test_rules_validate_on_a_directory_without_rules_files_fails_saying_so(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("not rules")
    for command in (["validate", str(tmp_path)], ["list", "-r", str(tmp_path)]):
        res = subprocess.run([FALCONET, "rules", *command], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res
        assert f"{tmp_path}: no rules files (*.yaml, *.yml) in this directory" in res.stderr
        assert "Ok" not in res.stdout


def test_a_dangling_symlink_at_the_socket_path_is_named() -> None:
    directory = Path(tempfile.mkdtemp(prefix="fn-link-"))
    sock = directory / "falconet.sock"
    sock.symlink_to(directory / "gone" / "elsewhere.sock")
    res = subprocess.run(
        [FALCONET, "serve", "--listen", f"unix://{sock}"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert f"cannot listen on unix://{sock}: it is a symbolic link" in res.stderr, res.stderr
    assert sock.is_symlink()  # left as it was


def test_after_a_server_crash_the_first_tcp_message_says_the_connection_was_lost(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    init_certs(certs)
    sock = Path(tempfile.mkdtemp(prefix="fn-crash-")) / "f.sock"
    server = Proc(FALCONET, "serve", "--listen", f"unix://{sock}", "--listen", "127.0.0.1:0", "--certs", str(certs))
    client: Proc | None = None
    try:
        server.wait_line(lambda line: line.startswith("listening on unix"))
        tcp = server.wait_line(lambda line: line.startswith("listening on 127.0.0.1:")).split()[-1]
        host, port = tcp.rsplit(":", 1)
        alert = json.dumps(make_alert(0).to_json_dict()) + "\n"
        pub = subprocess.run([FALCONET, "publish", "--unix-socket", str(sock)], input=alert, text=True,
                             capture_output=True, timeout=60)  # fmt: skip
        assert pub.returncode == 0, pub.stderr
        client = Proc(
            FALCO_CLIENT, "--host", host, "--port", port, "--ca", str(certs / "ca.crt"), "--cert",
            str(certs / "client.crt"), "--key", str(certs / "client.key"), "subscribe", "--from", "oldest",
        )  # fmt: skip
        client.wait_line(lambda line: "alert 0:" in line)
        server.popen.send_signal(signal.SIGKILL)
        server.wait()
        wait_until(lambda: any("lost" in line for line in client.stderr_lines), what="the reconnect notice")
        first = next(line for line in client.stderr_lines if "lost" in line)
        assert "reject" not in first and "same CA" not in first, first
        assert "the connection to the server was lost" in first, first
    finally:
        for proc in (client, server):
            if proc is not None and proc.popen.poll() is None:
                proc.popen.kill()
                proc.wait()
        if sock.exists():
            os.unlink(sock)
