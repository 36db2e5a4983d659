"""Which nodes are alive, and what the aggregator reports about the fleet (silent nodes, bad input).

A node is active when JetStream stored an alert of it or a heartbeat (NODES_BUCKET) from it; times are the
server's store timestamps, never the node's own clock, so every aggregator sees the same times. A node that was
active within `silence_timeout` of this aggregator's start (or later) and then stores nothing for
`silence_timeout` raises the internal alert "Falconet node silent"; its next alert or heartbeat raises "Falconet
node back". Nodes already silent before the aggregator started are remembered as silent, without an alert:
another aggregator (or this one before a restart) reported them.

The alerts are published into the stream itself (server/fleet/names.py `fleet_subject`), so every aggregator
serves them at the same cursor, with a message id every aggregator computes alike (host plus the revision and
sequence of the node's last activity), so JetStream keeps one when several aggregators notice the same silence.

Bad input (a message that is not an alert, a heartbeat that is not one or that sits under another node's key) is
counted, logged at most once per REPORT_SECONDS, and reported by an internal alert at most as often; it never
stops the aggregator and is never served as the node's alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from falconet.model.alert import Alert, Priority
from falconet.model.text import escape_controls
from falconet.sdk.convert import alert_to_wire
from falconet.server.fleet.aggregate_stream import Bad, FeedListener
from falconet.server.fleet.names import HEADER_MSG_ID, Heartbeat, escape_host, fleet_subject, unescape_host

log = logging.getLogger("falconet.aggregate")

SILENT_RULE = "Falconet node silent"
BACK_RULE = "Falconet node back"
BAD_INPUT_RULE = "Falconet fleet bad input"
RECREATED_RULE = "Falconet fleet stream recreated"
REPORT_SECONDS = 10.0
MAX_NODES = 100_000
"""Nodes tracked at most: a stranger writing keys cannot grow the aggregator's memory without bound."""


@dataclass(slots=True)
class NodeState:
    last_ns: int = 0
    """Store time of the newest alert or heartbeat (server clock)."""
    marker: str = ""
    """What that activity was (alert sequence / heartbeat revision): the same on every aggregator."""
    silent: bool = False
    silent_marker: str = ""


@dataclass(slots=True)
class BadInput:
    messages: int = 0
    heartbeats: int = 0
    last_reported: float = 0.0
    pending: list[str] = field(default_factory=list)
    first_id: str = ""


