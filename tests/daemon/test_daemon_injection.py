"""Issue 10, defect 2: a monitored process cannot inject lines or escape sequences into the daemon's text outputs.

A process named with a newline, ESC/OSC sequences and C1 controls opens a watched file; the alert reaches stdout,
a file, a program and a syslog socket (all real sinks of a real `falconet run`) as one line each, with every
control escaped visibly, and the JSON subscriber still gets the exact name.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from daemon_harness import TEST_RULES, open_event, wait_until

from falconet.model.text import has_controls

HOSTILE_NAME = "x\x1b]0;owned\x07\x1b[2J\r\n12:00:00.000000000: Emergency forged\u009b31m\x7f\u202e"
ESCAPED_NAME = "x\\x1b]0;owned\\x07\\x1b[2J\\r\\n12:00:00.000000000: Emergency forged\\x9b31m\\x7f\\u202e"


def _config(work: Path, syslog_path: Path) -> str:
    rules = work / "rules.yaml"
    rules.write_text(TEST_RULES)
    return f"""
rules_files: [{rules}]
json_output: false
stdout_output: {{enabled: true}}
file_output: {{enabled: true, keep_alive: true, filename: {work / 'alerts.txt'}}}
program_output: {{enabled: true, keep_alive: true, program: "cat >> {work / 'program.txt'}"}}
syslog_output: {{enabled: true, address: {syslog_path}}}
grpc:
  enabled: true
  bind_address: ["unix://{work / 'falconet.sock'}"]
grpc_output: {{enabled: true}}
webserver: {{enabled: false}}
"""


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_control_characters_from_a_process_name_are_escaped_in_every_text_output(
    tmp_path: Path, start_daemon: Any
) -> None:
    syslog_path = tmp_path / "log.sock"
    collector = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    collector.bind(str(syslog_path))
    collector.settimeout(30)
    try:
        daemon, fifo = start_daemon(_config(tmp_path, syslog_path))
        fifo.send(open_event(1, "/etc/shadow", name=HOSTILE_NAME), open_event(2, "/etc/shadow", name="cat"))
        fifo.close()
        assert daemon.wait() == 0, daemon.stderr()
        datagrams = [collector.recv(65536).decode() for _ in range(2)]
    finally:
        collector.close()
    sinks = {
        "stdout": daemon.stdout_lines,
        "file": _lines(tmp_path / "alerts.txt"),
        "program": wait_until(lambda: len(_lines(tmp_path / "program.txt")) >= 2 and _lines(tmp_path / "program.txt"),
                              what="the program output"),
        "syslog": [d.rstrip("\n") for d in datagrams],
    }
    for kind, lines in sinks.items():
        alerts = [line for line in lines if "shadow opened" in line]
        assert len(alerts) == 2, (kind, lines)  # one line per alert: the newline forged nothing
        assert not any(has_controls(line) for line in lines), (kind, lines)
        assert f"proc.name={ESCAPED_NAME} fd.name=/etc/shadow" in alerts[0], (kind, alerts[0])
        assert "Emergency forged" not in alerts[1]
