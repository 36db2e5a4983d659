"""Shared fixtures: real certificates from `falconet.certs.init_certs` and a real AlertServer on real sockets.

The server runs in a background thread with its own event loop, so tests can use blocking gRPC clients (or
their own event loops) against it exactly as an outside client would, and publish from the test thread as the
engine thread does in the daemon.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shared_server import ServerFactory, ServerHandle, start_server

from falconet.certs import init_certs


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt ca.key server.crt server.key client.crt client.key, made by `falconet.certs.init_certs`."""
    directory = tmp_path_factory.mktemp("certs")
    init_certs(directory)
    return directory


@pytest.fixture
def alert_server(certs_dir: Path) -> Iterator[ServerHandle]:
    """A real AlertServer (default settings) on a UNIX socket and 127.0.0.1:0 with mTLS from certs_dir."""
    handle = start_server(certs_dir)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def alert_server_factory(certs_dir: Path) -> Iterator[ServerFactory]:
    """Starts servers with custom settings (`retention=`, `input_allow_cns=`, `hub=`...); all stopped after."""
    handles: list[ServerHandle] = []

    def make(**config: Any) -> ServerHandle:
        handle = start_server(config.pop("certs", certs_dir), **config)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop()
