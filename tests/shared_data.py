"""Where the shared test inputs live (../shared next to the repo), and what a test does when they are absent.

Falco's upstream rules and sample events are read from there, never copied into the repo. A developer machine
without them skips those tests with the reason; CI (CI=true) must have them, so there a missing file fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """The path under ../shared; skips the test when it is absent, or fails it under CI=true."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"shared test data {path} is absent (Falco's upstream files, see /work/shared/*/SOURCE.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must have it")
        pytest.skip(reason)
    return path
