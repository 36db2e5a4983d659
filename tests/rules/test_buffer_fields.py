"""Which costly kernel reads the loaded rules ask for (rules/buffer_fields.py): data buffers per event type,
and the whole environment of an exec."""

from __future__ import annotations

from falconet.rules.engine import Engine


def _engine(*rules: tuple[str, str, str]) -> Engine:
    text = "".join(
        f"- rule: r{i}\n  desc: d\n  condition: {cond}\n  output: {out}\n  priority: NOTICE\n"
        for i, (cond, out, _) in enumerate(rules)
    )
    macros = "".join(r[2] for r in rules)
    return Engine.from_texts([("t.yaml", macros + text)])


def test_buffer_types_come_from_conditions_macros_and_outputs() -> None:
    none = _engine(("evt.type = recvfrom and fd.type = ipv4", "x %fd.name", ""))
    assert none.buffer_event_types() == frozenset() and not none.reads_environment()
    cond = _engine(("evt.type = recvfrom and evt.buffer bcontains cafebabe", "x", ""))
    assert cond.buffer_event_types() == frozenset({"recvfrom"})
    macro = _engine(("evt.type in (read, sendto) and is_get", "x",
                     "- macro: is_get\n  condition: evt.rawarg.data startswith GET\n"))
    assert macro.buffer_event_types() == frozenset({"read", "sendto"})
    out = _engine(("evt.type = write", "wrote %evt.buffer", ""))
    assert out.buffer_event_types() == frozenset({"write"})
    anytype = _engine(("evt.buffer contains secret", "x", ""))
    assert anytype.buffer_event_types() is None  # a rule of every type reads it: copy everywhere


def test_environment_is_read_whole_only_for_rules_that_look() -> None:
    assert _engine(("evt.type = execve and proc.env contains GLIBC_TUNABLES", "x", "")).reads_environment()
    assert _engine(("evt.type = execve and proc.name = sh", "env=%proc.env", "")).reads_environment()
    assert not _engine(("evt.type = execve and proc.name = sh", "x %proc.cmdline", "")).reads_environment()
    # the exec's env argument counts on exec events only
    assert _engine(("evt.type = execve and proc.name = sh", "x %evt.args", "")).reads_environment()
    assert not _engine(("evt.type = openat and proc.name = sh", "x %evt.args", "")).reads_environment()
    assert not _engine(("evt.type = execve and proc.name = sh", "x %evt.arg.flags", "")).reads_environment()
    assert _engine(("evt.type = execve and proc.name = sh", "x %evt.arg[5]", "")).reads_environment()
