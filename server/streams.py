"""The two ways alerts leave the hub: one message per alert (Falco's `sub`/`get`) or many per message (batched).

Both yield already-serialized bytes: each alert's wire form is cached on its hub entry, so serving N subscribers
costs N writes, not N conversions, and a batch is a concatenation of cached, pre-framed entries. A reader older
than the ring reads on from the persistent store, if there is one. Loss found while reading (the subscriber fell
behind what is retained) is sent in-band as an internal alert before the next alert.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from falconet.model.alert import Alert, OutputValue, Priority
from falconet.sdk.convert import alert_to_wire
from falconet.server.hub import AlertFilter, Entry, Hub, Reader, encode_varint

TAKE_CHUNK = 512
"""Entries read from the ring per lock hold by a one-per-message stream."""
MAX_BATCH_BYTES = 1 << 20
"""A batch message is cut before it would pass this size; one alert larger than this travels alone."""
MAX_MESSAGE_BYTES = (4 << 20) - (64 << 10)
"""No message is larger: gRPC's default receive limit (4 MiB), less room for framing. Published alerts are
bounded far below it (MAX_ALERT_BYTES); an alert that reached the hub another way and is larger still is sent
as an internal alert saying so, rather than failing the client on it at every read and resume."""
OVERSIZE_RULE = "Falconet alert too large"


POSITION_HEADER = "falconet-position"
"""Initial-metadata key carrying `EPOCH:SEQ`, the cursor just before the first alert a stream delivers."""


def position_metadata(hub: Hub, next_seq: int) -> tuple[tuple[str, str], ...]:
    """The `falconet-position` header for a reader starting at `next_seq` (SEQ is 0 before any alert).

    A client started at "now" or "oldest" has no cursor until its first alert arrives; if the stream breaks
    before that, this position is what it resumes after, so alerts published while it is away are not missed.
    """
    return ((POSITION_HEADER, f"{hub.epoch}:{next_seq - 1}"),)


def _frame(wire: bytes) -> bytes:
    return b"\x0a" + encode_varint(len(wire)) + wire


async def single_stream(
    hub: Hub,
    reader: Reader,
    flt: AlertFilter,
    first: Alert | None,
    *,
    live: bool,
    falco_identity: str | None,
) -> AsyncIterator[bytes]:
    """One `falco.outputs.response` per message; `live=False` ends once caught up (Falco's `get`).

    With `falco_identity`, the identity's Falco cursor advances past each alert as it is handed to gRPC.
    """
    if first is not None:
        yield alert_to_wire(first)
    match = None if flt.is_empty else flt.matches
    advance = hub.advance_falco_cursor
    while True:
        entries, lost = reader.take(TAKE_CHUNK)
        if reader.behind:  # older than the ring: read on from the persistent store
            entries, lost = await reader.take_stored(TAKE_CHUNK)
        if lost:
            yield alert_to_wire(hub.loss_alert(reader, lost, entries[0].seq))
        if entries:
            for entry in entries:
                if match is None or match(entry.alert):
                    wire = entry.wire()
                    yield wire if len(wire) <= MAX_MESSAGE_BYTES else alert_to_wire(oversize_alert(hub, entry))
                    reader.delivered += 1
                if falco_identity is not None:
                    advance(falco_identity, entry.seq)
            continue
        if not live:
            return
        await reader.wait()


async def batch_stream(
    hub: Hub,
    reader: Reader,
    flt: AlertFilter,
    first: Alert | None,
    *,
    live: bool,
    max_batch: int,
    until: int | None = None,
) -> AsyncIterator[bytes]:
    """Batches of alerts (`repeated falco.outputs.response alerts = 1`), as many as are waiting, up to
    `max_batch` alerts and MAX_BATCH_BYTES per message. `live=False` ends once caught up; `until` ends after
    that sequence (GetAll's snapshot), however many messages it takes."""
    match = None if flt.is_empty else flt.matches
    # Hot path (one iteration per alert per subscriber): plain locals, no per-alert calls beyond framed().
    parts: list[bytes] = [] if first is None else [_frame(alert_to_wire(first))]
    size = len(parts[0]) if parts else 0
    count = 0  # hub alerts in `parts` (internal ones are not counted as delivered)
    while True:
        limit = max_batch if until is None else min(max_batch, until - reader.next_seq + 1)
        entries, lost = reader.take(limit) if limit > 0 else ([], 0)
        if reader.behind:  # older than the ring: read on from the persistent store
            entries, lost = await reader.take_stored(limit)
        if lost:
            loss = _frame(alert_to_wire(hub.loss_alert(reader, lost, entries[0].seq)))
            parts.append(loss)
            size += len(loss)
        for entry in entries:
            if match is None or match(entry.alert):
                framed = entry.framed()
                n = len(framed)
                if n > MAX_MESSAGE_BYTES:
                    framed = _frame(alert_to_wire(oversize_alert(hub, entry)))
                    n = len(framed)
                if size + n > MAX_BATCH_BYTES and parts:
                    yield b"".join(parts)
                    reader.delivered += count
                    parts, size, count = [], 0, 0
                parts.append(framed)
                size += n
                count += 1
        if parts:
            yield b"".join(parts)
            reader.delivered += count
            parts, size, count = [], 0, 0
        if not entries:
            if not live or limit <= 0:
                return
            await reader.wait()


def oversize_alert(hub: Hub, entry: Entry) -> Alert:
    """The internal alert sent in place of a retained alert too large for any message (see MAX_MESSAGE_BYTES)."""
    alert = entry.alert
    size = len(entry.wire())
    fields: dict[str, OutputValue] = {
        "falconet.sequence": entry.seq,
        "falconet.bytes": size,
        "falconet.rule": alert.rule,
    }
    return Alert(
        time_ns=alert.time_ns,
        rule=OVERSIZE_RULE,
        priority=Priority.WARNING,
        source="internal",
        output=f"Falconet: alert {hub.epoch}:{entry.seq} (rule {alert.rule!r}) is {size} bytes, too large for "
        f"a gRPC message ({MAX_MESSAGE_BYTES} at most); it was not sent",
        output_fields=fields,
        tags=["falconet", "oversize"],
        hostname=alert.hostname,
        cursor=alert.cursor,
    )
