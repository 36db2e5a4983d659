"""`falconet rules validate | list | test`, run as a user runs them: the real console entry, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import make_event
from resources import shared_path

from falconet.model.alert import Alert

BAD_RULES = """\
- macro: m
  condition: proc.name = bash
- rule: r
  desc: d
  output: "x %proc.name"
  priority: Urgent
  condition: m
- rule: s
  desc: d
  output: "x %proc.name"
  priority: INFO
  condition: m and (fd.name = x
"""


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "falconet.server.cli", "rules", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


@pytest.mark.upstream
def test_validate_ok() -> None:
    out = _run("validate", str(shared_path("upstream-rules", "current", "falco_rules.yaml")))
    assert out.returncode == 0, out.stderr
    # Neither the language nor a field the live sensor leaves unfilled (LOAD_FIELD_NOT_FILLED) raises anything.
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith("Ok (0 errors, 0 warnings); 25 rules"), out.stdout


def test_validate_reports_every_error_with_position_and_caret(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_RULES)
    out = _run("validate", str(path))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert f"{path}:6:13: error LOAD_ERR_YAML_VALIDATE: Invalid priority 'Urgent'" in lines
    assert f"{path}:12:32: error LOAD_ERR_COMPILE_CONDITION: expected a ')' token" in lines
    # The offending line and a caret under column 32.
    i = lines.index("    12 |   condition: m and (fd.name = x")
    assert lines[i + 1] == " " * (4 + len("12 | ") + 31) + "^"
    assert lines[-1] == f"{path}: Invalid (2 errors, 0 warnings); 0 rules"


def test_validate_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_RULES)
    out = _run("validate", "--json", str(path))
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["ok"] is False
    assert [(d["code"], d["position"]["line"], d["position"]["column"]) for d in doc["diagnostics"]] == [
        ("LOAD_ERR_YAML_VALIDATE", 6, 13),
        ("LOAD_ERR_COMPILE_CONDITION", 12, 32),
    ]


@pytest.mark.upstream
def test_list_with_tag() -> None:
    out = _run("list", "-r", str(shared_path("upstream-rules", "current", "falco_rules.yaml")), "--tag", "mitre_defense_evasion")
    assert out.returncode == 0, out.stderr
    names = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert names == [
        "Clear Log Activities",
        "PTRACE anti-debug attempt",
        "Fileless execution via memfd_create",
    ]
    assert "3 rules" in out.stderr


@pytest.mark.upstream
def test_test_prints_alerts_as_json_lines(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    shred = make_event(
        {
            "num": 7,
            "proc": {"name": "shred", "exe": "shred", "exepath": "/usr/bin/shred", "args": ["-u", "f"]},
        }
    )
    benign = make_event({"num": 8, "proc": {"name": "ls", "exe": "ls", "exepath": "/usr/bin/ls"}})
    events.write_text(
        json.dumps(shred.to_dict()) + "\n" + json.dumps(benign.to_dict()) + "\n" + "{not json\n" + "\n"
    )
    out = _run("test", str(events), "-r", str(shared_path("upstream-rules", "current", "falco_rules.yaml")), "--hostname", "box-1")
    assert out.returncode == 1  # one malformed line
    assert f"{events}:3: skipped:" in out.stderr
    assert "2 events, 1 alerts, 1 malformed lines" in out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    alert = Alert.from_json_dict(json.loads(lines[0]))
    assert alert.rule == "Remove Bulk Data from Disk" and alert.hostname == "box-1"
    assert alert.output_fields["proc.name"] == "shred" and alert.time_ns == shred.ts
    assert lines[0] == json.dumps(json.loads(lines[0]), separators=(",", ":"), ensure_ascii=False)


def test_test_reports_load_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_RULES)
    out = _run("test", "-", "-r", str(path), stdin="")
    assert out.returncode == 2
    assert "Invalid priority 'Urgent'" in out.stderr


def test_validate_a_directory_loads_its_yaml_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "10-base.yaml").write_text(
        "- rule: r\n  desc: d\n  output: o\n  priority: INFO\n  condition: evt.type = execve\n"
    )
    (tmp_path / "20-local.yaml").write_text(
        "- rule: r\n  condition: and proc.nope = 1\n  override:\n    condition: append\n"
    )
    (tmp_path / "notes.txt").write_text("not rules")
    out = _run("validate", str(tmp_path))
    assert out.returncode == 1
    assert (
        f"{tmp_path / '20-local.yaml'}:2:18: error LOAD_ERR_COMPILE_CONDITION: unknown field 'proc.nope'"
        in out.stdout
    )
    assert "notes.txt" not in out.stdout
