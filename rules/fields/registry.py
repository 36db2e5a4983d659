"""Field extractors: every Falco field name the rules use, bound to a function that reads it from an Event.

The compiler calls `resolve(name, arg)` once per field reference at load time and gets a `BoundField`; at
evaluation time it only calls `BoundField.extract(event)`, a small closure over the enriched event, so no name
lookup or parsing happens per event. Families live in their own modules of this package (evt.py, fd.py,
proc.py) and register into one table here; `resolve` raises UnknownFieldError for anything no family
provides. This module imports no family module, so the package has no import cycle (see __init__.py).

Values and types (what the compiler may rely on):

* `FieldType` says how literals compare: STRING/PATH values are `str`; INT, PORT, RELTIME (ns) and ABSTIME
  (ns since the epoch) are `int`; BOOL is `bool`; BUFFER is `bytes`; IPADDR and IPNET are IP addresses as
  text (canonical form, as `ipaddress` prints them).
* Unknown values are None. Falco's rule for an unset field: every comparison with it is false (`=`, `!=`,
  `in`, `contains`, ... alike) and `exists` is false, so `not <comparison>` is true. Outputs print `<NA>` and
  output_fields carry null.
* `any_of`: the field stands for several values and a comparison holds when it holds for ANY of them: Falco's
  `proc.aname`/`proc.apid`/`proc.aexe`... without an index (any ancestor, parent first), `fd.ip`, `fd.port`,
  `fd.net`, `fd.proto` (client or server side). `extract` returns a list; an empty list behaves as unset.
* `is_list`: a true list field (Falco's EPF_IS_LIST), `extract` returns a list; operators are `in`
  (subset), `intersects` and `exists`.
* `literal_matcher`: set for fields whose equality is not plain `==` on the literal text: IPADDR and IPNET
  (a literal may be an address or a CIDR network; `fd.net = "10.0.0.0/8"` means "inside that network") and the
  DNS-name fields `fd.*ip.name` (the literal is a domain; it matches when the address is one of the domain's
  addresses from the injected DNS resolver). For these the compiler calls `literal_matcher(text)` once per
  literal (it raises CompileError for a malformed address) and uses the returned predicate for `=`, `!=`
  (negated) and `in` (any predicate).
* `output(event)` is the value for outputs and output_fields when it differs from the comparison value
  (evt.time prints as a clock time; fd.sip.name prints the domain name).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CompileError, Msg, UnknownFieldError

if TYPE_CHECKING:
    from falconet.model.event import Event

    from .dns import DnsCache

Extractor = Callable[["Event"], Any]


class FieldType(Enum):
    """How a field's values compare (Falco's PT_* types, folded to what matters for comparisons)."""

    STRING = "string"
    PATH = "path"  # a file system path: a string (pmatch and glob are typical)
    INT = "int"
    PORT = "port"
    RELTIME = "reltime"  # a duration in ns
    ABSTIME = "abstime"  # ns since the epoch
    BOOL = "bool"
    IPADDR = "ipaddr"
    IPNET = "ipnet"
    BUFFER = "buffer"

    @property
    def is_numeric(self) -> bool:
        return self in _NUMERIC

    @property
    def is_string(self) -> bool:
        return self in (FieldType.STRING, FieldType.PATH)


_NUMERIC = frozenset({FieldType.INT, FieldType.PORT, FieldType.RELTIME, FieldType.ABSTIME})


class ResolversLike(Protocol):
    """What field extraction needs from the outside world: the engine's `Resolvers` is one. `dns_cache` is
    the engine's only DNS cache (fields.dns), built by the resolvers over their plain `dns` callable."""

    @property
    def hostname(self) -> Callable[[], str]: ...

    @property
    def dns(self) -> Callable[[str], list[str]]: ...

    @property
    def dns_cache(self) -> DnsCache: ...


@dataclass(frozen=True, slots=True)
class BoundField:
    """A field reference compiled for evaluation. See the module docstring for the value rules."""

    name: str
    arg: str | None
    type: FieldType
    extract: Extractor
    is_list: bool = False
    any_of: bool = False
    literal_matcher: Callable[[str], Callable[[Any], bool]] | None = None
    output: Extractor | None = None
    deprecated: str | None = None  # a warning text for fields Falco deprecates
    # A Python expression over `e` that computes exactly what `extract(e)` returns, for compilers that
    # generate code (one attribute walk instead of a call); None when the field has no such form. It uses
    # only `e`, builtins and walrus temporaries named `_f`/`_p`.
    inline: str | None = None
    # Fields that compare by their own semantics (the k8s_audit fields, rules/k8saudit_values.py): given the
    # operator and the literal texts, returns the whole check; the compiler then builds nothing itself.
    check: Callable[[str, tuple[str, ...]], Callable[[Any], bool]] | None = None

    @property
    def display(self) -> str:
        """The field as written in rules, e.g. `proc.aname[2]` (also the key in output_fields)."""
        return f"{self.name}[{self.arg}]" if self.arg is not None else self.name

    def output_value(self, event: Event) -> Any:
        """The value for outputs (None when unknown)."""
        return (self.output or self.extract)(event)


