"""Helpers for the server tests: alerts to publish, client credentials, channels, and waiting on conditions."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc

from falconet.model.alert import Alert, Priority
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import types_pb2

PRIORITIES = list(Priority)


def make_alert(i: int, **overrides: object) -> Alert:
    """A distinct, fully populated alert for index `i` (every field varies with i)."""
    fields: dict[str, str | int | float | bool | None] = {
        "proc.pid": 1000 + i,
        "proc.name": f"proc-{i}",
        "fd.name": "/etc/shadow" if i % 2 else "1234",
        "evt.is_open_write": bool(i % 3),
        "k8s.ns.name": None,
        "evt.rate": i / 4,
    }
    alert = Alert(
        time_ns=1_700_000_000_000_000_000 + i * 1_000_003,
        rule=f"Rule {i % 7}",
        priority=PRIORITIES[i % 8],
        source="syscall" if i % 5 else "k8s_audit",
        output=f"alert number {i} <&> é",
        output_fields=fields,
        tags=[f"t{i % 3}", "common"],
        hostname=f"host-{i % 2}",
    )
    for key, value in overrides.items():
        setattr(alert, key, value)
    return alert


def mtls_credentials(certs: Path, name: str = "client", ca: Path | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (ca or certs / "ca.crt").read_bytes(),
        (certs / f"{name}.key").read_bytes(),
        (certs / f"{name}.crt").read_bytes(),
    )


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Polls `condition` until true; fails the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def start_oldest() -> types_pb2.Start:
    return types_pb2.Start(position=types_pb2.Start.POSITION_OLDEST)


def start_after(epoch: str, sequence: int) -> types_pb2.Start:
    return types_pb2.Start(after=types_pb2.Cursor(epoch=epoch, sequence=sequence))


def falco_request() -> outputs_pb2.request:
    """What Falco's own clients send: an empty request."""
    return outputs_pb2.request()
