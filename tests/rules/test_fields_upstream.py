"""Every field that Falco's own rules files use resolves, in conditions and in outputs.

Reads the upstream files from ../shared/upstream-rules (never copied into the repo): the three current files and
Falco 0.25's falco_rules.yaml and k8s_audit_rules.yaml (its syscall-source items; its k8s_audit rules and their
macros use the ka.*/jevt.* fields of another event source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from resources import shared_path

from falconet.model.event import Event, Process
from falconet.rules.fields import resolve
from falconet.rules.output import FieldToken, compile_output
from falconet.rules.parser import Check, FieldValue, parse_condition

pytestmark = pytest.mark.upstream
UPSTREAM = shared_path("upstream-rules")  # absent: the module skips here (fails with CI=true)
FILES = [
    UPSTREAM / "current" / "falco_rules.yaml",
    UPSTREAM / "current" / "falco-incubating_rules.yaml",
    UPSTREAM / "current" / "falco-sandbox_rules.yaml",
    UPSTREAM / "falco-0.25" / "falco_rules.yaml",
    UPSTREAM / "falco-0.25" / "k8s_audit_rules.yaml",
]


def _walk(node: Any, out: set[tuple[str, str | None]]) -> None:
    if isinstance(node, Check):
        out.add((node.field.name, node.field.arg))
        if isinstance(node.value, FieldValue):
            out.add((node.value.field.name, node.value.field.arg))
        return
    for child in getattr(node, "children", ()) or ((node.child,) if hasattr(node, "child") else ()):
        _walk(child, out)


def _syscall_items(path: Path) -> list[dict[str, Any]]:
    items = [i for i in yaml.safe_load(path.read_text()) if isinstance(i, dict)]
    if path.name == "k8s_audit_rules.yaml":
        # Its macros serve its k8s_audit rules; only rules declaring the syscall source are ours.
        return [i for i in items if "rule" in i and i.get("source", "syscall") == "syscall"]
    return [i for i in items if ("rule" in i or "macro" in i) and i.get("source", "syscall") == "syscall"]


def condition_fields() -> dict[tuple[str, str | None], str]:
    found: dict[tuple[str, str | None], str] = {}
    for path in FILES:
        for item in _syscall_items(path):
            cond = item.get("condition")
            if not cond:
                continue
            refs: set[tuple[str, str | None]] = set()
            _walk(parse_condition(str(cond)), refs)
            for ref in refs:
                found.setdefault(
                    ref, f"{path.parent.name}/{path.name}: {item.get('rule') or item.get('macro')}"
                )
    return found


def output_formats() -> list[tuple[str, str]]:
    return [
        (f"{path.parent.name}/{path.name}: {item['rule']}", str(item["output"]))
        for path in FILES
        for item in _syscall_items(path)
        if "rule" in item and item.get("output")
    ]


CONDITION_FIELDS = condition_fields()
FIELD_REFS = sorted(CONDITION_FIELDS, key=lambda r: (r[0], r[1] or ""))


def test_the_scan_sees_what_the_reference_lists() -> None:
    # The reference (falco-rules-language.md 3.1) lists the stable file's condition fields; a few of them and
    # the incubating/sandbox extras must be among what this scan found, or the scan itself is broken.
    names = {name for name, _ in CONDITION_FIELDS}
    for expected in ("evt.rawres", "fd.sip.name", "fd.snet", "proc.aname", "thread.cap_effective",
                     "container.mount.dest", "evt.buffer", "proc.is_vpgid_leader", "fd.cnet", "evt.arg.uid"):  # fmt: skip
        assert expected in names
    assert len(names) >= 70


@pytest.mark.parametrize(("name", "arg"), FIELD_REFS)
def test_condition_field_resolves(name: str, arg: str | None) -> None:
    bound = resolve(name, arg)
    assert bound.type is not None


@pytest.mark.parametrize(("where", "fmt"), output_formats(), ids=lambda v: v[:60])
def test_output_compiles(where: str, fmt: str) -> None:
    compiled = compile_output(fmt)
    tokens = [p for p in compiled.parts if isinstance(p, FieldToken)]
    assert tokens, where
    # Rendering never raises, even for an event that knows almost nothing; unknown values print <NA>.
    text, fields = compiled.render(Event(num=1, ts=0, type="openat", tid=1, res=-2, proc=Process(pid=1)))
    assert set(fields) == {t.key for t in tokens}
    assert ("<NA>" in text) == any(v is None for v in fields.values())
