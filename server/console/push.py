"""The push channel: one server-sent-events stream per page, batched, resumable from its last position.

Each stream is a hub reader (server/hub.py) like a gRPC subscriber's, so the console has the API's semantics:
every page gets every alert that matches its filter, a slow page never slows the others or the engine, and a
page that falls further behind than the hub retains is told how many alerts it lost (a `loss` event, the same
internal alert a gRPC subscriber gets) rather than missing them silently.

Alerts are pushed in batches: whatever is waiting when the stream wakes, at most one batch per FLUSH_SECONDS,
so 1,000 alerts/s is about twenty messages a second, not a thousand. Every batch carries the stream's
position (`EPOCH:SEQ`, the newest hub sequence the stream has looked at, matching or not), also as the SSE
event id; a page reconnects with `after=POSITION` and the stream goes on just after it: no gap and no duplicate,
across a network cut or a restart of the console, like an SDK resuming from its cursor. A page that opens
fresh gets the newest `backlog` matching alerts first.

Each alert travels as its canonical JSON line (docs/alert-json.md), made once per alert however many pages
read it (a bounded cache shared by the streams). The page renders every string as text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from falconet.model.alert import Alert, Cursor, Priority
from falconet.server.hub import Entry, Hub, Reader, StartResult

FLUSH_SECONDS = 0.05
"""The shortest time between two batches of one stream (the batching window)."""
MAX_BATCH = 2000
"""Alerts examined per batch at most (a larger backlog goes out in several)."""
KEEPALIVE_SECONDS = 15.0
"""A comment line after this long without alerts, so proxies keep the stream and a gone page is noticed."""
POSITION_EVERY = 1.0
"""Seconds between position-only batches while the filter matches nothing (so a resume scans little)."""
MAX_VALUES = 32
MAX_VALUE_LEN = 256

Write = Callable[[bytes], Awaitable[None]]


class FilterError(ValueError):
    """A filter a page sent that cannot be applied; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class ConsoleFilter:
    """The page's filters (all that are set must hold): the gRPC API's, plus hosts and free text.

    `text` matches, case-insensitively, the rule name, the output line or any output field's value.
    """

    min_priority: Priority | None = None
    rules: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    text: str = ""

    @property
    def is_empty(self) -> bool:
        return (self.min_priority is None and not self.rules and not self.tags and not self.sources
                and not self.hosts and not self.text)  # fmt: skip

    def matches(self, alert: Alert) -> bool:
        if self.min_priority is not None and alert.priority > self.min_priority:
            return False
        if self.rules and alert.rule not in self.rules:
            return False
        if self.sources and alert.source not in self.sources:
            return False
        if self.hosts and alert.hostname not in self.hosts:
            return False
        if self.tags and self.tags.isdisjoint(alert.tags):
            return False
        if self.text:
            needle = self.text
            if needle in alert.rule.casefold() or needle in alert.output.casefold():
                return True
            return any(needle in str(v).casefold() for v in alert.output_fields.values())
        return True

    @classmethod
    def from_query(cls, query: Mapping[str, str], getall: Callable[[str], list[str]]) -> ConsoleFilter:
        """From the URL's parameters (`priority`, repeatable `rule`/`tag`/`source`/`host`, `q`)."""
        priority = query.get("priority") or None
        try:
            min_priority = Priority.parse(priority) if priority else None
        except ValueError as exc:
            raise FilterError(f"priority: {exc}") from None
        sets: dict[str, frozenset[str]] = {}
        for key in ("rule", "tag", "source", "host"):
            values = [v for v in getall(key) if v]
            if len(values) > MAX_VALUES or any(len(v) > MAX_VALUE_LEN for v in values):
                raise FilterError(f"{key}: at most {MAX_VALUES} values of at most {MAX_VALUE_LEN} characters")
            sets[key] = frozenset(values)
        text = query.get("q", "")
        if len(text) > MAX_VALUE_LEN:
            raise FilterError(f"q: at most {MAX_VALUE_LEN} characters")
        return cls(min_priority, sets["rule"], sets["tag"], sets["source"], sets["host"], text.strip().casefold())


