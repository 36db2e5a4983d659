"""The aggregator's side of the fleet stream: its identity (the cursor epoch), the live feed, and reads behind.

Epoch: the first 12 hex digits of SHA-256 over the stream's name and creation time, as JetStream reports them.
Every aggregator of one stream computes the same epoch, so their cursors are interchangeable; a stream deleted
and created again under the same name gets a new epoch, so a cursor into the old one is recognised as such (the
client is told what it lost) rather than silently pointing at other alerts.

Every message is decoded the same way wherever it is read (`decode`), live or behind the ring, by any
aggregator: the node's `falco.outputs.response` is checked as the input service checks a published alert (a
stranger may publish on the subject), the host is the subject's (a node is authorised for its own subject; the
payload's hostname is not trusted over it), and the cursor becomes the stream's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from falconet.model.alert import Alert, Cursor
from falconet.model.alert_checks import RESERVED_SOURCES
from falconet.sdk.api.falco import outputs_pb2
from falconet.server.alert_input import alert_from_input
from falconet.server.fleet.names import FLEET_TOKEN, all_alerts, host_of_subject
from falconet.server.fleet.aggregate_hub import FleetHub, StreamItem, StreamUnavailable
from falconet.server.hub import Entry

log = logging.getLogger("falconet.aggregate")

READ_TIMEOUT = 2.0
"""Seconds one read behind the ring waits for JetStream."""
READ_LOG_SECONDS = 30.0
MAX_PULLS = 16
"""Pull consumers kept for reads behind the ring that continue (about one per subscriber catching up)."""


def stream_epoch(info: api.StreamInfo) -> str:
    """The cursor epoch of a stream: its name and creation time, hashed (see the module docstring)."""
    created = info.created.isoformat() if info.created is not None else ""
    return hashlib.sha256(f"{info.config.name}\n{created}".encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Bad:
    """A message on the alert subjects that is not an alert this aggregator serves."""

    seq: int
    subject: str
    reason: str


def decode(subject: str, data: bytes, seq: int, epoch: str, prefix: str) -> Entry | Bad:
    """The hub entry for one stream message, or why it is not one (never raises).

    The node's payload is checked as the input service checks a published alert (`alert_from_input`), with the
    subject's host and the stream's cursor set in the message already parsed, which is then serialized once (C
    level) as the wire form served: fields this version does not know are dropped first (they must never pass
    on to subscribers: protobuf keeps a map entry holding one as an unknown field of the response, which Go or
    Rust clients would read as an entry). Measured against the input service's received-message path
    (`received_alert`, which also respells typed values canonically): this is about 20% cheaper per message on
    the aggregator's hottest line, and clients decode the same alert from either."""
    token = subject[len(prefix) + 1:] if subject.startswith(prefix + ".") else ""
    fleet = token == FLEET_TOKEN
    host = ""
    if not fleet:
        host_or_problem = _host_of(subject, prefix)
        if isinstance(host_or_problem, ValueError):
            return Bad(seq, subject, str(host_or_problem))
        host = host_or_problem
    try:
        resp = outputs_pb2.response.FromString(data)
        alert = _checked(resp)
    except (DecodeError, ValueError, RecursionError) as exc:
        return Bad(seq, subject, f"not a valid alert: {exc}")
    if not fleet:
        alert.hostname = resp.hostname = host
    elif not alert.hostname:
        return Bad(seq, subject, "an aggregator's alert without the host it is about")
    alert.cursor = Cursor(epoch, seq)
    resp.DiscardUnknownFields()
    resp.cursor.epoch, resp.cursor.sequence = epoch, seq
    return Entry(seq, alert, resp.SerializeToString())


@functools.lru_cache(maxsize=8192)
def _host_of(subject: str, prefix: str) -> str | ValueError:
    """The host of an alert subject, or why it has none: a fleet has few subjects and each is seen per alert."""
    try:
        return host_of_subject(subject, prefix)
    except ValueError as exc:
        return exc


def _checked(resp: outputs_pb2.response) -> Alert:
    """The input service's checks (server/alert_input.py), except that the stream may carry internal alerts: a
    node forwards its own (its subject is its alone), and aggregators write theirs to the fleet subject."""
    if resp.source not in RESERVED_SOURCES:
        return alert_from_input(resp)
    source, resp.source = resp.source, "syscall"
    try:
        alert = alert_from_input(resp)
    finally:
        resp.source = source
    alert.source = source
    return alert


