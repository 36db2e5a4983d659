"""The real AlertServer behind the shared fixtures, in a module of its own so that tests can import it.

Tests that stop a server and serve the same hub again import `start_server` from here: `from conftest import`
is ambiguous once several test folders have a conftest.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from falconet.model.alert import Alert, Cursor
from falconet.server.app import AlertServer
from falconet.server.config import ServerConfig
from falconet.server.hub import Hub

T = TypeVar("T")


@dataclass
class ServerHandle:
    """A running AlertServer: where it listens, its hub, and a thread-safe `publish`."""

    server: AlertServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    unix_path: Path
    tcp_host: str
    tcp_port: int
    certs: Path
    _stopped: bool = field(default=False)

    @property
    def unix_target(self) -> str:
        return f"unix://{self.unix_path}"

    @property
    def tcp_target(self) -> str:
        return f"{self.tcp_host}:{self.tcp_port}"

    @property
    def hub(self) -> Hub:
        return self.server.hub

    def publish(self, alert: Alert) -> Cursor:
        return self.server.hub.publish(alert)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 30) -> T:
        """Runs a plain function on the server's loop thread."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed back to the caller
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def stop(self, grace: float = 0.5) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.run(self.server.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            shutil.rmtree(self.unix_path.parent, ignore_errors=True)


ServerFactory = Callable[..., ServerHandle]
"""The `alert_server_factory` fixture: `start_server` with custom settings, every server stopped after."""


def start_server(
    certs: Path, *, hub: Hub | None = None, workdir: Path | None = None, **config: Any
) -> ServerHandle:
    """Starts an AlertServer on a UNIX socket in a fresh tmp dir and on 127.0.0.1:0 with mTLS from `certs`."""
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer, so use a short directory.
    sock_dir = Path(tempfile.mkdtemp(prefix="fn-", dir=workdir or "/tmp"))
    unix_path = sock_dir / "falconet.sock"
    cfg = ServerConfig.with_certs_dir(certs, listen=(f"unix://{unix_path}", "127.0.0.1:0"), **config)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[tuple[AlertServer, list[str]]] = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                server = AlertServer(cfg, hub)
                bound = await server.start()
                started.set_result((server, bound))
            except BaseException as exc:
                started.set_exception(exc)

        loop.create_task(boot())
        loop.run_forever()
        # Cancel whatever the server left (stopped streams) and close the loop cleanly.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name="alert-server", daemon=True)
    thread.start()
    server, bound = started.result(30)
    host, _, port = bound[1].rpartition(":")
    return ServerHandle(server, loop, thread, unix_path, host, int(port), certs)
