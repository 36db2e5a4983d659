"""The gate every alert from another process passes before the hub retains it (falconet.v1 Publish).

Each retained alert is sent to every client, so one malformed alert would fail every client that reads it,
again on every `get` and every `--from oldest` for as long as it is retained. Here the message is decoded
strictly (a field marked JSON must hold a finite JSON scalar, the priority must be one of Falco's, the time's
nanoseconds within a second) and then checked as an alert (`falconet.model.alert_checks`); the first problem is
a ValueError naming the field, which the input service returns as INVALID_ARGUMENT.

The input service also keeps the message it received as the alert's wire form (`received_alert`): normalised in
place and serialized once, instead of converting the alert back to a new message later (which cost the store's
writer about 7 µs per alert). `sdk/python/convert.py`'s `received_wire` says what is normalised; the hub appends
the cursor (tests/server/test_server_received_wire.py holds the two paths equal).
"""

from __future__ import annotations

from falconet.model.alert import Alert, Priority
from falconet.model.alert_checks import AlertInvalid, check_publishable
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.convert import alert_from_proto, decode_received, received_wire
from falconet.server.entries import repeated_string_size

_PRIORITY_NUMBERS = frozenset(int(p) for p in Priority)

MAX_ALERT_BYTES = 1 << 20
"""The largest published alert (its serialized `falco.outputs.response`). Every stream message then stays far
below gRPC's default 4 MiB limit, whichever client reads it (a batch holds one alert alone when it is this
large), and one publisher cannot fill the ring with a few huge alerts."""


def alert_from_input(resp: outputs_pb2.response) -> Alert:
    """The alert a publisher sent, ready for the hub (its cursor cleared); ValueError naming the field."""
    _check_raw(resp, resp.ByteSize())
    alert = alert_from_proto(resp, strict=True)
    check_publishable(alert)
    alert.cursor = None  # the hub assigns cursors; incoming ones are ignored
    return alert


def received_alert(resp: outputs_pb2.response, hostname: str) -> tuple[Alert, bytes, int]:
    """The alert a publisher sent, its wire form without a cursor and the size of that form's last field
    (`output_fields_json`, before which the cursor goes), for `Hub.publish_received`; an empty hostname becomes
    `hostname` (the hub's). Refuses what `alert_from_input` refuses, in the same words, and changes `resp` (see
    `received_wire`). The size is checked on the message as received by serializing it: that costs what
    `ByteSize` costs, and is the wire form kept when nothing needs normalising."""
    serialized: bytes = resp.SerializeToString()
    _check_raw(resp, len(serialized))
    alert, typed_canonical = decode_received(resp)
    check_publishable(alert)
    alert.cursor = None
    if not alert.hostname:
        alert.hostname = hostname
    wire = received_wire(resp, alert, serialized, typed_canonical)
    listed = resp.output_fields_json
    return alert, wire, repeated_string_size(list(listed)) if listed else 0


def _check_raw(resp: outputs_pb2.response, size: int) -> None:
    if size > MAX_ALERT_BYTES:
        raise AlertInvalid("alert", f"{size} bytes on the wire, over the limit of {MAX_ALERT_BYTES}")
    if not 0 <= resp.time.nanos <= 999_999_999:
        raise AlertInvalid("time.nanos", f"{resp.time.nanos} is not within 0 to 999999999")
    if resp.priority not in _PRIORITY_NUMBERS:
        raise AlertInvalid("priority", f"{resp.priority} is not one of 0 (Emergency) to 7 (Debug)")
