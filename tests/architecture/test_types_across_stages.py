"""mypy sees across the stages: what crosses each boundary has its real type, never `Any`.

A probe file `reveal_type`s the signatures where one stage hands data to the next (sensor -> Event, engine ->
Alert, the daemon's sources, engine seam and pipeline, hub, outputs, the services' wire conversion, the SDK's
Alert), checked with the project's own mypy settings; any `Any` in them, or any mypy error, fails. Once before, every `falconet.*` import was `Any` to mypy
(the folders' import names came from a mapping static tools cannot follow) and a global
`ignore_missing_imports` hid it: the settings check forbids that switch, and the last tests rebuild that broken
state in a temporary copy to show that these checks catch it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from arch_support import REPO, SRC

ALERT = "falconet.model.alert.Alert"
EVENT = "falconet.model.event.Event"
# Third-party modules that ship no types and have no stub package; nothing else may be ignored.
UNTYPED_THIRD_PARTY = {"bcc", "bcc.*", "grpc_tools", "grpc_tools.*"}


@dataclass(frozen=True)
class Probe:
    boundary: str
    expression: str  # module:attribute, what to reveal
    expected: tuple[str, ...]  # fully qualified types the revealed type must name


PROBES = [
    Probe("sensor -> Event", "falconet.sensor:Sensor.poll", (EVENT,)),
    Probe("sensor decoder -> Event", "falconet.sensor:Enricher.feed", (EVENT,)),
    Probe("engine: Event -> Alert", "falconet.rules.engine:Engine.process", (EVENT, ALERT)),
    Probe("daemon's sources -> Event", "falconet.server.source:EventSource.poll", (EVENT,)),
    Probe("daemon's engine seam", "falconet.server.pipeline:RuleEngine.process", (EVENT, ALERT)),
    Probe("daemon: events -> engine", "falconet.server.pipeline:Pipeline.process", (EVENT,)),
    Probe("daemon: alert -> outputs, hub", "falconet.server.pipeline:Pipeline.emit", (ALERT,)),
    Probe("hub <- Alert", "falconet.server.hub:Hub.publish", (ALERT,)),
    Probe("outputs <- Alert", "falconet.server.outputs:Output.submit", (ALERT,)),
    Probe("services: Alert -> wire", "falconet.sdk.convert:alert_to_proto", (ALERT, "outputs_pb2.response")),
    Probe("services: wire -> Alert", "falconet.sdk.convert:alert_from_proto", (ALERT,)),
    Probe("SDK's Alert is the model's", "falconet.sdk:Alert", (ALERT,)),
    Probe("SDK client -> Alert", "falconet.sdk:Client.subscribe", (ALERT,)),
    Probe("SDK async client -> Alert", "falconet.sdk:AsyncClient.subscribe", (ALERT,)),
]


# The real engine is what the daemon's seam asks for (a mismatch is a mypy error in the probe).
FITS = [
    "def _fits(engine: falconet.rules.engine.Engine) -> falconet.server.pipeline.RuleEngine:",
    "    return engine",
]


def _probe_source() -> tuple[str, dict[int, Probe]]:
    lines = [f"import {m}" for m in sorted({p.expression.partition(":")[0] for p in PROBES})] + FITS
    where: dict[int, Probe] = {}
    for probe in PROBES:
        lines.append(f"reveal_type({probe.expression.replace(':', '.')})")
        where[len(lines)] = probe
    return "\n".join(lines) + "\n", where


def run_probe(directory: Path, config: Path, *extra: str) -> tuple[int, dict[str, str], list[str]]:
    """mypy's exit status, the revealed type per boundary, and every error line, for the probe file."""
    source, where = _probe_source()
    probe_file = directory / "probe.py"
    probe_file.write_text(source, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(directory / "cache"),
         *extra, str(probe_file)],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    revealed: dict[str, str] = {}
    errors: list[str] = []
    for line in out.stdout.splitlines():
        m = re.match(r".*probe\.py:(\d+): note: Revealed type is \"(.*)\"$", line)
        if m:
            revealed[where[int(m.group(1))].boundary] = m.group(2)
        elif ": error:" in line:
            errors.append(line)
    return out.returncode, revealed, errors


def problems(probe: Probe, revealed: dict[str, str]) -> list[str]:
    """What is wrong with one boundary's revealed type (empty: its real types, no Any)."""
    shown = revealed.get(probe.boundary)
    if shown is None:
        return ["not revealed"]
    # An `async def` is a Coroutine whose send and yield types mypy always shows as Any.
    shown = shown.replace("typing.Coroutine[Any, Any, ", "typing.Coroutine[")
    found = ["Any"] if re.search(r"\bAny\b", shown) else []
    return found + [f"{name} missing" for name in probe.expected if name not in shown]


