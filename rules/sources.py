"""Event sources the engine knows, and which fields each one's rules may read.

Falco gives every event source its own field set: a `source: k8s_audit` rule reads `ka.*`/`jevt.*`, a syscall
rule reads everything else, and a field of the other source is an unknown field (Falco's "filter_check called
with nonexistent field"). One field table serves both here (rules/fields.py); this module draws the line, and
the loader compiles each source's rules with its own compiler so that a macro shared by rules of both sources
is bound, and checked, once per source.

Plugins: rules files declare `required_plugin_versions`; the plugins whose fields and events Falconet provides
natively satisfy them: `container` (container.*, k8s.* from the container runtime), `k8saudit` (the k8s_audit
endpoint and these fields) and `json` (the jevt.* fields).
"""

from __future__ import annotations

from collections.abc import Callable

from .binding import BoundRef
from .errors import Msg, UnknownFieldError
from .parser import FieldRef

SYSCALL = "syscall"
K8S_AUDIT = "k8s_audit"

KNOWN_SOURCES: frozenset[str] = frozenset({SYSCALL, K8S_AUDIT})

NATIVE_PLUGINS: frozenset[str] = frozenset({"container", "k8saudit", "json"})
"""Plugins whose requirement a rules file may declare and that Falconet satisfies natively."""

_K8S_PREFIXES = ("ka.", "jevt.")

# Generic event fields Falco offers every source (the event's number, time, source and the host name).
_GENERIC_FIELDS = frozenset({
    "evt.num", "evt.time", "evt.time.s", "evt.time.iso8601", "evt.datetime", "evt.datetime.s", "evt.rawtime",
    "evt.rawtime.s", "evt.rawtime.ns", "evt.source", "evt.hostname",
})  # fmt: skip


def field_allowed(source: str, name: str) -> bool:
    """May a rule of `source` read the field `name`?"""
    is_k8s = name.startswith(_K8S_PREFIXES)
    if source == K8S_AUDIT:
        return is_k8s or name in _GENERIC_FIELDS
    return not is_k8s


def scoped_bind(source: str, bind: Callable[[FieldRef], BoundRef]) -> Callable[[FieldRef], BoundRef]:
    """`bind` (a field reference -> its binding) restricted to the fields of `source`."""

    def scoped(ref: FieldRef) -> BoundRef:
        if not field_allowed(source, ref.name):
            shown = ref.name if ref.arg is None else f"{ref.name}[{ref.arg}]"
            raise UnknownFieldError(
                Msg.UNKNOWN_FIELD.format(name=shown) + f" (not a field of source {source})", ref.offset
            )
        return bind(ref)

    return scoped
