"""The one policy for a missing resource (tests/resources.py): a skip with its reason locally, a failure in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from arch_support import REPO

_TESTS = '''
import pytest
from resources import require_root, shared_path

def test_reads_shared() -> None:
    assert shared_path("upstream-rules", "SOURCE.txt").is_file()

def test_needs_root() -> None:
    require_root("this check")
'''


def _summary(tmp_path: Path, *, ci: bool, shared: Path) -> list[str]:
    """pytest's short summary (`-rA`: one line per outcome) of the probe tests, run with CI and FALCONET_SHARED."""
    (tmp_path / "test_probe.py").write_text(_TESTS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env |= {"FALCONET_SHARED": str(shared), "PYTHONPATH": str(REPO / "tests")} | ({"CI": "true"} if ci else {})
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "-c", os.devnull,
         "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    return out.stdout.partition("short test summary info")[2].splitlines()


def test_absent_shared_files_skip_locally_with_the_reason(tmp_path: Path) -> None:
    summary = _summary(tmp_path, ci=False, shared=tmp_path / "absent")
    reason = f"{tmp_path}/absent/upstream-rules/SOURCE.txt is absent"
    assert [line for line in summary if line.startswith("SKIPPED") and reason in line], summary


def test_absent_shared_files_fail_in_ci(tmp_path: Path) -> None:
    summary = _summary(tmp_path, ci=True, shared=tmp_path / "absent")
    assert [line for line in summary if line.startswith("FAILED test_probe.py::test_reads_shared - Failed: CI=true")
            and "SOURCE.txt is absent" in line], summary  # fmt: skip


def test_present_shared_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "here" / "upstream-rules").mkdir(parents=True)
    (tmp_path / "here" / "upstream-rules" / "SOURCE.txt").write_text("x")
    assert "PASSED test_probe.py::test_reads_shared" in _summary(tmp_path, ci=True, shared=tmp_path / "here")


def test_root_passes_as_root_and_fails_otherwise_in_ci(tmp_path: Path) -> None:
    outcome = "PASSED" if os.geteuid() == 0 else "FAILED"
    summary = _summary(tmp_path, ci=True, shared=tmp_path)
    assert [line for line in summary if line.startswith(f"{outcome} test_probe.py::test_needs_root")], summary
