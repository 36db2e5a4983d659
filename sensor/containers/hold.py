"""The delivery rule: a container's events reach the engine with its metadata, host events never wait.

Rules test container.image.repository and container.privileged in their conditions, so attaching metadata to
alerts afterwards is too late: the *events* of a container whose metadata is not cached yet wait in a
per-container hold, in order, until the metadata arrives or MAX_WAIT passes (each expiry counted in
`expired`). A lookup that finds nothing does not end the wait: a container that lived a moment (`run --rm`)
can be gone before its events are evaluated, and the runtime's events stream still brings what it said. Host events and other containers' events pass straight through, so one slow container never
delays anything else. Usually the hold stays empty: the runtimes' events streams announce containers before
their first process runs (service.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from falconet.model.event import Container, Event
from falconet.sensor.cgroups import HOST_ID
from falconet.sensor.containers.service import MetadataService

MAX_WAIT = 0.5
"""Seconds a container's events may wait for its metadata by default (the issue's bound); the daemon's
`container_metadata_wait` setting (server/config_containers.py) overrides it."""
HELD_MAX = 10_000
"""Events held across all containers at most; beyond it the oldest hold is released early (counted)."""


@dataclass
class _Held:
    deadline: float
    events: list[Event] = field(default_factory=list)


class MetadataHold:
    """Used by one thread (the daemon's engine thread): `feed` each polled batch, `poll_timeout_ms` to pace."""

    def __init__(self, service: MetadataService, max_wait: float = MAX_WAIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.max_wait = max_wait
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._count = 0
        self.expired = 0  # holds released by the deadline, without metadata
        self.waited = 0  # holds opened
        self.overflowed = 0  # holds released early because too many events were held
        self._last_sweep = clock()

    def feed(self, events: list[Event]) -> list[Event]:
        """The events ready for the engine now: this batch's passers, then any holds that are done."""
        out: list[Event] = []
        svc = self.service
        for ev in events:
            cid = ev.container.id
            if cid == HOST_ID:
                out.append(ev)
                continue
            held = self._held.get(cid)
            if held is not None:
                held.events.append(ev)
                self._count += 1
                continue
            meta = svc.get(cid)
            ctype = ev.container.type if ev.container.type not in (None, HOST_ID) else None
            if meta is not None and not (svc.store.is_partial(cid) and svc.can_wait_for(cid, ctype)):
                attach(ev, meta)
                out.append(ev)
                continue
            if svc.can_wait_for(cid, ctype):
                svc.request(cid, ctype)
                self._held[cid] = _Held(self._clock() + self.max_wait, [ev])
                self._count += 1
                self.waited += 1
            else:
                svc.request(cid, ctype)  # for this container's later events
                out.append(ev)
        if self._count > HELD_MAX:
            self._release_oldest(out)
        if self._held:
            self._release(out)
        now = self._clock()
        if now - self._last_sweep >= 1.0:
            self._last_sweep = now
            # Exits count in the event stream's time: a lagging pipeline keeps an exited container's entry
            # until its own last events are through.
            svc.sweep(events[-1].ts / 1e9 if events else None)
        return out

    def poll_timeout_ms(self, default_ms: int) -> int:
        """How long the source may block: short while something is held, so a release is never late."""
        if not self._held:
            return default_ms
        return max(1, min(default_ms, 5))

    def flush(self) -> list[Event]:
        """Everything still held, as it is (the source ended or the daemon stops)."""
        out: list[Event] = []
        for cid in list(self._held):
            self._out(cid, out)
        return out

    @property
    def held(self) -> int:
        return self._count

    def _release(self, out: list[Event]) -> None:
        now = self._clock()
        svc = self.service
        for cid, held in list(self._held.items()):
            meta = svc.get(cid)
            if meta is not None and (not svc.store.is_partial(cid) or not svc.pending(cid)):
                # Arrived; or the lookup is over and what the runtime's event said is all there will be.
                self._out(cid, out)
            elif now >= held.deadline:
                self.expired += 1
                self._out(cid, out)

    def _release_oldest(self, out: list[Event]) -> None:
        while self._count > HELD_MAX and self._held:
            cid = min(self._held, key=lambda k: self._held[k].deadline)
            self.overflowed += 1
            self._out(cid, out)

    def _out(self, cid: str, out: list[Event]) -> None:
        held = self._held.pop(cid)
        self._count -= len(held.events)
        meta = self.service.get(cid)
        if meta is not None:
            for ev in held.events:
                attach(ev, meta)
        out.extend(held.events)


def attach(ev: Event, meta: Container) -> None:
    """The event's container becomes the cached one (shared, read-only): id, full id and type included."""
    ev.container = meta
