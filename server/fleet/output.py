"""The `nats` output: every alert of the node's hub, forwarded to a JetStream stream in order, exactly once.

The hub (and its persistent store, when configured) is the spool. The forwarder is one more reader of the hub,
on its own asyncio task: the engine thread never waits for it, and when NATS is away alerts simply stay in the
store, to be read from there once NATS is back (a reader behind the ring reads on from the store).

Each alert is published on `alert_subject(host)` with the message id `<epoch>-<seq>` and the epoch/seq/host
headers of server/fleet/names.py; many publishes are in flight at once (`max_in_flight`) over one connection,
so JetStream stores them in the order sent, and the forwarder counts an alert forwarded only once it and every
alert before it are acknowledged. On any failure (connection lost, an acknowledgement that is an error or does
not come within `ack_timeout`) the session ends; the next one, once connected, reads the last message the
stream holds for this node's subject and resumes after it, so neither a long outage nor a restart of the node
duplicates or loses an alert. Alerts the store dropped (retention) before they could be forwarded are counted
and reported as an internal alert.

A NATS that cannot be reached or refuses us is reported once per kind of problem (a log line, a metric, an
internal alert), retried with a growing pause, and its recovery reported too; the daemon keeps serving locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from falconet.model.alert import Alert, Priority
from falconet.server.fleet.connection import connect
from falconet.server.fleet.names import (
    HEADER_EPOCH,
    HEADER_HOST,
    HEADER_MSG_ID,
    HEADER_SEQ,
    HEARTBEAT_SECONDS,
    NODES_BUCKET,
    Heartbeat,
    alert_subject,
    escape_host,
    msg_id,
)
from falconet.server.fleet.output_config import NatsOutputConfig
from falconet.server.fleet.output_stream import ensure_stream, last_position, stored_seqs
from falconet.server.hub import Entry, Hub, Reader

FAILING_RULE = "Falconet internal: NATS output failing"
RECOVERED_RULE = "Falconet internal: NATS output recovered"
UNFORWARDED_RULE = "Falconet internal: alerts not forwarded to NATS"
SHAPE_RULE = "Falconet internal: NATS stream differs from the configuration"
REORDERED_RULE = "Falconet internal: alerts forwarded to NATS out of order"
CONFIG_REASONS = frozenset({"auth", "permission", "no_stream", "rejected"})
READ_BATCH = 512
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0

CLOSE_TIMEOUT_S = 5.0
Report = Callable[[Alert], object]
Log = Callable[[str], None]


class _Broken(Exception):
    """Ends a session: `reason` is a metric label, the text what the log line says."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass
