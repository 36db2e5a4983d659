"""Which costly kernel reads the loaded rules need: the data buffers (Falco's snaplen bytes of a
read/recv/send) of which event types, and whether any rule reads the environment beyond the first entries an
exec always carries. Rules that never look at evt.buffer or proc.env cost no copy.

Conservative: a rule reads a value when its condition (through its macros) or its output names a field that
shows it (evt.buffer, the data argument, proc.env, or every argument at once); an unknown macro counts as
reading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .parser import And, Check, FieldValue, MacroRef, Node, Not, Or

BUFFER_FIELDS = frozenset({"evt.buffer", "evt.buflen", "evt.rawarg.data", "evt.arg.data", "evt.args", "evt.arg",
                           "evt.rawarg"})
"""Fields whose value includes the data buffer (`evt.arg[N]` / `evt.rawarg[N]` may be it)."""


ENV_FIELDS = frozenset({"proc.env", "proc.aenv"})
"""Fields whose value is a process's environment, on any event."""
EXEC_ENV_FIELDS = frozenset({"evt.arg.env", "evt.rawarg.env", "evt.args", "evt.arg", "evt.rawarg"})
"""Fields that show the environment on an exec event only (its `env` parameter)."""
EXEC_TYPES = frozenset({"execve", "execveat"})


def condition_reads(node: Node, macros: Mapping[str, Node] | None, fields: frozenset[str],
                    _stack: tuple[str, ...] = ()) -> bool:
    """Whether the condition (through its macros) names one of `fields`; an unknown macro counts as yes."""
    if isinstance(node, Check):
        names = [node.field.name]
        if isinstance(node.value, FieldValue):
            names.append(node.value.field.name)
        return any(n in fields for n in names)
    if isinstance(node, Not):
        return condition_reads(node.child, macros, fields, _stack)
    if isinstance(node, And | Or):
        return any(condition_reads(c, macros, fields, _stack) for c in node.children)
    if isinstance(node, MacroRef):
        ast = (macros or {}).get(node.name)
        if ast is None:
            return True
        if node.name in _stack:
            return False  # the cycle's other visit decides
        return condition_reads(ast, macros, fields, (*_stack, node.name))
    return True


_OUTPUT_FIELD = re.compile(r"%\(?([A-Za-z_][\w.]*)")


def output_reads(output: str, fields: frozenset[str]) -> bool:
    """Whether the output names one of `fields` (`%evt.arg[1]` is evt.arg; `%evt.arg.flags` is not)."""
    return any(m.group(1) in fields for m in _OUTPUT_FIELD.finditer(output))


def rule_reads(ast: Node | None, macros: Mapping[str, Node] | None, output: str, fields: frozenset[str]) -> bool:
    return ast is None or condition_reads(ast, macros, fields) or output_reads(output, fields)


def buffer_event_types(rules: Iterable[tuple[Node | None, Mapping[str, Node] | None, str, frozenset[str], bool]]
                       ) -> frozenset[str] | None:
    """(condition, macros, output, event types, cofinite) per enabled rule -> the event types whose buffer some
    rule reads; None when a rule of every type (or one that cannot be analysed) reads it."""
    out: set[str] = set()
    for ast, macros, output, types, cofinite in rules:
        if not rule_reads(ast, macros, output, BUFFER_FIELDS):
            continue
        if cofinite:
            return None
        out |= types
    return frozenset(out)


def reads_environment(rules: Iterable[tuple[Node | None, Mapping[str, Node] | None, str, frozenset[str], bool]]
                      ) -> bool:
    """Whether some rule reads an environment: proc.env on any event, or the exec's env argument on an exec."""
    for ast, macros, output, types, cofinite in rules:
        if rule_reads(ast, macros, output, ENV_FIELDS):
            return True
        if (cofinite or types & EXEC_TYPES) and rule_reads(ast, macros, output, EXEC_ENV_FIELDS):
            return True
    return False
