"""The Go and Rust examples, started `--from now` and cut before their first alert, resume where they started.

Each stream's `falconet-position` header (docs/server.md) is the cursor just before its first alert; the
clients keep it as their resume point and send it as `start.after` on reconnecting. The test really stops the
server once the subscription has reached it, publishes to the same hub while no server is up, and serves that
hub again on the same socket path (a symlink it swaps, like a daemon restarting in place): those alerts can
only arrive if the client resumed from the reported position, since resuming at a new "now" would skip them.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from falconet.model.alert import Alert, Priority

pytestmark = [pytest.mark.multilang, pytest.mark.timeout(300)]


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def _alert(i: int) -> Alert:
    return Alert(
        time_ns=1_700_000_000_123_456_789 + i,
        rule="Position test",
        priority=Priority.NOTICE,
        source="syscall",
        output=f"alert {i}",
        output_fields={"n": i},
        hostname="h",
    )


class Example:
    """An example binary whose stdout lines a thread collects, so the test waits for each with a deadline."""

    def __init__(self, cmd: list[str]) -> None:
        self.popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def alert(self, timeout: float = 30) -> dict[str, Any]:
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no alert within {timeout}s; stderr: {self.finish()}") from None
        if got is None:
            raise AssertionError(f"the example ended early ({self.popen.wait(30)}): {self.finish()}")
        doc: dict[str, Any] = json.loads(got)
        return doc

    def finish(self) -> str:
        """Ends the process if it still runs and returns its stderr."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)
        self._pump.join(30)
        assert self.popen.stderr is not None and self.popen.stdout is not None
        err = self.popen.stderr.read()
        self.popen.stderr.close()
        self.popen.stdout.close()
        return err


@pytest.mark.parametrize(
    ("batched", "before"), [(False, 0), (True, 2)], ids=["sub-empty-hub", "batched-after-2"]
)
@pytest.mark.parametrize("lang", ["go", "rust"])
def test_example_cut_before_its_first_alert_resumes_where_it_started(
    request: pytest.FixtureRequest, alert_server: Any, certs_dir: Path, lang: str, batched: bool, before: int
) -> None:
    from shared_server import start_server  # the shared fixture's own starter, to serve the same hub again

    binary: Path = request.getfixturevalue(f"{lang}_subscribe")
    hub = alert_server.hub
    for i in range(before):
        hub.publish(_alert(100 + i))  # before the subscription: not for it
    link_dir = Path(tempfile.mkdtemp(prefix="fn-mlpos-"))
    link = link_dir / "falconet.sock"
    os.symlink(alert_server.unix_path, link)
    cmd = [str(binary), "--unix-socket", str(link), "--from", "now", "--count", "3"]
    client = Example(cmd + (["--batched"] if batched else []))
    second = None
    try:
        # The server creates a stream's reader right after sending its headers: once it exists, the position
        # is on its way to the client, ahead of anything that ends the stream.
        _wait_until(lambda: len(hub.stats().readers) == 1, "the subscription to reach the server")
        alert_server.stop()
        sent = [_alert(i) for i in range(3)]
        for alert in sent:
            hub.publish(alert)  # while no server is up: only a resume from the position can deliver these
        second = start_server(certs_dir, hub=hub)
        tmp = link_dir / "new"
        os.symlink(second.unix_path, tmp)
        os.replace(tmp, link)
        got = [client.alert() for _ in sent]
        assert client.popen.wait(30) == 0
        stderr = client.finish()
    finally:
        if client.popen.returncode is None:
            client.finish()
        if second is not None:
            second.stop()
        shutil.rmtree(link_dir, ignore_errors=True)
    assert [a["output"] for a in got] == [a.output for a in sent], got
    assert [a["cursor"] for a in got] == [
        {"epoch": hub.epoch, "sequence": before + 1 + i} for i in range(len(sent))
    ]
    assert "reconnecting in" in stderr  # it really lost the server
    assert "may be missed" not in stderr and "warning" not in stderr, stderr
