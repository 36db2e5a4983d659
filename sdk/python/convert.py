"""Alert <-> `falco.outputs.response`: the one mapping between Falconet's alert and the wire, for server and SDK.

Falco's `output_fields` is a map of strings in which non-string values are JSON-encoded, so a Falco client sees
`"1234"` for a pid. Falconet keeps that for compatibility and adds `output_fields_json`, the keys whose values
were encoded, so that our clients restore the typed values of the alert JSON exactly (a string "1234" stays a
string, the number 1234 comes back a number).
"""

from __future__ import annotations

import json
import logging
import math
import re

from falconet.model.alert import Alert, Cursor, OutputValue, Priority
from falconet.model.alert_checks import AlertInvalid
from google.protobuf.unknown_fields import UnknownFieldSet

from falconet.sdk.api.falco import outputs_pb2, schema_pb2

__all__ = [
    "alert_to_proto", "alert_from_proto", "alert_to_wire", "cursor_of", "decode_or_skip", "encode_typed_value",
    "decode_received", "received_wire", "source_enum",
]

log = logging.getLogger("falconet.sdk")

# Falco's deprecated source enum: names it cannot express are PLUGIN, as Falco >= 0.31 does.
_SOURCE_ENUM: dict[str, int] = {
    "syscall": schema_pb2.SYSCALL,
    "k8s_audit": schema_pb2.K8S_AUDIT,
    "internal": schema_pb2.INTERNAL,
}


def source_enum(source: str) -> int:
    """The value of the deprecated `source_deprecated` enum for a source name."""
    return _SOURCE_ENUM.get(source, schema_pb2.PLUGIN)


def encode_typed_value(value: OutputValue) -> str:
    """A non-string output field value as Falco's JSON output spells it (what `output_fields` carries)."""
    kind = type(value)
    # The common types skip json.dumps (this runs once per alert on the publish path).
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return json.dumps(value)


def _encode_fields(fields: dict[str, OutputValue]) -> tuple[dict[str, str], list[str]]:
    strings: dict[str, str] = {}
    typed: list[str] = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            strings[key] = value  # type: ignore[assignment]
            continue
        if isinstance(value, str):
            strings[key] = value
            continue
        strings[key] = encode_typed_value(value)
        typed.append(key)
    typed.sort()  # a stable order, so equal alerts give equal bytes
    return strings, typed


def alert_to_proto(alert: Alert) -> outputs_pb2.response:
    """The alert as Falco's response message, plus Falconet's cursor and `output_fields_json`."""
    strings, typed = _encode_fields(alert.output_fields)
    resp = outputs_pb2.response(
        priority=int(alert.priority),  # type: ignore[arg-type]
        source_deprecated=source_enum(alert.source),  # type: ignore[arg-type]
        rule=alert.rule,
        output=alert.output,
        output_fields=strings,
        hostname=alert.hostname,
        tags=alert.tags,
        source=alert.source,
        output_fields_json=typed,
    )
    stamp = resp.time
    stamp.seconds, stamp.nanos = divmod(alert.time_ns, 1_000_000_000)
    cursor = alert.cursor
    if cursor is not None:
        # Setting the sub-message's fields in place marks it present, without building a second message.
        resp.cursor.epoch = cursor.epoch
        resp.cursor.sequence = cursor.sequence
    return resp


def alert_to_wire(alert: Alert) -> bytes:
    """The serialized response message (what the hub caches once per alert)."""
    wire: bytes = alert_to_proto(alert).SerializeToString()
    return wire


def received_wire(
    resp: outputs_pb2.response, alert: Alert, serialized: bytes | None = None, typed_canonical: bool = False
) -> bytes:
    """The wire form of a received message that `alert` was decoded from strictly, without re-encoding it.

    Makes `resp` (changed in place) hold exactly what `alert_to_proto(alert)` holds without a cursor, and
    returns its serialization: `serialized` (resp as received, serialized) when nothing had to change, else one
    new C-level serialization. Either costs a fraction of building a new message. What changes is what the
    conversion would normalise: unknown fields at any depth (they must never pass on to subscribers; protobuf's
    Python runtime keeps a map entry holding one as an unknown field of the response, which Go or Rust clients
    would read as an entry), a cursor the sender set, the time marked present, the hostname and the source as
    `alert` has them (filled or derived), the deprecated source enum, and, unless `typed_canonical` (from
    `decode_received`) says they already are, the typed values and their `output_fields_json` list spelled and
    ordered as `_encode_fields` spells them. `alert` must come from a strict decode of `resp` (so every listed
    key that exists decoded to a number, boolean or null). tests/server/test_server_received_wire.py holds the
    two paths equal on hostile messages.
    """
    changed = False
    if resp.HasField("cursor"):
        resp.ClearField("cursor")
        changed = True
    if not resp.HasField("time"):
        resp.time.SetInParent()
        changed = True
    if len(UnknownFieldSet(resp)) or len(UnknownFieldSet(resp.time)):
        resp.DiscardUnknownFields()
        changed = True
    if resp.hostname != alert.hostname:
        resp.hostname = alert.hostname
        changed = True
    if resp.source != alert.source:
        resp.source = alert.source
        changed = True
    deprecated = source_enum(alert.source)
    if resp.source_deprecated != deprecated:
        resp.source_deprecated = deprecated  # type: ignore[assignment]
        changed = True
    if not typed_canonical and resp.output_fields_json:
        _respell_typed(resp, alert.output_fields)
        changed = True
    if serialized is not None and not changed:
        return serialized
    wire: bytes = resp.SerializeToString()
    return wire