# --- the registry -------------------------------------------------------------------------------------------

ArgMode = str  # "none": no argument allowed; "required"; "optional"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field name: how to build its BoundField from the (optional) argument."""

    name: str
    type: FieldType
    build: Callable[[str | None], Extractor]
    arg: ArgMode = "none"
    is_list: bool = False
    any_of_without_arg: bool = False
    desc: str = ""
    matcher: Callable[[str | None, ResolversLike | None], Callable[[str], Callable[[Any], bool]]] | None = (
        None
    )
    output: Callable[[str | None, ResolversLike | None], Extractor] | None = None
    deprecated: str | None = None
    check_arg: Callable[[str], str | None] | None = None  # returns an error text for a bad argument
    # For fields that need the daemon's resolvers to extract (evt.hostname) or whose type depends on the
    # argument (evt.rawarg.NAME): they override `build` / `type`.
    build_with_resolvers: Callable[[str | None, ResolversLike | None], Extractor] | None = None
    type_for_arg: Callable[[str | None], FieldType] | None = None
    # For fields with their own comparison semantics: argument -> BoundField.check.
    check: Callable[[str | None], Callable[[str, tuple[str, ...]], Callable[[Any], bool]]] | None = None


# Inline forms of the fields nearly every rule reads (see BoundField.inline); tests check each one against
# its extractor.
INLINE: dict[str, str] = {
    "evt.type": "e.type",
    "evt.num": "e.num",
    "evt.rawres": "e.res",
    "evt.source": "e.source",
    "proc.pid": "e.proc.pid",
    "proc.ppid": "e.proc.ppid",
    "proc.vpid": "e.proc.vpid",
    "proc.tty": "e.proc.tty",
    "proc.sid": "e.proc.sid",
    "proc.cwd": "e.proc.cwd",
    "proc.name": "(e.proc.name or None)",
    "proc.exe": "(e.proc.exe or None)",
    "proc.exepath": "(e.proc.exepath or None)",
    "proc.pname": "((_p.name or None) if (_p := e.proc.parent) is not None else None)",
    "proc.pexe": "((_p.exe or None) if (_p := e.proc.parent) is not None else None)",
    "proc.pexepath": "((_p.exepath or None) if (_p := e.proc.parent) is not None else None)",
    "proc.is_exe_upper_layer": "e.proc.exe_upper_layer",
    "proc.is_exe_from_memfd": "e.proc.exe_from_memfd",
    "proc.is_exe_writable": "e.proc.exe_writable",
    "user.uid": "e.proc.user.uid",
    "user.name": "e.proc.user.name",
    "user.loginuid": "e.proc.user.loginuid",
    "group.gid": "e.proc.group.gid",
    "container.id": "e.container.id",
    "fd.num": "(None if (_f := e.fd) is None else _f.num)",
    "fd.type": "(None if (_f := e.fd) is None else _f.type)",
    "fd.name": "(None if (_f := e.fd) is None else _f.name)",
}

FIELDS: dict[str, FieldSpec] = {}
PREFIX_FIELDS: dict[str, FieldSpec] = {}
"""Fields whose argument follows a dot (evt.arg.NAME, container.label.NAME): keyed by the prefix with dot."""


def register(spec: FieldSpec) -> None:
    FIELDS[spec.name] = spec


def simple(
    name: str, ftype: FieldType, fn: Extractor, desc: str = "", *, is_list: bool = False,
    deprecated: str | None = None,
) -> None:  # fmt: skip
    """Registers a field that takes no argument."""
    register(
        FieldSpec(name, ftype, lambda _arg: fn, "none", is_list=is_list, desc=desc, deprecated=deprecated)
    )


def with_arg(
    name: str, ftype: FieldType, build: Callable[[str | None], Extractor], arg: ArgMode = "required",
    desc: str = "", *, any_of_without_arg: bool = False, check_arg: Callable[[str], str | None] | None = None,
) -> None:  # fmt: skip
    register(FieldSpec(name, ftype, build, arg, any_of_without_arg=any_of_without_arg, desc=desc,
                       check_arg=check_arg))  # fmt: skip


