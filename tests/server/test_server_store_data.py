"""The store's data files alone (server/store_data.py), on a real directory: records written and read back,
every record kind (CRC-32C or zlib's CRC-32, over the whole body or over the frame only), records written
before CRC-32C still read, damage found, segments rotated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falconet.server import store_data
from falconet.server.store_data import HEAD, RECORD_ALERTS, DataError, DataFiles, Limits, read_record, segments_in


def _wires(n: int, start: int = 0) -> list[bytes]:
    return [f"alert {i} ".encode() * (1 + i % 7) for i in range(start, start + n)]


CORPUS = Path(__file__).parent / "corpus"
KINDS = [(True, True), (True, False), (False, True), (False, False)]
"""(hardware CRC-32C, payload CRC): every kind of record a writer makes."""
MAGICS = {(True, True): b"FNc3", (True, False): b"FNd3", (False, True): b"FNr3", (False, False): b"FNf3"}


@pytest.mark.parametrize(("hardware_crc", "payload_crc"), KINDS)
def test_records_read_back_as_written_across_more_parts_than_one_writev_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hardware_crc: bool, payload_crc: bool
) -> None:
    monkeypatch.setattr(store_data, "PAYLOAD_CRC", payload_crc)
    monkeypatch.setattr(store_data, "HARDWARE_CRC", hardware_crc)
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
    assert (tmp_path / "0000000001.seg").read_bytes()[:4] == MAGICS[(hardware_crc, payload_crc)]


def test_the_default_checksum_is_crc32c_in_hardware() -> None:
    """google-crc32c is a dependency; without its C implementation the writer would quietly fall back to the
    slower zlib CRC-32 records, so a machine where that happens fails here rather than only in the bench."""
    assert store_data.HARDWARE_CRC
    assert store_data._crc32c(b"123456789") == 0xE3069283  # CRC-32C's check value (zlib's CRC-32: 0xCBF43926)
    assert store_data._crc32c(b"6789", store_data._crc32c(b"12345")) == 0xE3069283


def test_records_written_with_zlibs_crc32_before_crc32c_still_read() -> None:
    """store-v3-crc32.seg was written by the session-5 code (zlib CRC-32): a record over the whole body (FNr3)
    of alerts 1..10, then one over the frame only (FNf3) of 11..15. A store written then reads on unchanged,
    and its damaged records are still found."""
    data = (CORPUS / "store-v3-crc32.seg").read_bytes()
    assert (data[:4], data[336:340]) == (b"FNr3", b"FNf3")
    assert store_data.check_record(data[:336], 1, 10, 312) == _wires(10)
    assert store_data.check_record(data[336:], 11, 15, 227) == _wires(5, 10)
    damaged = bytearray(data)
    damaged[300] ^= 0x01  # a wire form of the first record
    with pytest.raises(DataError, match="checksum"):
        store_data.check_record(bytes(damaged[:336]), 1, 10, 312)


@pytest.mark.parametrize(("hardware_crc", "payload_crc"), KINDS)
def test_a_damaged_frame_is_found_and_with_the_payload_crc_a_damaged_wire_form_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hardware_crc: bool, payload_crc: bool
) -> None:
    monkeypatch.setattr(store_data, "PAYLOAD_CRC", payload_crc)
    monkeypatch.setattr(store_data, "HARDWARE_CRC", hardware_crc)
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