class JsonCache:
    """Each alert's JSON line, made once for every stream; bounded (the oldest made are forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._lines: dict[int, tuple[Entry, bytes]] = {}

    def line(self, entry: Entry) -> bytes:
        """The alert's JSON line, UTF-8 encoded (a batch is then a join of cached bytes, per page)."""
        cached = self._lines.get(entry.seq)
        if cached is not None and cached[0] is entry:
            return cached[1]
        text = entry.alert.to_json_line().encode()
        lines = self._lines
        if len(lines) >= self.capacity:
            for key in list(lines)[: max(1, self.capacity // 8)]:
                del lines[key]
        lines[entry.seq] = (entry, text)
        return text


def parse_after(text: str) -> Cursor:
    """A page's `after=EPOCH:SEQ` (SEQ may be 0: nothing seen yet); FilterError otherwise."""
    epoch, sep, seq = text.rpartition(":")
    if not sep or not epoch or len(epoch) > 128 or not seq.isdigit() or len(seq) > 20:
        raise FilterError(f"after: expected EPOCH:SEQUENCE, got {text[:80]!r}")
    return Cursor(epoch, int(seq))


def resume_start(hub: Hub, after: Cursor) -> StartResult:
    """Where a resuming stream starts: just after `after`, or (another epoch, no longer retained) at the oldest
    retained alert with the loss reported. Raises FilterError for a position this hub never reached."""
    if after.epoch == hub.epoch and after.sequence == 0:
        start = hub.start_oldest()
        if start.next_seq > 1:
            lost = start.next_seq - 1
            return StartResult(start.next_seq, hub.gap_alert(
                f"{lost} alerts published before this page first connected are no longer retained",
                lost=lost, resume=start.next_seq,
            ))  # fmt: skip
        return StartResult(1)
    try:
        return hub.start_after(after)
    except ValueError as exc:
        raise FilterError(f"after: {exc}") from None


def backlog(hub: Hub, flt: ConsoleFilter, count: int) -> tuple[list[Entry], int]:
    """The newest `count` matching alerts in memory, oldest first, and the position they end at."""
    newest = hub.newest
    entries = hub.snapshot()
    position = max(newest, entries[-1].seq if entries else 0)
    if count <= 0:
        return [], position
    if flt.is_empty:
        return entries[-count:], position
    picked: list[Entry] = []
    for entry in reversed(entries):
        if flt.matches(entry.alert):
            picked.append(entry)
            if len(picked) >= count:
                break
    picked.reverse()
    return picked, position


@dataclass(slots=True)
class StreamCounters:
    """What one stream sent; the console's totals add them up."""

    batches: int = 0
    alerts: int = 0
    lost: int = 0


class PushStream:
    """One page's stream: writes SSE events through `write` until cancelled or the page goes away."""

    def __init__(self, hub: Hub, cache: JsonCache, flt: ConsoleFilter, write: Write, identity: str) -> None:
        self.hub = hub
        self.cache = cache
        self.filter = flt
        self.write = write
        self.identity = identity
        self.counters = StreamCounters()
        self._position = 0
        self._sent_position = -1
        self._backlog: list[Entry] = []
        self._start = StartResult(1)
        self._reader: Reader | None = None

    def begin(self, resume: StartResult | None, backlog_count: int) -> None:
        """Fixes where the stream starts, before the response headers go out: an alert published once the page
        has its headers is then always in its stream. A fresh page starts after the newest `backlog_count`
        matching alerts (sent first); a resuming one at `resume` (`resume_start`)."""
        if resume is None:
            self._backlog, self._position = backlog(self.hub, self.filter, backlog_count)
            self._start = StartResult(self._position + 1)
        else:
            self._backlog, self._start = [], resume
            self._position = resume.next_seq - 1
        self._reader = self.hub.reader(self._start.next_seq, name="WebConsole", identity=self.identity)

    async def run(self) -> None:
        """Sends the hello, the backlog or the resume's loss report, then every matching alert as it comes."""
        reader = self._reader
        assert reader is not None, "begin() first"
        try:
            await self._send_hello()
            if self._backlog:
                await self._send_batch(self._backlog)
                self._backlog = []
            if self._start.gap_alert is not None:
                await self._send_loss(self._start.gap_alert)
            await self._live(reader)
        finally:
            reader.close()

    def close(self) -> None:
        """Releases the hub reader of a stream that never ran (its response could not be started)."""
        if self._reader is not None:
            self._reader.close()

    async def _live(self, reader: Reader) -> None:
        hub, match = self.hub, self.filter.matches
        empty = self.filter.is_empty
        last_push = last_position = time.monotonic()
        while True:
            entries, lost = reader.take(MAX_BATCH)
            if reader.behind:  # older than the ring: read on from the store (or the fleet's stream)
                entries, lost = await reader.take_stored(MAX_BATCH)
            if lost:
                self.counters.lost += lost
                await self._send_loss(hub.loss_alert(reader, lost, entries[0].seq if entries else reader.next_seq))
            self._position = reader.next_seq - 1
            if entries:
                matched = entries if empty else [e for e in entries if match(e.alert)]
                now = time.monotonic()
                if matched or now - last_position >= POSITION_EVERY:
                    await self._send_batch(matched)
                    reader.delivered += len(matched)
                    last_position = last_push = now
                if len(entries) >= MAX_BATCH:
                    continue
            wait = FLUSH_SECONDS - (time.monotonic() - last_push)
            if wait > 0:
                await asyncio.sleep(wait)  # the batching window: what arrives meanwhile goes in the next batch
                if reader.next_seq <= hub.newest:
                    continue
            if self._position != self._sent_position:  # going idle: the page learns how far the filter looked
                await self._send_batch([])
                last_position = time.monotonic()
            try:
                await asyncio.wait_for(reader.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await self.write(b": keepalive\n\n")

    def _position_text(self) -> str:
        return f"{self.hub.epoch}:{self._position}"

    async def _send_hello(self) -> None:
        position = self._position_text()
        self._sent_position = self._position
        data = (
            f'{{"epoch":{_quote(self.hub.epoch)},"hostname":{_quote(self.hub.hostname)},'
            f'"position":"{position}"}}'
        )
        await self.write(f"id: {position}\nevent: hello\ndata: {data}\n\n".encode())

    async def _send_batch(self, entries: list[Entry]) -> None:
        line = self.cache.line
        position = self._position_text()
        head = f'id: {position}\nevent: alerts\ndata: {{"position":"{position}","alerts":['.encode()
        self._sent_position = self._position
        await self.write(b"".join((head, b",".join([line(e) for e in entries]), b"]}\n\n")))
        self.counters.batches += 1
        self.counters.alerts += len(entries)

    async def _send_loss(self, alert: Alert) -> None:
        await self.write(f"event: loss\ndata: {alert.to_json_line()}\n\n".encode())


def _quote(text: str) -> str:
    import json

    from falconet.model.text import json_safe

    return json_safe(json.dumps(text, ensure_ascii=False))
