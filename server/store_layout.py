"""Bringing a store file's index and its data files into agreement when it is opened, and migrating a schema 2
file (alerts' bytes inside SQLite) to schema 3 (bytes in segment files, SQLite the index).

Both run in the opening thread before the writer starts, inside `store_schema.initialise`.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from falconet.server.store_data import (
    HEAD,
    DataError,
    DataFiles,
    Limits,
    data_dir,
    read_record,
    segments_in,
    unframe,
)

INDEX_DDL = (
    "CREATE TABLE IF NOT EXISTS {table} (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, "
    "stored_ns INTEGER NOT NULL, segment INTEGER NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL)"
)
"""One row per record: the chunk's consecutive sequences first..last, when it was committed (never goes back:
retention by age), and where its record is (segment file, offset of its head, payload bytes)."""


@dataclass(frozen=True, slots=True)
class DataState:
    """Where the writer appends next, and what opening had to drop."""

    segment: int
    end: int
    alerts: int
    """Alerts in the current segment (rotation by count)."""
    started_ns: int
    """When the current segment's first record was stored (rotation by age; 0 = empty)."""
    dropped: int
    """Indexed alerts whose record was missing or failed its checksum (a power loss with `synchronous:
    normal`): their index rows were removed."""


def recover(conn: sqlite3.Connection, path: Path) -> DataState:
    """Makes the data files agree with the committed index: drops index rows at the newest end whose record is
    missing or damaged (checking each from the newest back until one is whole), cuts the newest segment after
    its last indexed record (a torn or never-indexed tail left by a crash), and deletes segment files outside
    the indexed range (written but never indexed, or left by a retention pass a crash interrupted)."""
    directory = data_dir(path)
    dropped = 0
    row = None
    while True:
        row = conn.execute(
            "SELECT first, last, stored_ns, segment, offset, size FROM chunks ORDER BY first DESC LIMIT 1"
        ).fetchone()
        if row is None:
            break
        first, last, _, segment, offset, size = (int(v) for v in row)
        try:
            read_record(directory, segment, offset, first, last, size)
            break
        except (DataError, OSError):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM chunks WHERE first = ?", (first,))
            conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) - ? WHERE key = 'bytes'", (size,))
            conn.execute("COMMIT")
            dropped += last - first + 1
    present = segments_in(directory)
    if row is None:
        for p in present.values():
            p.unlink()
        return DataState(1, 0, 0, 0, dropped)
    newest, end = int(row[3]), int(row[4]) + HEAD.size + int(row[5])
    (oldest,) = conn.execute("SELECT segment FROM chunks ORDER BY first LIMIT 1").fetchone()
    for number, p in present.items():
        if number < int(oldest) or number > newest:
            p.unlink()
    alerts, started = conn.execute(
        "SELECT TOTAL(last - first + 1), MIN(stored_ns) FROM chunks WHERE segment = ?", (newest,)
    ).fetchone()
    return DataState(newest, end, int(alerts), int(started or 0), dropped)


def migrate_v2(conn: sqlite3.Connection, path: Path, limits: Limits) -> None:
    """Moves a schema 2 file's chunks into segment files and makes its table the index, in one transaction
    after every segment is written and fsynced: a crash before it leaves the file at schema 2 (the next open
    starts over, deleting the partial segments), after it at schema 3. Then VACUUM returns the blobs' pages."""
    directory = data_dir(path)
    for p in segments_in(directory).values():
        p.unlink()
    files = DataFiles(directory, limits, sync=False)
    files.resume(1, 0, 0, 0)
    rows = []
    try:
        for first, last, stored_ns, data in conn.execute("SELECT first, last, stored_ns, data FROM chunks ORDER BY first"):
            try:
                wires = unframe(bytes(data))
            except (ValueError, IndexError):
                wires = []
            if len(wires) != int(last) - int(first) + 1:
                continue  # a damaged chunk: not carried over (readers are told of its alerts as lost)
            rows.extend(files.append([(int(first), int(last), int(stored_ns), wires)]))
    finally:
        files.close()
    for p in segments_in(directory).values():
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(INDEX_DDL.format(table="chunks_v3"))
        conn.executemany("INSERT INTO chunks_v3 VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.execute("DROP TABLE chunks")
        conn.execute("ALTER TABLE chunks_v3 RENAME TO chunks")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("VACUUM")
