"""A real WebConsole over a real hub, served from a background thread's event loop, as the daemon serves it.

Tests publish from their own thread (as the engine thread does), read with real HTTP clients over real
sockets, and stop or restart the console's listener to cut every connection (`cut`), while the hub goes on.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from falconet.model.alert import Alert, Cursor, Priority
from falconet.server.console.app import WebConsole
from falconet.server.console.config import ConsoleConfig
from falconet.server.hub import Hub

T = TypeVar("T")


def make_alert(i: int, *, rule: str = "Test rule", priority: Priority = Priority.WARNING, host: str = "node-a",
               output: str | None = None, tags: tuple[str, ...] = ("test",), source: str = "syscall") -> Alert:
    return Alert(
        time_ns=time.time_ns(), rule=rule, priority=priority, source=source,
        output=output if output is not None else f"alert number {i}",
        output_fields={"proc.name": "cat", "n": i, "container.id": "host"}, tags=list(tags), hostname=host,
    )  # fmt: skip


@dataclass
class ConsoleHandle:
    console: WebConsole
    hub: Hub
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    token: str | None
    _stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return self.console.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(self, alert: Alert) -> Cursor:
        return self.hub.publish(alert)

    def cut(self) -> None:
        """A network cut: the listener closes with every open stream; nothing answers on the port."""
        self.run(self.console.stop(keep_feed=True))

    def restore(self) -> None:
        """The listener is back on the same port (pages reconnect on their own)."""
        self.run(self.console.start())

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.run(self.console.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


ConsoleFactory = Callable[..., "ConsoleHandle"]
"""The `console_factory` fixture (tests/console/conftest.py): starts consoles, all stopped after the test."""


def start_console(config: ConsoleConfig, hub: Hub | None = None) -> ConsoleHandle:
    hub = hub or Hub(10_000, hostname="node-a")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="console-loop", daemon=True)
    thread.start()

    async def make() -> WebConsole:
        console = WebConsole(config, hub)
        await console.start()
        return console

    console = asyncio.run_coroutine_threadsafe(make(), loop).result(30)
    token = config.token_file.read_text().strip() if config.token_file is not None else None
    return ConsoleHandle(console, hub, loop, thread, token)


def new_token(directory: Path) -> Path:
    path = directory / "console.token"
    path.write_text(secrets.token_hex(24) + "\n")
    return path


def client_ssl(certs: Path, name: str | None = "client") -> ssl.SSLContext:
    """A client context trusting the test CA, presenting NAME.crt/NAME.key (None: no certificate)."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if name is not None:
        ctx.load_cert_chain(str(certs / f"{name}.crt"), str(certs / f"{name}.key"))
    return ctx


@dataclass
class SseEvent:
    event: str
    data: Any
    id: str | None


def parse_events(text: str) -> list[SseEvent]:
    """Complete SSE events in `text` (comments skipped)."""
    out: list[SseEvent] = []
    for block in text.split("\n\n")[:-1]:
        event, data, ident = "message", "", None
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
            elif line.startswith("id: "):
                ident = line[4:]
        if data:
            out.append(SseEvent(event, json.loads(data), ident))
    return out


class EventReader:
    """Reads one SSE response, event by event, with a deadline on each wait (no sleeps)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.buffer = ""
        self.events: list[SseEvent] = []

    async def until(self, done: Any, timeout: float = 10.0) -> list[SseEvent]:
        """Reads until `done(events)` holds; TimeoutError with what arrived otherwise."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; events so far: {[(e.event, e.id) for e in self.events]}")
            try:
                chunk = await asyncio.wait_for(self.response.content.readany(), left)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError("the stream ended")
            self.buffer += chunk.decode()
            cut = self.buffer.rfind("\n\n")
            if cut >= 0:
                self.events.extend(parse_events(self.buffer[: cut + 2]))
                self.buffer = self.buffer[cut + 2 :]
        return self.events


def sequences(events: list[SseEvent]) -> list[int]:
    return [a["cursor"]["sequence"] for e in events if e.event == "alerts" for a in e.data["alerts"]]


def last_position(events: list[SseEvent]) -> str:
    positions: list[str] = [e.data["position"] for e in events if e.event in ("alerts", "hello")]
    return positions[-1]


class Pages:
    """An HTTP client session whose streams are all closed on exit (`async with Pages(handle) as pages`)."""

    def __init__(self, handle: ConsoleHandle, **session: Any) -> None:
        import aiohttp

        self.handle = handle
        self.session = aiohttp.ClientSession(**session)
        self.streams: list[EventReader] = []

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.handle.token}"} if self.handle.token else {}

    async def open(self, query: str = "", headers: dict[str, str] | None = None) -> EventReader:
        response = await self.session.get(f"{self.handle.url}api/stream?{query}", headers=headers or self.auth())
        if response.status != 200:
            text = await response.text()
            response.close()
            raise AssertionError(f"{response.status}: {text}")
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = EventReader(response)
        self.streams.append(stream)
        return stream

    async def __aenter__(self) -> Pages:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for stream in self.streams:
            stream.response.close()
        await self.session.close()


class SyncEvents:
    """A blocking SSE reader over http.client (TLS or not): its socket is closed when `close` returns, which
    aiohttp's client does not promise for TLS (it finishes the TLS shutdown on its loop later)."""

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(parts.hostname, parts.port, context=ssl_context, timeout=10)
            if parts.scheme == "https" else http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        )  # fmt: skip
        self.conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.buffer = ""
        self.events: list[SseEvent] = []

    def until(self, done: Any, timeout: float = 10.0) -> list[SseEvent]:
        """Reads until `done(events)` holds; TimeoutError, or ConnectionError when the stream ends first."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; events so far: {[(e.event, e.id) for e in self.events]}")
            assert self.conn.sock is not None
            self.conn.sock.settimeout(left)
            try:
                chunk = self.response.read1(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError("the stream ended")
            self.buffer += chunk.decode()
            cut = self.buffer.rfind("\n\n")
            if cut >= 0:
                self.events.extend(parse_events(self.buffer[: cut + 2]))
                self.buffer = self.buffer[cut + 2 :]
        return self.events

    def close(self) -> None:
        self.response.close()
        self.conn.close()
