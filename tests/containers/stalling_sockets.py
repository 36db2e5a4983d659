"""Real UNIX sockets that behave like a runtime API under trouble: one that accepts and never answers, and a
proxy in front of a real runtime whose requests can be held back (a runtime too busy to answer) while what it
already sends (an events stream) keeps flowing.

Both run an accept loop on a thread of their own (`Listener`) and are used as context managers.
"""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

POLL = 0.1
"""Seconds each helper thread waits on its socket before checking whether it should stop."""


class Listener:
    """A UNIX listener at `path` handing each accepted connection to `handle` (on the accept thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stopping = threading.Event()
        self.held: list[socket.socket] = []
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._threads: list[threading.Thread] = []

    def handle(self, conn: socket.socket) -> None:
        """Keeps the connection open and says nothing (a runtime that accepts and never answers)."""
        self.held.append(conn)

    def spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        self._srv.settimeout(POLL)
        while not self.stopping.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.handle(conn)

    def __enter__(self) -> Self:
        self._srv.bind(str(self.path))
        self._srv.listen(16)
        self.spawn(self._accept)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stopping.set()
        for t in self._threads:
            t.join(5)
        for c in self.held:
            c.close()
        self._srv.close()


class StallingProxy(Listener):
    """Forwards every connection to the UNIX socket `upstream`. While `stalled`, no byte a client sends reaches
    the runtime (a request then waits as on a runtime too busy to answer; a client that gives up closes its
    connection); the runtime's bytes to clients always flow, so a stream opened before the stall keeps
    delivering. `resume()` forwards whatever was held back."""

    def __init__(self, path: Path, upstream: Path) -> None:
        super().__init__(path)
        self.upstream = upstream
        self._open = threading.Event()
        self._open.set()
        self.held_requests = 0
        """Client sends that arrived while stalled (proof that the stall was met)."""

    def stall(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def handle(self, conn: socket.socket) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(str(self.upstream))
        self.held += [conn, up]
        self.spawn(self._pump, conn, up, True)
        self.spawn(self._pump, up, conn, False)

    def _pump(self, src: socket.socket, dst: socket.socket, to_runtime: bool) -> None:
        try:
            while not self.stopping.is_set():
                if not select.select([src], [], [], POLL)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if to_runtime and not self._open.is_set():
                    self.held_requests += 1
                    while not self._open.wait(POLL):
                        if self.stopping.is_set():
                            return
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):  # one side ended: so does the other (as a runtime's connection would)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
