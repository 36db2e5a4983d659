"""The store's files since schema 3: alerts' bytes in append-only segment files, SQLite the index.

Over a real `falconet serve --store`: a schema 2 file made by the code before (tests/server/corpus/store-v2.db:
301 alerts in seven chunks, epoch a3db96097f68, the UNIX-socket identity's Falco cursor at 300) is migrated
with its epoch, sequences, bytes and cursors; a torn record left at the end of a segment (a write a kill -9 cut
short) is cut off on the next start; an index row pointing past the data (a power loss with `synchronous:
normal`) is dropped and reported; a damaged record is reported as lost, never served; retention deletes
segment files whole.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from server_support import start_after, start_oldest
from store_support import ServeProcess, audit_store, number_of, wait_for

from falconet.server.hub import LOSS_RULE
from falconet.server.store_data import HEAD, data_dir, segments_in

V2_STORE = Path(__file__).with_name("corpus") / "store-v2.db"
V2_EPOCH = "a3db96097f68"
STORE_FAILURE = "Falconet internal: alert store failure"


def _schema(store: Path) -> tuple[str, list[str]]:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        columns = [str(r[1]) for r in conn.execute("PRAGMA table_info(chunks)")]
    finally:
        conn.close()
    return str(version), columns


def _data_bytes(store: Path) -> int:
    total = 0
    for p in segments_in(data_dir(store)).values():
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # deleted by retention meanwhile
            pass
    return total


def _newest_segment(store: Path) -> Path:
    segments = segments_in(data_dir(store))
    return segments[max(segments)]


def test_a_schema_2_store_made_by_the_previous_code_is_migrated(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    shutil.copyfile(V2_STORE, store)
    assert _schema(store) == ("2", ["first", "last", "stored_ns", "data"])
    server = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        got = server.get_all()
        assert [(r.cursor.epoch, r.cursor.sequence) for r in got] == [(V2_EPOCH, s) for s in range(1, 302)]
        assert [number_of(r) for r in got] == list(range(1, 302))
        assert got[120].output.endswith("x" * 300)  # the larger alerts of the third commit, byte for byte
        # The Falco cursor of this identity came along: only the alert after it is new to it.
        assert [r.cursor.sequence for r in server.falco_get()] == [301]
        assert server.publish([302]).last.sequence == 302  # sequences go on
    finally:
        assert server.stop() == 0, "".join(server.stderr)
    assert _schema(store) == ("3", ["first", "last", "stored_ns", "segment", "offset", "size"])
    assert audit_store(store) == 302
    again = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        assert [number_of(r) for r in again.get_all()] == list(range(1, 303))
    finally:
        assert again.stop() == 0


def test_a_torn_record_at_the_end_of_a_segment_is_cut_off(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    server = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        epoch = server.publish(list(range(1, 101))).last.epoch
        server.publish(list(range(101, 201)))
    finally:
        server.kill()
    segment = _newest_segment(store)
    whole = segment.stat().st_size
    # What a write cut short by a kill leaves: the start of a record (its head and part of its payload).
    last_record = segment.read_bytes()[-(HEAD.size + 500) :]
    with segment.open("ab") as f:
        f.write(last_record[: HEAD.size + 200])
    server = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        assert segment.stat().st_size == whole, "the torn tail was not cut off"
        assert [number_of(r) for r in server.get_all()] == list(range(1, 201))
        assert server.publish([201]).last.sequence == 201
        assert [(r.cursor.epoch, r.cursor.sequence) for r in server.falco_get(start_after(epoch, 199))] == [
            (epoch, 200),
            (epoch, 201),
        ]
    finally:
        assert server.stop() == 0
    assert audit_store(store) == 201


def test_an_index_row_past_the_data_is_dropped_and_reported(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    server = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        server.publish(list(range(1, 101)))
        server.publish(list(range(101, 151)))
    finally:
        assert server.stop() == 0
    segment = _newest_segment(store)
    with segment.open("r+b") as f:  # the last record only half on disk
        f.truncate(segment.stat().st_size - 100)
    server = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        got = server.get_all()
        numbers = [number_of(r) for r in got]
        assert numbers[:100] == list(range(1, 101)) and not set(numbers) & set(range(101, 151))
        reports = [r.output for r in got if r.rule == STORE_FAILURE]
        assert any("indexed 50 alerts whose data was not on disk" in out for out in reports), reports
        # Their sequences are not given again: the next alert comes after them.
        assert server.publish([151]).last.sequence > 150
    finally:
        assert server.stop() == 0
    audit_store(store)


def test_a_damaged_record_is_reported_as_lost_never_served(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    server = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        for k in range(3):
            server.publish(list(range(k * 100 + 1, k * 100 + 101)))
    finally:
        assert server.stop() == 0
    segment = _newest_segment(store)
    data = bytearray(segment.read_bytes())
    data[HEAD.size + 50] ^= 0x01  # one bit of the first record's payload (alerts 1-100)
    segment.write_bytes(bytes(data))
    server = ServeProcess(tmp_path, store, "--retention", "10")
    try:
        first, *rest = server.falco_get(start_oldest())
        assert first.rule == LOSS_RULE and first.output_fields["falconet.lost"] == "100", first
        assert [number_of(r) for r in rest if r.rule != STORE_FAILURE] == list(range(101, 301))
        # And the server says so once, as an internal alert (and in falconet_store_damaged_records).
        epoch = rest[0].cursor.epoch
        wait_for(lambda: any(r.rule == STORE_FAILURE for r in server.falco_get(start_after(epoch, 300))),
                 10, "the internal alert about the damaged record")
        (report,) = [r.output for r in server.falco_get(start_after(epoch, 300)) if r.rule == STORE_FAILURE]
        assert "alerts 1..100" in report and "checksum mismatch" in report, report
        assert server.proc.poll() is None
    finally:
        assert server.stop() == 0


def test_retention_deletes_segment_files_whole(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    server = ServeProcess(tmp_path, store, "--retention", "10", "--store-max-bytes", "200000")
    try:
        for k in range(60):  # about 1.1 KB each: 660 KB in sixty commits, over three times the limit
            server.publish(list(range(k * 10 + 1, k * 10 + 11)), size=1000)
        # The limit plus at most about a sixteenth of it (the segment being written) and a record's worth.
        bound = 200000 + 200000 // 16 + 12000
        wait_for(lambda: _data_bytes(store) <= bound, 15, "retention to delete the oldest segment files")
    finally:
        assert server.stop() == 0
    assert len(segments_in(data_dir(store))) > 1
    kept = audit_store(store)
    assert 150 <= kept <= 200


def test_synchronous_full_writes_records_and_index_that_survive_a_kill(tmp_path: Path) -> None:
    """`synchronous: full` (fdatasync of the segment before each index commit): the same files, the same reads."""
    store = tmp_path / "alerts.db"
    server = ServeProcess(tmp_path, store, "--retention", "10", "--store-sync", "full")
    try:
        for k in range(5):
            server.publish(list(range(k * 40 + 1, k * 40 + 41)))
    finally:
        server.kill()
    assert audit_store(store) == 200
    again = ServeProcess(tmp_path, store, "--retention", "10", "--store-sync", "full")
    try:
        assert [number_of(r) for r in again.get_all()] == list(range(1, 201))
    finally:
        assert again.stop() == 0