class ForwarderStats:
    connected: bool = False
    forwarded: int = 0
    """Alerts acknowledged by JetStream as stored (new), since start."""
    duplicates: int = 0
    """Alerts JetStream acknowledged as duplicates (a retry of one it already held)."""
    unforwarded: int = 0
    """Alerts the node's store dropped before they could be forwarded."""
    resumes: int = 0
    """Sessions that started (the first connect, and every reconnect)."""
    reordered: int = 0
    """Alerts published again after later ones were stored without them (each is in the stream once)."""
    forwarded_seq: int = 0
    """The newest sequence acknowledged (with every one before it) in the hub's epoch."""
    backlog: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class NatsForwarder:
    """Forwards `hub` to NATS; `start()` on the event loop that serves the daemon, `close()` on the same."""

    def __init__(self, config: NatsOutputConfig, hub: Hub, *, report: Report, log: Log, version: str = "",
                 rules_version: Callable[[], str] = str) -> None:
        """`rules_version` says which pushed rules version the node runs, for its heartbeat ("" for none)."""
        self.config = config
        self.hub = hub
        self.host = hub.hostname
        self.subject = alert_subject(self.host, config.subject_prefix)
        self._host_token = escape_host(self.host)
        self._report = report
        self._log = log
        self._version = version
        self._rules_version = rules_version
        self.stats = ForwarderStats()
        self._reader: Reader | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._healthy: bool | None = None  # None: not connected yet
        self._down_reason = ""
        self._shape_reported = ""
        self._nats_error = ""
        # The session's publishing state.
        self._broken: asyncio.Future[_Broken] | None = None
        self._inflight: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._token = 0
        self._room = asyncio.Event()
        self._last_sent = 0
        self._inbox = ""
        self._frontier_ack = b""

    # -- life ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        # The reader exists from the start, so that what the store drops while NATS was never reached is
        # counted as lost, not silently skipped by a first session that starts at the oldest retained alert.
        self._reader = self.hub.reader(self.hub.oldest, name="nats-output", identity="nats-output")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="falconet-nats-output")

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Forwards what the hub holds (for up to `drain_timeout` seconds, if connected), then stops. Alerts not
        forwarded by then stay in the store and are forwarded by the next run."""
        if self._task is None:
            return
        deadline = time.monotonic() + drain_timeout
        while self.stats.connected and self.stats.forwarded_seq < self.hub.newest and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # bounded wait for acknowledgements at shutdown
        self._closing.set()
        self._task.cancel()
        # Bounded: a stop must not hang on a connection that does not close (its task is abandoned then).
        await asyncio.wait({self._task}, timeout=CLOSE_TIMEOUT_S)
        self._task = None
        if self._reader is not None:
            self._reader.close()

    def snapshot(self) -> ForwarderStats:
        """The counters now (the metrics collector reads these at scrape time)."""
        st = self.stats
        st.backlog = max(0, self.hub.newest - st.forwarded_seq)
        return ForwarderStats(st.connected, st.forwarded, st.duplicates, st.unforwarded, st.resumes, st.reordered,
                              st.forwarded_seq, st.backlog, dict(st.failures))

    # -- the connection loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        pause = RETRY_FIRST_S
        while not self._closing.is_set():
            self._nats_error = ""
            try:
                # nats-py's own reconnecting is off: every session starts by asking the stream where to resume.
                # (Its initial connect tries each server until it exceeds max_reconnect_attempts, a positive
                # number: 1 and a short wait try each server twice, then raise, and this loop paces the retries.)
                nc = await connect(self.config.connection, allow_reconnect=False, max_reconnect_attempts=1,
                                   reconnect_time_wait=0.1, error_cb=self._on_error,
                                   disconnected_cb=self._on_disconnected)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every refusal is reported, then retried
                self._failed(*self._classify(exc, "cannot connect to"))
            else:
                try:
                    await self._session(nc)
                    pause = RETRY_FIRST_S
                except _Broken as b:
                    if self.stats.connected:
                        pause = RETRY_FIRST_S
                    self._failed(b.reason, str(b))
                except (asyncio.TimeoutError, nats.errors.Error) as exc:
                    self._failed(*self._classify(exc, "lost"))
                except Exception as exc:  # noqa: BLE001 - a defect here must not end forwarding for good
                    self._failed("error", f"forwarding failed on {type(exc).__name__}: {exc}")
                finally:
                    self.stats.connected = False
                    await _close_client(nc)
            if self._closing.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), pause)  # the retry pause, cut short by close()
            pause = min(pause * 2, RETRY_MAX_S)

    async def _on_error(self, exc: Exception) -> None:
        self._nats_error = str(exc).strip()
        # A refused heartbeat ($KV...) is the heartbeat task's to report; anything else refused ends the session.
        if "permissions violation" in self._nats_error.lower() and "$KV." not in self._nats_error:
            self._break(_Broken("permission", f"refused by {self.config.connection.describe()}: {self._nats_error}"))

    async def _on_disconnected(self) -> None:
        self._break(_Broken("disconnected", f"disconnected from {self.config.connection.describe()}"
                            + (f" ({self._nats_error})" if self._nats_error else "")))

    def _break(self, b: _Broken) -> None:
        if self._broken is not None and not self._broken.done():
            self._broken.set_result(b)
        self._room.set()

    def _classify(self, exc: BaseException, doing: str) -> tuple[str, str]:
        """(metric reason, log text) for a connect or API failure; nats-py's error callback often knows more."""
        text = (str(exc) or type(exc).__name__).strip()
        said = self._nats_error
        low = f"{text} {said}".lower()
        if "authorization" in low or "authentication" in low or "user credentials" in low:
            reason = "auth"
        elif "permissions violation" in low:
            reason = "permission"
        elif isinstance(exc, nats.errors.NoServersError | ConnectionRefusedError | OSError):
            reason = "unreachable"
        elif isinstance(exc, asyncio.TimeoutError):
            reason = "timeout"
        else:
            reason = "error"
        detail = text if not said or said in text else f"{text}: {said}"
        return reason, f"{doing} {self.config.connection.describe()}: {detail}"

    # -- one session: stream, resume, forward ----------------------------------------------------------------

    async def _session(self, nc: NatsClient) -> None:
        cfg = self.config
        js = nc.jetstream(timeout=cfg.ack_timeout_s)
        self._broken = asyncio.get_running_loop().create_future()
        try:
            differences = await ensure_stream(js, cfg)
            pos = await last_position(js, cfg, self.subject, self.host)
        except (asyncio.TimeoutError, nats.errors.Error) as exc:
            reason, text = self._classify(exc, f"stream {cfg.stream} not usable on")
            raise _Broken(reason, text) from None
        if differences:
            self._shape_differs(differences)
        reader = self._reader
        assert reader is not None
        start = self._start_after(pos.epoch, pos.seq, reader.next_seq)
        self._up(start, pos.how)
        holes = await self._holes(js, pos.epoch, pos.seq)
        reader.next_seq = start
        self._inflight.clear()
        self._inbox = f"{nc.new_inbox()}."
        await nc.subscribe(self._inbox + "*", cb=self._on_ack)
        if holes:
            await self._republish(nc, holes)
        self._last_sent = max(self._last_sent, start - 1)
        self.stats.forwarded_seq = max(self.stats.forwarded_seq, start - 1) if not self._inflight else \
            self.stats.forwarded_seq
        tasks = [asyncio.ensure_future(t) for t in (self._pump(nc, reader), self._watch_acks(),
                                                     self._heartbeats(js))]
        try:
            broken = await self._broken
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        raise broken

    async def _holes(self, js: nats.js.JetStreamContext, epoch: str | None, last: int) -> list[int]:
        """Alerts of this run between the last one acknowledged in order and the stream's last one that the
        stream does not hold (stored later ones, not them: a stream leader change between them). Empty in the
        usual case, where what was stored unacknowledged is a prefix of what was in flight."""
        known = self.stats.forwarded_seq
        if epoch != self.hub.epoch or last <= known + 1 or not self._frontier_ack:
            return []
        try:
            after = int(json.loads(self._frontier_ack)["seq"])
            stored = await stored_seqs(js, self.config.stream, self.subject, after, self.hub.epoch, last,
                                       self.config.max_in_flight + 16)
        except (ValueError, KeyError, TypeError, asyncio.TimeoutError, nats.errors.Error):
            return []
        if last not in stored:
            return []  # the walk did not get there: nothing to conclude
        return [s for s in range(known + 1, last) if s not in stored]

    async def _republish(self, nc: NatsClient, holes: list[int]) -> None:
        """Publishes the holes now: each is then stored once, after later alerts of this node (reported)."""
        self.stats.reordered += len(holes)
        message = (f"{len(holes)} alerts ({self.hub.epoch}:{holes[0]}..{holes[-1]}) were not stored while later "
                   "ones were (a failure in the stream's cluster); they are published again now, so each is in the "
                   "stream once, after alerts that followed them")
        self._log(f"warning: nats_output: {message}")
        self._raise(REORDERED_RULE, Priority.WARNING, message, reordered=len(holes))
        for seq in holes:
            r = self.hub.reader(seq, name="nats-output-holes")
            try:
                entries, _ = r.take(1)
                if not entries and r.behind:
                    entries, _ = await r.take_stored(1)
            finally:
                r.close()
            if entries and entries[0].seq == seq:
                await self._publish(nc, entries[0])

    def _start_after(self, epoch: str | None, seq: int, unread: int) -> int:
        """The first sequence to forward: after the stream's last alert of this node when it is of this epoch;
        otherwise (another epoch: a new store, or a run without one; or none) the first alert this run has not
        forwarded (`unread`: at start, the oldest the hub retained), so everything retained goes, once."""
        if epoch == self.hub.epoch:
            head = self.hub.published
            if seq > head:
                self._log(f"warning: nats_output: the stream holds {epoch}:{seq}, ahead of this node's newest alert "
                          f"({head}); the store lost alerts before a restart. Forwarding from {head + 1}.")
                return head + 1
            return seq + 1
        return unread

    async def _pump(self, nc: NatsClient, reader: Reader) -> None:
        """Reads the hub from the reader's position and publishes, at most `max_in_flight` unacknowledged."""
        broken = self._broken
        assert broken is not None
        limit = self.config.max_in_flight
        while not broken.done():
            entries, lost = reader.take(READ_BATCH)
            if not entries and reader.behind:
                entries, lost = await reader.take_stored(READ_BATCH)
            if lost:
                self._unforwarded(lost, (entries[0].seq if entries else reader.next_seq) - lost)
            if not entries:
                waiter = asyncio.ensure_future(reader.wait())
                await asyncio.wait((waiter, broken), return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                continue
            for entry in entries:
                while len(self._inflight) >= limit and not broken.done():
                    self._room.clear()
                    await self._room.wait()
                if broken.done():
                    return
                await self._publish(nc, entry)

    async def _publish(self, nc: NatsClient, entry: Entry) -> None:
        self._token += 1
        token = self._token
        epoch = self.hub.epoch
        seq = entry.seq
        self._inflight[token] = (seq, time.monotonic())
        self._last_sent = seq
        headers = {
            HEADER_MSG_ID: msg_id(epoch, seq),
            HEADER_EPOCH: epoch,
            HEADER_SEQ: str(seq),
            HEADER_HOST: self._host_token,
        }
        try:
            await nc.publish(self.subject, entry.wire(), reply=f"{self._inbox}{token}", headers=headers)
        except nats.errors.Error as exc:
            self._break(_Broken("publish", f"cannot publish to {self.config.connection.describe()}: {exc}"))

    async def _on_ack(self, msg: Msg) -> None:
        token_text = msg.subject[len(self._inbox):]
        if not token_text.isdigit():
            return
        got = self._inflight.pop(int(token_text), None)
        if got is None:
            return  # from a session that ended: resume already decided what to send again
        data = msg.data
        if not data or (msg.headers and msg.headers.get("Status") == "503"):
            self._break(_Broken("no_stream", f"no stream takes {self.subject} on {self.config.connection.describe()}"
                                f" (is stream {self.config.stream} there, with that subject?)"))
            return
        if b'"error"' in data:
            try:
                err = json.loads(data).get("error", {})
                text = f"{err.get('description', data.decode(errors='replace'))} (code {err.get('err_code')})"
            except (ValueError, AttributeError):
                text = data.decode(errors="replace")
            self._break(_Broken("rejected", f"stream {self.config.stream} refused alert {got[0]}: {text}"))
            return
        if b'"duplicate":true' in data:
            self.stats.duplicates += 1
        else:
            self.stats.forwarded += 1
        inflight = self._inflight
        if not inflight or next(iter(inflight.values()))[0] > got[0]:
            self._frontier_ack = data  # the stream sequence of the newest alert with every one before it stored
        self.stats.forwarded_seq = next(iter(inflight.values()))[0] - 1 if inflight else self._last_sent
        if len(inflight) < self.config.max_in_flight:
            self._room.set()

    async def _watch_acks(self) -> None:
        """Ends the session when the oldest unacknowledged alert waited longer than `ack_timeout`."""
        timeout = self.config.ack_timeout_s
        while True:
            await asyncio.sleep(timeout / 4)  # a timer: how often the oldest publish is checked
            if self._inflight:
                seq, sent = next(iter(self._inflight.values()))
                if time.monotonic() - sent > timeout:
                    self._break(_Broken("timeout", f"alert {seq} not acknowledged within {timeout:g} s by "
                                        f"{self.config.connection.describe()}"))
                    return

    async def _heartbeats(self, js: nats.js.JetStreamContext) -> None:
        """Writes this node's heartbeat every HEARTBEAT_SECONDS; a failure is reported once, never fatal."""
        kv = None
        warned = False
        while True:
            try:
                if kv is None:
                    try:
                        kv = await js.key_value(NODES_BUCKET)
                    except nats.js.errors.NotFoundError:
                        kv = await js.create_key_value(bucket=NODES_BUCKET, history=1,
                                                       replicas=self.config.shape.replicas)
                beat = Heartbeat(self.host, self.hub.epoch, self.stats.forwarded_seq, time.time_ns(), self._version,
                                 self._rules_version())
                await kv.put(self._host_token, beat.to_json())
                warned = False
            except (asyncio.TimeoutError, nats.errors.Error) as exc:
                self._count("heartbeat")
                if not warned:
                    warned = True
                    self._log(f"warning: nats_output: heartbeat not written to bucket {NODES_BUCKET}: "
                              f"{self._classify(exc, 'on')[1]}")
            await asyncio.sleep(HEARTBEAT_SECONDS)  # the heartbeat period

    # -- reports ---------------------------------------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self.stats.failures[reason] = self.stats.failures.get(reason, 0) + 1

    def _failed(self, reason: str, text: str) -> None:
        """Counted every time; logged and alerted once per outage, and again while down only when the problem
        becomes one of configuration (credentials, permissions, the stream), which someone must fix."""
        self._count(reason)
        if self._healthy is False and (reason == self._down_reason or reason not in CONFIG_REASONS):
            return
        self._healthy = False
        self._down_reason = reason
        backlog = max(0, self.hub.newest - self.stats.forwarded_seq)
        self._log(f"nats_output: {text}; alerts stay in the local store and are forwarded once NATS accepts them "
                  f"(retrying; {backlog} waiting)")
        self._raise(FAILING_RULE, Priority.ERROR, f"NATS output failing: {text}", reason=reason, backlog=backlog)

    def _up(self, start: int, how: str) -> None:
        self.stats.connected = True
        self.stats.resumes += 1
        where = f"{self.config.connection.describe()} (stream {self.config.stream}, subject {self.subject})"
        text = f"forwarding to {where} from {self.hub.epoch}:{start}, after {how}"
        if self._healthy is False:
            self._log(f"nats_output: recovered: {text}")
            self._raise(RECOVERED_RULE, Priority.NOTICE, f"NATS output recovered: {text}", reason=self._down_reason)
        else:
            self._log(f"nats_output: {text}")
        self._healthy = True
        self._down_reason = ""

    def _shape_differs(self, differences: list[str]) -> None:
        text = "; ".join(differences)
        if text == self._shape_reported:
            return
        self._shape_reported = text
        message = (f"stream {self.config.stream} exists with another shape than nats_output configures: {text}. "
                   "It is used as it is (a node never changes an existing stream).")
        self._log(f"warning: nats_output: {message}")
        self._raise(SHAPE_RULE, Priority.WARNING, message)

    def _unforwarded(self, lost: int, first: int) -> None:
        self.stats.unforwarded += lost
        message = (f"{lost} alerts ({self.hub.epoch}:{first}..{first + lost - 1}) left the node's alert store "
                   f"before they could be forwarded to NATS; {self.stats.unforwarded} in total")
        self._log(f"warning: nats_output: {message}")
        self._raise(UNFORWARDED_RULE, Priority.WARNING, message, lost=lost)

    def _raise(self, rule: str, priority: Priority, message: str, **fields: str | int) -> None:
        self._report(Alert(
            time_ns=time.time_ns(),
            rule=rule,
            priority=priority,
            source="internal",
            output=f"Falconet internal: {message}",
            output_fields={"nats.stream": self.config.stream, "nats.subject": self.subject, **fields},
            tags=["falconet", "nats"],
            hostname=self.host,
        ))


async def _close_client(nc: NatsClient) -> None:
    """Closes a session's connection, within CLOSE_TIMEOUT_S: nats-py's close waits for its flusher, which a
    dead peer can keep waiting; the next session does not depend on it."""
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)
