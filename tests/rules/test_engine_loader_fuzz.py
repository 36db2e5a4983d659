"""Loading never raises, whatever the file says: every problem becomes a diagnostic with a position in the
file (a broken rules file must not take down a running daemon, and `validate` must report, not crash)."""

from __future__ import annotations

from engine_support import RESOLVERS
from hypothesis import given, settings
from hypothesis import strategies as st

from falconet.rules.engine import Engine
from falconet.rules.loader import load_texts

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