def _feed_tasks(sub: JetStreamContext.PushSubscription) -> list[asyncio.Task[None]]:
    """nats-py's background tasks of an ordered consumer (its idle-heartbeat check, which also recreates the
    consumer, and its flow-control replies): private to nats-py 2.x, read defensively (none if they moved)."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    tasks = [getattr(jsi, "_hbtask", None), getattr(jsi, "_fctask", None)]
    return [t for t in tasks if isinstance(t, asyncio.Task)]


def ack_fields(reply: str) -> tuple[int, int, int]:
    """(stream sequence, store time in ns, messages pending) of a JetStream delivery, from its reply subject:
    what `Msg.metadata` gives, without its dataclasses and datetime per message (the feed's hottest line)."""
    tokens = Msg.Metadata._get_metadata_fields(reply)  # NotJSMessageError for anything else
    if len(tokens) == _V1_TOKENS:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[7]), int(tokens[8])
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]
    return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.Timestamp]), int(tokens[Msg.Ack.NumPending])


_V1_TOKENS = 9


class FeedListener:
    """What the node watch wants to know of the feed (server/fleet/aggregate_nodes.py overrides these)."""

    def on_alert(self, host: str, seq: int, stream_ns: int) -> None:
        """An alert of `host` at stream sequence `seq`, stored at `stream_ns` (wall clock, ns)."""

    def on_bad(self, bad: Bad) -> None:
        """A message that is not served."""


