"""What `Client` and `AsyncClient` share: one constructor (where to connect, checked at once), the timeout and
the reconnect policy. They differ only in how they do I/O."""

from __future__ import annotations

import os
import threading

from falconet.sdk._endpoint import Endpoint
from falconet.sdk._models import Backoff


class ClientBase:
    def __init__(
        self,
        *,
        unix_socket: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        ca: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._endpoint = Endpoint.resolve(
            unix_socket=unix_socket, host=host, port=port, ca=ca, cert=cert, key=key, server_name=server_name
        )
        self._timeout = timeout
        self._backoff = backoff or Backoff()
        self._closed = False
        # Set by close(): wakes a blocking subscription out of its back-off wait (the asyncio client is cancelled
        # through its task instead, and only reads `_closed`).
        self._closing = threading.Event()
        self._lock = threading.Lock()  # guards the blocking client's channel

    @property
    def target(self) -> str:
        """What this client dials, in words (used in error messages)."""
        return self._endpoint.description
