"""The Engine API the daemon uses: alerts, rule_matching, enabling at run time, append_output, min priority,
event types for the sensor, and a broken rule that must not stop the others."""

from __future__ import annotations

import pytest
from engine_support import RESOLVERS, make_event

from falconet.model.alert import Priority
from falconet.rules.engine import AppendOutput, Engine, Resolvers
from falconet.rules.errors import RulesLoadError

RULES = """\
- rule: shell
  desc: a shell ran
  output: "shell %proc.name by %user.name"
  priority: WARNING
  tags: [process, mitre_execution]
  condition: evt.type = execve and proc.name = bash
- rule: any exec
  desc: anything ran
  output: "exec %proc.name"
  priority: INFO
  tags: [process]
  condition: evt.type in (execve, execveat)
- rule: etc open
  desc: open below /etc
  output: "open %fd.name"
  priority: ERROR
  tags: [filesystem]
  condition: evt.type = openat and fd.name startswith /etc/
"""


def _engine(**options: object) -> Engine:
    return Engine.from_texts([("api.yaml", RULES)], resolvers=RESOLVERS, **options)


def test_alert_fields() -> None:
    engine = _engine()
    event = make_event()
    (alert,) = engine.process(event)
    assert alert.rule == "shell" and alert.priority is Priority.WARNING and alert.source == "syscall"
    assert alert.output == "shell bash by alice"
    assert alert.output_fields == {"proc.name": "bash", "user.name": "alice"}
    assert alert.tags == ["process", "mitre_execution"] and alert.hostname == "test-host"
    assert alert.time_ns == event.ts and alert.cursor is None
    assert engine.stats.events == 1 and engine.stats.alerts == 1 and engine.stats.by_rule == {"shell": 1}


def test_rule_matching_first_and_all() -> None:
    assert [a.rule for a in _engine().process(make_event())] == ["shell"]
    assert [a.rule for a in _engine(rule_matching="all").process(make_event())] == ["shell", "any exec"]
    with pytest.raises(ValueError, match="rule_matching"):
        _engine(rule_matching="some")


def test_enable_and_disable_at_run_time() -> None:
    engine = _engine(rule_matching="all")
    assert engine.enable_rules("shell", False) == 1
    assert [a.rule for a in engine.process(make_event())] == ["any exec"]
    assert engine.enable_tag("process", False) == 2
    assert engine.process(make_event()) == []
    assert engine.enable_rules("*", True) == 3
    assert [a.rule for a in engine.process(make_event())] == ["shell", "any exec"]
    assert engine.is_enabled("etc open") and not engine.is_enabled("no such rule")


def test_disabled_tags_and_enabled_rules_options() -> None:
    engine = _engine(rule_matching="all", disabled_tags=["process"], enabled_rules=["any exec"])
    assert [r.name for r in engine.enabled_rules] == ["any exec", "etc open"]


def test_min_priority() -> None:
    engine = _engine(rule_matching="all", min_priority=Priority.WARNING)
    assert [r.name for r in engine.enabled_rules] == ["shell", "etc open"]


def test_event_types_for_the_sensor() -> None:
    engine = _engine()
    assert engine.event_types == frozenset({"execve", "execveat", "openat"})
    engine.enable_tag("filesystem", False)
    assert engine.event_types == frozenset({"execve", "execveat"})
    wide = Engine.from_texts(
        [("w.yaml", "- rule: w\n  desc: d\n  output: o\n  priority: INFO\n  condition: proc.name = bash\n")],
        resolvers=RESOLVERS,
    )
    assert wide.event_types is None  # a rule without an evt.type restriction sees every event
    assert [w.code.value for w in wide.load_result.warnings] == ["LOAD_NO_EVTTYPE"]


def test_append_output_text_and_fields() -> None:
    engine = _engine(append_output="container=%container.id")
    (alert,) = engine.process(make_event())
    assert alert.output == "shell bash by alice container=host"
    assert alert.output_fields["container.id"] == "host"
    entries = [
        AppendOutput.from_config({"match": {"tags": ["filesystem"]}, "extra_output": "uid=%user.uid"}),
        {"match": {"rule": "shell"}, "extra_fields": ["proc.pid", {"who": "%user.name/%user.uid"}]},
    ]
    engine = _engine(append_output=entries)
    (alert,) = engine.process(make_event())
    assert alert.output == "shell bash by alice"  # extra_fields go to output_fields only
    assert alert.output_fields["proc.pid"] == 4242 and alert.output_fields["who"] == "alice/1000"
    (alert,) = engine.process(make_event({"type": "openat", "fd": {"num": 3, "name": "/etc/hosts"}}))
    assert alert.output == "open /etc/hosts uid=1000"
    with pytest.raises(ValueError, match="extra_fields"):
        AppendOutput.from_config({"extra_fields": [3]})


def test_hostname_comes_from_the_resolver_per_alert() -> None:
    names = iter(["a", "b"])
    engine = Engine.from_texts([("api.yaml", RULES)], resolvers=Resolvers(lambda: next(names), lambda d: []))
    assert [engine.process(make_event())[0].hostname for _ in range(2)] == ["a", "b"]


def test_a_rule_that_raises_is_counted_and_the_others_still_run() -> None:
    engine = _engine(rule_matching="all")
    # fd.name of the wrong type (a replayed file with garbage): startswith raises inside 'etc open' only.
    bad = make_event({"type": "openat", "fd": {"num": 3, "name": 42}})
    assert engine.process(bad) == []
    assert engine.stats.eval_errors == 1
    assert [
        a.rule for a in engine.process(make_event({"type": "openat", "fd": {"num": 3, "name": "/etc/x"}}))
    ] == ["etc open"]


def test_load_errors_raise_with_the_whole_result() -> None:
    bad = RULES + "- rule: broken\n  desc: d\n  output: o\n  priority: INFO\n  condition: proc.nope = 1\n"
    bad += "- rule: broken2\n  desc: d\n  output: o\n  priority: LOUD\n  condition: proc.name = x\n"
    with pytest.raises(RulesLoadError) as info:
        Engine.from_texts([("bad.yaml", bad)], resolvers=RESOLVERS)
    assert len(info.value.result.errors) == 2
    assert "2 error(s) loading rules; first: bad.yaml:" in str(info.value)


def test_events_of_another_source_match_no_syscall_rule() -> None:
    engine = _engine(rule_matching="all")
    event = make_event({"source": "k8s_audit"})
    assert engine.process(event) == [] and engine.matching_rules(event) == []
    assert engine.stats.other_source == 1


def test_warm_builds_every_type_up_front() -> None:
    engine = _engine()
    assert engine.warm() == 3  # execve, execveat, openat
    assert engine.warm() == 0
    assert [a.rule for a in engine.process(make_event())] == ["shell"]


def test_a_deeply_nested_condition_runs_through_its_closures() -> None:
    cond = "proc.name = bash"
    for i in range(45):  # 90 parentheses deep: within the parser's limit, beyond what generated code inlines
        cond = f"proc.name = bash and (user.uid = {i} or ({cond}))"
    cond = f"evt.type = execve and ({cond})"
    engine = Engine.from_texts(
        [("deep.yaml", f"- rule: deep\n  desc: d\n  output: o\n  priority: INFO\n  condition: {cond}\n")],
        resolvers=RESOLVERS,
    )
    assert [a.rule for a in engine.process(make_event())] == ["deep"]
    assert engine.process(make_event({"proc": {"name": "sh"}})) == []
    assert engine.stats.eval_errors == 0
