"""Reads that reach past the in-memory ring are served from the persistent store, through every way of reading
(Falco `get`, `sub` with a start position, the falconet.v1 stream and GetAll); Falco cursors per identity
survive a kill -9; retention by count, bytes and age applies to the store. All over a real `falconet serve`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server_support import start_after, start_oldest
from store_support import ServeProcess, number_of, wait_for

from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc

LOSS_RULE = "Falconet alerts lost"


def _stored_falco_cursors(store: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT identity, seq FROM falco_cursors").fetchall())
    finally:
        conn.close()


def test_reads_past_the_ring_come_from_the_store_in_every_way_of_reading(tmp_path: Path) -> None:
    store = tmp_path / "alerts.db"
    server = ServeProcess(tmp_path, store, "--retention", "50")
    try:
        reply = server.publish(list(range(1, 701)))
        epoch = reply.last.epoch
        assert reply.last.sequence == 700

        # falconet.v1 stream from the oldest: 1..700 in order, nothing reported lost (650 are not in memory).
        got: list[int] = []
        for resp in server.subscribe(start_oldest()):
            assert resp.rule != LOSS_RULE, resp.output
            got.append(resp.cursor.sequence)
            if len(got) == 700:
                break
        assert got == list(range(1, 701))

        # GetAll: everything retained.
        assert [number_of(r) for r in server.get_all()] == list(range(1, 701))

        # Falco `sub` with a start position after a cursor long gone from the ring.
        stub = outputs_pb2_grpc.serviceStub(server.channel)
        call = stub.sub(iter([outputs_pb2.request(start=start_after(epoch, 10))]), timeout=30)
        seqs = []
        for resp in call:
            seqs.append(resp.cursor.sequence)
            if len(seqs) == 690:
                break
        call.cancel()
        assert seqs == list(range(11, 701))

        # Falco `get` with a start, and with this identity's Falco cursor (drain: everything, then nothing).
        assert [r.cursor.sequence for r in server.falco_get(start_after(epoch, 600))] == list(range(601, 701))
        assert [number_of(r) for r in server.falco_get()] == list(range(1, 701))
        assert server.falco_get() == []
        # The cursor is committed with the next group (within a second); then a crash keeps it.
        wait_for(lambda: list(_stored_falco_cursors(store).values()) == [700], 10, "the Falco cursor stored")
    finally:
        server.kill()
    again = ServeProcess(tmp_path, store, "--retention", "50")
    try:
        assert again.falco_get() == [], "the Falco cursor was not kept: alerts already read came again"
        again.publish([701, 702])
        assert [(r.cursor.epoch, r.cursor.sequence, number_of(r)) for r in again.falco_get()] == [
            (epoch, 701, 701),
            (epoch, 702, 702),
        ]
    finally:
        assert again.stop() == 0


def test_retention_by_count_reports_what_a_stale_cursor_lost(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, tmp_path / "alerts.db", "--retention", "10", "--store-max-alerts", "100")
    try:
        # Thirty acknowledged publishes: thirty commits (retention removes whole commit chunks, oldest first).
        epoch = ""
        for k in range(30):
            epoch = server.publish(list(range(k * 10 + 1, k * 10 + 11))).last.epoch
        wait_for(lambda: len(server.get_all()) == 100, 15, "the store to keep its 100 newest alerts")
        assert [number_of(r) for r in server.get_all()] == list(range(201, 301))
        first, *rest = server.falco_get(start_after(epoch, 5))
        assert first.rule == LOSS_RULE and first.output_fields["falconet.lost"] == "195", first
        assert [r.cursor.sequence for r in rest] == list(range(201, 301))
    finally:
        assert server.stop() == 0


def test_retention_by_bytes_and_by_age(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    by_bytes = ServeProcess(
        tmp_path / "b", tmp_path / "b" / "alerts.db", "--retention", "10", "--store-max-bytes", "60000"
    )
    try:
        for k in range(20):  # about 1.1 KB each on the wire, in twenty commits
            by_bytes.publish(list(range(k * 10 + 1, k * 10 + 11)), size=1000)
        wait_for(lambda: len(by_bytes.get_all()) < 60, 15, "the store to drop alerts beyond 60,000 bytes")
        kept = by_bytes.get_all()
        assert sum(r.ByteSize() for r in kept[:-10]) <= 60000 and len(kept) >= 45
        assert [number_of(r) for r in kept] == list(range(201 - len(kept), 201))
    finally:
        assert by_bytes.stop() == 0
    by_age = ServeProcess(tmp_path / "a", tmp_path / "a" / "alerts.db", "--retention", "10", "--store-max-age", "1")
    try:
        by_age.publish(list(range(1, 101)))
        # After a second the store drops them all; the last 10 are still in memory.
        wait_for(lambda: len(by_age.get_all()) == 10, 15, "alerts older than a second to leave the store")
        assert [number_of(r) for r in by_age.get_all()] == list(range(91, 101))
    finally:
        assert by_age.stop() == 0
