"""Rules that read a field the live sensor never fills are named at load; `falconet rules fields` says which
fields are filled. The sensor's side of the fact is falconet.model.sensor_fields (kept honest by
tests/sensor/test_fields_filled_live.py); here: the analysis, the warnings and the listing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from resources import shared_path

from falconet.model.sensor_fields import SENSOR_FILLS
from falconet.rules.builder import CompiledRule
from falconet.rules.blind import ENGINE_ANSWERS, blind_rules, catalog_key, enabled_rules, fill_state
from falconet.rules.errors import Code
from falconet.rules.fields import catalog
from falconet.rules.loader import Loader

# evt.cpu and thread.cgroups: fields no sensor change in flight fills; fd.name and proc.name: filled.
RULES = """\
- macro: inner
  condition: evt.cpu = 1
- macro: outer
  condition: (proc.name = sh and inner)
- rule: through nested macros
  desc: d
  output: "x %proc.name"
  priority: WARNING
  condition: open_read and not outer
- rule: seen
  desc: d
  output: "x %proc.name"
  priority: WARNING
  condition: evt.type = openat and fd.name startswith /tmp and evt.dir = <
- rule: disabled and blind
  desc: d
  output: "x"
  priority: WARNING
  condition: evt.type = openat and thread.cgroups contains x
  enabled: false
- rule: "field to field\\x1b[2J"
  desc: d
  output: "x"
  priority: WARNING
  condition: evt.type = openat and fd.name = val(thread.cgroups)
- macro: open_read
  condition: evt.type in (open, openat) and evt.is_open_read = true
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "falconet.server.cli", "rules", *args],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def _load(path: Path) -> list[CompiledRule]:
    loader = Loader()
    loader.add_file(str(path))
    return list(loader.compile().rules)


def test_blind_rules_are_found_through_macros_negations_and_field_values(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    found = {b.rule.name: b.fields for b in blind_rules(enabled_rules(_load(path)))}
    assert found == {"through nested macros": ("evt.cpu",), "field to field\x1b[2J": ("thread.cgroups",)}


def test_a_field_the_sensor_starts_filling_stops_the_warning(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    rules = _load(path)
    more = SENSOR_FILLS | {"evt.cpu", "thread.cgroups"}
    assert blind_rules(rules, more) == []
    assert [b.rule.name for b in blind_rules(rules)][1] == "disabled and blind"  # found when asked about it


def test_validate_warns_naming_the_rule_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    out = _run("validate", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if Code.FIELD_NOT_FILLED.value in line]
    assert len(lines) == 2, out.stdout
    assert "rule 'through nested macros' reads evt.cpu" in lines[0] and f"{path}:5:3" in lines[0]
    assert "rule 'field to field\\x1b[2J' reads thread.cgroups" in lines[1]  # a control made visible
    doc = json.loads(_run("validate", "--json", str(path)).stdout)
    assert [d["code"] for d in doc["diagnostics"]].count(Code.FIELD_NOT_FILLED.value) == 2


@pytest.mark.upstream
def test_upstream_rules_name_exactly_their_blind_rules() -> None:
    """Falco's current rules: every warning names an enabled rule and fields that are unfilled, and every
    enabled rule reading an unfilled field is named (here the memfd rule until the sensor reads the
    executable from the kernel; the set is whatever SENSOR_FILLS says at the time)."""
    current = shared_path("upstream-rules", "current")
    out = _run("validate", "--json", str(current))
    doc = json.loads(out.stdout)
    assert doc["ok"], out.stdout
    warned = [d["message"] for d in doc["diagnostics"] if d["code"] == Code.FIELD_NOT_FILLED.value]
    loader = Loader()
    for f in sorted(current.glob("*.yaml")):
        loader.add_file(str(f))
    expected = blind_rules(enabled_rules(loader.compile().rules))
    assert len(warned) == len(expected)
    for item, message in zip(expected, warned, strict=True):
        assert message.startswith(f"rule '{item.rule.name}' reads {', '.join(item.fields)},")
        assert item.rule.enabled and all(fill_state(catalog_key(f) or f) == "no" for f in item.fields)
    if "proc.is_exe_from_memfd" not in SENSOR_FILLS:
        assert any(m.startswith("rule 'Fileless execution via memfd_create' reads proc.is_exe_from_memfd")
                   for m in warned)  # fmt: skip


def test_fields_lists_every_field_once_with_what_fills_it() -> None:
    out = _run("fields", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows] == [i.name for i in catalog()]
    by_name = {r["name"]: r for r in rows}
    for name in SENSOR_FILLS:
        assert by_name[name]["filled"] == "sensor"
    for name in ENGINE_ANSWERS:
        assert by_name[name]["filled"] == "engine"
    assert by_name["evt.cpu"]["filled"] == "no" and by_name["evt.cpu"]["type"] == "int"
    assert all(r["desc"] for r in rows if "syscall" in r["sources"]), "every field says what it means"
    text = _run("fields").stdout
    assert "evt.arg.NAME" in text and "proc.aname[ARG]?" in text and "FILLED" in text.splitlines()[0]


def test_fields_filters_by_source_and_by_not_filled() -> None:
    syscall = json.loads(_run("fields", "--json", "--source", "syscall").stdout)
    assert syscall and all("syscall" in r["sources"].split(",") for r in syscall)
    assert not any(r["name"].startswith(("ka.", "jevt.")) for r in syscall)
    k8s = json.loads(_run("fields", "--json", "--source", "k8s_audit").stdout)
    assert {r["name"] for r in k8s if r["name"].startswith("ka.")}, "the k8s audit fields are listed"
    assert all(r["name"].startswith(("ka.", "jevt.", "evt.")) for r in k8s)  # evt.time & co: every source
    assert all(r["filled"] == "source" for r in k8s if r["name"].startswith(("ka.", "jevt.")))
    blind = json.loads(_run("fields", "--json", "--not-filled").stdout)
    assert blind and all(r["filled"] == "no" for r in blind)
    assert {r["name"] for r in blind}.isdisjoint(SENSOR_FILLS | ENGINE_ANSWERS)
    assert _run("fields", "--source", "nope").returncode == 2
