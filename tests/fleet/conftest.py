"""Fixtures for the fleet tests: real NATS JetStream servers (tests/fleet/nats_servers.py), stopped after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nats_servers import NatsCluster, NatsServer, cluster, describe_binary, single_server


def pytest_report_header() -> str:
    """Which nats-server the fleet tests run (shown when pytest starts in tests/fleet)."""
    return "fleet: " + describe_binary()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One JetStream server on free loopback ports, ready."""
    server = single_server(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three JetStream servers clustered on loopback, ready (each has JetStream up)."""
    group = cluster(tmp_path / "nats")
    group.start()
    try:
        yield group
    finally:
        group.stop()
