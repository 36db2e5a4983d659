"""Field transformers: tolower, toupper, b64, basename, len, applied to a field's value before it is compared
or printed (`tolower(proc.name) = bash`, `%toupper(user.name)`), and the value rules of `val()`.

A transformer wraps the field's extractor in another closure at load time, so a transformed check costs one
extra call per event. Semantics follow libsinsp's transformers:

* tolower / toupper: string fields only; the result is a string.
* b64: decodes base64 (standard alphabet, padding optional) from a string or buffer field; text that is not
  valid base64 makes the value unknown (so the check is false, as for any unset field).
* basename: the last path component of a string field; "" when the value ends with "/" (`/usr/bin/`).
* len: the number of characters of a string, bytes of a buffer, or elements of a list field; the result is a
  number (so `len(proc.args) > 100` compares numerically).
* Unknown values stay unknown: transforming None gives None.
* On `any_of` fields (proc.aname without index, fd.ip) the transformer applies to each value; on list fields
  `len` counts the elements and the others apply to each element.

`val(field)` on the right of a comparison is the other field's value for the same event (after its own
transformers); when either side is unknown the comparison is false, like any comparison with an unset field.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Callable
from typing import Any

from .errors import CompileError
from .fields import FieldType

Extractor = Callable[[Any], Any]

NAMES: tuple[str, ...] = ("tolower", "toupper", "b64", "basename", "len")

_STRINGS = (FieldType.STRING, FieldType.PATH)


def _tolower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def _toupper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else v


def _b64(v: Any) -> Any:
    if v is None:
        return None
    raw = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
    raw = raw.strip()
    raw += b"=" * (-len(raw) % 4)
    try:
        out = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    return out.decode("utf-8", "surrogateescape")


def _basename(v: Any) -> Any:
    return posixpath.basename(v) if isinstance(v, str) else v


def _len(v: Any) -> Any:
    if v is None:
        return None
    return len(v)


# name -> (function on one value, accepted input types (None = any), result type (None = same as input))
_TABLE: dict[str, tuple[Callable[[Any], Any], tuple[FieldType, ...] | None, FieldType | None]] = {
    "tolower": (_tolower, _STRINGS, None),
    "toupper": (_toupper, _STRINGS, None),
    "b64": (_b64, (*_STRINGS, FieldType.BUFFER), FieldType.STRING),
    "basename": (_basename, _STRINGS, None),
    "len": (_len, (*_STRINGS, FieldType.BUFFER), FieldType.INT),
}


def apply(
    name: str, extract: Extractor, ftype: FieldType, is_list: bool, any_of: bool
) -> tuple[Extractor, FieldType, bool, bool]:
    """Wraps `extract` in transformer `name`; returns the new (extract, type, is_list, any_of).

    Raises CompileError when the transformer does not apply to the field's type (e.g. toupper(proc.pid)).
    """
    try:
        fn, accepts, result = _TABLE[name]
    except KeyError:
        raise CompileError(f"unknown transformer '{name}'; expected one of {', '.join(NAMES)}") from None
    if name == "len" and is_list:
        # len of a list field counts its elements; the result is one number.
        def count(event: Any) -> Any:
            v = extract(event)
            return None if v is None else len(v)

        return count, FieldType.INT, False, False
    if accepts is not None and ftype not in accepts:
        kinds = " or ".join(t.value for t in accepts)
        raise CompileError(f"transformer '{name}' does not apply to a {ftype.value} field (it takes {kinds})")
    new_type = result or ftype
    if is_list or any_of:

        def each(event: Any) -> Any:
            v = extract(event)
            if v is None:
                return None
            return [x for x in (fn(i) for i in v) if x is not None]

        return each, new_type, is_list, any_of

    def one(event: Any) -> Any:
        return fn(extract(event))

    return one, new_type, False, False


def apply_to_value(name: str, value: Any) -> Any:
    """One transformer on one value (outputs use this for %tolower(field) on an already extracted value)."""
    return _TABLE[name][0](value)
