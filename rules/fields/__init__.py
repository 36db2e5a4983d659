"""The field registry: every Falco field name the rules may use, bound to a function that reads it from an Event.

`registry` holds the table and the types (FieldType, FieldSpec, BoundField, resolve, catalog); each family of
fields is a module that registers its definitions into that table when imported: `evt` (evt.*), `fd` (fd.*,
with DNS names through `dns`), `proc` (proc.*, thread.*, user.*, group.*, container.*, k8s.*). This package
imports `registry` first and then every family module, so importing `falconet.rules.fields` (or any module
of it) yields a complete table, and the import graph is a tree: families -> registry, never back.

Adding a family of fields (for example k8s audit `ka.*` or `jevt.*`):

1. Write `rules/fields/<family>.py`. Import what it needs from `.registry` (never from this package, which
   is still being initialised when the family runs):
       from .registry import PREFIX_FIELDS, FieldSpec, FieldType, parse_index, register, simple, with_arg
   and register at import time: `simple(name, type, extractor, desc)` for a field without an argument,
   `with_arg(name, type, build, arg="required"|"optional", desc=...)` for `name[arg]`, `register(FieldSpec(...))`
   for anything else (resolver-dependent extraction, literal matchers), and `PREFIX_FIELDS["x.label."] = spec`
   for fields whose argument follows a dot.
2. Add it to the family imports at the bottom of this file. Nothing else changes: `resolve`, `catalog` and
   `known_fields` see it, and `tests/rules/test_fields.py` checks every registered field's extractor.
"""

from .dns import DnsCache, dns_literal_matcher, dns_output
from .registry import (
    FIELDS,
    INLINE,
    PREFIX_FIELDS,
    ArgMode,
    BoundField,
    Extractor,
    FieldInfo,
    FieldSpec,
    FieldType,
    ResolversLike,
    catalog,
    ip_literal_matcher,
    ip_of,
    known_fields,
    parse_index,
    register,
    resolve,
    simple,
    with_arg,
)

__all__ = [
    "FIELDS",
    "INLINE",
    "PREFIX_FIELDS",
    "ArgMode",
    "BoundField",
    "DnsCache",
    "Extractor",
    "FieldInfo",
    "FieldSpec",
    "FieldType",
    "ResolversLike",
    "catalog",
    "dns_literal_matcher",
    "dns_output",
    "ip_literal_matcher",
    "ip_of",
    "known_fields",
    "parse_index",
    "register",
    "resolve",
    "simple",
    "with_arg",
]

# The families: each registers its fields into `registry` on import (a later registration of the same name
# replaces an earlier one, so two families must not define the same field).
from . import evt, fd, k8saudit, proc  # noqa: E402, F401  (imported for their registrations)
