"""MetadataService: the runtime clients, their events streams and lookups, on threads of their own.

Nothing here ever blocks the caller: the engine thread only reads the store (`get`) and queues lookups
(`request`). Each enabled runtime has a watcher thread that follows its events stream and reconnects with
backoff; two lookup workers answer `request`s. A runtime that is missing, refuses, hangs (every request has
the client's timeout) or restarts is logged once when it goes down and once when it is back, and counted
(`runtime_errors`); meanwhile its containers read as Falco reads unknown containers (container.id from the
cgroup, the other fields unknown), and everything recovers when the watcher reconnects.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from falconet.model.event import Container
from falconet.sensor.containers import load_runtimes, registered
from falconet.sensor.containers.registry import (
    DEFAULT_TIMEOUT,
    EngineSettings,
    RuntimeClient,
    RuntimeEvent,
    RuntimeUnavailable,
)
from falconet.sensor.containers.store import ContainerStore

UNKNOWN_RETRY = 2.0
"""Seconds before an id no runtime knew is asked about again (a container the runtime had not yet written)."""
BACKOFF_MAX = 10.0
LOOKUP_WORKERS = 2
SWEEP_SECONDS = 1.0
FIRST_CONTACT_TIMEOUTS = 2
"""`wait_first_contact`'s default bound, in the slowest enabled engine's request timeouts: a runtime that
hangs fails its first request within one, and one that answers gets a second for its events stream."""


@dataclass
class RuntimeState:
    """How one runtime is doing, for logs and metrics."""

    name: str
    up: bool | None = None  # None: not reached yet
    errors: int = 0  # times it went from up (or never reached) to unavailable
    last_error: str = ""
    lookups: int = 0
    lookup_failures: int = 0


@dataclass
class ServiceStats:
    lookups: int = 0
    found: int = 0
    unknown: int = 0
    runtimes: dict[str, RuntimeState] = field(default_factory=dict)


class MetadataService:
    """Owns the runtime clients; `start()` builds them from the registry for each enabled engine."""

    def __init__(
        self,
        engines: Mapping[str, EngineSettings],
        log: Callable[[str], None],
        *,
        store: ContainerStore | None = None,
        clients: list[RuntimeClient] | None = None,
    ) -> None:
        self.engines = dict(engines)
        self.log = log
        self.store = store or ContainerStore()
        self.clients: list[RuntimeClient] = list(clients or [])
        self.stats = ServiceStats()
        self._stop = threading.Event()
        self._queue: queue.SimpleQueue[tuple[str, str | None] | None] = queue.SimpleQueue()
        self._pending: set[str] = set()
        self._unknown: dict[str, float] = {}  # id -> when it may be asked again
        self._lock = threading.Lock()
        self._contact = threading.Condition()  # notified whenever a runtime's up/down state is set
        self._threads: list[threading.Thread] = []
        self.arrived = threading.Event()
        """Set whenever a lookup finishes (found or not), so a hold can re-check without polling blindly."""

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.clients:
            load_runtimes()
            for name, (factory, defaults) in registered().items():
                settings = self.engines.get(name, defaults)
                if not settings.enabled:
                    continue
                try:
                    self.clients.append(factory(settings))
                except Exception as exc:  # a client that cannot even be built is one runtime lost, not the daemon
                    self.log(f"container engine {name} disabled: {exc}")
        for c in self.clients:
            self.stats.runtimes[c.name] = RuntimeState(c.name)
            t = threading.Thread(target=self._watch, args=(c,), name=f"containers-{c.name}", daemon=True)
            t.start()
            self._threads.append(t)
        for i in range(LOOKUP_WORKERS if self.clients else 0):
            t = threading.Thread(target=self._worker, name=f"containers-lookup-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wait_first_contact(self, timeout: float | None = None) -> list[str]:
        """Waits (at most `timeout` seconds; by default FIRST_CONTACT_TIMEOUTS request timeouts) until every
        runtime was reached or found unavailable once; returns the names of those still being tried.

        Until a runtime's first answer the hold cannot tell whether waiting for its containers pays off, so
        their events pass unnamed: a daemon that said "ready" before its runtimes did would give a container
        started right then an alert without its name (the race behind test_first_alert...[docker])."""
        if timeout is None:
            timeouts = [s.timeout for s in self.engines.values() if s.enabled] or [DEFAULT_TIMEOUT]
            timeout = FIRST_CONTACT_TIMEOUTS * max(timeouts)
        deadline = time.monotonic() + timeout
        with self._contact:
            while True:
                pending = [c.name for c in self.clients if self.stats.runtimes[c.name].up is None]
                left = deadline - time.monotonic()
                if not pending or left <= 0:
                    return pending
                self._contact.wait(left)

    def close(self) -> None:
        self._stop.set()
        for _ in range(LOOKUP_WORKERS):
            self._queue.put(None)
        for c in self.clients:
            try:
                c.close()
            except Exception:  # closing a broken client must not stop the daemon's shutdown
                pass

    # --- the engine thread's side ------------------------------------------------------------------------

    def get(self, container_id: str) -> Container | None:
        return self.store.get(container_id)

    def can_wait_for(self, container_id: str, container_type: str | None) -> bool:
        """Whether waiting for this container's metadata may pay off: some runtime is up (one claiming its
        type, or any when the type is unknown) and no runtime said recently that it does not know the id."""
        with self._lock:
            if self._unknown.get(container_id, 0.0) > time.monotonic():
                return False
        for c in self.clients:
            state = self.stats.runtimes.get(c.name)
            if state is not None and state.up and (container_type is None or container_type in c.types):
                return True
        return False

    def request(self, container_id: str, container_type: str | None = None) -> bool:
        """Queues a lookup unless one is under way or the id was unknown moments ago; True when queued."""
        with self._lock:
            if container_id in self._pending or self._unknown.get(container_id, 0.0) > time.monotonic():
                return False
            self._pending.add(container_id)
        self._queue.put((container_id, container_type))
        return True

    def pending(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._pending

    def sweep(self, upto: float | None = None) -> None:
        """Forgets exited containers whose grace ended before `upto` (the newest event's time, seconds since
        the epoch) and stale 'unknown' marks (called once a second)."""
        self.store.sweep(upto)
        now = time.monotonic()
        with self._lock:
            for cid in [k for k, t in self._unknown.items() if t <= now]:
                del self._unknown[cid]

    # --- lookups ----------------------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            cid, ctype = item
            found = self.lookup(cid, ctype)
            with self._lock:
                self._pending.discard(cid)
                if found is None:
                    self._unknown[cid] = time.monotonic() + UNKNOWN_RETRY
            self.arrived.set()

    def lookup(self, container_id: str, container_type: str | None = None) -> Container | None:
        """Asks the runtimes (those claiming the type first) and caches the answer; None when none knows it."""
        self.stats.lookups += 1
        order = sorted(self.clients, key=lambda c: 0 if container_type in c.types else 1)
        for c in order:
            state = self.stats.runtimes[c.name]
            if state.up is False:
                continue  # down: its watcher says when it is back
            state.lookups += 1
            try:
                found = c.lookup(container_id)
            except RuntimeUnavailable as exc:
                state.lookup_failures += 1
                self._down(c, str(exc))
                continue
            except Exception as exc:  # a client bug costs this lookup, never the thread
                state.lookup_failures += 1
                self._down(c, f"{type(exc).__name__}: {exc}")
                continue
            if found is not None:
                self.stats.found += 1
                self.store.put(found, replace=False)
                return found
        self.stats.unknown += 1
        return None

    # --- events streams -------------------------------------------------------------------------------------

    def _watch(self, client: RuntimeClient) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            try:
                for ev in client.events(self._stop):
                    if self._stop.is_set():
                        return
                    self._on_event(client, ev)
                    backoff = 0.25
            except RuntimeUnavailable as exc:
                self._down(client, str(exc))
            except Exception as exc:  # a client bug: logged, counted, retried like an outage
                self._down(client, f"{type(exc).__name__}: {exc}")
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _on_event(self, client: RuntimeClient, ev: RuntimeEvent) -> None:
        # Any event means the runtime answers: a lookup that failed meanwhile (marking it down) must not leave
        # it down while its stream flows, or its containers would go unnamed until the stream reconnects.
        self._up(client)
        if ev.kind == "ready":
            return
        cid = ev.full_id[:12]
        if ev.kind == "exit":
            self.store.mark_exited(cid)
            return
        if ev.container is not None and not ev.partial:
            self.store.put(ev.container)
        else:  # (again on start: the address and start time are only known then)
            try:
                found = client.lookup(ev.full_id)
            except RuntimeUnavailable as exc:
                self._down(client, str(exc))
                return
            if found is not None:
                self.store.put(found)  # later in the container's life than any lookup before it
            elif ev.container is not None:
                self.store.put(ev.container, partial=True)  # gone already: what the event said is all there is
        with self._lock:
            self._unknown.pop(cid, None)
        self.arrived.set()

    def _up(self, client: RuntimeClient) -> None:
        state = self.stats.runtimes[client.name]
        if state.up is not True:
            was = state.up
            state.up = True
            self.log(f"container engine {client.name}: connected" + (" again" if was is False else ""))
            with self._contact:
                self._contact.notify_all()

    def _down(self, client: RuntimeClient, reason: str) -> None:
        state = self.stats.runtimes[client.name]
        state.last_error = reason
        if state.up is not False:
            state.up = False
            state.errors += 1
            self.log(f"container engine {client.name} unavailable: {reason}; its containers' metadata is "
                     "unknown until it is back")
            with self._contact:
                self._contact.notify_all()
