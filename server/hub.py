"""The alert hub: one bounded retention ring that every producer writes and every subscriber reads.

The engine thread publishes each alert here and must never wait for a client, so `publish` only takes a short
lock, stores the alert in a fixed-size ring and wakes subscribers that are idle. Subscribers do not own queues:
each holds a sequence number and reads the ring at its own pace. One that falls further behind than the ring
retains loses the oldest alerts; the loss is counted on its `Reader` and handed back to it as a number, which
the gRPC services turn into an `internal` alert so that loss is never silent.

Sequences start at 1. Without a store the epoch changes per hub (per server run), so a cursor from another run
is recognised; with a persistent store (server/store.py) the epoch identifies the store and sequences carry on
across restarts, and an alert becomes visible to readers only once the store has committed it (`mark_durable`):
so any alert a subscriber has seen survives a crash. Readers that fall behind the ring read on from the store.
Each retained alert is converted to its protobuf wire form at most once (lazily, on first read, then cached on
the entry), however many subscribers read it: fan-out costs a reference, not a conversion. An alert published
from another process (`publish_received`) is never converted: the message it arrived in, validated and
normalised, is its wire form, to which the hub adds the cursor it assigns.

Falco's own clients know nothing of cursors; for them the hub keeps a "Falco cursor" per client identity (the
newest sequence sent to that identity), which gives Falco's drain-the-queue semantics to `get` and to the
backlog of `sub` without letting two identities take alerts from each other.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from falconet.model.alert import Alert, Cursor, Priority
from falconet.rules.hostname import default_hostname as default_hostname  # its one owner; re-exported
from falconet.server.entries import CursorField
from falconet.server.entries import Entry as Entry  # re-exported: readers and the store take entries from here
from falconet.server.entries import encode_varint as encode_varint
from falconet.server.entries import frame_head as frame_head

DEFAULT_RETENTION = 10_000
LOSS_RULE = "Falconet alerts lost"
"""Rule name of the internal alert a subscriber receives in place of alerts it lost."""


def new_epoch() -> str:
    """A fresh identifier for one run of the hub: random, so restarts never collide."""
    return secrets.token_hex(6)


class Backing(Protocol):
    """What the hub needs of a persistent store (server/store.py's AlertStore is one)."""

    oldest: int | None
    """The oldest sequence stored (None = none)."""

    def notify(self) -> None:
        """The first alert since the last `Hub.drain_unsynced` waits there (later ones until the next drain do
        not call this: the writer must clear its wake-up before it drains); must not block."""

    def read(self, first: int, max_n: int) -> list[tuple[int, bytes]]:
        """Stored (sequence, wire form) pairs from `first` on; blocks on the disk, so never on the event loop."""


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Selects alerts; every condition that is set must hold (an empty set accepts everything)."""

    min_priority: Priority | None = None
    rules: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    """Alert host names (issue 13): a node's alerts carry its own name, an aggregator's every node's."""

    @property
    def is_empty(self) -> bool:
        return (self.min_priority is None and not self.rules and not self.tags and not self.sources
                and not self.hosts)

    def matches(self, alert: Alert) -> bool:
        # Lower priority numbers are more severe (EMERGENCY = 0).
        if self.min_priority is not None and alert.priority > self.min_priority:
            return False
        if self.rules and alert.rule not in self.rules:
            return False
        if self.sources and alert.source not in self.sources:
            return False
        if self.tags and self.tags.isdisjoint(alert.tags):
            return False
        if self.hosts and alert.hostname not in self.hosts:
            return False
        return True


@dataclass(slots=True)
class StartResult:
    """Where a reader starts, and the internal alert to send first when the requested start was not retained."""

    next_seq: int
    gap_alert: Alert | None = None


@dataclass
class ReaderStats:
    """A snapshot of one subscriber's counters."""

    name: str
    identity: str
    next_seq: int
    delivered: int
    dropped: int


class Reader:
    """One subscriber's position in the hub. Owned by one task; `take` is cheap and never blocks."""

    __slots__ = ("hub", "name", "identity", "next_seq", "delivered", "dropped", "behind", "__weakref__")

    def __init__(self, hub: Hub, next_seq: int, name: str, identity: str) -> None:
        self.hub = hub
        self.name = name
        self.identity = identity
        self.next_seq = next_seq
        self.delivered = 0
        self.dropped = 0
        self.behind = False
        """Set by `take` when `next_seq` is older than the ring but may be in the store: `take_stored` next."""

    def take(self, max_n: int) -> tuple[list[Entry], int]:
        """Up to `max_n` entries from `next_seq` on, and how many were lost (overwritten) before them."""
        return self.hub._take(self, max_n)

    async def take_stored(self, max_n: int) -> tuple[list[Entry], int]:
        """What `take` would return, read from the store in a worker thread (the event loop never waits on
        the disk); entries the store no longer holds either are counted as lost, as the ring counts them."""
        return await self.hub._take_stored(self, max_n)

    async def wait(self) -> None:
        """Returns once an alert at or after `next_seq` exists (at once if one already does)."""
        await self.hub.wait_for(self.next_seq)

    def close(self) -> None:
        """Unregisters the reader; its counts stay in the hub's totals."""
        self.hub._close_reader(self)

    def stats(self) -> ReaderStats:
        return ReaderStats(self.name, self.identity, self.next_seq, self.delivered, self.dropped)


@dataclass
class HubStats:
    """Counters of the hub and of every open subscriber."""

    epoch: str
    published: int
    oldest: int
    newest: int
    retention: int
    readers: list[ReaderStats] = field(default_factory=list)
    """Open subscribers only."""
    delivered_total: int = 0
    """Alerts delivered to subscribers since the hub was made, closed subscribers included."""
    dropped_total: int = 0
    """Alerts subscribers lost by falling behind the ring, closed subscribers included."""


class Hub:
    """The bounded retention ring; `publish` is thread-safe, non-blocking and callable from any thread."""

    def __init__(
        self,
        retention: int = DEFAULT_RETENTION,
        epoch: str | None = None,
        hostname: str | None = None,
        *,
        store: Backing | None = None,
        head: int = 0,
        falco_cursors: dict[str, int] | None = None,
    ):
        """With `store`, `epoch`, `head` (the newest sequence it assigned) and `falco_cursors` come from it."""
        if retention < 1:
            raise ValueError(f"retention must be at least 1 alert, got {retention}")
        self.retention = retention
        self.epoch = epoch or new_epoch()
        self._cursor_field = CursorField(self.epoch)
        self.hostname = default_hostname() if hostname is None else hostname
        self._ring: list[Entry | None] = [None] * retention
        self._head = head  # sequence of the newest alert; 0 = none yet
        self._visible = head  # newest sequence readers may see: committed to the store, or published without one
        self._ring_floor = head + 1  # the ring holds nothing older (earlier alerts are in the store only)
        self._store = store
        self._unsynced: list[Entry] = []
        self._falco_dirty: dict[str, int] = {}
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._durable_waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        """`wait_durable`'s (sequence, loop, future): woken only once their sequence is committed, not on every
        commit as readers are (a publisher waiting for its last alert would otherwise wake per group)."""
        self._readers: dict[int, Reader] = {}
        self._closed_delivered = 0
        self._closed_dropped = 0
        self._falco_cursors: dict[str, int] = dict(falco_cursors or {})

    # -- producing ---------------------------------------------------------------------------------------

    @property
    def published(self) -> int:
        """Alerts published since the hub was made (equals the newest sequence)."""
        return self._head

    def publish(self, alert: Alert) -> Cursor:
        """Stores `alert` (setting its cursor and, if empty, its hostname) and wakes idle subscribers.

        The hub owns the alert from here on: it is shared by every subscriber and converted once, so the caller
        must not change it after publishing.
        """
        if not alert.hostname:
            alert.hostname = self.hostname
        store = self._store
        with self._lock:
            seq = self._head + 1
            alert.cursor = cursor = Cursor(self.epoch, seq)
            entry = self._ring[seq % self.retention] = Entry(seq, alert)
            self._head = seq
            if store is not None:
                unsynced = self._unsynced
                if unsynced:  # the writer was notified of the first since the drain
                    store = None
                unsynced.append(entry)
                waiters = []
            else:
                self._visible = seq
                waiters = self._waiters
                if waiters:
                    self._waiters = []
        if store is not None:
            store.notify()
        elif waiters:
            _wake(waiters)
        return cursor

    def publish_received(self, received: Iterable[tuple[Alert, bytes, int]]) -> Cursor | None:
        """`publish_many` for alerts that come with their wire form (`falconet.server.alert_input.received_alert`):
        each (alert, wire, tail) holds bytes that decode to `alert_to_proto(alert)` without a cursor, the last
        `tail` of them its `output_fields_json` field. The hub puts the cursor it assigns before that field (the
        bytes are then protobuf's, field for field) and, if the alert has no hostname, appends the hub's, so the
        alert is never converted again."""
        last: Cursor | None = None
        store = self._store
        epoch, cursor_field = self.epoch, self._cursor_field
        if cursor_field.epoch != epoch:  # the epoch was set after the hub was made
            cursor_field = self._cursor_field = CursorField(epoch)
        with self._lock:
            for alert, wire, tail in received:
                seq = self._head + 1
                alert.cursor = last = Cursor(epoch, seq)
                if tail:
                    cut = len(wire) - tail
                    wire = b"".join((wire[:cut], cursor_field(seq), wire[cut:]))
                else:
                    wire += cursor_field(seq)
                if not alert.hostname and self.hostname:
                    alert.hostname = self.hostname
                    host = self.hostname.encode()
                    wire += b"\x3a" + encode_varint(len(host)) + host  # a later string field replaces an earlier
                entry = self._ring[seq % self.retention] = Entry(seq, alert, wire)
                self._head = seq
                if store is not None:
                    self._unsynced.append(entry)
            waiters = self._finish_many_locked(store)
        if store is not None:
            if last is not None:
                store.notify()
        elif waiters:
            _wake(waiters)
        return last

    def publish_many(self, alerts: Iterable[Alert]) -> Cursor | None:
        """Publishes each alert in order under one lock hold; returns the last cursor (None if empty)."""
        last: Cursor | None = None
        store = self._store
        with self._lock:
            for alert in alerts:
                if not alert.hostname:
                    alert.hostname = self.hostname
                seq = self._head + 1
                alert.cursor = last = Cursor(self.epoch, seq)
                entry = self._ring[seq % self.retention] = Entry(seq, alert)
                self._head = seq
                if store is not None:
                    self._unsynced.append(entry)
            waiters = self._finish_many_locked(store)
        if store is not None:
            if last is not None:
                store.notify()
        elif waiters:
            _wake(waiters)
        return last

    def _finish_many_locked(self, store: Backing | None) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        """Without a store, makes what was published visible and returns the waiters to wake (lock held)."""
        if store is not None:
            return []
        self._visible = self._head
        waiters = self._waiters
        if waiters:
            self._waiters = []
        return waiters

    # -- durability (the store's writer thread) ------------------------------------------------------------

    def drain_unsynced(self, max_n: int = 0) -> tuple[list[Entry], dict[str, int]]:
        """The alerts published since the last call, in order (the oldest `max_n` of them when `max_n` is set:
        the rest stay for the next call, and `Backing.notify` is not called for them again), and the Falco
        cursors that moved meanwhile."""
        with self._lock:
            entries = self._unsynced
            if 0 < max_n < len(entries):
                # The rest stays in the same list, moved down (a memmove). Slicing it into a new list instead
                # copied and counted references to every alert still pending, on every drain of a burst: 0.17-0.2
                # µs per alert of the writer's CPU (bench/RESULTS.md, "storeahead (session 7)").
                taken = entries[:max_n]
                del entries[:max_n]
                entries = taken
            else:
                self._unsynced = []
            cursors, self._falco_dirty = self._falco_dirty, {}
        return entries, cursors

    def pending(self, max_n: int) -> list[Entry]:
        """The oldest `max_n` alerts waiting for the next `drain_unsynced` (not removed: the store's writer makes
        their wire forms while it commits the group before them)."""
        with self._lock:
            return self._unsynced[:max_n]

    def mark_durable(self, seq: int) -> None:
        """Makes alerts up to `seq` visible to readers (the store committed them, or cannot and says so)."""
        with self._lock:
            if seq <= self._visible:
                return
            visible = self._visible = min(seq, self._head)
            waiters = self._waiters
            if waiters:
                self._waiters = []
            if self._durable_waiters:
                waiters = waiters + self._durable_reached(visible)
        if waiters:
            _wake(waiters)

    def _durable_reached(self, visible: int) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        """Takes the `wait_durable` waiters whose sequence is now visible (lock held)."""
        reached = [(loop, fut) for s, loop, fut in self._durable_waiters if s <= visible]
        if reached:
            self._durable_waiters = [w for w in self._durable_waiters if w[0] > visible]
        return reached

    def detach_store(self) -> None:
        """Memory only from now on (the store's writer cannot go on): everything published becomes visible."""
        with self._lock:
            self._store = None
            self._unsynced = []
            self._falco_dirty = {}
            self._visible = self._head
            waiters, self._waiters = self._waiters, []
            waiters += [(loop, fut) for _, loop, fut in self._durable_waiters]
            self._durable_waiters = []
        if waiters:
            _wake(waiters)

    async def wait_durable(self, seq: int) -> None:
        """Returns once the alert `seq` is committed (at once without a store): a publisher's ack waits here.

        Woken once, when `seq` is committed, rather than at every commit until then: each wake-up of the event
        loop takes the GIL from the threads publishing and committing (bench/RESULTS.md, "storeready
        (session 8)")."""
        if self._store is None:  # memory only (or a subclass that makes alerts visible its own way)
            await self.wait_for(seq)
            return
        while self._visible < seq:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._visible >= seq or self._store is None:
                    return
                self._durable_waiters.append((seq, loop, fut))
            await fut

    # -- positions ---------------------------------------------------------------------------------------

    @property
    def ring_oldest(self) -> int:
        """Sequence of the oldest alert in memory (head + 1 when the ring holds none)."""
        return max(1, self._ring_floor, self._head - self.retention + 1)

    @property
    def oldest(self) -> int:
        """Sequence of the oldest retained alert, in memory or in the store (head + 1 when none is)."""
        ring = self.ring_oldest
        stored = self._store.oldest if self._store is not None else None
        return ring if stored is None or stored > ring else stored

    @property
    def newest(self) -> int:
        """The newest alert readers may see (with a store: the newest committed)."""
        return self._visible

    def start_oldest(self) -> StartResult:
        return StartResult(self.oldest)

    def start_now(self) -> StartResult:
        return StartResult(self._visible + 1)

    def start_after(self, cursor: Cursor) -> StartResult:
        """Just after `cursor`; a cursor no longer retained, or from another epoch, starts at the oldest retained
        alert with an internal alert reporting the gap. Raises ValueError for a cursor of this epoch that is
        ahead of the newest alert (it cannot have come from this hub)."""
        head, oldest = self._head, self.oldest
        if cursor.epoch != self.epoch:
            gap = self.gap_alert(
                f"cursor {cursor} is from another run of the server (this run is {self.epoch}); alerts published "
                f"between them are lost. Resuming at the oldest retained alert ({self.epoch}:{oldest}).",
                lost=None,
                resume=oldest,
            )
            return StartResult(oldest, gap)
        if cursor.sequence > head:
            raise ValueError(
                f"cursor {cursor} is ahead of this server's newest alert ({self.epoch}:{head}); "
                "it cannot have come from this server"
            )
        if cursor.sequence + 1 < oldest:
            lost = oldest - cursor.sequence - 1
            gap = self.gap_alert(
                f"cursor {cursor} is no longer retained: {lost} alerts after it were dropped (the server retains "
                f"{self._retains()}). Resuming at the oldest retained alert ({self.epoch}:{oldest}).",
                lost=lost,
                resume=oldest,
            )
            return StartResult(oldest, gap)
        return StartResult(cursor.sequence + 1)

    def start_falco(self, identity: str) -> StartResult:
        """After this identity's Falco cursor: everything retained it has not been sent yet."""
        with self._lock:
            last = self._falco_cursors.get(identity, 0)
        oldest = self.oldest
        if last + 1 < oldest and last > 0:
            lost = oldest - last - 1
            gap = self.gap_alert(
                f"{lost} alerts published since this client last read were dropped before it returned (the server "
                f"retains {self._retains()}). Resuming at the oldest retained alert ({self.epoch}:{oldest}).",
                lost=lost,
                resume=oldest,
            )
            return StartResult(oldest, gap)
        return StartResult(max(last + 1, oldest))

    def advance_falco_cursor(self, identity: str, seq: int) -> None:
        """Records that alerts up to `seq` were sent to `identity` (never moves the cursor back)."""
        with self._lock:
            if seq > self._falco_cursors.get(identity, 0):
                self._falco_cursors[identity] = seq
                if self._store is not None:
                    self._falco_dirty[identity] = seq

    def falco_cursor(self, identity: str) -> int:
        return self._falco_cursors.get(identity, 0)

    # -- reading -----------------------------------------------------------------------------------------

    def reader(self, start: int, *, name: str = "", identity: str = "") -> Reader:
        """A reader positioned at sequence `start` (see the `start_*` methods), registered for counters."""
        r = Reader(self, start, name, identity)
        with self._lock:
            self._readers[id(r)] = r
        return r

    def _close_reader(self, reader: Reader) -> None:
        with self._lock:
            if self._readers.pop(id(reader), None) is not None:
                self._closed_delivered += reader.delivered
                self._closed_dropped += reader.dropped

    def _take(self, reader: Reader, max_n: int) -> tuple[list[Entry], int]:
        with self._lock:
            head = self._visible
            nxt = reader.next_seq
            lost = 0
            oldest = max(self._ring_floor, self._head - self.retention + 1)
            if nxt < oldest:
                if self._store is not None:
                    reader.behind = True
                    return [], 0
                lost = oldest - nxt
                nxt = oldest
            n = head - nxt + 1
            if n > max_n:
                n = max_n
            if n <= 0:
                entries: list[Entry] = []
            else:
                ring, r = self._ring, self.retention
                entries = [ring[s % r] for s in range(nxt, nxt + n)]  # type: ignore[misc]
                nxt += n
            reader.next_seq = nxt
        if lost:
            reader.dropped += lost
        return entries, lost

    async def _take_stored(self, reader: Reader, max_n: int) -> tuple[list[Entry], int]:
        while True:
            first = reader.next_seq
            entries = await asyncio.to_thread(self._read_stored, first, max_n)
            reader.behind = False
            if entries:
                lost = entries[0].seq - first
                reader.next_seq = entries[-1].seq + 1
                if lost:
                    reader.dropped += lost
                return entries, lost
            # Neither in the store nor still in the ring (never stored, or retention removed them): on from the
            # oldest alert the ring holds, reporting the rest as lost.
            reader.next_seq = max(first, self.ring_oldest)
            got, lost = self._take(reader, max_n)
            if reader.behind:  # the ring moved on meanwhile: read the store again from where we were
                reader.next_seq = first
                continue
            if not got:
                return [], 0
            skipped = got[0].seq - first - lost
            if skipped:
                reader.dropped += skipped
            return got, lost + skipped

    def _read_stored(self, first: int, max_n: int) -> list[Entry]:
        """Consecutive stored entries from `first` (or from the first one after it); runs in a worker thread."""
        store = self._store
        if store is None:  # detached meanwhile
            return []
        visible = self._visible
        entries: list[Entry] = []
        for seq, wire in store.read(first, max_n):
            if seq > visible or (entries and seq != entries[-1].seq + 1):
                break  # a gap in the store: the next read reports it as lost
            try:
                entries.append(Entry.from_wire(seq, wire))
            except ValueError:
                break
        return entries

    def _retains(self) -> str:
        return f"{self.retention} in memory and a persistent store" if self._store is not None else str(self.retention)

    def snapshot(self, start: int | None = None) -> list[Entry]:
        """Every retained in-memory entry from `start` (default: the oldest) to the newest, in order."""
        with self._lock:
            head = self._visible
            first = max(self.ring_oldest, start or 1)
            ring, r = self._ring, self.retention
            return [ring[s % r] for s in range(first, head + 1)]  # type: ignore[misc]

    async def wait_for(self, seq: int) -> None:
        """Returns once the alert with sequence `seq` is visible to readers."""
        while self._visible < seq:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._visible >= seq:
                    return
                self._waiters.append((loop, fut))
            await fut

    # -- loss reporting ----------------------------------------------------------------------------------

    def gap_alert(self, message: str, *, lost: int | None, resume: int) -> Alert:
        """An internal alert (not retained, not sequenced) telling one subscriber what it missed."""
        fields: dict[str, str | int | float | bool | None] = {
            "falconet.lost": lost,
            "falconet.epoch": self.epoch,
            "falconet.resume_sequence": resume,
        }
        return Alert(
            time_ns=time.time_ns(),
            rule=LOSS_RULE,
            priority=Priority.WARNING,
            source="internal",
            output=f"Falconet: {message}",
            output_fields=fields,
            tags=["falconet", "loss"],
            hostname=self.hostname,
        )

    def loss_alert(self, reader: Reader, lost: int, resume: int) -> Alert:
        """The internal alert for a subscriber that fell behind the ring: `lost` alerts before `resume`."""
        return self.gap_alert(
            f"this subscriber lost {lost} alerts ({self.epoch}:{resume - lost}..{resume - 1}) because it read "
            f"more slowly than they were published and the server retains only {self.retention}; "
            f"{reader.dropped} lost in total on this stream.",
            lost=lost,
            resume=resume,
        )

    # -- counters ----------------------------------------------------------------------------------------

    def stats(self) -> HubStats:
        with self._lock:
            readers = [r.stats() for r in self._readers.values()]
            closed_delivered, closed_dropped = self._closed_delivered, self._closed_dropped
        return HubStats(
            epoch=self.epoch,
            published=self._head,
            oldest=self.oldest,
            newest=self._visible,
            retention=self.retention,
            readers=readers,
            delivered_total=closed_delivered + sum(r.delivered for r in readers),
            dropped_total=closed_dropped + sum(r.dropped for r in readers),
        )


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Resolves waiting futures, with one callback per event loop rather than one per subscriber."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, fut in waiters:
        by_loop.setdefault(loop, []).append(fut)
    for loop, futs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futs)
        except RuntimeError:  # the loop was closed: its subscribers are gone
            pass


def _resolve(futs: list[asyncio.Future[None]]) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_result(None)
