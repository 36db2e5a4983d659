"""The persistent alert store: every alert committed to disk before any subscriber can see it.

The hub assigns sequences and keeps its in-memory ring as before, but with a store attached a published alert
only becomes visible to readers once the store's writer thread has committed it (`Hub.mark_durable`). The
writer does group commit: it wakes on the first pending alert, gathers for `commit_window_ms`, writes the
pending alerts (up to COMMIT_MAX; more go in the next transaction at once) and every Falco cursor that moved in
one transaction, then makes them visible. Neither the
engine thread nor the event loop ever waits for the disk: `Hub.publish` appends to a list, and reads that reach
past the ring run in a worker thread (`read`). Alerts published through the input service arrive with their
wire form; for those the engine publishes, the writer makes it before the commit (`_make_wires`): the conversion
their first subscriber would make without a store, done once for the store and every subscriber.

When the store cannot be written (full disk, read-only, I/O error) alerts keep flowing from memory: the writer
makes them visible at once, keeps up to a ring's worth for a retry every few seconds, and reports the failure
as an internal alert and in its counters; durability is lost, never alerts. A corrupt file is set aside and a
new one started with the running epoch and sequence, so open cursors stay valid.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable
from operator import attrgetter
from dataclasses import dataclass
from pathlib import Path

from falconet.model.alert import Alert, Priority
from falconet.server.hub import Entry, Hub
from falconet.server.store_data import RECORD_ALERTS, DataFiles, IndexRow, Run, data_dir, read_record, runs
from falconet.server.store_schema import (
    StoreConfig,
    StoreError,
    StoreState,
    connect,
    lock_store,
    open_store,
    set_aside,
    store_error,
)

STORE_RULE = "Falconet internal: alert store failure"
STORE_RECOVERED_RULE = "Falconet internal: alert store recovered"
RETRY_SECONDS = 5.0
"""How often a store that failed is tried again."""
RETENTION_SECONDS = 1.0
COMMIT_MAX = 2048
"""Most alerts one commit takes (what more is pending goes into the next, at once)."""
CONVERT_STEP = 64
"""Alerts the writer converts between two looks at whether the commit beside it is done (about 0.5 ms)."""
DELETE_CHUNK = 100_000
"""Most rows one retention pass deletes, so a changed limit never makes one huge transaction."""

Report = Callable[[Alert], None]


@dataclass(frozen=True, slots=True)
class StoreStats:
    path: str
    healthy: bool
    """False while the store cannot be written (alerts are then delivered from memory only)."""
    failures: int
    """Commits (or opens) that failed."""
    set_aside: int
    """Corrupt files moved aside."""
    unstored: int
    """Alerts never stored because the store could not be written for too long."""
    committed: int
    count: int
    payload_bytes: int
    oldest: int | None
    last_error: str
    damaged: int = 0
    """Stored records found damaged when read (never served; their alerts reported lost to the reader)."""


class AlertStore:
    """The store file, its writer thread and its read connection. Never raises into the server: a store that
    cannot be opened is reported (`opened` is None) and the server runs from memory."""

    def __init__(self, config: StoreConfig) -> None:
        assert config.path is not None
        self.config = config
        self.path: Path = config.path
        self._conn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._rlock = threading.Lock()
        self.opened: StoreState | None = None
        self.problems: list[str] = []
        """Reports made before a hub was attached (the open), sent once it is."""
        self.failures = self.set_aside_count = self.unstored = self.committed = 0
        self.count = self.payload_bytes = 0
        self.oldest: int | None = None
        self.last_error = ""
        self.damaged = 0
        self._damaged_seen: set[int] = set()
        self._damage_reports: deque[str] = deque()
        """Found by readers (worker threads); raised as internal alerts by the writer thread."""
        self.healthy = False
        self._lock_fd: int | None = None
        self._data = DataFiles(data_dir(self.path), config.limits(), config.synchronous == "full")
        try:
            self._lock_fd = lock_store(self.path)
            conn, state, moved = open_store(config)
        except StoreError as exc:
            self._fail(str(exc))
        else:
            try:
                self._attach_conn(conn, state)
                self.opened = state
            except sqlite3.Error as exc:
                conn.close()
                self._conn = None
                self._fail(str(store_error(exc, "cannot open for reading", self.path)))
            except OSError as exc:
                conn.close()
                self._conn = None
                self._fail(str(data_error(exc, "cannot open its data file", self.path)))
            if self.opened is not None and state.data.dropped:
                self.problems.append(
                    f"the alert store {str(self.path)!r} indexed {state.data.dropped} alerts whose data was not on "
                    "disk (a power loss?): they are not served"
                )
            if moved is not None and self.opened is not None:
                self.set_aside_count += 1
                self.problems.append(f"the alert store {str(self.path)!r} was corrupt: moved to {str(moved)!r}, "
                                     "a new one started (the alerts in it are not served)")
        self.hub: Hub | None = None
        self.report: Report | None = None
        self._wake = threading.Event()
        self._io: ThreadPoolExecutor | None = None
        """Runs each commit (the record's write and the index commit, mostly without the GIL) while the writer
        converts the next alerts: `_commit_beside_conversion`."""
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._backlog: deque[Run] = deque()
        """Groups waiting for the commit, each (first, last, wire forms) of consecutive alerts: the wires are
        taken once, when the group is drained, and written as they are (no list or object per alert after)."""
        self._backlog_n = 0
        self._cursors: dict[str, int] = {}
        self._last_stored_ns = 0
        self._retry_at = 0.0
        self._assigned = 0

    def _attach_conn(self, conn: sqlite3.Connection, state: StoreState) -> None:
        d = state.data
        self._data.resume(d.segment, d.end, d.alerts, d.started_ns)
        self._conn = conn
        self._rconn = connect(self.path, self.config.synchronous)
        self.count, self.payload_bytes, self.oldest = state.count, state.payload_bytes, state.oldest
        self._assigned = state.head
        self.healthy = True

    def _fail(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        self.problems.append(message)
        self.healthy = False

    # -- life ------------------------------------------------------------------------------------------------

    def start(self, hub: Hub, report: Report | None = None) -> None:
        """Starts the writer for `hub` (made with this store); `report` raises an internal alert (default: into
        the hub directly)."""
        self.hub = hub
        self.report = report
        self._io = ThreadPoolExecutor(1, thread_name_prefix="falconet-store-io")
        self._thread = threading.Thread(target=self._run, name="falconet-store", daemon=True)
        self._thread.start()
        self._wake.set()

    def notify(self) -> None:
        """Called by the hub when alerts wait to be committed (cheap: sets an event unless already set; the
        writer clears it before it drains, so an alert appended after a drain always sets it again)."""
        if not self._wake.is_set():
            self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Commits what is pending, stops the writer and closes the file."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None
        with self._rlock:
            for conn in (self._conn, self._rconn):
                if conn is not None:
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass
            self._conn = self._rconn = None
            self._data.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def stats(self) -> StoreStats:
        return StoreStats(
            str(self.path), self.healthy, self.failures, self.set_aside_count, self.unstored, self.committed,
            self.count, self.payload_bytes, self.oldest, self.last_error, self.damaged,
        )

    # -- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        hub = self.hub
        assert hub is not None
        try:
            self._loop(hub)
        except Exception as exc:  # a bug here must not stop alerts: the hub goes on from memory, and says so
            hub.detach_store()
            self._fail(f"alert store {str(self.path)!r}: the writer stopped: {type(exc).__name__}: {exc}")
            self._raise(STORE_RULE, Priority.ERROR, f"{self.last_error}; alerts are kept in memory only")

    def _loop(self, hub: Hub) -> None:
        for message in self.problems:
            self._raise(STORE_RULE, Priority.ERROR, message)
        self.problems = []
        window = self.config.commit_window_ms / 1000.0
        next_retention = time.monotonic()
        more = False
        while True:
            if not more:
                self._wake.wait(RETENTION_SECONDS)
                if window > 0 and not self._stopping:
                    time.sleep(window)  # the group-commit window: gather what arrives meanwhile into one transaction
                self._wake.clear()
            stopping = self._stopping
            # A bounded group: readers see a long burst group by group. What is left is not notified again:
            # drain on at once.
            entries, cursors = hub.drain_unsynced(COMMIT_MAX)
            more = len(entries) == COMMIT_MAX
            if entries:
                groups = runs(entries, _make_wires(entries))
                self._assigned = entries[-1].seq
                self._backlog.extend(groups)
                self._backlog_n += len(entries)
            self._cursors.update(cursors)
            if self._backlog or self._cursors:
                self._commit_beside_conversion(hub)
            if entries:
                # Committed, or (store failing) delivered from memory: either way the readers may see them now.
                hub.mark_durable(entries[-1].seq)
            if time.monotonic() >= next_retention and self.healthy:
                next_retention = time.monotonic() + RETENTION_SECONDS
                self._retention()
            while self._damage_reports:
                self._raise(STORE_RULE, Priority.ERROR, self._damage_reports.popleft())
            if stopping and not more:
                return

    def _commit_beside_conversion(self, hub: Hub) -> None:
        """Commits the backlog in the I/O thread and, while that runs, makes the wire forms of the alerts
        published since the drain (the next group), in slices, until the commit is done.

        The write of the record and SQLite's commit hold the GIL only briefly, and on a VM the write costs
        several µs per alert (new page-cache pages: bench/RESULTS.md, "storeready (session 6)"); done one after
        the other with the conversion, a burst's alerts waited for both. The conversion stops as soon as the
        commit is done, so what is committed becomes visible no later than it would have. Nothing else is shared
        with the I/O thread meanwhile: the writer only converts (each entry caches its one wire form)."""
        io = self._io
        if io is None:  # not started (tests drive the writer directly)
            self._commit()
            return
        done: Future[None] = io.submit(self._commit)
        pending = hub.pending(COMMIT_MAX)
        for i in range(0, len(pending), CONVERT_STEP):
            if done.done():
                break
            _convert(pending[i : i + CONVERT_STEP])
        done.result()

    def _commit(self) -> None:
        if self._conn is None:  # never opened (its failure was reported): memory only for this run
            self._backlog.clear()
            self._backlog_n = 0
            self._cursors.clear()
            return
        if not self.healthy and time.monotonic() < self._retry_at:
            self._trim_backlog()
            return
        now = max(time.time_ns(), self._last_stored_ns)
        chunks = [(first, last, now, wires) for first, last, wires in self._backlog]
        try:
            self._write(chunks)
        except sqlite3.Error as exc:
            self._write_failed(store_error(exc, "cannot commit", self.path))
            self._trim_backlog()
            return
        except OSError as exc:
            self._write_failed(data_error(exc, "cannot write its data file", self.path))
            self._trim_backlog()
            return
        self._last_stored_ns = now
        self.committed += self._backlog_n
        if not self.healthy:
            self.healthy = True
            unstored, self.unstored = self.unstored, 0
            self._raise(
                STORE_RECOVERED_RULE, Priority.NOTICE,
                f"the alert store {str(self.path)!r} is written again"
                + (f"; {unstored} alerts published meanwhile are not in it" if unstored else ""),
                unstored=unstored,
            )
        self._backlog.clear()
        self._backlog_n = 0
        self._cursors.clear()

    def _write(self, chunks: list[tuple[int, int, int, list[bytes]]]) -> None:
        """Appends the chunks' records to the data file, then commits their index rows (never the other way
        round: the index must not point past written data; server/store_data.py)."""
        conn = self._conn
        assert conn is not None
        rows: list[IndexRow] = self._data.append(chunks) if chunks else []
        added = sum(r[5] for r in rows)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if rows:
                # OR REPLACE: a retry after a failed commit may meet a row SQLite kept; it holds the same alerts.
                conn.executemany(
                    "INSERT OR REPLACE INTO chunks (first, last, stored_ns, segment, offset, size) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            if self._cursors:
                conn.executemany(
                    "INSERT INTO falco_cursors (identity, seq) VALUES (?, ?) "
                    "ON CONFLICT(identity) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    list(self._cursors.items()),
                )
            conn.execute(
                "UPDATE meta SET value = CASE key WHEN 'head' THEN MAX(CAST(value AS INTEGER), ?) "
                "ELSE CAST(value AS INTEGER) + ? END WHERE key IN ('head', 'bytes')",
                (self._assigned, added),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._data.undo()
            raise
        self.count += sum(c[1] - c[0] + 1 for c in chunks)
        self.payload_bytes += added
        if self.oldest is None and chunks:
            self.oldest = chunks[0][0]

    def _write_failed(self, err: StoreError) -> None:
        first = self.healthy
        self.failures += 1
        self.last_error = str(err)
        self.healthy = False
        self._retry_at = time.monotonic() + RETRY_SECONDS
        if err.corrupt:
            self._replace_corrupt(err)
            return
        if first:
            self._raise(
                STORE_RULE, Priority.ERROR,
                f"{err}; alerts are delivered from memory only (not durable) until it can be written again",
            )

    def _replace_corrupt(self, err: StoreError) -> None:
        """Sets the corrupt file aside and starts a new one that continues this hub's epoch and sequence."""
        hub = self.hub
        assert hub is not None
        with self._rlock:
            for conn in (self._conn, self._rconn):
                if conn is not None:
                    conn.close()
            self._conn = self._rconn = None
            self._data.close()
            try:
                moved: Path | None = set_aside(self.path)
                start = (self._backlog[0][0] - 1) if self._backlog else self._assigned
                conn, state, _ = open_store(self.config, epoch=hub.epoch, head=start)
                self._attach_conn(conn, state)
                self._retry_at = 0.0
                self.set_aside_count += 1
            except (OSError, StoreError, sqlite3.Error) as exc:  # noqa: B014 (StoreError is not an OSError)
                moved = None
                self.last_error = f"{err}; and no new store could be started: {exc}"
        self.healthy = False  # the next commit (at once) says whether the new file works
        self._raise(
            STORE_RULE, Priority.ERROR,
            f"{err}; " + (f"the file was moved to {str(moved)!r} and a new store started (the alerts in it are "
                          "no longer served)" if moved else self.last_error),
        )

    def _trim_backlog(self) -> None:
        hub = self.hub
        assert hub is not None
        excess = self._backlog_n - hub.retention
        while excess > 0:
            first, last, wires = self._backlog.popleft()
            n = last - first + 1
            if n > excess:  # the group's newest alerts stay
                self._backlog.appendleft((first + excess, last, wires[excess:]))
                n = excess
            excess -= n
            self._backlog_n -= n
            self.unstored += n

    # -- retention -------------------------------------------------------------------------------------------

    def _retention(self) -> None:
        conn = self._conn
        if conn is None or self.oldest is None:
            return
        c = self.config
        cut = self.oldest  # delete every chunk that ends before `cut`
        try:
            excess_n = self.count - c.max_alerts if c.max_alerts else 0
            excess_b = self.payload_bytes - c.max_bytes if c.max_bytes else 0
            if excess_n > 0 or excess_b > 0:
                cut = max(cut, self._excess_cut(conn, excess_n, excess_b))
            if c.max_age_s:
                cut = max(cut, self._age_cut(conn, time.time_ns() - int(c.max_age_s * 1e9)))
            if cut <= self.oldest:
                return
            conn.execute("BEGIN IMMEDIATE")
            n, freed = conn.execute(
                "SELECT TOTAL(last - first + 1), TOTAL(size) FROM chunks WHERE first < ?", (cut,)
            ).fetchone()
            conn.execute("DELETE FROM chunks WHERE first < ?", (cut,))
            conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) - ? WHERE key = 'bytes'", (int(freed),))
            conn.execute("COMMIT")
            row = conn.execute("SELECT first, segment FROM chunks ORDER BY first LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._write_failed(store_error(exc, "cannot apply retention", self.path))
            return
        self.count -= int(n)
        self.payload_bytes -= int(freed)
        self.oldest = None if row is None else int(row[0])
        # The index no longer points into older segments (committed above): their files go whole.
        self._data.delete_before(self._data.segment if row is None else int(row[1]))

    def _excess_cut(self, conn: sqlite3.Connection, excess_n: int, excess_b: int) -> int:
        """The first sequence to keep so that the count and the bytes are back within their limits (whole chunks,
        at most DELETE_CHUNK alerts per pass)."""
        freed_n = freed_b = 0
        cut = self.oldest or 0
        for first, last, size in conn.execute(
            "SELECT first, last, size FROM chunks ORDER BY first LIMIT ?", (DELETE_CHUNK // 16,)
        ):
            if (freed_n >= excess_n and freed_b >= excess_b) or freed_n >= DELETE_CHUNK:
                break
            freed_n += int(last) - int(first) + 1
            freed_b += int(size)
            cut = int(last) + 1
        return cut

    def _age_cut(self, conn: sqlite3.Connection, cutoff_ns: int) -> int:
        """The first chunk stored at or after `cutoff_ns`, by binary search (stored_ns grows with the sequence)."""
        assert self.oldest is not None
        lo, hi = self.oldest, self._assigned + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = conn.execute(
                "SELECT first, last, stored_ns FROM chunks WHERE last >= ? ORDER BY first LIMIT 1", (mid,)
            ).fetchone()
            if row is None or int(row[2]) >= cutoff_ns:
                hi = mid if row is None else min(mid, int(row[0]))
            else:
                lo = int(row[1]) + 1
        return lo

    # -- reading (any thread; never the event loop's) ---------------------------------------------------------

    def read(self, first: int, max_n: int) -> list[tuple[int, bytes]]:
        """Up to `max_n` stored (sequence, wire form) pairs from `first` on; [] when the store cannot be read."""
        with self._rlock:
            conn = self._rconn
            if conn is None:
                return []
            try:
                rows = conn.execute(
                    "SELECT first, last, segment, offset, size FROM chunks WHERE last >= ? ORDER BY first LIMIT ?",
                    (first, max_n // RECORD_ALERTS + 64),  # small records when alerts come one by one
                ).fetchall()
            except sqlite3.Error as exc:
                self.last_error = str(store_error(exc, "cannot read", self.path))
                return []
        directory = self._data.directory
        out: list[tuple[int, bytes]] = []
        for chunk_first, chunk_last, segment, offset, size in rows:
            try:
                wires = read_record(directory, int(segment), int(offset), int(chunk_first), int(chunk_last), int(size))
            except (ValueError, IndexError, OSError) as exc:
                # Missing or damaged: never served. Read on past it, so that the reader is told of exactly its
                # alerts as lost (the hub counts the gap before the next alert returned).
                oldest = self.oldest
                if oldest is not None and int(chunk_last) >= oldest:  # else retention removed it meanwhile
                    self._damage(int(chunk_first), int(chunk_last), exc)
                if out:
                    return out
                continue
            for seq, wire in enumerate(wires, int(chunk_first)):
                if seq >= first:
                    out.append((seq, wire))
                    if len(out) >= max_n:
                        return out
        return out

    def _damage(self, first: int, last: int, exc: Exception) -> None:
        """Counts a damaged or missing record and has the writer report it once (reads come from any thread)."""
        self.last_error = f"alert store {str(self.path)!r}: alerts {first}..{last}: {exc}"
        if first in self._damaged_seen or len(self._damaged_seen) >= 10_000:
            return
        self._damaged_seen.add(first)
        self.damaged += 1
        self._damage_reports.append(f"{self.last_error}; they are not served (readers are told of them as lost)")
        self._wake.set()

    # -- reports ---------------------------------------------------------------------------------------------

    def _raise(self, rule: str, priority: Priority, message: str, **extra: int) -> None:
        hub = self.hub
        assert hub is not None
        alert = Alert(
            time_ns=time.time_ns(),
            rule=rule,
            priority=priority,
            source="internal",
            output=f"Falconet internal: {message}",
            output_fields={"store.path": str(self.path), "store.failures": self.failures, **extra},
            tags=["falconet", "store"],
            hostname=hub.hostname,
        )
        if self.report is not None:
            self.report(alert)
        else:
            hub.publish(alert)


def _make_wires(entries: list[Entry]) -> list[bytes]:
    """The entries' wire forms, making each that is missing (the engine published it), in the writer thread.

    This is the conversion the alert's first subscriber would make without a store (on the event loop), done
    once for the store and every subscriber, and held to the same terms: it takes the GIL for several µs per
    alert and gives it up at the interpreter's switch interval when another thread wants it, as a subscriber's
    first read does. Two earlier designs cost more CPU per alert than they saved: a converter thread of its own
    (sessions 4-5), which converted ahead of the commit while the writer was in SQLite (since SQLite holds only
    the index there is little to overlap; its polling and GIL hand-offs remained), and yielding the GIL after
    every 32 alerts (each yield let any thread that wanted the GIL, gRPC's poller included, hold it for up to a
    switch interval: a group of 2,048 then took up to 300 ms); bench/RESULTS.md, "storeready (session 6)"."""
    wires = list(map(_wire_of, entries))
    if None in wires:  # else received alerts (or converted while the last commit ran)
        wires = list(map(Entry.wire, entries))
    return wires


def _convert(entries: list[Entry]) -> None:
    """Makes the missing wire forms of alerts still pending (while a commit runs beside)."""
    if None in map(_wire_of, entries):
        for _ in map(Entry.wire, entries):
            pass


_wire_of = attrgetter("_wire")


def data_error(exc: OSError, doing: str, path: Path) -> StoreError:
    """Our error for a failed data file operation (never corrupt: the file is not set aside for it)."""
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return StoreError(f"alert store {str(path)!r}: {doing}: {exc.strerror or exc} ({name})")


def hub_with_store(config: StoreConfig, retention: int, hostname: str) -> tuple[Hub, AlertStore | None]:
    """A hub backed by the configured store (its epoch, sequence and Falco cursors carried on), or a memory-only
    hub when the store is off or cannot be opened (that failure is reported once the store is started)."""
    if config.path is None:
        return Hub(retention, hostname=hostname), None
    store = AlertStore(config)
    state = store.opened
    if state is None:
        return Hub(retention, hostname=hostname), store
    hub = Hub(
        retention,
        epoch=state.epoch,
        hostname=hostname,
        store=store,
        head=state.head,
        falco_cursors=state.falco_cursors,
    )
    return hub, store
