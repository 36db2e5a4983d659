"""Fixtures for the daemon tests (helpers live in daemon_harness.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, Fifo


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., tuple[DaemonProcess, Fifo]]]:
    """Starts `falconet run` on a FIFO replay source; returns (daemon, fifo). Killed at teardown if still up."""
    started: list[tuple[DaemonProcess, Fifo]] = []

    def start(config: str, extra_args: list[str] | None = None, wait_ready: bool = True) -> tuple[DaemonProcess, Fifo]:
        fifo_path = tmp_path / "events.fifo"
        if not fifo_path.exists():
            os.mkfifo(fifo_path)
        daemon = DaemonProcess(tmp_path, config, f"replay:{fifo_path}", extra_args or [])
        fifo = Fifo(fifo_path)
        started.append((daemon, fifo))
        if wait_ready:
            daemon.wait_ready()
        return daemon, fifo

    yield start
    for daemon, fifo in started:
        fifo.close()
        daemon.kill()
