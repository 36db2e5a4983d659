"""The aggregator's hub: the node's hub (server/hub.py), with the JetStream stream's sequences as its own.

A cursor an aggregator hands out is `<stream epoch>:<stream sequence>`, so every aggregator of one stream gives
the same cursor for the same alert, and a client resumes on any of them, or on one restarted. The stream's
sequences have gaps the hub's never had: a message that is not a valid alert takes a sequence and is never
served. `FleetHub` therefore differs from `Hub` in four places, all here rather than in hub.py:

- `publish_at` stores an alert at the stream sequence it came with; the slots of skipped sequences are emptied,
  and readers step over them (`_take`), consuming no alert and counting no loss.
- A reader older than the ring reads on from JetStream (`StreamReads`, the role the node's SQLite store plays),
  stepping over invalid messages the same way; only what the stream itself no longer holds counts as lost.
- A cursor ahead of this aggregator's newest alert but within what the stream holds (another aggregator already
  served it) is waited for rather than refused.
- Falco cursors can be listed, to be written to the shared key-value bucket (advancing one costs what it costs
  on a node: the per-alert path is unchanged).

The hub runs without a `Backing`: alerts are durable in JetStream before the aggregator sees them, so every
published alert is visible at once.

For whoever changes hub.py: this subclass overrides `_take`, `_take_stored`, `snapshot`, `oldest` and
`start_after`, and uses the hub's `_lock`, `_ring` (slots indexed by `seq % retention`, None allowed here),
`_head`, `_visible`, `_ring_floor`, `_waiters`, `_falco_cursors`, `_readers`, `_cursor_field` and `_wake`, and
the Reader's `next_seq`, `behind` and `dropped`. tests/fleet/test_aggregate_units.py exercises each; a change to those needs one here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from falconet.model.alert import Cursor
from falconet.server.entries import CursorField
from falconet.server.hub import Entry, Hub, Reader, StartResult, _wake

StreamItem = tuple[int, Entry | None]
"""A stream sequence and its alert (None: the message there is not a valid alert and is never served)."""


READ_RETRY_SECONDS = 0.5
"""How often a reader behind the ring tries the stream again while JetStream does not answer."""


class StreamUnavailable(Exception):
    """JetStream did not answer a read (an outage, a leader election): the reader waits and tries again."""


class StreamReads(Protocol):
    """Reading the stream behind the ring (server/fleet/aggregate_stream.py's `StreamSource` is one)."""

    first_seq: int
    """The oldest sequence the stream holds (last + 1 when it holds none), as of the last look."""

    async def read(self, first: int, max_n: int) -> list[StreamItem]:
        """Up to `max_n` stored messages from sequence `first` on, in order, decoded as the live feed decodes;
        StreamUnavailable when JetStream does not answer (never an empty list for that)."""


class FleetHub(Hub):
    """A hub whose sequences are one JetStream stream's (see the module docstring)."""

    def __init__(self, retention: int, epoch: str, hostname: str, *, start_seq: int) -> None:
        """`start_seq`: the first stream sequence the live feed will publish (the ring holds nothing older)."""
        super().__init__(retention, epoch, hostname, head=start_seq - 1)
        self.reads: StreamReads | None = None
        self._epochs = 0
        """How many times the hub started over on a new epoch (`new_epoch`): a wait of before returns."""
        self.known_last = start_seq - 1
        """The newest stream sequence known to exist (from the feed's pending counts): cursors up to it are
        valid here even before this aggregator has read that far."""

    # -- producing -----------------------------------------------------------------------------------------

    def publish_at(self, items: Sequence[StreamItem]) -> None:
        """Stores each item at its stream sequence (ascending, each after the head) and wakes readers."""
        if not items:
            return
        with self._lock:
            ring, r = self._ring, self.retention
            head = self._head
            for seq, entry in items:
                if seq <= head:
                    continue  # already have it (a feed that restarted re-delivers from where it was)
                for skipped in range(max(head + 1, seq - r + 1), seq):
                    ring[skipped % r] = None
                ring[seq % r] = entry
                head = seq
            self._head = self._visible = head
            if head > self.known_last:
                self.known_last = head
            waiters, self._waiters = self._waiters, []
        if waiters:
            _wake(waiters)

    def new_epoch(self, epoch: str, start_seq: int) -> None:
        """The stream was deleted and created again: the hub starts over on the new one at `start_seq` (its
        oldest), empty, with no Falco cursor (those of the old epoch mean nothing on the new stream), and every
        open reader moves there: the readers' next alerts are the new stream's, from its oldest. A cursor of the
        old epoch is then another run's (`start_after`: resumed at the oldest, with a gap alert)."""
        with self._lock:
            self.epoch = epoch
            self._cursor_field = CursorField(epoch)
            self._ring = [None] * self.retention
            self._head = self._visible = start_seq - 1
            self._ring_floor = start_seq
            self.known_last = start_seq - 1
            self._falco_cursors = {}
            self._epochs += 1
            for reader in self._readers.values():
                reader.next_seq, reader.behind = start_seq, False
            waiters, self._waiters = self._waiters, []
        if waiters:
            _wake(waiters)

    async def wait_for(self, seq: int) -> None:
        """Hub.wait_for, which also returns when the hub starts over on a new epoch: the sequence waited for
        was the old stream's, and the waiting reader has been moved to the new one's oldest."""
        epochs = self._epochs
        while self._visible < seq and self._epochs == epochs:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._visible >= seq or self._epochs != epochs:
                    return
                self._waiters.append((loop, fut))
            await fut

    # -- positions -----------------------------------------------------------------------------------------

    @property
    def oldest(self) -> int:
        """The oldest alert reachable: in the ring, or in the stream behind it."""
        ring = self.ring_oldest
        reads = self.reads
        if reads is None:
            return ring
        return min(ring, max(1, reads.first_seq))

    def start_after(self, cursor: Cursor) -> StartResult:
        if cursor.epoch == self.epoch and self._head < cursor.sequence <= self.known_last:
            return StartResult(cursor.sequence + 1)  # served by a replica that is ahead of us: wait for it
        return super().start_after(cursor)

    def falco_cursors(self) -> dict[str, int]:
        """Every identity's Falco cursor now (the bucket writer sends those that moved since it last wrote)."""
        with self._lock:
            return dict(self._falco_cursors)

    def load_falco_cursor(self, identity: str, seq: int) -> None:
        """A cursor read from the shared bucket: taken if it is ahead of ours (never moves one back)."""
        Hub.advance_falco_cursor(self, identity, seq)

    # -- reading -------------------------------------------------------------------------------------------

    def _take(self, reader: Reader, max_n: int) -> tuple[list[Entry], int]:
        with self._lock:
            head = self._visible
            nxt = reader.next_seq
            if nxt < max(self._ring_floor, self._head - self.retention + 1):
                reader.behind = True
                return [], 0
            if nxt > head:
                return [], 0
            end = min(head, nxt + max_n - 1)
            ring, r = self._ring, self.retention
            entries = [e for s in range(nxt, end + 1) if (e := ring[s % r]) is not None]
            reader.next_seq = end + 1
        return entries, 0

    async def _take_stored(self, reader: Reader, max_n: int) -> tuple[list[Entry], int]:
        """Reads the stream from the reader's position until it has an alert or reaches the ring.

        Loss is what the stream no longer holds (removed by its limits); invalid messages are stepped over.
        """
        reads = self.reads
        lost = 0
        while True:
            first = reader.next_seq
            reader.behind = False
            try:
                items = await reads.read(first, max_n) if reads is not None else []
            except StreamUnavailable:
                reader.behind = True
                await asyncio.sleep(READ_RETRY_SECONDS)  # retry period while the stream is away; nothing skipped
                continue
            if not items:
                # Nothing stored from `first` on below the ring: on from the ring, the rest counted as lost.
                floor = self.ring_oldest
                if first < floor:
                    lost += floor - max(first, reads.first_seq if reads is not None else first)
                    reader.next_seq = floor
                got, _ = self._take(reader, max_n)
                if reader.behind:  # the ring moved on meanwhile: read the stream again
                    continue
                return self._with_loss(reader, got, lost)
            missing = items[0][0] - first
            if missing > 0 and reads is not None and first < reads.first_seq:
                lost += min(missing, reads.first_seq - first)
            reader.next_seq = items[-1][0] + 1
            entries = [e for _, e in items if e is not None]
            if entries:
                return self._with_loss(reader, entries, lost)

    @staticmethod
    def _with_loss(reader: Reader, entries: list[Entry], lost: int) -> tuple[list[Entry], int]:
        if lost <= 0:
            return entries, 0
        reader.dropped += lost
        if not entries:
            return [], 0  # counted on the reader; reported with the next loss that has an alert after it
        return entries, lost

    def snapshot(self, start: int | None = None) -> list[Entry]:
        with self._lock:
            head = self._visible
            first = max(self.ring_oldest, start or 1)
            ring, r = self._ring, self.retention
            return [e for s in range(first, head + 1) if (e := ring[s % r]) is not None]

