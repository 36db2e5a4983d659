"""A retained alert and its wire forms: what the hub keeps per alert, and the bytes every reader and the store
share.

Each form is made once per alert, however many subscribers read it: the serialized `falco.outputs.response`
(converted from the alert on first use, or received ready made through the input service, to which the hub
adds the cursor) and that form framed as field 1 of a batch message. The framing and cursor helpers are
here so that the hub, the batched stream and the store write the same bytes.
"""

from __future__ import annotations

from falconet.model.alert import Alert
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.convert import alert_from_proto, alert_to_wire


class Entry:
    """One retained alert with its sequence and its cached wire forms (computed once, on first read)."""

    __slots__ = ("seq", "alert", "_wire", "_framed")

    def __init__(self, seq: int, alert: Alert, wire: bytes | None = None) -> None:
        self.seq = seq
        self.alert = alert
        self._wire = wire
        self._framed: bytes | None = None

    @classmethod
    def from_wire(cls, seq: int, wire: bytes) -> Entry:
        """An entry read back from the store: its wire form as stored, the alert decoded for filters."""
        entry = cls(seq, alert_from_proto(outputs_pb2.response.FromString(wire)))
        entry._wire = wire
        return entry

    def wire(self) -> bytes:
        """The serialized `falco.outputs.response`, made once however many subscribers read it. (The conversion
        is imported with the module: an import statement here cost 0.34 µs per alert, 4% of the conversion.)"""
        w = self._wire
        if w is None:
            w = self._wire = alert_to_wire(self.alert)
        return w

    def framed(self) -> bytes:
        """The wire form framed as field 1 of a batch message (`repeated response alerts = 1`).

        Batch messages are then built by concatenation, with no protobuf object per batch.
        """
        f = self._framed
        if f is None:
            w = self.wire()
            f = self._framed = frame_head(len(w)) + w
        return f


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _FrameHeads(dict[int, bytes]):
    """Field-1 frame heads by length, made once per length: `frame_head` is then one C-level dict lookup, which
    lets the store frame a whole chunk with `map` and `bytes.join` and no Python call per alert."""

    def __missing__(self, size: int) -> bytes:
        head = b"\x0a" + encode_varint(size)
        if size < CACHED_FRAME_SIZES:  # bounded: a stranger's alert sizes cannot grow the table without end
            self[size] = head
        return head


CACHED_FRAME_SIZES = 1 << 14
"""Lengths below this (two-byte varints: nearly every alert) have their frame head cached."""
frame_head = _FrameHeads().__getitem__
"""The head framing a wire form of `size` bytes as field 1 of a batch message (`repeated response alerts = 1`)."""


class CursorField:
    """Field 10 (`cursor`) of a response for one epoch, as `alert_to_proto` encodes it. Appended to a wire form
    that has no cursor it sets one: protobuf readers take fields in any order."""

    __slots__ = ("epoch", "_epoch", "_heads")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        e = epoch.encode()
        # Cursor.epoch (left out when empty, as protobuf leaves a default out), then Cursor.sequence's tag.
        self._epoch = (b"\x0a" + encode_varint(len(e)) + e if e else b"") + b"\x10"
        # Everything before the sequence's varint, by the varint's length (1 to 10 bytes).
        self._heads = [b""] + [b"\x52" + encode_varint(len(self._epoch) + n) + self._epoch for n in range(1, 11)]

    def __call__(self, seq: int) -> bytes:
        # Sequences below 2**21 (three varint bytes) without the general loop: this runs once per alert.
        if seq < 0x4000:
            v = bytes((seq,)) if seq < 0x80 else bytes(((seq & 0x7F) | 0x80, seq >> 7))
        elif seq < 0x200000:
            v = bytes(((seq & 0x7F) | 0x80, ((seq >> 7) & 0x7F) | 0x80, seq >> 14))
        else:
            v = encode_varint(seq)
        return self._heads[len(v)] + v


def repeated_string_size(values: list[str]) -> int:
    """Bytes a repeated string field with a one-byte tag takes for `values` (at the end of a serialized response,
    field 11 `output_fields_json`: where the cursor, field 10, goes before it to keep protobuf's field order)."""
    if not values:
        return 0
    if all(map(str.isascii, values)) and max(map(len, values)) < 0x80:
        return sum(map(len, values)) + 2 * len(values)
    return sum(1 + len(encode_varint(len(b))) + len(b) for b in (v.encode() for v in values))
