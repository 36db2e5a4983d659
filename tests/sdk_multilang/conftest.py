"""Session fixtures: the Go and Rust example binaries and Falco's Go client probe, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from multilang_support import build_clientgo_probe, build_go_example, build_rust_example


@pytest.fixture(scope="session")
def go_subscribe() -> Path:
    return build_go_example()


@pytest.fixture(scope="session")
def rust_subscribe() -> Path:
    return build_rust_example()


@pytest.fixture(scope="session")
def clientgo_probe() -> Path:
    return build_clientgo_probe()
