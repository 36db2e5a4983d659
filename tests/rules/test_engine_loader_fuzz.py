"""Loading never raises, whatever the file says: every problem becomes a diagnostic with a position in the
file (a broken rules file must not take down a running daemon, and `validate` must report, not crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from engine_support import RESOLVERS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falconet.rules import DEFAULT_RULES
from falconet.rules.engine import Engine
from falconet.rules.loader import load_files, load_texts
from mutation import mutated_text

PIECES = [
    "- rule: r\n", "- macro: m\n", "- list: l\n", "  condition: ", "  items: [a, b]\n", "  desc: d\n",
    "  output: o %proc.name\n", "  priority: INFO\n", "proc.name = bash\n", "m and l\n", "(\n", "  exceptions:\n",
    "    - name: e\n", "      fields: [proc.name]\n", "      values: [[x]]\n", "  override:\n",
    "    condition: append\n", "  append: true\n", "- required_engine_version: 0.99.0\n", "  enabled: false\n",
    "  tags: [a]\n", ":\n", "- [1, 2]\n", "  source: k8s_audit\n", "    items: replace\n", "\t", "'", '"', "%",
    "proc.nope = 1\n", "evt.dir = <\n", "- rule: r\n  desc: d\n  output: o\n  priority: INFO\n  condition: ",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=25).map("".join))
def test_any_file_loads_into_diagnostics(text: str) -> None:
    loads_into_diagnostics(text)


def loads_into_diagnostics(text: str) -> None:
    """Every problem is a diagnostic with a position inside the file; what loads cleanly also runs."""
    ruleset = load_texts([("fuzz.yaml", text)], resolvers=RESOLVERS)
    lines = text.count("\n") + 1
    for diag in ruleset.result.diagnostics:
        assert diag.format() and str(diag)
        if diag.position is not None:
            assert diag.position.file == "fuzz.yaml"
            assert 1 <= diag.position.line <= lines and diag.position.column >= 1, diag.format()
    if ruleset.result.ok:
        engine = Engine(ruleset, resolvers=RESOLVERS)  # what loaded cleanly also runs
        engine.warm()


# Mutations of real rules: the default rules file and a rule per condition of the conformance corpus
# (tests/rules/corpus), with spans deleted, duplicated or replaced by syntax and hostile bytes. Real files
# reach deeper into the loader and compiler than pieces assembled from nothing.
CORPUS_DIR = Path(__file__).with_name("corpus")
MUTATION_PIECES = [*PIECES, "\x00", "\ufeff", "\x1b[2J", "&a ", "*a", "<<: *a\n", "!!binary ", "(((((", ")",
                   " in (", " pmatch (", " glob ", " contains ", "%", "%evt.nope", "[", "]", "\\", "\n- "]  # fmt: skip


def _condition_rules() -> str:
    """One rule per condition in the conformance corpus."""
    rules = []
    for path in sorted(CORPUS_DIR.glob("*.yaml")):
        for number, case in enumerate(yaml.safe_load(path.read_text(encoding="utf-8")) or []):
            if isinstance(case, dict) and isinstance(case.get("condition"), str):
                condition = json.dumps(case["condition"])
                rules.append(f"- rule: c{number} {path.stem}\n  desc: d\n  condition: {condition}\n"
                             f"  output: o %proc.name\n  priority: INFO\n")  # fmt: skip
    return "".join(rules)


SEEDS = [DEFAULT_RULES.read_text(encoding="utf-8"), _condition_rules()]


def mutated_rules() -> st.SearchStrategy[str]:
    return mutated_text(SEEDS, MUTATION_PIECES, rounds=5, span=120, junk=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_rules())
def test_any_mutation_of_real_rules_loads_into_diagnostics(text: str) -> None:
    loads_into_diagnostics(text)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300) | mutated_rules().map(lambda t: t.encode("utf-8")[:400] + b"\xff\xfe\x00"))
def test_any_bytes_in_a_rules_file_load_into_diagnostics(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("rules") / "fuzz.yaml"
    path.write_bytes(data)
    ruleset = load_files([path], resolvers=RESOLVERS)
    for diag in ruleset.result.diagnostics:
        assert diag.format() and str(diag)
