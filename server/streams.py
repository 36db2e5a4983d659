"""The two ways alerts leave the hub: one message per alert (Falco's `sub`/`get`) or many per message (batched).

Both yield already-serialized bytes: each alert's wire form is cached on its hub entry, so serving N subscribers
costs N writes, not N conversions, and a batch is a concatenation of cached, pre-framed entries. A reader older
than the ring reads on from the persistent store, if there is one. Loss found while reading (the subscriber fell
behind what is retained) is sent in-band as an internal alert before the next alert.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from falconet.model.alert import Alert
from falconet.sdk.convert import alert_to_wire
from falconet.server.hub import AlertFilter, Hub, Reader, encode_varint

TAKE_CHUNK = 512
"""Entries read from the ring per lock hold by a one-per-message stream."""
MAX_BATCH_BYTES = 1 << 20
"""A batch message stays well under gRPC's default 4 MiB receive limit."""


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
                    yield entry.wire()
                    reader.delivered += 1
                if falco_identity is not None:
                    advance(falco_identity, entry.seq)
            continue
        if not live:
            return
        await reader.wait()


async def batch_stream(
    hub: Hub, reader: Reader, flt: AlertFilter, first: Alert | None, *, live: bool, max_batch: int
) -> AsyncIterator[bytes]:
    """Batches of alerts (`repeated falco.outputs.response alerts = 1`), as many as are waiting, up to the limit."""
    match = None if flt.is_empty else flt.matches
    parts: list[bytes] = [] if first is None else [_frame(alert_to_wire(first))]
    while True:
        entries, lost = reader.take(max_batch)
        if reader.behind:  # older than the ring: read on from the persistent store
            entries, lost = await reader.take_stored(max_batch)
        if lost:
            parts.append(_frame(alert_to_wire(hub.loss_alert(reader, lost, entries[0].seq))))
        size = 0
        count = 0
        for entry in entries:
            if match is None or match(entry.alert):
                framed = entry.framed()
                parts.append(framed)
                size += len(framed)
                count += 1
                if size >= MAX_BATCH_BYTES:
                    yield b"".join(parts)
                    reader.delivered += count
                    parts, size, count = [], 0, 0
        if parts:
            yield b"".join(parts)
            reader.delivered += count
            parts = []
        if not entries:
            if not live:
                return
            await reader.wait()
