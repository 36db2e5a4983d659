"""Field binding: a field reference in a condition to its extractor, and the kind that decides how its
literals convert and which operators apply. The compiler's only door to the field registry (fields/).

Kinds fold Falco's many PT_* types to what matters for comparing: "num", "bool", "ip", "net", "buf" (bytes)
and "str". A transformer (tolower, b64, len, ...) changes the extractor and possibly the kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RuleError
from .parser import FieldRef

if TYPE_CHECKING:
    from falconet.model.event import Event

Predicate = Callable[["Event"], bool]
"""A compiled check or condition: takes an event, says whether it holds."""
Extractor = Callable[["Event"], Any]
"""A bound field's reader: takes an event, returns the field's value (None when unknown)."""

_NUM_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "RELTIME", "ABSTIME",
              "DOUBLE", "PORT", "FD", "PID", "ERRNO", "UID", "GID", "SYSCALLID", "SIGTYPE", "MODE", "FLAGS8",
              "FLAGS16", "FLAGS32", "ENUMFLAGS8", "ENUMFLAGS16", "ENUMFLAGS32", "SOCKFAMILY", "BOOL_NUM",
              "L4PROTO", "UINT", "INT", "NUMBER", "NUMERIC", "FLOAT"}  # fmt: skip
_IP_TYPES = {"IPADDR", "IPV4ADDR", "IPV6ADDR", "IP"}
_NET_TYPES = {"IPNET", "IPV4NET", "IPV6NET", "NET"}
_BUF_TYPES = {"BYTEBUF", "BUFFER", "BYTES"}
_BOOL_TYPES = {"BOOL", "BOOLEAN"}
OPS_BY_KIND: dict[str, frozenset[str]] = {
    "num": frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"}),
    "bool": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "ip": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "net": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "buf": frozenset(
        {
            "=",
            "==",
            "!=",
            "contains",
            "in",
            "exists",
            "startswith",
            "endswith",
            "intersects",
            "bcontains",
            "bstartswith",
        }
    ),  # fmt: skip
    "str": frozenset(
        {
            "=",
            "==",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "contains",
            "icontains",
            "startswith",
            "endswith",
            "glob",
            "iglob",
            "in",
            "intersects",
            "pmatch",
            "exists",
            "regex",
        }
    ),  # fmt: skip
}
MATCHER_OPS = frozenset({"=", "==", "!=", "in", "intersects"})
KIND_NAMES = {"num": "numeric", "bool": "boolean", "ip": "ip address", "net": "ip network", "buf": "buffer",
               "str": "string"}  # fmt: skip


def type_name(ftype: Any) -> str:
    name = getattr(ftype, "name", None) or str(ftype)
    return name.rsplit(".", 1)[-1].upper()


def kind_of(ftype: Any) -> str:
    name = type_name(ftype)
    if name in _BOOL_TYPES:
        return "bool"
    if name in _IP_TYPES:
        return "ip"
    if name in _NET_TYPES:
        return "net"
    if name in _BUF_TYPES:
        return "buf"
    if name in _NUM_TYPES or name.startswith(("INT", "UINT")):
        return "num"
    return "str"


@dataclass(frozen=True, slots=True)
class BoundRef:
    """A field reference bound to its extractor, after transformers: what a check reads, and how.

    `any_of`: the extractor returns a list and a check holds when it holds for any element (proc.aname);
    `is_list`: a true list field (in = subset, intersects, exists); `matcher`: builds, per literal, the
    equality predicate for fields whose equality is not `==` on the text (addresses, networks, DNS names).
    """

    extract: Extractor
    kind: str
    is_list: bool
    text: str
    any_of: bool = False
    matcher: Callable[[str], Callable[[Any], bool]] | None = None
    deprecated: str | None = None
    inline: str | None = None  # BoundField.inline: exact Python source over `e` for the value, if any
    check: Callable[[str, tuple[str, ...]], Predicate] | None = None  # BoundField.check (k8s_audit fields)


def bind_field(ref: FieldRef, resolvers: Any = None) -> BoundRef:
    """Binds `ref` through fields.resolve and transformers; errors carry `ref`'s offset."""
    from . import fields  # imported here: fields imports the event model only, never the compiler

    try:
        bound = fields.resolve(ref.name, ref.arg, resolvers)
    except RuleError as exc:
        if exc.offset is None:
            exc.offset = ref.offset
        raise
    extract: Extractor = bound.extract
    ftype: Any = bound.type
    is_list = bool(getattr(bound, "is_list", False))
    any_of = bool(getattr(bound, "any_of", False))
    matcher = getattr(bound, "literal_matcher", None)
    if ref.transformers:
        from . import transformers

        # Innermost first: tolower(b64(x)) decodes, then lowers. A transformed value is compared as text
        # (or as a number after len), so the field's own literal matcher no longer applies.
        matcher = None
        for name in reversed(ref.transformers):
            try:
                extract, ftype, is_list, any_of = transformers.apply(name, extract, ftype, is_list, any_of)
            except RuleError as exc:
                if exc.offset is None:
                    exc.offset = ref.offset
                raise
    # A transformed value is no longer the field's, so its inline form only applies untransformed.
    inline = None if ref.transformers else getattr(bound, "inline", None)
    return BoundRef(
        extract,
        kind_of(ftype),
        is_list,
        str(ref),
        any_of,
        matcher,
        getattr(bound, "deprecated", None),
        inline,
        None if ref.transformers else getattr(bound, "check", None),
    )
