"""The store's data files alone (server/store_data.py), on a real directory: records written and read back,
both record kinds (CRC over the whole body, or over the frame only), damage found, segments rotated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falconet.server import store_data
from falconet.server.store_data import HEAD, RECORD_ALERTS, DataError, DataFiles, Limits, read_record, segments_in


def _wires(n: int, start: int = 0) -> list[bytes]:
    return [f"alert {i} ".encode() * (1 + i % 7) for i in range(start, start + n)]


@pytest.mark.parametrize("payload_crc", [True, False])
def test_records_read_back_as_written_across_more_parts_than_one_writev_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload_crc: bool
) -> None:
    monkeypatch.setattr(store_data, "PAYLOAD_CRC", payload_crc)
    files = DataFiles(tmp_path, Limits.of(1 << 30, 0, 0), sync=False)
    files.resume(1, 0, 0, 0)
    big = _wires(RECORD_ALERTS)  # 2,050 parts without the join: more than IOV_MAX (1,024) per pwritev
    small = _wires(3, RECORD_ALERTS)
    rows = files.append([(1, RECORD_ALERTS, 1, big), (RECORD_ALERTS + 1, RECORD_ALERTS + 3, 1, small)])
    files.close()
    (a, b) = rows
    assert read_record(tmp_path, a[3], a[4], a[0], a[1], a[5]) == big
    assert read_record(tmp_path, b[3], b[4], b[0], b[1], b[5]) == small
    assert b[4] == a[4] + HEAD.size + a[5]
    assert (tmp_path / "0000000001.seg").stat().st_size == b[4] + HEAD.size + b[5]


@pytest.mark.parametrize("payload_crc", [True, False])
def test_a_damaged_frame_is_found_and_with_the_payload_crc_a_damaged_wire_form_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload_crc: bool
) -> None:
    monkeypatch.setattr(store_data, "PAYLOAD_CRC", payload_crc)
    files = DataFiles(tmp_path, Limits(), sync=False)
    files.resume(1, 0, 0, 0)
    ((first, last, _, segment, offset, size),) = files.append([(1, 10, 1, _wires(10))])
    files.close()
    path = tmp_path / "0000000001.seg"
    clean = path.read_bytes()
    for where, found in ((HEAD.size + 2, True), (len(clean) - 3, payload_crc)):  # lengths table; last wire form
        damaged = bytearray(clean)
        damaged[where] ^= 0x40
        path.write_bytes(bytes(damaged))
        if found:
            with pytest.raises(DataError, match="checksum"):
                read_record(tmp_path, segment, offset, first, last, size)
        else:
            assert read_record(tmp_path, segment, offset, first, last, size) != _wires(10)
    path.write_bytes(clean[:-1])  # short: the index points past the data
    with pytest.raises(DataError, match="bytes where"):
        read_record(tmp_path, segment, offset, first, last, size)
    path.unlink()
    with pytest.raises(DataError, match="gone"):
        read_record(tmp_path, segment, offset, first, last, size)


def test_segments_rotate_at_a_sixteenth_of_the_limits_and_undo_cuts_the_last_append(tmp_path: Path) -> None:
    files = DataFiles(tmp_path, Limits.of(16 * 1000, 0, 0), sync=True)  # 1,000-byte segments
    files.resume(1, 0, 0, 0)
    segments = [files.append([(k, k, 1, [os.urandom(1000)])])[0][3] for k in range(1, 6)]
    assert segments == [1, 2, 3, 4, 5]  # each record fills a segment: the next one starts a new file
    files.append([(6, 6, 1, [b"x" * 10])])
    assert files.segment == 6
    files.undo()  # its index commit failed: what it wrote is cut off
    assert files.end == 0 and (tmp_path / "0000000006.seg").stat().st_size == 0
    assert files.delete_before(4) == 3
    assert sorted(segments_in(tmp_path)) == [4, 5, 6]
    files.close()
    by_count = Limits.of(0, 160, 0)
    assert (by_count.max_alerts, by_count.max_bytes) == (10, store_data.SEGMENT_BYTES)
