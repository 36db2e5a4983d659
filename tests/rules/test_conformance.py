"""The conformance corpus: every case in tests/rules/corpus/*.yaml, run by one parametrized test.

A case states a condition (with an optional prelude of macros and lists) or whole rules files, some events,
and what must happen: which events match, or which load error or warning appears (code, text, and for errors
the file position). Each case names the Falco documentation or source behaviour it encodes in `falco:`, so a
failing case says what Falco would have done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_support import RESOLVERS, make_event

from falconet.rules.engine import Engine
from falconet.rules.errors import LoadResult, RulesLoadError

CORPUS = Path(__file__).resolve().parent / "corpus"
_CASE_KEYS = {
    "case",
    "falco",
    "condition",
    "prelude",
    "files",
    "events",
    "error",
    "warning",
    "engine",
    "alerts",
}


def _cases() -> list[Any]:
    params = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")):
            params.append(pytest.param(case, id=f"{path.stem}: {case['case']}"))
    return params


def _files(case: dict[str, Any]) -> list[tuple[str, str]]:
    if "files" in case:
        return [(f"file{i}.yaml", text) for i, text in enumerate(case["files"], 1)]
    prelude = case.get("prelude", "")
    text = (
        f"{prelude}\n"
        "- rule: case\n"
        "  desc: corpus case\n"
        "  output: case fired (proc=%proc.name)\n"
        "  priority: INFO\n"
        f"  condition: {json.dumps(case['condition'])}\n"
    )
    return [("case.yaml", text)]


def _condition_line(text: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if line.startswith("  condition: "))


def _load(case: dict[str, Any]) -> tuple[Engine | None, LoadResult]:
    options = dict(case.get("engine") or {})
    try:
        engine = Engine.from_texts(_files(case), resolvers=RESOLVERS, **options)
    except RulesLoadError as exc:
        return None, exc.result
    return engine, engine.load_result


@pytest.mark.parametrize("case", _cases())
def test_case(case: dict[str, Any]) -> None:
    assert set(case) <= _CASE_KEYS, f"unknown keys {set(case) - _CASE_KEYS}"
    assert str(case.get("falco", "")).strip(), "every case names the Falco behaviour it encodes"
    assert "events" in case or "error" in case or "warning" in case, "a case must expect something"
    engine, result = _load(case)
    if "error" in case:
        want = case["error"]
        assert engine is None, "expected a load error, but the rules loaded"
        found = [
            d for d in result.errors if d.code.value == want["code"] and want.get("contains", "") in d.message
        ]
        assert found, "expected error not found; got:\n" + result.format()
        diag = found[0]
        if "at" in want:  # offset inside the (single-line, JSON-quoted) condition of the generated file
            text = _files(case)[0][1]
            assert diag.position is not None
            assert (diag.position.line, diag.position.column) == (
                _condition_line(text),
                len('  condition: "') + 1 + want["at"],
            ), diag.format()
        if "line" in want:
            assert diag.position is not None and diag.position.line == want["line"], diag.format()
        if "column" in want:
            assert diag.position is not None and diag.position.column == want["column"], diag.format()
        if "file" in want:
            assert diag.position is not None and diag.position.file == want["file"], diag.format()
        if "context" in want:
            labels = [c.label for c in diag.contexts]
            assert labels[: len(want["context"])] == want["context"], diag.format()
        return
    assert engine is not None, "unexpected load errors:\n" + result.format()
    if "warning" in case:
        want = case["warning"]
        found = [
            d
            for d in result.warnings
            if d.code.value == want["code"] and want.get("contains", "") in d.message
        ]
        assert found, "expected warning not found; got:\n" + result.format()
        if "count" in want:
            assert len(found) == want["count"], result.format()
        if "rule" in want:  # the warning is about this rule (its outermost context)
            assert all(d.contexts and d.contexts[0].label == f"rule '{want['rule']}'" for d in found), (
                result.format()
            )
    for i, item in enumerate(case.get("events") or []):
        event = make_event(item.get("event"))
        if "match" in item:
            got = "case" in engine.matching_rules(event)
            assert got == item["match"], f"event #{i}: expected match={item['match']}"
            # The generic predicate (all event types) agrees with the one specialised for this event's type.
            generic = [r.predicate(event) for r in engine.enabled_rules if r.name == "case"]
            assert generic == [item["match"]], f"event #{i}: generic predicate disagrees"
            # And the engine's generated per-type dispatch (what process() runs) agrees too.
            assert bool(engine.process(event)) == item["match"], f"event #{i}: dispatch disagrees"
        if "rules" in item:
            assert engine.matching_rules(event) == item["rules"], f"event #{i}"
        if "alerts" in item:
            assert [a.rule for a in engine.process(event)] == item["alerts"], f"event #{i}"
        if "output" in item:
            alerts = engine.process(event)
            assert alerts and alerts[0].output == item["output"], f"event #{i}: {alerts}"
