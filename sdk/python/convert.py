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

from falconet.model.alert import Alert, Cursor, OutputValue, Priority
from falconet.model.alert_checks import AlertInvalid
from falconet.sdk.api.falco import outputs_pb2, schema_pb2

__all__ = ["alert_to_proto", "alert_from_proto", "alert_to_wire", "cursor_of", "decode_or_skip", "source_enum"]

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


def _encode_fields(fields: dict[str, OutputValue]) -> tuple[dict[str, str], list[str]]:
    strings: dict[str, str] = {}
    typed: list[str] = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            strings[key] = value  # type: ignore[assignment]
            continue
        # Same encoding as Falco's JSON output for numbers, booleans and null; the common types skip json.dumps
        # (this runs once per alert on the publish path).
        if kind is int:
            strings[key] = str(value)
        elif value is None:
            strings[key] = "null"
        elif kind is bool:
            strings[key] = "true" if value else "false"
        elif isinstance(value, str):
            strings[key] = value
            continue
        else:
            strings[key] = json.dumps(value)
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


class _NotFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NotFinite(name)


_LITERALS: dict[str, object] = {"null": None, "true": True, "false": False}
_NO_LITERAL = object()
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
    fields: dict[str, OutputValue] = dict(resp.output_fields)
    for key in dict.fromkeys(resp.output_fields_json):  # each once: a key listed twice must not decode twice
        if key in fields:
            try:
                fields[key] = decode_typed_value(fields[key])  # type: ignore[arg-type]
            except ValueError as exc:
                if strict:
                    raise AlertInvalid(f"output_fields[{key!r}]", str(exc)) from None
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
