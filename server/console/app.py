"""`WebConsole`: the console's HTTP listener over one hub, on the caller's asyncio loop (see the package doc).

Routes (every one GET; anything else is 405, the console never changes anything):

    /                 the page (static/index.html)          public: package files, no alert in them
    /static/NAME      its scripts, styles, the vendored charting library
    /api/info         the hub's epoch, host name and positions    these three need a credential
    /api/stream       the alerts, as server-sent events (server/console/push.py)
    /api/stats?window=hour|day   the charts' counts (server/console/stats.py)

The page and its files carry a Content-Security-Policy that allows only this origin's scripts and no inline
script, so even a rendering mistake could not run text from an alert. Daemons mount it with `start`/`stop`
and call `reload` on SIGHUP; the aggregator does the same over its FleetHub (`mount_console`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from falconet.server.console.access import Access, Denied, Reader
from falconet.server.console.config import ConsoleConfig
from falconet.server.console.push import (
    ConsoleFilter,
    FilterError,
    JsonCache,
    PushStream,
    parse_after,
    resume_start,
)
from falconet.server.console.stats import WINDOWS, CountsFeed
from falconet.server.hub import Hub

log = logging.getLogger("falconet.console")

MAX_STREAMS_PER_IDENTITY = 16
"""Open streams one credential may hold (a page holds one; gRPC caps subscriptions per identity the same way)."""
MAX_STREAMS = 256
"""Open streams in all: each holds a hub reader and a socket."""
STATIC_DIR = Path(str(resources.files("falconet.server.console") / "static"))
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".md": "text/plain"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class WebConsole:
    """The console of one hub. `start()` returns its URL (with the real port when configured as 0)."""

    def __init__(self, config: ConsoleConfig, hub: Hub, *, kind: str = "node", log_to: Callable[[str], None] | None = None) -> None:
        """Raises ConsoleConfigError (or CertError for certificate files) before anything binds."""
        config.check()
        self.config = config
        self.hub = hub
        self.kind = kind
        self.access = Access(config)
        self._ssl = self.access.ssl_context()
        self._log = log_to or log.info
        self.cache = JsonCache(max(hub.retention, 1024))
        self.feed = CountsFeed(hub)
        self._feed_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._streams: dict[asyncio.Task[object], Reader] = {}
        self.port = config.listen_port
        self.refused = 0
        self.pushed_alerts = 0
        self._stats_cache: dict[str, tuple[float, bytes]] = {}
        self._files = static_files()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        host = self.config.listen_address
        host = host if ":" not in host else f"[{host}]"
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}/"

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=4096, middlewares=[self._headers])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name:.+}", self._static)
        app.router.add_get("/api/info", self._info)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    async def start(self) -> str:
        self._loop = asyncio.get_running_loop()
        if self._feed_task is None:
            self._feed_task = asyncio.create_task(self.feed.run(), name="web-console-charts")
        # handler_cancellation: a page that goes away ends its stream at once (not at the next write).
        self._runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen_address, self.port, ssl_context=self._ssl)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])  # a restart binds the same port (a page resumes there)
        return self.url

    async def stop(self, *, keep_feed: bool = False) -> None:
        """Ends every open stream and closes the listener (with `keep_feed`, the charts' counts go on)."""
        for task in list(self._streams):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if not keep_feed and self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
            self._feed_task = None

    def reload(self) -> int:
        """SIGHUP: re-reads the CRL and ends the open streams of certificates it revokes; returns how many.
        Raises CertError when the new CRL cannot be trusted (the old one stays). Call on the console's loop."""
        revoked = self.access.reload_crl()
        cut = 0
        for task, reader in list(self._streams.items()):
            if reader.serial is not None and reader.serial in revoked:
                task.cancel()
                cut += 1
        if cut:
            self._log(f"web console: ended {cut} streams of revoked certificates")
        return cut

    def reload_soon(self) -> None:
        """`reload` from any thread (the daemon reloads in a worker); a CRL that cannot be trusted is logged."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def run() -> None:
            try:
                self.reload()
            except Exception as exc:  # noqa: BLE001 - CertError and I/O: the previous CRL stays in force
                self._log(f"web console: the CRL was not reloaded, the previous one stays in force: {exc}")

        loop.call_soon_threadsafe(run)

    # -- requests ------------------------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Callable[[web.Request], object]) -> web.StreamResponse:
        response = await handler(request)  # type: ignore[misc]
        assert isinstance(response, web.StreamResponse)
        if not response.prepared:
            response.headers.update(_COMMON_HEADERS)
        return response

    def _admit(self, request: web.Request) -> Reader:
        der = None
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
        try:
            return self.access.admit(der, request.headers.get("Authorization", ""))
        except Denied as exc:
            self.refused += 1
            headers = {"WWW-Authenticate": 'Bearer realm="falconet-console"'} if exc.status == 401 else {}
            raise _error(exc.status, str(exc), headers) from None

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.StreamResponse:
        found = self._files.get(name)
        if found is None:
            raise _error(404, "no such file")
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def _other(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            raise _error(405, "the console is read-only: only GET", {"Allow": "GET"})
        raise _error(404, "no such page")

    async def _info(self, request: web.Request) -> web.StreamResponse:
        reader = self._admit(request)
        hub = self.hub
        return _json({
            "kind": self.kind, "epoch": hub.epoch, "hostname": hub.hostname, "oldest": hub.oldest,
            "newest": hub.newest, "retention": hub.retention, "identity": reader.identity,
        })  # fmt: skip

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        self._admit(request)
        name = request.query.get("window", "hour")
        if name not in WINDOWS:
            raise _error(400, f"window must be one of {', '.join(WINDOWS)}")
        now = time.monotonic()
        cached = self._stats_cache.get(name)
        if cached is None or now - cached[0] > 0.5:  # many pages polling share one computation
            body = json.dumps(self.feed.counts.window(name, time.time_ns()), ensure_ascii=True).encode()
            cached = self._stats_cache[name] = (now, body)
        return web.Response(body=cached[1], content_type="application/json", headers={"Cache-Control": "no-store"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        reader = self._admit(request)
        try:
            flt = ConsoleFilter.from_query(request.query, lambda key: request.query.getall(key, []))
            after_text = request.query.get("after") or request.headers.get("Last-Event-ID")
            resume = resume_start(self.hub, parse_after(after_text)) if after_text else None
            count = int(request.query.get("backlog", self.config.backlog))
        except (FilterError, ValueError) as exc:
            raise _error(400, str(exc)) from None
        count = max(0, min(count, self.config.backlog))
        held = sum(1 for r in self._streams.values() if r.identity == reader.identity)
        if held >= MAX_STREAMS_PER_IDENTITY or len(self._streams) >= MAX_STREAMS:
            limit = f"{MAX_STREAMS_PER_IDENTITY} per credential" if held >= MAX_STREAMS_PER_IDENTITY else \
                f"{MAX_STREAMS} in all"  # fmt: skip
            raise _error(429, f"too many open streams ({limit}); close a page first", {"Retry-After": "5"})
        response = web.StreamResponse(headers={
            **_COMMON_HEADERS, "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        })  # fmt: skip
        stream = PushStream(self.hub, self.cache, flt, response.write, reader.identity)
        task = asyncio.current_task()
        assert task is not None
        self._streams[task] = reader  # counted from here, so concurrent requests cannot pass the limits
        try:
            stream.begin(resume, count)
            await response.prepare(request)
            await stream.run()
        except ConnectionError:
            pass  # the page went away
        except asyncio.CancelledError:
            pass  # the console stops, or the certificate was revoked: the stream ends, the page reconnects
        finally:
            stream.close()
            self._streams.pop(task, None)
            self.pushed_alerts += stream.counters.alerts
        return response


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every file the page may load, by its path under static/: only these are served (no path is joined
    from a request, so nothing outside the folder can be named)."""
    out: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        kind = _TYPES.get(path.suffix)
        if kind is not None and path.is_file():
            out[path.relative_to(STATIC_DIR).as_posix()] = (path.read_bytes(), kind)
    return out


def _json(data: dict[str, object]) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=True), content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    classes: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
        405: web.HTTPMethodNotAllowed, 429: web.HTTPTooManyRequests,
    }  # fmt: skip
    cls = classes[status]
    body = json.dumps({"status": status, "message": message})
    if cls is web.HTTPMethodNotAllowed:
        return web.HTTPMethodNotAllowed("*", ["GET"], text=body, content_type="application/json")
    return cls(text=body, content_type="application/json", headers={**_COMMON_HEADERS, **(headers or {})})


async def mount_console(config: ConsoleConfig, hub: Hub, *, kind: str, log_to: Callable[[str], None]) -> WebConsole | None:
    """The one call a server makes: starts the console when the config enables it, logs its URL, returns it
    (None when disabled). Raises ConsoleConfigError/CertError/OSError when it cannot serve."""
    if not config.enabled:
        return None
    console = WebConsole(config, hub, kind=kind, log_to=log_to)
    url = await console.start()
    log_to(f"web console on {url}")
    return console
