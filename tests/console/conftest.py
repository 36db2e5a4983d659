"""Fixtures of the web console's tests: a console over a hub on its own loop, with a token or mTLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import ConsoleFactory, ConsoleHandle, new_token, start_console

from falconet.server.console.config import ConsoleConfig
from falconet.server.hub import Hub


@pytest.fixture
def console_factory(tmp_path: Path) -> Iterator[ConsoleFactory]:
    """Starts consoles (`hub=`, and ConsoleConfig fields; a token by default); all stopped after the test."""
    handles: list[ConsoleHandle] = []

    def make(hub: Hub | None = None, **fields: object) -> ConsoleHandle:
        if "token_file" not in fields and "client_ca" not in fields:
            fields["token_file"] = new_token(tmp_path)
        config = ConsoleConfig(enabled=True, listen_port=0, **fields)  # type: ignore[arg-type]
        handle = start_console(config, hub)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop()


@pytest.fixture
def token_console(console_factory: ConsoleFactory) -> ConsoleHandle:
    """A console on 127.0.0.1 (plain HTTP) behind a bearer token."""
    return console_factory()