def settings_problems(pyproject: dict[str, Any]) -> list[str]:
    """Settings that would let a cross-package import become Any unnoticed."""
    mypy = pyproject["tool"]["mypy"]
    found = []
    if mypy.get("ignore_missing_imports"):
        found.append("global ignore_missing_imports")
    if mypy.get("follow_imports", "normal") != "normal":
        found.append(f"follow_imports = {mypy['follow_imports']}")
    if mypy.get("strict") is not True:
        found.append("strict is not on")
    if mypy.get("disallow_any_unimported") is not True:
        found.append("disallow_any_unimported is not on")
    for override in mypy.get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        if override.get("ignore_missing_imports") and set(modules) - UNTYPED_THIRD_PARTY:
            found.append(f"ignore_missing_imports for {sorted(set(modules) - UNTYPED_THIRD_PARTY)}")
        if override.get("follow_imports", "normal") != "normal" or override.get("ignore_errors"):
            found.append(f"imports skipped or errors ignored for {modules}")
    return found


@pytest.fixture(scope="module")
def probe_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, str], list[str]]:
    return run_probe(tmp_path_factory.mktemp("probe"), REPO / "pyproject.toml")


def test_mypy_checks_the_probe_without_errors(probe_result: tuple[int, dict[str, str], list[str]]) -> None:
    status, _, errors = probe_result
    assert (status, errors) == (0, [])


@pytest.mark.parametrize("probe", [pytest.param(p, id=p.boundary) for p in PROBES])
def test_what_crosses_the_boundary_is_typed(
    probe: Probe, probe_result: tuple[int, dict[str, str], list[str]]
) -> None:
    _, revealed, _ = probe_result
    assert problems(probe, revealed) == [], revealed.get(probe.boundary)


def test_settings_let_no_import_become_any() -> None:
    assert settings_problems(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))) == []


def test_every_stage_folder_has_its_import_name() -> None:
    """A new top-level stage folder needs a link in src/falconet; a link must lead to a folder."""
    links = {p.name: p for p in (SRC / "falconet").iterdir() if p.is_symlink()}
    assert all(p.resolve().is_dir() for p in links.values()), links
    linked = {p.resolve() for p in links.values()}
    stages = {p.parent.resolve() for p in REPO.glob("*/__init__.py")} - {(REPO / "bench").resolve()}
    assert stages <= linked, sorted(str(s) for s in stages - linked)


# -- the checks fail when the types go blind -----------------------------------------------------------------


def _broken_copy(tmp: Path, *, hide_it: bool) -> Path:
    """The link tree without `model` (as if a stage lost its import name), checked by the settings of old (not
    strict, and with the global switch that hid the blindness when `hide_it`)."""
    src = tmp / "src" / "falconet"
    src.mkdir(parents=True)
    for entry in (SRC / "falconet").iterdir():
        if entry.name == "model":
            continue
        if entry.is_symlink():
            (src / entry.name).symlink_to(entry.resolve())
        elif entry.suffix == ".py":
            (src / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    config = tmp / "pyproject.toml"
    config.write_text(
        "[tool.mypy]\n"
        'python_version = "3.11"\n'
        f'mypy_path = "{tmp / "src"}"\n'
        # the installed package (an editable install of the real tree) must not fill the gap
        "no_site_packages = true\n"
        + ("ignore_missing_imports = true\n" if hide_it else ""),
        encoding="utf-8",
    )
    return config


def test_a_blind_checker_with_the_gap_hidden_is_caught(tmp_path: Path) -> None:
    config = _broken_copy(tmp_path, hide_it=True)
    status, revealed, errors = run_probe(tmp_path, config)
    assert (status, errors) == (0, [])  # mypy alone is content: this is the failure the test exists for
    blind = {p.boundary for p in PROBES if "Any" in problems(p, revealed)}
    assert {"hub <- Alert", "outputs <- Alert", "SDK's Alert is the model's"} <= blind, revealed
    pyproject = tomllib.loads(config.read_text(encoding="utf-8"))
    assert "global ignore_missing_imports" in settings_problems(pyproject)


def test_a_blind_checker_without_the_switch_reports_errors(tmp_path: Path) -> None:
    status, _, errors = run_probe(tmp_path, _broken_copy(tmp_path, hide_it=False))
    assert status != 0 and any("falconet.model" in e for e in errors), errors
