"""Which event types' data buffers the loaded rules read: the sensor copies a buffer (Falco's snaplen bytes
of a read/recv/send) only for those, so rules that never look at evt.buffer cost no copy.

Conservative: a rule reads the buffer when its condition (through its macros) or its output names a field that
shows it (evt.buffer, evt.buflen, the data argument, or every argument at once); an unknown macro counts as
reading it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .parser import And, Check, FieldValue, MacroRef, Node, Not, Or

BUFFER_FIELDS = frozenset({"evt.buffer", "evt.buflen", "evt.rawarg.data", "evt.arg.data", "evt.args", "evt.arg",
                           "evt.rawarg"})
"""Fields whose value includes the data buffer (`evt.arg[N]` / `evt.rawarg[N]` may be it)."""


def condition_reads_buffer(node: Node, macros: Mapping[str, Node] | None, _stack: tuple[str, ...] = ()) -> bool:
    if isinstance(node, Check):
        names = [node.field.name]
        if isinstance(node.value, FieldValue):
            names.append(node.value.field.name)
        return any(n in BUFFER_FIELDS for n in names)
    if isinstance(node, Not):
        return condition_reads_buffer(node.child, macros, _stack)
    if isinstance(node, And | Or):
        return any(condition_reads_buffer(c, macros, _stack) for c in node.children)
    if isinstance(node, MacroRef):
        ast = (macros or {}).get(node.name)
        if ast is None:
            return True
        if node.name in _stack:
            return False  # the cycle's other visit decides
        return condition_reads_buffer(ast, macros, (*_stack, node.name))
    return True


def output_reads_buffer(output: str) -> bool:
    return any(f"%{name}" in output or f"%{name}[" in output for name in BUFFER_FIELDS) or "%evt.arg[" in output


def buffer_event_types(rules: Iterable[tuple[Node | None, Mapping[str, Node] | None, str, frozenset[str], bool]]
                       ) -> frozenset[str] | None:
    """(condition, macros, output, event types, cofinite) per enabled rule -> the event types whose buffer some
    rule reads; None when a rule of every type (or one that cannot be analysed) reads it."""
    out: set[str] = set()
    for ast, macros, output, types, cofinite in rules:
        reads = ast is None or condition_reads_buffer(ast, macros) or output_reads_buffer(output)
        if not reads:
            continue
        if cofinite:
            return None
        out |= types
    return frozenset(out)
