"""What a test needs from outside the checkout, and the one policy when it is missing.

Locally a missing resource skips the test with a reason that says what is missing; with CI=true it FAILS it:
CI provides every resource, so a missing one there is a defect, never a reason to pass quietly. Tests that
need such a resource also carry its marker (declared in pyproject), so `make unit` can leave them out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
# Falco's upstream rules (upstream-rules/) and k8s audit material (upstream-k8saudit/): read from there, never
# copied into the repo. FALCONET_SHARED points elsewhere when the checkout does not sit beside it.
SHARED = Path(os.environ.get("FALCONET_SHARED", REPO.parent / "shared"))


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(what: str) -> NoReturn:
    """Skips (locally) or fails (CI=true) the current test, or the whole module when called at import time."""
    if in_ci():
        pytest.fail(f"CI=true and {what}", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require_root(what: str) -> None:
    """`missing` unless this process runs as root."""
    if os.geteuid() != 0:
        missing(f"{what} needs root")


def compile_bpf(text: str, cflags: list[str]) -> Any:
    """A bcc `BPF` object for a test's own small program, or `missing` when bcc or root is absent.

    The object is bcc's untyped handle; the tests index its maps by name."""
    try:
        from bcc import BPF
    except ImportError as exc:
        missing(f"bcc is not importable ({exc})")
    require_root("loading a BPF program")
    return BPF(text=text.encode(), cflags=cflags)


def shared_path(*parts: str) -> Path:
    """A file or folder under ../shared (e.g. `shared_path("upstream-rules", "current")`), or `missing`."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        missing(f"{path} is absent: Falco's upstream material (../shared beside the checkout, or $FALCONET_SHARED)")
    return path
