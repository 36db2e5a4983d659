"""The alert store's file: its settings, its SQLite schema, and opening it (or setting a corrupt one aside).

Schema version 3: the alerts' bytes are in append-only segment files beside the database (server/store_data.py),
and SQLite holds the index: one row per record (a commit's consecutive alerts: first, last, stored_ns,
segment, offset, size), the store's epoch, the newest sequence ever assigned, the payload byte count and each
Falco identity's cursor. WAL with `synchronous=NORMAL` makes a committed transaction survive the death of the
process (it is in the WAL file in the page cache, and the records it indexes were written before it) but not of
the machine; `synchronous=FULL` fdatasyncs the segment, then fsyncs each commit, which survives power loss at
the cost of two fsyncs per group. A schema 2 file (chunks' bytes inside SQLite) is migrated when opened
(server/store_layout.py).

Errors are sorted by SQLite's result code, not by message: a corrupt or foreign file (SQLITE_CORRUPT,
SQLITE_NOTADB) is moved aside and a new file started; anything else (full disk, read-only directory, I/O
error) means the store cannot be written now, and the server carries on from memory.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from falconet.server.store_data import Limits, data_dir
from falconet.server.store_layout import INDEX_DDL, DataState, migrate_v2, recover

if TYPE_CHECKING:
    from falconet.server.config_values import Section

DEFAULT_STORE_PATH = Path("/var/lib/falconet/alerts.db")
SCHEMA_VERSION = 3
MIGRATES_FROM = "2"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    INDEX_DDL.format(table="chunks"),
    "CREATE TABLE IF NOT EXISTS falco_cursors (identity TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
)

WAL_CHECKPOINT_BYTES = 16 << 20
"""How much the WAL holds before a commit checkpoints it into the database file. SQLite's default is 1,000
pages: 16 MiB with PAGE_BYTES, but 4 MiB in an older file with 4 KiB pages, which this gives the same 16 MiB
(a larger WAL measured no cheaper). Each checkpoint copies the WAL's pages into the file and, with `synchronous=NORMAL`, fsyncs both in
the writer thread. It does not change what a commit promises: a committed transaction is in the WAL either way.
Bounded by an eighth of `max_bytes`, so that a small store on a small disk is not filled by its WAL."""

PAGE_BYTES = 4096
"""SQLite's page size for a new store file (an existing file keeps its own). Since the alerts' bytes left SQLite
(schema 3) a commit writes a few index rows and the meta row: the smallest page writes the least per commit (a
schema 2 file made with 16 KiB pages for its blobs keeps them)."""

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store lives and how much it keeps; `path=None` turns the store off (memory only)."""

    path: Path | None = None
    max_alerts: int = 1_000_000
    """Retention by count (0 = no count limit)."""
    max_age_s: float = 7 * 86400.0
    """Retention by age in seconds since the alert was stored (0 = no age limit)."""
    max_bytes: int = 1 << 30
    """Retention by the alerts' wire bytes (0 = no byte limit); the file itself is somewhat larger."""
    commit_window_ms: float = 2.0
    """How long the writer gathers alerts into one transaction after the first one arrives."""
    synchronous: Literal["normal", "full"] = "normal"
    """normal: durable against a crash of the process; full: also against power loss (an fsync per commit)."""

    def limits(self) -> Limits:
        """When the writer starts a new segment file (a sixteenth of each retention limit)."""
        return Limits.of(self.max_bytes, self.max_alerts, self.max_age_s)

    def wal_bytes(self) -> int:
        """The writer's WAL checkpoint size (WAL_CHECKPOINT_BYTES, or an eighth of `max_bytes` if less)."""
        return min(WAL_CHECKPOINT_BYTES, self.max_bytes // 8) if self.max_bytes else WAL_CHECKPOINT_BYTES

    def problems(self) -> list[str]:
        """What is wrong with these settings, as sentences (empty when they are usable)."""
        out: list[str] = []
        if self.path is not None and not self.path.is_absolute():
            out.append(f"alert_store.path must be an absolute path, got {str(self.path)!r}.")
        if self.max_alerts < 0 or self.max_bytes < 0 or self.max_age_s < 0:
            out.append("alert_store.max_alerts, max_bytes and max_age must not be negative (0 = no limit).")
        if not 0 <= self.commit_window_ms <= 1000:
            out.append(f"alert_store.commit_window_ms must be between 0 and 1000, got {self.commit_window_ms:g}.")
        if self.synchronous not in ("normal", "full"):
            out.append(f"alert_store.synchronous must be normal or full, got {self.synchronous!r}.")
        return out


class StoreError(Exception):
    """The store cannot be used as asked; `corrupt` says whether setting the file aside would help."""

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


def store_error(exc: sqlite3.Error, doing: str, path: Path) -> StoreError:
    """Our error for a SQLite error, sorted by its result code (SQLite's messages are not an interface)."""
    code = getattr(exc, "sqlite_errorcode", None)
    corrupt = code is not None and (code & 0xFF) in _CORRUPT_CODES
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return StoreError(f"alert store {str(path)!r}: {doing}: {exc} ({name})", corrupt=corrupt)


@dataclass(slots=True)
class StoreState:
    """What a store file says about itself when opened."""

    epoch: str
    head: int
    """The newest sequence ever assigned in this store (0 = none)."""
    oldest: int | None
    """The oldest sequence still stored (None = no alert stored)."""
    count: int
    payload_bytes: int
    falco_cursors: dict[str, int]
    data: DataState
    """Where the writer appends next (and what opening dropped)."""


def connect(path: Path, synchronous: str, wal_bytes: int = 0) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (transactions are explicit), usable from any one thread at a time;
    `wal_bytes`: checkpoint once the WAL holds that much (0: SQLite's default)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        if PAGE_BYTES:
            conn.execute(f"PRAGMA page_size={PAGE_BYTES}")  # only a new, empty file takes it
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal_mode is {mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        if wal_bytes:
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA wal_autocheckpoint={max(16, wal_bytes // page)}")
    except BaseException:
        conn.close()
        raise
    return conn


def initialise(
    conn: sqlite3.Connection, path: Path, limits: Limits, *, epoch: str | None = None, head: int = 0
) -> StoreState:
    """Creates the schema if missing, migrates a schema 2 file, brings the data files into agreement with the
    index (`recover`) and reads the state; a new file takes `epoch` (or a random one) and starts after `head`
    (so a store started afresh under a running hub continues its sequences)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for ddl in _SCHEMA:
            conn.execute(ddl)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "epoch" not in meta:
            meta = {
                "epoch": epoch or secrets.token_hex(6),
                "head": str(head),
                "bytes": "0",
                "schema": str(SCHEMA_VERSION),
                "created_ns": str(time.time_ns()),
            }
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if meta.get("schema") == MIGRATES_FROM:
        migrate_v2(conn, path, limits)
    elif meta.get("schema") != str(SCHEMA_VERSION):
        raise sqlite3.DatabaseError(f"schema version {meta.get('schema')!r} is not {SCHEMA_VERSION}")
    data = recover(conn, path)
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    low, high, count = conn.execute("SELECT MIN(first), MAX(last), TOTAL(last - first + 1) FROM chunks").fetchone()
    cursors = {str(k): int(v) for k, v in conn.execute("SELECT identity, seq FROM falco_cursors")}
    return StoreState(
        epoch=str(meta["epoch"]),
        head=max(int(meta["head"]), int(high or 0)),
        oldest=None if low is None else int(low),
        count=int(count),
        payload_bytes=int(meta["bytes"]),
        falco_cursors=cursors,
        data=data,
    )


def set_aside(path: Path) -> Path:
    """Renames a corrupt store (and its -wal/-shm files and -data directory) to PATH.corrupt-TIMESTAMP-PID;
    returns the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    if data_dir(path).exists():
        os.replace(data_dir(path), data_dir(target))
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    if path.exists():
        os.replace(path, target)
    return target


def open_store(
    config: StoreConfig, *, epoch: str | None = None, head: int = 0
) -> tuple[sqlite3.Connection, StoreState, Path | None]:
    """Opens (creating it and its directory if needed) the store; a corrupt file is set aside and a new one
    started. Returns the connection, the state and where a corrupt file went. Raises StoreError when the store
    cannot be opened for writing."""
    path = config.path
    assert path is not None
    moved: Path | None = None
    for attempt in (1, 2):
        conn: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            conn = connect(path, config.synchronous, config.wal_bytes())
            return conn, initialise(conn, path, config.limits(), epoch=epoch, head=head), moved
        except OSError as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"alert store {str(path)!r}: cannot open its data files: {exc.strerror}") from None
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            err = store_error(exc, "cannot open", path)
            if not err.corrupt and "schema version" not in str(exc):
                raise err from None
            if attempt == 2:
                raise err from None
            try:
                moved = set_aside(path)
            except OSError as os_exc:
                raise StoreError(f"{err}; and it cannot be set aside: {os_exc.strerror}") from None
    raise AssertionError("unreachable")


def read_store_section(s: Section) -> StoreConfig:
    """The daemon file's `alert_store` block (ours; Falco has none). An absent block or an empty `path` leaves
    the store off; the packaged falconet.yaml turns it on at DEFAULT_STORE_PATH."""
    d = StoreConfig()
    sync = s.string("synchronous", d.synchronous)
    config = StoreConfig(
        path=s.path("path"),
        max_alerts=s.integer("max_alerts", d.max_alerts),
        max_age_s=s.number("max_age", d.max_age_s),
        max_bytes=s.integer("max_bytes", d.max_bytes),
        commit_window_ms=s.number("commit_window_ms", d.commit_window_ms),
        synchronous="full" if sync == "full" else "normal",
    )
    if sync not in ("normal", "full"):
        s.problems.add(f"{s.prefix}synchronous must be normal or full, got {sync!r}.")
    for problem in config.problems():
        s.problems.add(problem)
    return config


def lock_store(path: Path) -> int:
    """Takes PATH.lock exclusively (two servers appending to one store would interleave their sequences);
    returns its descriptor, held for the store's life. Raises StoreError if another process holds it."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"alert store {str(path)!r}: cannot create {str(lock)!r}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"alert store {str(path)!r} is in use by another falconet process") from None
    return fd
