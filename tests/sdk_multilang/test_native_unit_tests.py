"""The Go and Rust SDKs' own unit tests (each prints every shared alert vector, published or not, and must
produce its canonical line), run by pytest so that `make test` covers them."""

from __future__ import annotations

import subprocess

import pytest
from multilang_support import REPO, tool_env

pytestmark = [pytest.mark.multilang, pytest.mark.timeout(1500)]


def test_go_sdk_unit_tests() -> None:
    proc = subprocess.run(
        ["go", "test", "./..."],
        cwd=REPO / "sdk/go",
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok  \tfalconet.local/sdk/go/falconet" in proc.stdout


def test_rust_sdk_unit_tests() -> None:
    proc = subprocess.run(
        ["cargo", "test", "--release", "--locked", "--lib"],
        cwd=REPO / "sdk/rust",
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "vectors_print_their_canonical_line ... ok" in proc.stdout
