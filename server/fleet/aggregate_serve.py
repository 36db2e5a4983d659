"""Serving the fleet: the node's gRPC server and services over a FleetHub, with Falco cursors in key-value.

Falco's clients know no cursors: a node keeps, per client identity, the newest alert sent to it ("drain the
queue"). An aggregator keeps that in CURSORS_BUCKET instead (key: the escaped identity; value: JSON with the
stream epoch and sequence), so a Falco client sent to another aggregator carries on where it left off. A call
loads its identity's cursor before it starts; cursors that moved are written every FLUSH_SECONDS and when a call
ends, with compare-and-set so that two aggregators serving one identity never move its cursor back.

The input service is not served: the aggregator's alerts come only from the stream, whose sequences are its
cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import grpc
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from falconet.server.app import AlertServer
from falconet.server.config import ServerConfig
from falconet.server.fleet.aggregate_hub import FleetHub
from falconet.server.fleet.names import escape_host
from falconet.server.services_falco import OUTPUTS_SERVICE, VERSION_SERVICE, FalcoOutputs, FalcoVersion
from falconet.server.services_falconet import ALERT_SERVICE, AlertService

log = logging.getLogger("falconet.aggregate")

FLUSH_SECONDS = 0.5


class FalcoCursors:
    """Per-identity Falco cursors in the shared bucket (see the module docstring)."""

    def __init__(self, hub: FleetHub, kv: KeyValue) -> None:
        self.hub = hub
        self.kv = kv
        self.errors = 0
        self.written: dict[str, int] = {}
        """The newest sequence known to be in the bucket per identity (what need not be written again)."""

    async def load(self, identity: str) -> None:
        """Takes the identity's cursor from the bucket; with NATS away, goes on with what this aggregator holds
        (the client may then get again alerts another aggregator sent it: never fewer)."""
        try:
            entry = await self.kv.get(escape_host(identity))
        except (KeyNotFoundError, NotFoundError):
            return
        except Exception as exc:  # noqa: BLE001 - NATS away or electing a leader: serve, do not fail the call
            self.errors += 1
            log.warning("cannot read the Falco cursor of %s (serving from this aggregator's own): %s",
                        identity, exc or type(exc).__name__)
            return
        seq = self._seq_of(entry.value)
        if seq:
            self.hub.load_falco_cursor(identity, seq)
            self.written[identity] = max(seq, self.written.get(identity, 0))

    def _seq_of(self, value: bytes | None) -> int:
        """The sequence a stored value holds for this stream (0: none, another stream's, or not ours)."""
        try:
            raw = json.loads(value or b"")
        except ValueError:
            return 0
        if not isinstance(raw, dict) or raw.get("epoch") != self.hub.epoch:
            return 0
        seq = raw.get("seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq < 2**63 else 0

    async def flush(self) -> None:
        """Writes every cursor that moved; one that cannot be written now is kept for the next flush."""
        for identity, seq in self.hub.falco_cursors().items():
            if seq <= self.written.get(identity, 0):
                continue
            try:
                await self._store(identity, seq)
            except Exception as exc:  # noqa: BLE001 - NATS away: retry on the next flush
                self.errors += 1
                log.warning("cannot store the Falco cursor of %s yet: %s", identity, exc)
            else:
                self.written[identity] = max(seq, self.written.get(identity, 0))

    async def _store(self, identity: str, seq: int) -> None:
        key = escape_host(identity)
        value = json.dumps({"epoch": self.hub.epoch, "seq": seq}, separators=(",", ":")).encode()
        for _ in range(5):
            try:
                entry = await self.kv.get(key)
            except (KeyNotFoundError, NotFoundError):
                try:
                    await self.kv.create(key, value)
                    return
                except KeyWrongLastSequenceError:
                    continue
            stored = self._seq_of(entry.value)
            if stored >= seq:
                self.hub.load_falco_cursor(identity, stored)
                return
            try:
                await self.kv.update(key, value, last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                continue  # another aggregator wrote meanwhile: read again, keep the larger

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)  # the flush period, not synchronisation
            await self.flush()


class FleetFalcoOutputs(FalcoOutputs):
    """Falco's `sub`/`get`, with the caller's Falco cursor loaded from (and written back to) the bucket."""

    def __init__(self, hub: FleetHub, cursors: FalcoCursors) -> None:
        super().__init__(hub)
        self.cursors = cursors
        self._flushes: set[asyncio.Task[None]] = set()

    def _flush_soon(self) -> None:
        task = asyncio.ensure_future(self.cursors.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    # The node's `sub` and `get`, with the caller's Falco cursor loaded from the bucket before the call reads the
    # hub and written back when it ends (hooks, not a wrapper: the per-alert path is the node's own).

    async def call_starts(self, identity: str) -> None:
        await self.cursors.load(identity)

    def sub_ended(self, identity: str) -> None:
        self._flush_soon()

    async def get_done(self, identity: str) -> None:
        await self.cursors.flush()  # before the client sees the end: its next call, anywhere, goes on from here


class FleetServer(AlertServer):
    """The node's server over a FleetHub: the same addresses, TLS, limits and services, minus the input."""

    def __init__(self, config: ServerConfig, hub: FleetHub, cursors: FalcoCursors) -> None:
        super().__init__(config, hub)
        self.fleet_hub = hub
        self.cursors = cursors

    def _handlers(self) -> dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]]:
        if self._services is None:
            self._services = {
                OUTPUTS_SERVICE: FleetFalcoOutputs(self.fleet_hub, self.cursors).handlers(),
                VERSION_SERVICE: FalcoVersion().handlers(),
                ALERT_SERVICE: AlertService(self.hub, self.config.max_batch).handlers(),
            }
        return self._services


async def cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
