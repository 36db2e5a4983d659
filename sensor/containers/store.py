"""The bounded container metadata cache.

Keyed by Falco's 12-character container.id (what the sensor's process table carries). An entry goes when its
container exits, after EXIT_GRACE seconds: the events a container made just before it exited are still on
their way through the ring buffer and the hold, and they should carry its name too. Beyond `max_entries` the
least recently used entry goes (counted in `evicted`), so a host that churns through containers faster than
their exits are seen cannot grow the cache without bound.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from falconet.model.event import Container

MAX_ENTRIES = 4096
EXIT_GRACE = 5.0


class ContainerStore:
    """Thread-safe: runtime watcher threads write, the engine thread reads."""

    def __init__(self, max_entries: int = MAX_ENTRIES, exit_grace: float = EXIT_GRACE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.exit_grace = exit_grace
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Container] = OrderedDict()
        self._exited: dict[str, float] = {}  # id -> when the exit was seen
        self.evicted = 0
        self.expired = 0

    def get(self, container_id: str) -> Container | None:
        with self._lock:
            c = self._entries.get(container_id)
            if c is not None:
                self._entries.move_to_end(container_id)
            return c

    def put(self, container: Container) -> None:
        with self._lock:
            self._entries[container.id] = container
            self._entries.move_to_end(container.id)
            self._exited.pop(container.id, None)
            while len(self._entries) > self.max_entries:
                old, _ = self._entries.popitem(last=False)
                self._exited.pop(old, None)
                self.evicted += 1

    def mark_exited(self, container_id: str) -> None:
        with self._lock:
            if container_id in self._entries:
                self._exited.setdefault(container_id, self._clock())

    def sweep(self) -> int:
        """Drops the entries whose container exited more than exit_grace ago; returns how many went."""
        now = self._clock()
        with self._lock:
            gone = [cid for cid, t in self._exited.items() if now - t >= self.exit_grace]
            for cid in gone:
                del self._exited[cid]
                self._entries.pop(cid, None)
            self.expired += len(gone)
            return len(gone)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
