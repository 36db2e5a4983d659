"""The issue's differential test: one scripted workload (the daemon tests' attacker actions and their harmless
twins) run under the eBPF driver and under `--source ptrace`; the same rules fire with the same proc, fd and
user fields, and the negative controls raise nothing under either.

Root (the eBPF side loads the sensor; the actions read /etc/shadow and write below /etc and /usr/bin).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ptrace_harness import (
    EXPECTED_RULES,
    Falconet,
    config_text,
    read_alerts,
    miner_host,
    token,
    wait_until,
    write_workload,
)

from resources import require_root

pytestmark = [pytest.mark.bpf, pytest.mark.root]


def _comparable(alerts: list[dict[str, Any]], tok: str) -> list[tuple[str, str]]:
    """(rule, output fields) of the token's alerts, with what differs between two runs by nature normalised:
    the token itself and the connection's ephemeral client port."""
    out = []
    for alert in alerts:
        text = json.dumps(alert["output_fields"], sort_keys=True)
        if tok not in json.dumps(alert):
            continue
        text = text.replace(tok, "TOK")
        text = re.sub(r":\d+->", ":PORT->", text)
        out.append((alert["rule"], text))
    return sorted(out)


def _ebpf_run(work: Path, peer: str, tok: str) -> list[dict[str, Any]]:
    alerts = work / "ebpf.json"
    (work / "ebpf.yaml").write_text(config_text(work, alerts))
    daemon = Falconet(["-c", str(work / "ebpf.yaml"), "--no-store", "--source", "ebpf"])
    try:
        daemon.wait_line(r"falconet: ready", timeout=180)
        done = subprocess.run(["sh", str(work / "workload.sh"), tok, str(work), peer], capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: f"BARRIER{tok}" in json.dumps(read_alerts(alerts)), 60, "the barrier alert")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, "\n".join(daemon.lines)
    finally:
        daemon.stop()
    return read_alerts(alerts)


def _ptrace_run(work: Path, peer: str, tok: str) -> tuple[list[dict[str, Any]], list[str]]:
    alerts = work / "ptrace.json"
    (work / "ptrace.yaml").write_text(config_text(work, alerts))
    daemon = Falconet(["-c", str(work / "ptrace.yaml"), "--no-store", "--source", "ptrace", "--",
                       "sh", str(work / "workload.sh"), tok, str(work), peer])
    try:
        assert daemon.wait(180) == 0, "\n".join(daemon.lines)  # it ends with its workload
    finally:
        daemon.stop()
    return read_alerts(alerts), daemon.lines


def test_the_same_rules_fire_with_the_same_fields_under_ebpf_and_ptrace(tmp_path: Path) -> None:
    require_root("the differential test loads the eBPF sensor")
    write_workload(tmp_path)
    tok_e, tok_p = token(), token()
    with miner_host() as host:
        ebpf = _ebpf_run(tmp_path, host.peer_ip, tok_e)
        ptrace, log = _ptrace_run(tmp_path, host.peer_ip, tok_p)
    assert any("ptrace driver limits" in line for line in log), log  # stated at start-up
    e, p = _comparable(ebpf, tok_e), _comparable(ptrace, tok_p)
    rules = {rule for rule, _ in e}
    assert rules == EXPECTED_RULES, e
    assert e == p, "\n".join(["eBPF:", *map(str, e), "ptrace:", *map(str, p)])
    for run, tok in ((ebpf, tok_e), (ptrace, tok_p)):  # the negative controls raised nothing
        assert not [a for a in run if f"NEG{tok}" in json.dumps(a)]
    connection = [json.loads(f) for r, f in p if r == "Outbound connection to crypto mining pool port"]
    assert connection and connection[0]["fd.name"].endswith(f"->{host.peer_ip}:3333")


EXCLUDE_TRACER = """
- macro: known_debugger
  condition: or proc.name = falconet
  append: true
"""


@pytest.mark.parametrize("excluded", [False, True])
def test_an_ebpf_daemon_sees_the_drivers_seize_as_documented(tmp_path: Path, excluded: bool) -> None:
    """docs/ptrace.md: next to an eBPF daemon the driver's PTRACE_SEIZE raises "PTRACE attached to process"
    (proc.name falconet), and appending the tracer to known_debugger silences it."""
    require_root("the eBPF daemon loads the sensor")
    from falconet.rules import DEFAULT_RULES

    rules = [str(DEFAULT_RULES)]
    if excluded:
        (tmp_path / "exclude.yaml").write_text(EXCLUDE_TRACER)
        rules.append(str(tmp_path / "exclude.yaml"))
    alerts = tmp_path / "ebpf.json"
    (tmp_path / "ebpf.yaml").write_text(config_text(tmp_path, alerts))
    (tmp_path / "ptrace.yaml").write_text(config_text(tmp_path, tmp_path / "ptrace.json"))
    tok = token()
    ebpf = Falconet(["-c", str(tmp_path / "ebpf.yaml"), "--no-store", "--source", "ebpf",
                     *[arg for r in rules for arg in ("-r", r)]])
    try:
        ebpf.wait_line(r"falconet: ready", timeout=180)
        traced = Falconet(["-c", str(tmp_path / "ptrace.yaml"), "--no-store", "--source", "ptrace", "--",
                           "/bin/sh", "-c", f"cat /etc/shadow /nonexistent-BARRIER{tok}; exit 0"])
        assert traced.wait(120) == 0, "\n".join(traced.lines)
        # The workload's own shadow read reaches the eBPF daemon after the seize: a barrier for its alert.
        wait_until(lambda: f"BARRIER{tok}" in json.dumps(read_alerts(alerts)), 60, "the barrier alert")
    finally:
        ebpf.stop()
    seize = [a for a in read_alerts(alerts) if a["rule"] == "PTRACE attached to process" and tok in json.dumps(a)]
    if excluded:
        assert seize == []
    else:
        assert len(seize) == 1, seize
        fields = seize[0]["output_fields"]
        assert (fields["proc.name"], fields["evt.arg.request"]) == ("falconet", "PTRACE_SEIZE")
