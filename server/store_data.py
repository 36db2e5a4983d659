"""The alert store's data files: append-only segments of checksummed records, which SQLite indexes.

Since schema version 3 the alerts' bytes are no longer in SQLite: each commit appends one record (the commit's
alerts, up to RECORD_ALERTS consecutive ones) to the current segment file with one `pwritev`, then commits only
its index row (first, last, stored_ns, segment, offset, size) in SQLite. The bytes are copied into the page
cache once and never checkpointed, where SQLite wrote them to its WAL and then again into the database file
(bench.store_sqlite: 0.38 against 1.21 µs of the writer's CPU per 760-byte alert, checksum included).

A record is a 24-byte head (magic, first sequence, alert count, body size, checksum of those three numbers and
the body) and the body: a table of the alerts' wire lengths (little-endian u32 each), then the wire forms
concatenated. The checksum is a CRC-32C (Castagnoli), computed by the CPU's crc32 instruction through
google-crc32c: about 0.035 µs per 760-byte alert where zlib's CRC-32 (records written before session 6, magic
FNr3/FNf3, still read) took about 0.13 µs. A machine where google-crc32c has no C implementation writes the
old CRC-32 records. Built so that no Python code runs per alert: the lengths table is made by `array` from a
`map`, the CRC-32C runs over the wire forms one by one from C (`functools.reduce`), and `pwritev` gathers them
(no join) and releases the GIL. Where server/storewrite.c is built (`C_WRITE`), it makes those same bytes
and writes them with the GIL released once per commit. The index is the truth: a record counts once its index
row is committed, and the row is committed only after the record's `writev` returned (and, with
`synchronous: full`, after an `fdatasync` of the segment), so the index never points past durable data. A
crash between the two leaves bytes past the last indexed record (possibly torn: a fatal signal can cut a large
write short); opening cuts them off
(`recover`) and checks the newest indexed record's checksum, dropping any record that fails it (only a power
loss with `synchronous: normal`, which promises nothing for it, can produce one). Reads check every record's
checksum, so a damaged record is reported, never served.

Segments are rotated at a sixteenth of each retention limit (bytes, count, age; at most SEGMENT_BYTES), and
retention deletes a segment file whole once no index row points into it, after the commit that removed the
rows: the data files then hold at most about a sixteenth of the limit beyond it.
"""

from __future__ import annotations

import os
import struct
import sys
import time
import zlib
from array import array
from functools import reduce
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from falconet.server.entries import Entry

try:
    import google_crc32c

    _HW_CRC = google_crc32c.implementation == "c"
except ImportError:  # pragma: no cover (a dependency; the old CRC-32 records are written without it)
    _HW_CRC = False

_c_write: Callable[[int, int, list[tuple[int, list[bytes]]], bool], list[int]] | None
try:
    from falconet.server import _storewrite
except ImportError:  # pragma: no cover (optional: not built without a compiler; the Python path writes the same)
    _c_write = None
else:
    _c_write = _storewrite.write_records if _storewrite.hardware() else None

HEAD = struct.Struct("<4sQIII")
"""magic, first sequence, alert count, body bytes, checksum (of the three numbers, then the body)."""
_NUMBERS = struct.Struct("<QII")
MAGIC = b"FNr3"
"""A record whose zlib CRC-32 covers its whole body (written before session 6, or without google-crc32c's C
implementation)."""
MAGIC_FRAME = b"FNf3"
"""A record whose zlib CRC-32 covers its head's numbers and its lengths table only (PAYLOAD_CRC off)."""
MAGIC_C = b"FNc3"
"""A record whose CRC-32C covers its whole body (what is written by default)."""
MAGIC_C_FRAME = b"FNd3"
"""A record whose CRC-32C covers its head's numbers and its lengths table only (PAYLOAD_CRC off)."""
PAYLOAD_CRC = True
"""Whether new records' CRC covers the wire forms too (every kind is read). Off, the writer saves the join and
the CRC of the wire forms (the wires go to `pwritev` as they are): with CRC-32C in hardware, about 0.05 µs of
CPU per 760-byte alert (it was 0.4 µs with zlib's CRC-32 on a loaded machine). What it gives up is detecting a
damaged wire form in an intact record (bit rot, or a power loss with `synchronous: normal` that left the frame
and not the payload); it keeps detecting torn and misplaced records, and every promise a crash test checks
(the index, not the checksum, is what makes a kill -9 safe: a record is indexed only once written)."""
HARDWARE_CRC = _HW_CRC
"""New records' checksum is a CRC-32C (google-crc32c's C implementation is loaded), else zlib's CRC-32."""
C_WRITE = _HW_CRC and _c_write is not None
"""Whether records are encoded and written by server/storewrite.c (the same bytes as `encode_record`): one
release of the GIL for a whole commit's lengths tables, CRC-32Cs and `pwritev` calls, where the Python path holds
it for the encoding (about 0.23 µs per alert) and takes it back after each `pwritev` of at most IOV_MAX parts,
each time waiting for the converting writer thread to drop it (bench/RESULTS.md, "storec, session 9")."""


