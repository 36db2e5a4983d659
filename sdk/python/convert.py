"""Alert <-> `falco.outputs.response`: the one mapping between Falconet's alert and the wire, for server and SDK.

Falco's `output_fields` is a map of strings in which non-string values are JSON-encoded, so a Falco client sees
`"1234"` for a pid. Falconet keeps that for compatibility and adds `output_fields_json`, the keys whose values
were encoded, so that our clients restore the typed values of the alert JSON exactly (a string "1234" stays a
string, the number 1234 comes back a number).
"""

from __future__ import annotations

import json

from falconet.model.alert import Alert, Cursor, OutputValue, Priority
from falconet.sdk.api.falco import outputs_pb2, schema_pb2

__all__ = ["alert_to_proto", "alert_from_proto", "alert_to_wire", "source_enum"]

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


def alert_from_proto(resp: outputs_pb2.response) -> Alert:
    """The alert a response message carries; raises ValueError if a typed field does not hold JSON."""
    fields: dict[str, OutputValue] = dict(resp.output_fields)
    for key in resp.output_fields_json:
        if key in fields:
            raw = fields[key]
            try:
                value = json.loads(raw)  # type: ignore[arg-type]
            except ValueError:
                raise ValueError(f"output_fields[{key!r}] is marked JSON but holds {raw!r}") from None
            if value is not None and not isinstance(value, int | float | bool):
                raise ValueError(
                    f"output_fields[{key!r}] must hold a JSON number, boolean or null, not {raw!r}"
                )
            fields[key] = value
    try:
        priority = Priority(resp.priority)
    except ValueError:
        raise ValueError(f"unknown priority number {resp.priority}") from None
    source = resp.source
    if not source:
        # A Falco server older than 0.31 sends only the enum.
        source = schema_pb2.source.Name(resp.source_deprecated).lower()
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
