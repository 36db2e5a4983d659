"""Blind rules: rules whose condition reads a field the live sensor never fills.

Such a field is unset on every event, so each comparison with it is false (rules/fields/registry.py): a rule
that needs it to match never fires, and an exclusion built on it never applies. Nothing fails at load, so
without a word from us a user would believe such a rule protects them. The sensor's side of the fact is
declared once in falconet.model.sensor_fields; the fields the engine answers by itself are declared here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from falconet.model.sensor_fields import SENSOR_FILLS
from falconet.model.text import escape_controls

from .builder import CompiledRule
from .errors import Code, LoadResult
from .fields import FIELDS, PREFIX_FIELDS
from .parser import And, Check, FieldValue, MacroRef, Node, Not, Or
from .sources import SYSCALL

ENGINE_ANSWERS: frozenset[str] = frozenset({"evt.dir", "evt.count", "evt.source", "evt.hostname"})
"""Fields whose value needs no sensor: constants of Falconet's event model (every event is a syscall exit
counted once) and what the engine's resolvers supply (the host name)."""

def catalog_key(name: str) -> str | None:
    """The registry's name for a field as written in a rule (`evt.arg.flags` -> `evt.arg.`); None if unknown."""
    if name in FIELDS:
        return name
    for prefix in PREFIX_FIELDS:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix
    return None


def fill_state(key: str, filled: frozenset[str] = SENSOR_FILLS) -> str:
    """Where a field's live value comes from: "sensor", "engine" (answered without the sensor) or "no"
    (always unset on live events)."""
    if key in filled:
        return "sensor"
    if key in ENGINE_ANSWERS:
        return "engine"
    return "no"


def condition_fields(node: Node, macros: Mapping[str, Node], _seen: frozenset[str] = frozenset()) -> set[str]:
    """Every field a condition reads, through its macros (each macro once per path; a cycle stops)."""
    if isinstance(node, (And, Or)):
        out: set[str] = set()
        for child in node.children:
            out |= condition_fields(child, macros, _seen)
        return out
    if isinstance(node, Not):
        return condition_fields(node.child, macros, _seen)
    if isinstance(node, MacroRef):
        ast = macros.get(node.name)
        if ast is None or node.name in _seen:
            return set()
        return condition_fields(ast, macros, _seen | {node.name})
    if isinstance(node, Check):
        names = {node.field.name}
        if isinstance(node.value, FieldValue):
            names.add(node.value.field.name)
        return names
    return set()


@dataclass(frozen=True, slots=True)
class BlindRule:
    rule: CompiledRule
    fields: tuple[str, ...]  # as written in the rule, sorted


def blind_rules(rules: Iterable[CompiledRule], filled: frozenset[str] = SENSOR_FILLS) -> list[BlindRule]:
    """The syscall rules among `rules` whose condition reads a field the live sensor never fills (and the
    engine does not answer). Callers pass the rules that will run (`enabled_rules(...)`, or the engine's
    enabled set, which includes rules a configuration enabled): a disabled rule cannot fire either way, and
    Falco's files disable many rules that a user enables only deliberately."""
    out: list[BlindRule] = []
    for rule in rules:
        if rule.source != SYSCALL or rule.condition_ast is None:
            continue
        names = condition_fields(rule.condition_ast, rule.macro_asts or {})
        blind = sorted(n for n in names if (k := catalog_key(n)) is not None and fill_state(k, filled) == "no")
        if blind:
            out.append(BlindRule(rule, tuple(blind)))
    return out


def enabled_rules(rules: Iterable[CompiledRule]) -> list[CompiledRule]:
    """The rules a rules file leaves enabled (what `rules validate` checks)."""
    return [r for r in rules if r.enabled]


def add_blind_warnings(
    result: LoadResult, rules: Iterable[CompiledRule], filled: frozenset[str] = SENSOR_FILLS
) -> list[BlindRule]:
    """Adds one warning per blind rule to a load result (so `rules validate` and the daemon's log show it);
    the rule's name comes from a rules file, so its control characters are made visible."""
    found = blind_rules(rules, filled)
    for item in found:
        rule = item.rule
        result.add(
            Code.FIELD_NOT_FILLED,
            f"rule '{escape_controls(rule.name)}' reads {', '.join(item.fields)}, which the live sensor never fills: every "
            "comparison with an unset field is false, so the rule may never match or its exceptions never "
            "apply (falconet rules fields lists what is filled)",
            rule.position,
        )
    return found
