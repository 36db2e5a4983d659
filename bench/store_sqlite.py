"""What the alert store's file layout costs per alert, alone: the writer's commit pattern (groups of 2,048
alerts of 760 bytes, 256 per row, one transaction per group) replayed against SQLite with several settings,
against an append-only data file with only an index in SQLite (with and without a checksum per row), and
the store's own code since schema 3 (`store-v3`: server/store_data.py's records and the index row).

`python -m bench.store_sqlite [--alerts N] [--rounds R] [LAYOUT ...]`: each layout R times, interleaved, in a
fresh directory under /tmp; prints the writing thread's user and system CPU per alert (least of the rounds, the
figure the machine's other load disturbs least) and the wall time. Run it long enough (the default 600,000
alerts, about 460 MB) that every layout checkpoints many times: a short run that never fills the WAL hides the
checkpoints' cost.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ALERT_BYTES = 760
GROUP = 2048
ROW_ALERTS = 256

Writer = Callable[[Path, int], None]


def _payload() -> bytes:
    alerts = [os.urandom(ALERT_BYTES // 2).hex().encode()[:ALERT_BYTES] for _ in range(ROW_ALERTS)]
    return b"".join(b"\x0a\xf8\x05" + a for a in alerts)


def _sqlite(pragmas: list[str]) -> Writer:
    def write(directory: Path, n: int) -> None:
        conn = sqlite3.connect(str(directory / "s.db"), isolation_level=None)
        for pragma in pragmas:
            conn.execute(pragma)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE chunks (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, "
                     "stored_ns INTEGER NOT NULL, data BLOB NOT NULL)")
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
        conn.execute("INSERT INTO meta VALUES ('head', '0'), ('bytes', '0')")
        blob = _payload()
        seq = 1
        for _ in range(n // GROUP):
            rows = []
            for _ in range(GROUP // ROW_ALERTS):
                rows.append((seq, seq + ROW_ALERTS - 1, time.time_ns(), blob))
                seq += ROW_ALERTS
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO chunks (first, last, stored_ns, data) VALUES (?, ?, ?, ?)", rows)
            conn.execute("UPDATE meta SET value = CASE key WHEN 'head' THEN MAX(CAST(value AS INTEGER), ?) "
                         "ELSE CAST(value AS INTEGER) + ? END WHERE key IN ('head', 'bytes')", (seq, len(blob)))
            conn.execute("COMMIT")
        conn.close()

    return write


def _append_file(directory: Path, n: int, checksum: Callable[[bytes], int] | None = None) -> None:
    """Each group's rows written with one write() to a data file, then their (offset, length) committed;
    `checksum`: computed over each row's bytes (as the store's record header would carry it)."""
    conn = sqlite3.connect(str(directory / "s.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE chunks (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, "
                 "stored_ns INTEGER NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL)")
    fd = os.open(directory / "data", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    blob = _payload()
    seq = offset = 0
    try:
        for _ in range(n // GROUP):
            parts = [blob] * (GROUP // ROW_ALERTS)
            if checksum is not None:
                for part in parts:
                    checksum(part)
            os.write(fd, b"".join(parts))
            rows = []
            for part in parts:
                rows.append((seq, seq + ROW_ALERTS - 1, time.time_ns(), offset, len(part)))
                seq += ROW_ALERTS
                offset += len(part)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
    finally:
        os.close(fd)
        conn.close()


def _store_v3(directory: Path, n: int) -> None:
    """What the store does since schema 3 (server/store_data.py): each commit one record (lengths table, wire
    forms joined, CRC-32) appended to a segment, then its index row committed."""
    from falconet.server.store_data import DataFiles, Limits
    from falconet.server.store_layout import INDEX_DDL

    conn = sqlite3.connect(str(directory / "s.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(INDEX_DDL.format(table="chunks"))
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    conn.execute("INSERT INTO meta VALUES ('head', '0'), ('bytes', '0')")
    files = DataFiles(directory / "data", Limits.of(1 << 30, 1_000_000, 7 * 86400.0), sync=False)
    files.resume(1, 0, 0, 0)
    wires = [os.urandom(ALERT_BYTES // 2).hex().encode()[:ALERT_BYTES] for _ in range(GROUP)]
    seq = 1
    try:
        for _ in range(n // GROUP):
            rows = files.append([(seq, seq + GROUP - 1, time.time_ns(), wires)])
            seq += GROUP
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("UPDATE meta SET value = CASE key WHEN 'head' THEN MAX(CAST(value AS INTEGER), ?) "
                         "ELSE CAST(value AS INTEGER) + ? END WHERE key IN ('head', 'bytes')", (seq, rows[0][5]))
            conn.execute("COMMIT")
    finally:
        files.close()
        conn.close()


LAYOUTS: dict[str, Writer] = {
    "sqlite-4k": _sqlite(["PRAGMA page_size=4096"]),
    "sqlite-8k": _sqlite(["PRAGMA page_size=8192"]),
    "sqlite-16k": _sqlite(["PRAGMA page_size=16384"]),
    "sqlite-16k-wal64m": _sqlite(["PRAGMA page_size=16384", "PRAGMA wal_autocheckpoint=4096"]),
    "sqlite-64k": _sqlite(["PRAGMA page_size=65536"]),
    "append-file": _append_file,
    "append-file-crc32": lambda d, n: _append_file(d, n, zlib.crc32),
    "append-file-adler32": lambda d, n: _append_file(d, n, zlib.adler32),
    "store-v3": _store_v3,
}


def set_group(group: int) -> None:
    """Alerts per commit (and per row, up to 256)."""
    global GROUP, ROW_ALERTS
    GROUP = max(1, group)
    ROW_ALERTS = min(256, GROUP)


def measure(write: Writer, n: int) -> tuple[float, float, float]:
    """(user, system, wall) µs per alert of the thread writing `n` alerts."""
    directory = Path(tempfile.mkdtemp(prefix="fn-store-sqlite-"))
    try:
        r0 = resource.getrusage(resource.RUSAGE_THREAD)
        t0 = time.perf_counter()
        write(directory, n)
        r1 = resource.getrusage(resource.RUSAGE_THREAD)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    done = n // GROUP * GROUP
    return ((r1.ru_utime - r0.ru_utime) / done * 1e6, (r1.ru_stime - r0.ru_stime) / done * 1e6,
            wall / done * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layouts", nargs="*", metavar="LAYOUT", help=f"of {', '.join(LAYOUTS)} (default: all)")
    parser.add_argument("--alerts", type=int, default=600_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--group", type=int, default=GROUP,
                        help="alerts per commit (1: the daemon at a low rate, one alert per commit window)")
    args = parser.parse_args()
    set_group(args.group)
    names: list[str] = args.layouts or list(LAYOUTS)
    unknown = [name for name in names if name not in LAYOUTS]
    if unknown:
        parser.error(f"unknown layout {unknown[0]!r}; the layouts are {', '.join(LAYOUTS)}")
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            results[name].append(measure(LAYOUTS[name], args.alerts))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.alerts:,} alerts of {ALERT_BYTES} bytes, {GROUP} per "
          f"commit, {ROW_ALERTS} per row; CPU of the writing thread, least of {args.rounds} rounds")
    print(f"{'layout':<20} {'user+sys µs':>12} {'user':>6} {'sys':>6} {'wall µs':>8}")
    for name in names:
        user, system, wall = min(results[name], key=lambda r: r[0] + r[1])
        print(f"{name:<20} {user + system:>12.2f} {user:>6.2f} {system:>6.2f} {wall:>8.2f}")


if __name__ == "__main__":
    main()
