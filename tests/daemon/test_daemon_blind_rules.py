"""The daemon names, in its log at start and at each reload, every rule that reads a field the live sensor
never fills."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, Fifo, base_config

pytestmark = pytest.mark.slow

Start = Callable[..., tuple[DaemonProcess, Fifo]]

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


def test_start_and_reload_log_the_blind_rule_and_its_field(tmp_path: Path, start_daemon: Start) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    daemon, _fifo = start_daemon(base_config(tmp_path, rules))
    daemon.wait_for_line(r"rules warning: .*LOAD_FIELD_NOT_FILLED: rule 'cpu bound' reads evt\.cpu,")
    assert daemon.stderr().count("LOAD_FIELD_NOT_FILLED") == 1  # the rule reading only filled fields is not named

    rules.write_text(RULES.replace("cpu bound", "cgroup bound").replace("evt.cpu = 1", "thread.cgroups contains x"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line(r"falconet: reloaded")
    daemon.wait_for_line(r"rules warning: .*LOAD_FIELD_NOT_FILLED: rule 'cgroup bound' reads thread\.cgroups,")
