"""Reconnect and resume: the Go and Rust examples outlive a restart of `falconet serve` on the same socket.

The new run has a new epoch, so the cursor the client resumes after is stale: the server says so with an
internal gap alert, then streams every new alert; the client reconnects with back-off and loses nothing.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from falconet.model.alert import Alert, Priority

pytestmark = [pytest.mark.multilang, pytest.mark.timeout(900)]

FALCONET = [sys.executable, "-m", "falconet.server.cli"]


class Lines:
    """A process whose stdout lines are read by a thread, so the test can wait for each with a deadline."""

    def __init__(self, cmd: list[str]) -> None:
        self.popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        self._stderr: str | None = None

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 30) -> str:
        got = self.lines.get(timeout=timeout)
        if got is None:
            raise AssertionError(f"process ended: {self.stop()} {self.stderr()}")
        return got

    def stderr(self) -> str:
        return self._stderr if self._stderr is not None else "(still running)"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signals the process if it still runs, waits for it, and closes its pipes; returns its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        code = self.popen.wait(30)
        self._pump.join(30)
        if self._stderr is None:
            assert self.popen.stderr is not None and self.popen.stdout is not None
            self._stderr = self.popen.stderr.read()
            self.popen.stderr.close()
            self.popen.stdout.close()
        return code


def _serve(sock: Path) -> Lines:
    proc = Lines([*FALCONET, "serve", "--listen", f"unix://{sock}"])
    deadline = time.monotonic() + 60
    while not proc.line(timeout=max(0.1, deadline - time.monotonic())).startswith("listening on"):
        pass
    return proc


def _publish(sock: Path, *indexes: int) -> None:
    lines = "".join(json.dumps(_alert(i).to_json_dict()) + "\n" for i in indexes)
    res = subprocess.run(
        [*FALCONET, "publish", "--unix-socket", str(sock)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def _alert(i: int) -> Alert:
    return Alert(
        time_ns=1_700_000_000_123_456_789 + i,
        rule="Restart test",
        priority=Priority.NOTICE,
        source="syscall",
        output=f"alert {i}",
        output_fields={"n": i},
        hostname="h",
    )


@pytest.mark.parametrize("lang", ["go", "rust"])
def test_example_resumes_across_a_server_restart(request: pytest.FixtureRequest, lang: str) -> None:
    binary: Path = request.getfixturevalue(f"{lang}_subscribe")
    sock = Path(tempfile.mkdtemp(prefix="fn-ml-")) / "falconet.sock"
    server = _serve(sock)
    client: Lines | None = None
    try:
        _publish(sock, 0, 1, 2)
        client = Lines([str(binary), "--unix-socket", str(sock), "--from", "oldest", "--count", "7"])
        before: list[dict[str, Any]] = [json.loads(client.line()) for _ in range(3)]
        assert server.stop() == 0
        server = _serve(sock)  # a new run: a new epoch, the old alerts are gone
        _publish(sock, 3, 4, 5)
        after: list[dict[str, Any]] = [json.loads(client.line()) for _ in range(4)]
        assert client.popen.wait(30) == 0
        client.stop()
        stderr = client.stderr()
    finally:
        if client is not None:
            client.stop(signal.SIGKILL)
        server.stop()
    assert [a["output"] for a in before] == ["alert 0", "alert 1", "alert 2"]
    assert [a["output_fields"]["n"] for a in before] == [0, 1, 2]
    gap, *new = after
    assert gap["source"] == "internal" and before[-1]["cursor"]["epoch"] in gap["output"], gap
    assert [a["output"] for a in new] == ["alert 3", "alert 4", "alert 5"]
    assert new[0]["cursor"]["epoch"] != before[0]["cursor"]["epoch"]
    assert "reconnecting in" in stderr
