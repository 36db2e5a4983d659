"""Fixtures for the k8s_audit tests (helpers in audit_support.py and audit_http.py)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_http import AuditDaemon, DaemonProcess, Start


@pytest.fixture
def audit_daemon(tmp_path: Path) -> Iterator[Start]:
    """Starts `falconet run --source none` with a config (text); waits for the endpoint's URL."""
    started: list[DaemonProcess] = []

    def start(config: str, source: str = "none", tls: ssl.SSLContext | None = None) -> AuditDaemon:
        proc = DaemonProcess(tmp_path, config, source)
        started.append(proc)
        m = proc.wait_for_line(r"k8s audit endpoint on (\S+)")
        proc.wait_for_line(r"falconet: ready")
        return AuditDaemon(proc, m.group(1), tmp_path, tls)

    yield start
    for proc in started:
        proc.kill()
