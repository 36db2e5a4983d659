"""The daemon names, in its log at start, each rule that reads a field the live sensor never fills."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, base_config

pytestmark = pytest.mark.slow

RULES = """\
- rule: cpu bound
  desc: d
  output: "x %proc.name"
  priority: WARNING
  condition: evt.type = openat and evt.cpu = 1
- rule: seen
  desc: d
  output: "x %proc.name"
  priority: WARNING
  condition: evt.type = openat and fd.name startswith /tmp
"""


def test_start_logs_the_blind_rule_and_its_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    capture = tmp_path / "empty.jsonl"
    capture.write_text("")
    daemon = DaemonProcess(tmp_path, base_config(tmp_path, rules), f"replay:{capture}", [])
    try:
        assert daemon.wait() == 0, daemon.stderr()
    finally:
        daemon.kill()
    log = daemon.stderr()
    warned = [line for line in log.splitlines() if "LOAD_FIELD_NOT_FILLED" in line]
    assert len(warned) == 1, log
    assert "rules warning:" in warned[0] and "rule 'cpu bound' reads evt.cpu" in warned[0]