def _respell_typed(resp: outputs_pb2.response, fields: dict[str, OutputValue]) -> None:
    listed = resp.output_fields_json
    typed = sorted({key for key in listed if key in fields})
    del listed[:]
    listed.extend(typed)
    strings = resp.output_fields
    for key in typed:
        strings[key] = encode_typed_value(fields[key])


class _NotFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NotFinite(name)


_LITERALS: dict[str, object] = {"null": None, "true": True, "false": False}
_NO_LITERAL = object()
_PLAIN_INT = re.compile(r"0|-?[1-9][0-9]{0,19}").fullmatch
"""An integer as JSON (and `encode_typed_value`) spells it; longer ones take json's path and its errors."""
_TYPED_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Made once: `json.loads` with any keyword builds a new decoder per call, on the path of every alert."""


def decode_typed_value(raw: str) -> OutputValue:
    """The value of a field listed in `output_fields_json`: a JSON number, boolean or null.

    Raises ValueError for anything else, including NaN, Infinity and numbers too large for a double, which
    Python's json would accept but no JSON reader in Go or Rust does.
    """
    fast = _LITERALS.get(raw, _NO_LITERAL)
    if fast is not _NO_LITERAL:
        return fast  # type: ignore[return-value]
    if _PLAIN_INT(raw):  # what JSON would read, at half the cost (pids, uids, times: most typed values)
        return int(raw)
    try:
        value = _TYPED_DECODER.decode(raw)
    except _NotFinite:
        raise ValueError(f"{raw!r} is not a finite number") from None
    except ValueError:
        raise ValueError(f"marked JSON but holds {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    if value is not None and not isinstance(value, int | float | bool):
        raise ValueError(f"must hold a JSON number, boolean or null, not {raw!r}")
    return value


def alert_from_proto(resp: outputs_pb2.response, *, strict: bool = False) -> Alert:
    """The alert a response message carries.

    A client must survive any alert the wire can carry, so by default a field marked JSON that does not hold
    a finite JSON scalar is kept as the string it is. `strict` (what the server's input uses) raises
    ValueError naming the field instead. Either way an unknown priority number raises ValueError: no
    `Priority` can hold it (clients skip such an alert with a warning, see `decode_or_skip`).
    """
    return _alert(resp, _output_fields(resp, strict, False)[0])


def decode_received(resp: outputs_pb2.response) -> tuple[Alert, bool]:
    """`alert_from_proto(resp, strict=True)`, and whether its typed fields are already as `alert_to_proto`
    writes them (`output_fields_json` sorted, each key once and present, each value spelled as
    `encode_typed_value` spells it), for `received_wire`: checked while decoding, where the values are at hand."""
    fields, canonical = _output_fields(resp, True, True)
    return _alert(resp, fields), canonical


def _output_fields(resp: outputs_pb2.response, strict: bool, check: bool) -> tuple[dict[str, OutputValue], bool]:
    fields: dict[str, OutputValue] = dict(resp.output_fields)
    listed = resp.output_fields_json
    if not listed:
        return fields, True
    keys = dict.fromkeys(listed)  # each once: a key listed twice must not decode twice
    canonical = check and len(keys) == len(listed)
    previous: str | None = None
    for key in keys:
        if key in fields:
            raw = fields[key]
            try:
                value = fields[key] = decode_typed_value(raw)  # type: ignore[arg-type]
            except ValueError as exc:
                if strict:
                    raise AlertInvalid(f"output_fields[{key!r}]", str(exc)) from None
                continue
            if canonical and ((previous is not None and key <= previous) or encode_typed_value(value) != raw):
                canonical = False
            previous = key
        else:
            canonical = False  # listed without a field: the conversion leaves it out
    return fields, canonical


def _alert(resp: outputs_pb2.response, fields: dict[str, OutputValue]) -> Alert:
    try:
        priority = Priority(resp.priority)
    except ValueError:
        raise ValueError(f"unknown priority number {resp.priority}") from None
    source = resp.source
    if not source:
        # A Falco server older than 0.31 sends only the enum.
        try:
            source = schema_pb2.source.Name(resp.source_deprecated).lower()
        except ValueError:  # a number this enum does not name: a plugin's, as Falco treats unknown sources
            source = "plugin"
    cursor = None
    if resp.HasField("cursor"):
        cursor = Cursor(resp.cursor.epoch, resp.cursor.sequence)
    return Alert(
        time_ns=resp.time.seconds * 1_000_000_000 + resp.time.nanos,
        rule=resp.rule,
        priority=priority,
        source=source,
        output=resp.output,
        output_fields=fields,
        tags=list(resp.tags),
        hostname=resp.hostname,
        cursor=cursor,
    )


def decode_or_skip(resp: outputs_pb2.response) -> Alert | None:
    """`alert_from_proto` for a client reading a stream: None, with a warning naming the alert, for the one
    kind of alert no `Alert` can hold (an unknown priority number), so that one foreign alert never ends a
    subscription or a `get`."""
    try:
        return alert_from_proto(resp)
    except ValueError as exc:
        where = f" {resp.cursor.epoch}:{resp.cursor.sequence}" if resp.HasField("cursor") else ""
        log.warning("skipping alert%s (rule %r): %s", where, resp.rule, exc)
        return None


def cursor_of(resp: outputs_pb2.response) -> Cursor | None:
    """The cursor a response carries, without decoding the rest."""
    return Cursor(resp.cursor.epoch, resp.cursor.sequence) if resp.HasField("cursor") else None