if _HW_CRC:
    _extend = google_crc32c.extend
    _value = google_crc32c.value


def _crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of `data` continuing `crc` (zlib.crc32's signature)."""
    return int(google_crc32c.extend(crc, data))


_CHECKS: dict[bytes, tuple[Callable[[bytes, int], int], bool]] = {
    MAGIC: (zlib.crc32, True),
    MAGIC_FRAME: (zlib.crc32, False),
    MAGIC_C: (_crc32c, True),
    MAGIC_C_FRAME: (_crc32c, False),
}
"""Each record kind's checksum function and whether it covers the wire forms."""
RECORD_ALERTS = 2048
"""Most alerts per record (the writer's most per commit); retention removes whole records."""
_SWAP = sys.byteorder != "little"
SEGMENT_BYTES = 64 << 20
"""The largest segment file (smaller with a small byte limit: a sixteenth of it)."""
SEGMENT_PARTS = 16
"""Each retention limit spans about this many segments: retention frees disk space in steps of 1/16 of it."""
IOV_MAX = 1024

IndexRow = tuple[int, int, int, int, int, int]
"""(first, last, stored_ns, segment, offset, size): one record's index row."""
Run = tuple[int, int, list[bytes]]
"""(first, last, wire forms) of consecutive alerts: what one record holds, before it is stored."""


class DataError(ValueError):
    """A record that cannot be read back as written (missing, short, or failing its checksum)."""


def data_dir(path: Path) -> Path:
    """The directory beside the index file holding its segments."""
    return path.with_name(path.name + "-data")


def segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{segment:010d}.seg"


def segments_in(directory: Path) -> dict[int, Path]:
    """The segment files present, by number (other names are not ours and are left alone)."""
    out: dict[int, Path] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        stem, dot, ext = name.partition(".")
        if dot and ext == "seg" and stem.isdigit() and len(stem) == 10:
            out[int(stem)] = directory / name
    return out


def encode_record(first: int, wires: list[bytes]) -> tuple[bytes, bytes, list[bytes], int]:
    """A record of consecutive alerts from `first`: its head, its lengths table, its payload (the wire forms
    as they are when the CRC is a CRC-32C, joined for the older CRC-32: `pwritev` gathers them in the kernel)
    and its body's size."""
    lengths = array("I", map(len, wires))
    size = 4 * len(wires) + sum(lengths)
    if _SWAP:
        lengths.byteswap()
    table = lengths.tobytes()
    numbers = _NUMBERS.pack(first, len(wires), size)
    if not HARDWARE_CRC:
        if PAYLOAD_CRC:
            payload = b"".join(wires)
            crc = zlib.crc32(payload, zlib.crc32(table, zlib.crc32(numbers)))
            return HEAD.pack(MAGIC, first, len(wires), size, crc), table, [payload], size
        crc = zlib.crc32(table, zlib.crc32(numbers))
        return HEAD.pack(MAGIC_FRAME, first, len(wires), size, crc), table, wires, size
    crc = _extend(_value(numbers), table)
    if PAYLOAD_CRC:
        # Wire by wire, by C calls from `reduce`: no join, so no new buffer the size of the record to allocate
        # and fill (fresh memory costs more than the copy on a VM: bench/RESULTS.md, "storeready (session 6)");
        # `pwritev` gathers the wires in the kernel.
        crc = reduce(_extend, wires, crc)
        return HEAD.pack(MAGIC_C, first, len(wires), size, crc), table, wires, size
    return HEAD.pack(MAGIC_C_FRAME, first, len(wires), size, crc), table, wires, size


def check_record(data: bytes, first: int, last: int, size: int) -> list[bytes]:
    """The wire forms of a record read back (`data`: head and body), checked against its index row."""
    if len(data) < HEAD.size + size:
        raise DataError(f"record {first}: {len(data)} bytes where {HEAD.size + size} were written")
    magic, r_first, count, r_size, crc = HEAD.unpack_from(data)
    check = _CHECKS.get(magic)
    if check is None or r_first != first or count != last - first + 1 or r_size != size or size < 4 * count:
        raise DataError(f"record {first}: its head does not match its index row")
    crc_of, whole = check
    body = data[HEAD.size : HEAD.size + (size if whole else 4 * count)]
    if crc_of(body, crc_of(_NUMBERS.pack(r_first, count, r_size), 0)) != crc:
        raise DataError(f"record {first}: checksum mismatch (the data file is damaged)")
    lengths = array("I")
    lengths.frombytes(body[: 4 * count])
    if _SWAP:
        lengths.byteswap()
    if 4 * count + sum(lengths) != size:
        raise DataError(f"record {first}: its lengths do not add up to its size")
    out: list[bytes] = []
    pos = HEAD.size + 4 * count
    for n in lengths:
        out.append(data[pos : pos + n])
        pos += n
    return out


def read_record(directory: Path, segment: int, offset: int, first: int, last: int, size: int) -> list[bytes]:
    """One record's wire forms; DataError if its segment is gone or the record is damaged."""
    try:
        fd = os.open(segment_path(directory, segment), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataError(f"record {first}: segment {segment} is gone") from None
    try:
        data = os.pread(fd, HEAD.size + size, offset)
    finally:
        os.close(fd)
    return check_record(data, first, last, size)


@dataclass(frozen=True, slots=True)
class Limits:
    """When to start a new segment: a sixteenth of each retention limit (0 = that limit is off)."""

    max_bytes: int = SEGMENT_BYTES
    max_alerts: int = 0
    max_age_ns: int = 0

    @classmethod
    def of(cls, max_bytes: int, max_alerts: int, max_age_s: float) -> Limits:
        part = max_bytes // SEGMENT_PARTS if max_bytes else SEGMENT_BYTES
        return cls(
            max(1, min(SEGMENT_BYTES, part)),
            max_alerts // SEGMENT_PARTS if max_alerts >= SEGMENT_PARTS else max_alerts,
            int(max_age_s * 1e9) // SEGMENT_PARTS,
        )


class DataFiles:
    """The segment being appended to (the writer thread's; reads use `read_record`)."""

    def __init__(self, directory: Path, limits: Limits, sync: bool) -> None:
        self.directory = directory
        self.limits = limits
        self.sync = sync
        self.segment = 0
        self.end = 0
        """Bytes of the current segment that are indexed or being indexed."""
        self.alerts = 0
        self.started_ns = 0
        self._fd: int | None = None
        self._undo: int | None = None

    def resume(self, segment: int, end: int, alerts: int, started_ns: int) -> None:
        """Appends to `segment` from `end` on (cut there: anything after was never indexed)."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(segment_path(self.directory, segment), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, end)
        except OSError:
            os.close(fd)
            raise
        self._fd, self.segment, self.end, self.alerts, self.started_ns = fd, segment, end, alerts, started_ns

    def _rotate(self, now_ns: int) -> None:
        lim = self.limits
        full = (
            self.end >= lim.max_bytes
            or (lim.max_alerts and self.alerts >= lim.max_alerts)
            or (lim.max_age_ns and self.started_ns and now_ns - self.started_ns >= lim.max_age_ns)
        )
        if self._fd is not None and self.end and full:
            self.resume(self.segment + 1, 0, 0, 0)
            if self.sync:
                _fsync_dir(self.directory)

    def append(self, chunks: list[tuple[int, int, int, list[bytes]]]) -> list[IndexRow]:
        """Writes the runs (first, last, stored_ns, wire forms) as records; returns their index rows. Raises
        OSError (the segment is cut back to where it was: nothing half-written stays)."""
        if self._fd is None:
            self.resume(max(self.segment, 1), self.end, self.alerts, self.started_ns)
        now = chunks[0][2] if chunks else time.time_ns()
        self._rotate(now)
        fd = self._fd
        assert fd is not None
        start = offset = self.end
        rows: list[IndexRow] = []
        parts: list[bytes] = []
        try:
            if C_WRITE and HARDWARE_CRC and _c_write is not None:
                sizes = _c_write(fd, start, [(c[0], c[3]) for c in chunks], PAYLOAD_CRC)
                for (first, last, stored_ns, _), size in zip(chunks, sizes):
                    rows.append((first, last, stored_ns, self.segment, offset, size))
                    offset += HEAD.size + size
            else:
                for first, last, stored_ns, wires in chunks:
                    head, table, payload, size = encode_record(first, wires)
                    parts += (head, table)
                    parts += payload
                    rows.append((first, last, stored_ns, self.segment, offset, size))
                    offset += HEAD.size + size
                _writev_all(fd, parts, start, offset - start)
            if self.sync:
                os.fdatasync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
        self._undo = start
        self.end = offset
        self.alerts += sum(r[1] - r[0] + 1 for r in rows)
        if not self.started_ns:
            self.started_ns = now
        return rows

    def undo(self) -> None:
        """Cuts off what the last `append` wrote (its index commit failed)."""
        if self._undo is not None and self._fd is not None:
            try:
                os.ftruncate(self._fd, self._undo)
                self.end = self._undo
            except OSError:
                pass  # left past the index; the next open cuts it off
        self._undo = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete_before(self, segment: int) -> int:
        """Deletes every segment file numbered below `segment` (none of them indexed any more); returns how
        many."""
        n = 0
        for number, path in segments_in(self.directory).items():
            if number < segment and number != self.segment:
                try:
                    path.unlink()
                    n += 1
                except FileNotFoundError:
                    pass
        return n


def _writev_all(fd: int, parts: list[bytes], offset: int, total: int) -> None:
    """pwritev of every part (`total` bytes) at `offset`, however the kernel splits it (short writes,
    IOV_MAX)."""
    i = 0
    while i < len(parts):
        if i == 0 and len(parts) <= IOV_MAX:
            batch, want = parts, total
        else:
            batch = parts[i : i + IOV_MAX]
            want = sum(map(len, batch))
        done = os.pwritev(fd, batch, offset)
        if done <= 0:
            raise OSError(28, "No space left on device (a write made no progress)")
        offset += done
        if done == want:
            i += len(batch)
            continue
        # A short write: the rest of a partly written part, then on.
        while done >= len(parts[i]):
            done -= len(parts[i])
            i += 1
        parts = [parts[i][done:], *parts[i + 1 :]]
        i = 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unframe(data: bytes) -> list[bytes]:
    """The wire forms in a schema 2 chunk (field-1 framed wire forms, concatenated); ValueError if damaged."""
    out: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] != 0x0A:
            raise ValueError(f"byte {pos} is not a field-1 frame")
        pos += 1
        size = shift = 0
        while True:
            b = data[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        out.append(data[pos : pos + size])
        pos += size
    return out


def runs(entries: list[Entry], wires: list[bytes]) -> list[Run]:
    """(first, last, wire forms) of up to RECORD_ALERTS consecutive entries each: one data record each.

    `wires` are the entries' wire forms, taken once by the writer (`_make_wires`) for the store's whole way:
    no Python code runs per alert from here to the record's write, since the writer shares the GIL with the
    publishing threads and any step per alert slows publishing."""
    first, last = entries[0].seq, entries[-1].seq
    if last - first + 1 == len(entries):  # consecutive (always, as the hub drains)
        if len(entries) <= RECORD_ALERTS:
            return [(first, last, wires)]
        return [
            (first + i, first + min(i + RECORD_ALERTS, len(entries)) - 1, wires[i : i + RECORD_ALERTS])
            for i in range(0, len(entries), RECORD_ALERTS)
        ]
    out: list[Run] = []
    part: list[bytes] = []
    start = prev = -1
    for e, w in zip(entries, wires):
        if part and (e.seq != prev + 1 or len(part) == RECORD_ALERTS):
            out.append((start, prev, part))
            part = []
        if not part:
            start = e.seq
        part.append(w)
        prev = e.seq
    if part:
        out.append((start, prev, part))
    return out