class NodeWatch(FeedListener):
    """Tracks node activity from the feed and NODES_BUCKET; raises the silence alerts and bad-input reports."""

    def __init__(self, js: JetStreamContext, prefix: str, silence_timeout: float, hostname: str) -> None:
        self.js = js
        self.prefix = prefix
        self.timeout_ns = int(silence_timeout * 1e9)
        self.hostname = hostname
        self.nodes: dict[str, NodeState] = {}
        self.bad = BadInput()
        self.started_ns = time.time_ns()
        self.raised: list[str] = []
        """Message ids of the alerts this aggregator published (tests and logs)."""
        self._outbox: list[tuple[str, Alert]] = []

    def silent_count(self) -> int:
        return sum(1 for state in list(self.nodes.values()) if state.silent)

    # -- activity --------------------------------------------------------------------------------------------

    def on_alert(self, host: str, seq: int, stream_ns: int) -> None:
        self._active(host, stream_ns, f"a{seq}")

    def on_bad(self, bad: Bad) -> None:
        self.bad.messages += 1
        self._bad_report(f"stream message {bad.seq} on {bad.subject!r}: {bad.reason}", f"m{bad.seq}")

    def on_heartbeat(self, entry: KeyValue.Entry) -> None:
        """One NODES_BUCKET entry, validated: a bad one is counted and reported, never trusted."""
        if entry.operation is not None or entry.value is None:
            return  # deleted or purged: the node left the fleet on purpose; nothing to watch
        try:
            beat = Heartbeat.from_json(entry.value)
            host = unescape_host(entry.key)
            if beat.host != host:
                raise ValueError(f"it names host {beat.host!r} but sits under the key of {host!r}")
        except ValueError as exc:
            self.bad.heartbeats += 1
            self._bad_report(f"heartbeat key {entry.key!r} (revision {entry.revision}): {exc}", f"h{entry.revision}")
            return
        created = entry.created
        stored_ns = int(created.timestamp() * 1e9) if created is not None else time.time_ns()  # type: ignore[attr-defined]
        self._active(host, stored_ns, f"h{entry.revision}")

    def _active(self, host: str, stored_ns: int, marker: str) -> None:
        state = self.nodes.get(host)
        if state is None:
            if len(self.nodes) >= MAX_NODES:
                return
            state = self.nodes[host] = NodeState()
            # Silent already when we start (or first hear of it): someone else reported it.
            state.silent = stored_ns + self.timeout_ns < self.started_ns
        if stored_ns >= state.last_ns:
            state.last_ns, state.marker = stored_ns, marker
        if state.silent and stored_ns + self.timeout_ns >= time.time_ns():
            state.silent = False
            if state.silent_marker:
                self._queue(f"back-{escape_host(host)}-{marker}", host, BACK_RULE, Priority.NOTICE,
                            f"node {host} is publishing again (it was silent)", state)

    def check(self, now_ns: int | None = None) -> None:
        """Marks nodes silent whose last activity is older than the timeout, queueing their alerts."""
        now = time.time_ns() if now_ns is None else now_ns
        for host, state in self.nodes.items():
            if not state.silent and state.last_ns + self.timeout_ns < now:
                state.silent = True
                state.silent_marker = state.marker
                secs = (now - state.last_ns) / 1e9
                self._queue(f"silent-{escape_host(host)}-{state.marker}", host, SILENT_RULE, Priority.WARNING,
                            f"node {host} has sent no alert and no heartbeat for {secs:.0f}s (silence timeout "
                            f"{self.timeout_ns / 1e9:g}s)", state)

    def _queue(self, msg_id: str, host: str, rule: str, priority: Priority, text: str, state: NodeState) -> None:
        fields: dict[str, str | int | float | bool | None] = {
            "falconet.node": host,
            "falconet.last_seen_ns": state.last_ns,
            "falconet.aggregator": self.hostname,
        }
        alert = Alert(time_ns=time.time_ns(), rule=rule, priority=priority, source="internal",
                      output=escape_controls(f"Falconet: {text}"), output_fields=fields,
                      tags=["falconet", "fleet"], hostname=host)
        self._outbox.append((msg_id, alert))

    def _bad_report(self, what: str, marker: str) -> None:
        bad = self.bad
        if not bad.pending:
            bad.first_id = marker
        if len(bad.pending) < 5:
            bad.pending.append(escape_controls(what))
        self.flush_bad(force=False)

    def flush_bad(self, *, force: bool) -> None:
        """Logs and queues one report for the bad input seen since the last one (at most every REPORT_SECONDS)."""
        bad = self.bad
        now = time.monotonic()
        if not bad.pending or (not force and now - bad.last_reported < REPORT_SECONDS):
            return
        bad.last_reported = now
        text = (f"bad input on the fleet stream or node bucket ({bad.messages} messages and {bad.heartbeats} "
                f"heartbeats refused so far), e.g. " + "; ".join(bad.pending))
        log.warning("%s", text)
        fields: dict[str, str | int | float | bool | None] = {
            "falconet.bad_messages": bad.messages,
            "falconet.bad_heartbeats": bad.heartbeats,
            "falconet.aggregator": self.hostname,
        }
        alert = Alert(time_ns=time.time_ns(), rule=BAD_INPUT_RULE, priority=Priority.WARNING, source="internal",
                      output=f"Falconet: {text}"[:4000], output_fields=fields, tags=["falconet", "fleet"],
                      hostname=self.hostname)
        self._outbox.append((f"bad-{bad.first_id}", alert))
        bad.pending = []

    def stream_recreated(self, stream: str, old: str, new: str, oldest: int) -> None:
        """Queues the one alert saying the stream was deleted and created again (its message id is the new
        epoch's: JetStream keeps one whichever aggregators noticed)."""
        text = (f"stream {stream} was deleted and created again: cursors of epoch {old} now resume at the new "
                f"stream's oldest alert ({new}:{oldest}); alerts of the old stream are no longer served")
        fields: dict[str, str | int | float | bool | None] = {
            "falconet.old_epoch": old, "falconet.epoch": new, "falconet.resume_sequence": oldest,
            "falconet.aggregator": self.hostname,
        }
        alert = Alert(time_ns=time.time_ns(), rule=RECREATED_RULE, priority=Priority.WARNING, source="internal",
                      output=escape_controls(f"Falconet: {text}"), output_fields=fields,
                      tags=["falconet", "fleet"], hostname=self.hostname)
        self._outbox.append((f"recreated-{new}", alert))

    # -- publishing ------------------------------------------------------------------------------------------

    async def send(self) -> None:
        """Publishes the queued alerts to the fleet subject (kept for the next try if NATS is away)."""
        while self._outbox:
            msg_id, alert = self._outbox[0]
            try:
                await self.js.publish(fleet_subject(self.prefix), alert_to_wire(alert),
                                      headers={HEADER_MSG_ID: msg_id})
            except Exception as exc:  # noqa: BLE001 - NATS away or refusing: retried on the next round
                log.warning("cannot publish the internal alert %s yet: %s", msg_id, exc)
                return
            self.raised.append(msg_id)
            self._outbox.pop(0)

    async def run(self, kv: KeyValue, period: float) -> None:
        """Watches the bucket and checks for silence every `period` seconds, for ever."""
        watcher = await kv.watchall()
        reader = asyncio.ensure_future(self._watch(watcher))
        try:
            while True:
                self.check()
                self.flush_bad(force=False)
                await self.send()
                await asyncio.sleep(period)  # the check's period, not synchronisation
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self.on_heartbeat(entry)