class StreamSource:
    """The stream: its identity, a live ordered feed into a FleetHub, and reads behind the ring (StreamReads)."""

    def __init__(self, js: JetStreamContext, stream: str, prefix: str, info: api.StreamInfo) -> None:
        self.js = js
        self.stream = stream
        self.prefix = prefix
        self.epoch = stream_epoch(info)
        self.first_seq = info.state.first_seq if info.state.messages else info.state.last_seq + 1
        self.last_seq = info.state.last_seq
        self.listener = FeedListener()
        self.bad_messages = 0
        self.feed_seen = 0
        self.ingested = 0
        """Messages of the live feed served as alerts (the metrics' count)."""
        self._sub: JetStreamContext.PushSubscription | None = None
        self._feed = 0
        """The live feed's generation: a message of an older feed (one stopped while nats-py still delivered to
        it) is not taken."""
        self.feed_restarts = 0
        self._watch_seen = 0
        self._watch_target = 0
        self._read_logged = -READ_LOG_SECONDS
        self._pulls: OrderedDict[int, JetStreamContext.PullSubscription] = OrderedDict()
        """Pull consumers kept for the read that continues where the last one ended (by that sequence)."""
        self._pending: list[StreamItem] = []
        self._flush_scheduled = False
        self._hub: FleetHub | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, stream: str, prefix: str) -> StreamSource:
        """Raises nats' NotFoundError when the stream does not exist (yet)."""
        return cls(js, stream, prefix, await js.stream_info(stream))

    def decode(self, subject: str, data: bytes, seq: int) -> Entry | None:
        got = decode(subject, data, seq, self.epoch, self.prefix)
        if isinstance(got, Bad):
            return None
        return got

    async def refresh(self) -> api.StreamInfo:
        """Updates the oldest sequence held (the stream's limits remove old messages as it runs); the stream's
        state as read (nats' errors when JetStream does not answer, NotFoundError while it does not exist).
        Nothing is updated from a stream of another epoch (deleted and created again): see `new_epoch`."""
        info = await self.js.stream_info(self.stream)
        if stream_epoch(info) == self.epoch:
            self.first_seq = info.state.first_seq if info.state.messages else info.state.last_seq + 1
            self.last_seq = max(self.last_seq, info.state.last_seq)
        return info

    async def new_epoch(self, info: api.StreamInfo) -> tuple[str, int]:
        """Follows the stream created again under this name (`info`): the feed is stopped (what it delivered but
        the hub has not taken is of the old stream: dropped), the epoch and positions become the new stream's,
        and the hub starts over at its oldest sequence (FleetHub.new_epoch), where the new feed starts. (the old
        epoch, the new stream's oldest sequence); nats' errors when the new feed cannot start yet (the
        watchdog starts it at its next look)."""
        await self.stop_feed()
        await self.close_reads()  # the old stream's, by its sequences
        self._pending = []
        old, self.epoch = self.epoch, stream_epoch(info)
        self.first_seq = info.state.first_seq if info.state.messages else info.state.last_seq + 1
        self.last_seq = info.state.last_seq
        hub = self._hub
        if hub is not None:
            hub.new_epoch(self.epoch, self.first_seq)
            hub.known_last = max(hub.known_last, self.last_seq)
            await self.start_feed(hub, self.first_seq)
        return old, self.first_seq

    # -- the live feed ---------------------------------------------------------------------------------------

    async def start_feed(self, hub: FleetHub, start_seq: int) -> None:
        """Feeds `hub` from `start_seq` on, in stream order (an ordered consumer: recreated by nats-py after a
        reconnect, from the sequence after the last one delivered; `watch_feed` covers what nats-py does not)."""
        self._hub = hub
        self._feed += 1
        feed = self._feed

        async def on_msg(msg: Msg) -> None:
            if feed == self._feed:
                self._on_msg(msg)

        config = api.ConsumerConfig(opt_start_seq=start_seq) if start_seq > 1 else None
        policy = api.DeliverPolicy.BY_START_SEQUENCE if start_seq > 1 else api.DeliverPolicy.ALL
        self._sub = await self.js.subscribe(
            all_alerts(self.prefix), stream=self.stream, cb=on_msg, ordered_consumer=True,
            deliver_policy=policy, config=config, pending_msgs_limit=-1, pending_bytes_limit=-1,
        )
        self._watch_seen, self._watch_target = self.feed_seen, 0

    async def stop_feed(self) -> None:
        """Ends the live feed, nats-py's tasks for it included (its unsubscribe skips them when it fails)."""
        self._feed += 1
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            for task in _feed_tasks(sub):
                task.cancel()

    async def watch_feed(self, stream_last: int) -> str:
        """The live feed's watchdog, called with the stream's last sequence at each look at its state. The feed
        is started again, from the sequence after the newest one the hub holds, when it has none, when nats-py's
        task that recreates an ordered consumer has ended (it stops at its first error, for good), or when what
        the stream held at the previous look has still not arrived, nothing arrived since, and the consumer
        does not say it has delivered all it has (a stream's newest message on another subject is not ours).
        Why it restarted ("" if it did not); nats' errors when it cannot start one (the next look tries again).

        The hub never gets a sequence twice: what the stopped feed delivered is published first, the new feed
        starts after the hub's newest, and the hub skips a sequence it holds (a feed of before the restart that
        nats-py still delivers is not taken: its generation is stale)."""
        hub = self._hub
        if hub is None:
            return ""
        reason = await self._stalled(hub.newest)
        if not reason:
            self._watch_seen, self._watch_target = self.feed_seen, stream_last
            return ""
        start = await self.restart_feed()
        return f"{reason}; following it again from sequence {start}"

    async def restart_feed(self) -> int:
        """A new live feed from the sequence after the hub's newest (returned); see `watch_feed`."""
        hub = self._hub
        assert hub is not None, "restart_feed before start_feed"
        await self.stop_feed()
        self._flush()  # what the stopped feed delivered, before the new one's position is taken
        start = hub.newest + 1
        self.feed_restarts += 1
        await self.start_feed(hub, start)
        return start

    async def _stalled(self, newest: int) -> str:
        """Why the live feed needs a restart ("" when it does not); see `watch_feed`."""
        sub = self._sub
        if sub is None:
            return "the live feed had stopped"
        if any(task.done() for task in _feed_tasks(sub)):
            return "the NATS client's recovery of the live feed ended"
        if self.feed_seen != self._watch_seen or self._watch_target <= newest:
            return ""
        try:
            info = await sub.consumer_info()
        except Exception as exc:  # noqa: BLE001 - a consumer that does not answer is as good as gone
            return f"the live feed's consumer does not answer ({exc or type(exc).__name__})"
        if info.num_pending or (info.delivered is not None and (info.delivered.stream_seq or 0) > newest):
            return f"the live feed is stuck before stream sequence {self._watch_target}"
        return ""

    def _on_msg(self, msg: Msg) -> None:
        seq, stored_ns, pending = ack_fields(msg.reply)
        self.feed_seen += 1
        hub = self._hub
        if hub is not None and seq + pending > hub.known_last:
            hub.known_last = seq + pending
        got = self._classify(msg.subject, msg.data, seq, stored_ns)
        self._pending.append((seq, got))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _classify(self, subject: str, data: bytes, seq: int, stream_ns: int) -> Entry | None:
        got = decode(subject, data, seq, self.epoch, self.prefix)
        if isinstance(got, Bad):
            self.bad_messages += 1
            self.listener.on_bad(got)
            return None
        self.ingested += 1
        if subject != f"{self.prefix}.{FLEET_TOKEN}":
            self.listener.on_alert(got.alert.hostname, seq, stream_ns)
        return got

    def _flush(self) -> None:
        """Publishes what arrived since the last flush under one hub lock hold (one wake-up for many)."""
        self._flush_scheduled = False
        items, self._pending = self._pending, []
        if self._hub is not None and items:
            self._hub.publish_at(items)
            if items[-1][0] > self.last_seq:
                self.last_seq = items[-1][0]

    # -- reads behind the ring --------------------------------------------------------------------------------

    def _read_failed(self, first: int, exc: Exception | None) -> None:
        """One log line per READ_LOG_SECONDS for readers behind the ring that wait on the stream (they retry
        for ever and skip nothing; the line says why they wait)."""
        now = time.monotonic()
        if now - self._read_logged >= READ_LOG_SECONDS:
            self._read_logged = now
            why = "no answer" if exc is None else (str(exc) or type(exc).__name__)
            log.warning("a subscriber behind the ring waits for stream %s to answer a read from sequence %d: %s "
                        "(retrying)", self.stream, first, why)

    async def read(self, first: int, max_n: int) -> list[StreamItem]:
        """Stored messages from `first` on (StreamReads), through a pull consumer. A consumer that returned
        messages is kept for the read that continues after them (a reader catching up reads on without a new
        consumer each time: creating one is a cluster-wide operation, the slow part while JetStream is busy);
        any other is deleted (the server also removes one idle for 30 s)."""
        if first > self.last_seq:
            return []
        psub = self._pulls.pop(first, None)
        if psub is None:
            psub = await self._new_pull(first)
        kept = False
        try:
            try:
                msgs = await psub.fetch(batch=max_n, timeout=READ_TIMEOUT)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                # Nothing from `first` on within the timeout: the stream holds nothing there (or does not answer;
                # the stream's state says which).
                try:
                    await self.refresh()
                except Exception as exc:  # noqa: BLE001
                    raise StreamUnavailable(str(exc) or type(exc).__name__) from exc
                if first <= self.last_seq and first >= self.first_seq:
                    self._read_failed(first, None)
                    raise StreamUnavailable(f"no answer for sequence {first}") from None
                return []
            except nats.errors.Error as exc:  # the consumer went away (deleted, its server lost): a new one next
                self._read_failed(first, exc)
                raise StreamUnavailable(str(exc) or type(exc).__name__) from exc
            out: list[StreamItem] = []
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                out.append((seq, self.decode(msg.subject, msg.data, seq)))
            if out:
                kept = True
                self._pulls[out[-1][0] + 1] = psub
                while len(self._pulls) > MAX_PULLS:
                    _, old = self._pulls.popitem(last=False)
                    await self._drop_pull(old)
            return out
        finally:
            if not kept:
                await self._drop_pull(psub)

    async def _new_pull(self, first: int) -> JetStreamContext.PullSubscription:
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, first),
            ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True, num_replicas=1,
            filter_subject=all_alerts(self.prefix),
        )
        try:
            return await self.js.pull_subscribe(all_alerts(self.prefix), stream=self.stream, config=config)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the stream: the reader waits, skips nothing
            self._read_failed(first, exc)
            raise StreamUnavailable(str(exc) or type(exc).__name__) from exc

    async def _drop_pull(self, psub: JetStreamContext.PullSubscription) -> None:
        with contextlib.suppress(Exception):
            info = await psub.consumer_info()
            await psub.unsubscribe()
            await self.js.delete_consumer(self.stream, info.name)

    async def close_reads(self) -> None:
        """Deletes the pull consumers kept for reads behind the ring."""
        pulls, self._pulls = self._pulls, OrderedDict()
        for psub in pulls.values():
            await self._drop_pull(psub)
