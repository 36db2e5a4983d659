"""A real `falconet run` with the audit endpoint, and an HTTP(S) poster that talks to it as the API server would.

Everything is observed from outside, as a user would: the daemon's stderr lines (the endpoint's URL), its
outputs, its metrics endpoint, gRPC.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Polls `pred` until it returns something truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


class DaemonProcess:
    """`falconet run -c CONFIG --source SOURCE` as a subprocess; its stderr lines are collected as they come."""

    def __init__(self, workdir: Path, config: str, source: str) -> None:
        (workdir / "falconet.yaml").write_text(config)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        env = dict(os.environ, FALCO_HOSTNAME="test-host", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(workdir / "falconet.yaml"),
             "--source", source],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=workdir,
        )  # fmt: skip
        assert self.proc.stderr is not None
        threading.Thread(target=self._pump, args=(self.proc.stderr,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                if self.proc.poll() is not None or left <= 0:
                    state = "exited" if self.proc.poll() is not None else "still running"
                    raise AssertionError(f"falconet run ({state}) printed no {pattern!r}:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.5))

    @property
    def metrics_url(self) -> str:
        return self.wait_for_line(r"metrics on (http://\S+)").group(1)

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class AuditDaemon:
    """A running daemon with the audit endpoint; `post` sends a body to it as the API server would."""

    process: DaemonProcess
    url: str
    work: Path
    tls: ssl.SSLContext | None = None

    def post(self, body: bytes | str, *, content_type: str = "application/json", token: str | None = None,
             tls: ssl.SSLContext | None = None, method: str = "POST", path: str | None = None) -> Reply:  # fmt: skip
        scheme, _, rest = self.url.partition("://")
        hostport, _, endpoint = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, int(port), context=tls or self.tls, timeout=30)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body.encode() if isinstance(body, str) else body
        try:
            conn.request(method, path or "/" + endpoint, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"text": raw.decode(errors="replace")}
            return Reply(resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()


Start = Callable[..., AuditDaemon]
