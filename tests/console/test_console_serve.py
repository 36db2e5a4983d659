"""`falconet serve --console`: the console mounted by the real command, over the hub `falconet publish` feeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from console_support import new_token


def _line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:  # the server prints its addresses once ready; a dead server ends the loop
        if line.startswith(prefix):
            return line.strip().removeprefix(prefix)
    raise AssertionError(f"no {prefix!r} line; stderr: {proc.stderr.read() if proc.stderr else ''}")


def test_serve_mounts_the_console(tmp_path: Path) -> None:
    sock = tmp_path / "f.sock"
    token = new_token(tmp_path)
    cmd = [sys.executable, "-m", "falconet.server.cli", "serve", "--listen", f"unix://{sock}",
           "--console", "127.0.0.1:0", "--console-token-file", str(token)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _line(proc, "web console on ")
        alert = {"rule": "Served", "priority": "Error", "output": "<b>hi</b>", "time": "2024-01-01T00:00:00.000000000Z"}
        pub = subprocess.run(
            [sys.executable, "-m", "falconet.server.cli", "publish", "--unix-socket", str(sock)],
            input=json.dumps(alert) + "\n", capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr
        request = urllib.request.Request(url + "api/info", headers={"Authorization": f"Bearer {token.read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            info = json.loads(response.read())
        assert info["newest"] == 1 and info["kind"] == "node"
        try:
            urllib.request.urlopen(url + "api/info", timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        else:
            raise AssertionError("served without a token")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_serve_refuses_a_console_off_loopback_without_tls(tmp_path: Path) -> None:
    token = new_token(tmp_path)
    cmd = [sys.executable, "-m", "falconet.server.cli", "serve", "--listen", f"unix://{tmp_path / 's.sock'}",
           "--console", "0.0.0.0:0", "--console-token-file", str(token)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "plain HTTP is only served on 127.0.0.1" in done.stderr
