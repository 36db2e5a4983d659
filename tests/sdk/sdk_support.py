"""Helpers for the SDK and falco-client tests: distinct alerts, a consumer thread, deadlines, processes."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from falconet.model.alert import Alert, Priority

BIN = Path(sys.executable).parent
FALCO_CLIENT = str(BIN / "falco-client")
FALCONET = str(BIN / "falconet")


def make_alert(i: int, **overrides: Any) -> Alert:
    """Alert number `i`: every field differs with i, typed output fields included."""
    alert = Alert(
        time_ns=1_700_000_000_123_456_789 + i,
        rule=f"Rule {i % 3}",
        priority=list(Priority)[i % 8],
        source="syscall" if i % 4 else "k8s_audit",
        output=f"alert {i}: é <&>",
        output_fields={
            "proc.pid": 100 + i,
            "proc.name": f"p{i}",
            "fd.num": "7",
            "ok": bool(i % 2),
            "x": None,
        },
        tags=[f"t{i % 2}", "common"],
        hostname="h",
    )
    for key, value in overrides.items():
        setattr(alert, key, value)
    return alert


def without_cursor(alert: Alert) -> dict[str, Any]:
    d = alert.to_json_dict()
    d.pop("cursor", None)
    return d


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class Collector:
    """Drains an iterator in a thread into a queue, so a test can wait for items with a deadline."""

    def __init__(self, source: Iterator[Any]) -> None:
        self.items: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self._source = source
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                self.items.put(item)
        except BaseException as exc:  # handed to the test
            self.error = exc

    def take(self, n: int, timeout: float = 20.0) -> list[Any]:
        out = []
        deadline = time.monotonic() + timeout
        for _ in range(n):
            left = deadline - time.monotonic()
            try:
                out.append(self.items.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(f"got {len(out)} of {n} items (error: {self.error!r})") from None
        return out


class Proc:
    """A subprocess whose stdout lines arrive on a queue (read in a thread) and whose stderr is kept."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.lines.put), daemon=True),
            threading.Thread(
                target=self._pump, args=(self.popen.stderr, self.stderr_lines.append), daemon=True
            ),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: IO[str], sink: Callable[[str], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def line(self, timeout: float = 20.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout}s; stderr: {self.stderr}") from None

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(deadline - time.monotonic(), 0.001))
            if predicate(line):
                return line

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.popen.wait(timeout)
        self._close_pipes()
        return rc

    def _close_pipes(self) -> None:
        for t in self._threads:
            t.join(5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None and not any(t.is_alive() for t in self._threads):
                stream.close()

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def kill(self) -> None:
        """Ends the process if still running and releases its pipes (always call it, e.g. in `finally`)."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._close_pipes()
