"""Helpers for the daemon tests: a real `falconet run` subprocess, fed through a FIFO (replay: no root needed).

The FIFO makes the replay source behave like a live one: the test decides when each event arrives, the daemon
keeps running between them, and closing the FIFO is the end of the capture. Everything is observed from
outside, as a user would: stderr lines, the output files, the metrics endpoint, gRPC.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from falconet.model.event import Event, Fd, Process, User


TEST_RULES = """\
- rule: Test shadow read
  desc: a file below /etc named shadow was opened
  condition: evt.type in (open, openat) and fd.name = /etc/shadow
  output: "shadow opened (proc.name=%proc.name fd.name=%fd.name)"
  priority: WARNING
  tags: [test, T1003]
"""


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Polls `pred` until it returns something truthy; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def open_event(num: int, path: str, *, name: str = "cat", pid: int = 4242) -> dict[str, Any]:
    """An openat of `path` by a short-lived `name` process, in the engine's JSON-lines event form."""
    parent = Process(pid=4000, ppid=1, name="bash", exe="bash", exepath="/usr/bin/bash", user=User(0, "root"))
    proc = Process(
        pid=pid,
        ppid=4000,
        name=name,
        exe=name,
        exepath=f"/usr/bin/{name}",
        args=[path],
        cwd="/root",
        user=User(0, "root"),
        parent=parent,
    )
    ev = Event(
        num=num,
        ts=1_700_000_000_000_000_000 + num,
        type="openat",
        tid=pid,
        res=3,
        proc=proc,
        args={"fd": 3, "dirfd": -100, "name": path, "flags": 1, "mode": 0},
        fd=Fd(num=3, type="file", name=path, nameraw=path, flags=1),
    )
    return ev.to_dict()


class DaemonProcess:
    """One `falconet run` subprocess; stderr is collected line by line in a background thread."""

    def __init__(self, workdir: Path, config: str, source: str, extra_args: list[str]) -> None:
        self.workdir = workdir
        self.config_path = workdir / "falconet.yaml"
        self.config_path.write_text(config)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        env = dict(os.environ, FALCO_HOSTNAME="test-host", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(self.config_path),
             "--source", source, *extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=workdir,
        )
        self.stdout_lines: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines), daemon=True).start()

    def _pump(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                if self.proc.poll() is not None:
                    # One last look after the process ended: its pump may still be delivering lines.
                    self._cond.wait(0.2)
                    for line in self.lines:
                        m = rx.search(line)
                        if m:
                            return m
                    raise AssertionError(
                        f"falconet run exited ({self.proc.returncode}) without printing {pattern!r}:\n"
                        + "\n".join(self.lines)
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.5))

    def wait_ready(self) -> None:
        self.wait_for_line(r"falconet: ready")

    @property
    def metrics_url(self) -> str:
        m = self.wait_for_line(r"metrics on (http://\S+)")
        return m.group(1)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def kill(self) -> None:
        """Kills the daemon if it is still up and closes its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Fifo:
    """The write end of the replay FIFO: `send` writes events as JSON lines, `close` ends the capture."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: Any = None
        self.num = 0

    def open(self) -> None:
        self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (kept open across sends)

    def send(self, *events: dict[str, Any]) -> None:
        if self._f is None:
            self.open()
        for ev in events:
            self._f.write(json.dumps(ev) + "\n")
        self._f.flush()

    def send_raw(self, text: str) -> None:
        if self._f is None:
            self.open()
        self._f.write(text)
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file the daemon may still be writing: a last line without its
    newline is half written (the daemon ends every line with one), so it is left for the next read."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().split("\n")[:-1]:
        if line.strip():
            out.append(json.loads(line))
    return out


def base_config(workdir: Path, rules: Path, **extra: str) -> str:
    """A config for tests: our rules, JSON to a file, gRPC on a UNIX socket in `workdir`, metrics on port 0."""
    text = f"""
rules_files: [{rules}]
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {workdir / 'alerts.json'}}}
grpc:
  enabled: true
  bind_address: ["unix://{workdir / 'falconet.sock'}"]
grpc_output: {{enabled: true}}
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0}}
"""
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    return text