def resolve(name: str, arg: str | None = None, resolvers: ResolversLike | None = None) -> BoundField:
    """Binds a field reference. Raises UnknownFieldError (unknown name, or an argument where none is taken)
    or CompileError (missing or malformed argument); positions are left to the caller.

    `resolvers` supply what needs I/O (the host name for evt.hostname, DNS for fd.*ip.name); without them
    those fields are unknown (None) and DNS-name literals match only an address written out literally.
    """
    spec = FIELDS.get(name)
    if spec is None:
        # evt.arg.flags, container.label.app: the argument is written after a dot.
        for prefix, pspec in PREFIX_FIELDS.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                if arg is not None:
                    raise UnknownFieldError(Msg.UNKNOWN_FIELD.format(name=f"{name}[{arg}]"))
                return _bind(pspec, name[len(prefix) :], display_name=name, resolvers=resolvers)
        raise UnknownFieldError(Msg.UNKNOWN_FIELD.format(name=name if arg is None else f"{name}[{arg}]"))
    if arg is not None and spec.arg == "none":
        raise UnknownFieldError(
            Msg.UNKNOWN_FIELD.format(name=f"{name}[{arg}]") + " (this field takes no argument)"
        )
    if arg is None and spec.arg == "required":
        raise CompileError(f"field '{name}' requires an argument, e.g. {name}[...]")
    return _bind(spec, arg, display_name=None, resolvers=resolvers)


def _bind(
    spec: FieldSpec, arg: str | None, *, display_name: str | None, resolvers: ResolversLike | None
) -> BoundField:
    if arg is not None and spec.check_arg is not None:
        problem = spec.check_arg(arg)
        if problem:
            raise UnknownFieldError(problem)
    if spec.build_with_resolvers is not None:
        extract = spec.build_with_resolvers(arg, resolvers)
    else:
        extract = spec.build(arg)
    inline = INLINE.get(spec.name) if arg is None and display_name is None else None
    return BoundField(
        inline=inline,
        name=display_name or spec.name,
        arg=None if display_name else arg,
        type=spec.type_for_arg(arg) if spec.type_for_arg else spec.type,
        extract=extract,
        is_list=spec.is_list,
        any_of=spec.any_of_without_arg and arg is None,
        literal_matcher=spec.matcher(arg, resolvers) if spec.matcher else None,
        output=spec.output(arg, resolvers) if spec.output else None,
        deprecated=spec.deprecated,
        check=spec.check(arg) if spec.check else None,
    )


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One entry of the field catalog (for `falconet rules fields` and documentation)."""

    name: str  # prefix fields end with a dot: evt.arg.
    type: FieldType
    arg: ArgMode
    desc: str
    deprecated: str | None


def catalog() -> list[FieldInfo]:
    """Every field Falconet provides, sorted by name."""
    items = [FieldInfo(n, s.type, s.arg, s.desc, s.deprecated) for n, s in FIELDS.items()]
    items += [FieldInfo(p, s.type, "required", s.desc, s.deprecated) for p, s in PREFIX_FIELDS.items()]
    return sorted(items, key=lambda i: i.name)


def known_fields() -> list[str]:
    """Every field name (prefix fields end with a dot), for `falconet rules fields` and the docs."""
    return sorted(FIELDS) + sorted(PREFIX_FIELDS)


# --- helpers shared by the family modules ------------------------------------------------------------------


def parse_index(arg: str | None, field_name: str) -> int:
    """A numeric field argument (proc.aname[2]); raises CompileError with a sentence otherwise."""
    if arg is None:
        raise CompileError(f"field '{field_name}' requires a numeric argument, e.g. {field_name}[1]")
    try:
        n = int(arg)
    except ValueError:
        raise CompileError(f"field '{field_name}' requires a numeric argument, not '{arg}'") from None
    if n < 0:
        raise CompileError(f"field '{field_name}' requires a non-negative argument, not '{arg}'")
    return n


@functools.lru_cache(maxsize=4096)
def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def ip_literal_matcher(field_name: str) -> Callable[[str], Callable[[Any], bool]]:
    """For IPADDR/IPNET fields: a literal address matches that address, a CIDR literal any address inside."""

    def make(text: str) -> Callable[[Any], bool]:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise CompileError(Msg.BAD_NET.format(value=text, field=field_name)) from None
        if net.num_addresses == 1:
            want = net.network_address

            def same(value: Any) -> bool:
                return value is not None and ip_of(str(value)) == want

            return same

        def inside(value: Any) -> bool:
            if value is None:
                return False
            addr = ip_of(str(value))
            return addr is not None and addr.version == net.version and addr in net

        return inside

    return make
