"""The web console's push channel against the batched gRPC stream, and a page's memory after 100,000 alerts.

1. Delivery: 10 simulated pages (aiohttp clients on one event loop thread, reading the server-sent-events
   stream and parsing each batch's JSON, as the page does) against 10 batched gRPC subscribers
   (`falconet.v1.AlertService/Subscribe` over the UNIX socket, grpc's blocking API, a thread each, each message
   parsed), same hub, same process, same pre-built alerts, in the same run; alerts/s is N alerts x 10 clients /
   seconds from the first publish until every client has all N. Both servers run on one event loop thread.
2. A page at 1,000 alerts/s for 10 s (headless Chromium): how long after the last publish it holds them all,
   and the longest gap between two animation frames (a page that freezes shows here).
3. Memory: Debian's headless Chromium opens the page (token form, live stream), 100,000 alerts are published
   in steps; after each step, once the page holds them, garbage is collected (CDP HeapProfiler.collectGarbage)
   and performance.memory.usedJSHeapSize read. The page keeps at most 50,000 alerts, so the heap must level off.

Run: python -m bench.web_console [--alerts N] [--skip-browser]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from falconet.model.alert import Alert, Priority
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc
from falconet.server.app import AlertServer
from falconet.server.config import ServerConfig
from falconet.server.console.app import WebConsole
from falconet.server.console.config import ConsoleConfig
from falconet.server.hub import Hub

CLIENTS = 10


def make_alert(i: int) -> Alert:
    return Alert(
        time_ns=time.time_ns(), rule=f"Rule {i % 20}", priority=Priority(i % 8), source="syscall",
        output=f"File below /etc opened for writing (user=root command=touch /etc/x{i} file=/etc/x{i})",
        output_fields={"proc.name": "touch", "fd.name": f"/etc/x{i}", "user.name": "root", "container.id": "host"},
        tags=["filesystem", "mitre_persistence"], hostname=f"node-{i % 5}",
    )  # fmt: skip


class Servers:
    """The gRPC server (UNIX socket) and the console (loopback HTTP, token) over one hub, on one loop thread."""

    def __init__(self, directory: Path, retention: int) -> None:
        self.hub = Hub(retention, hostname="bench")
        self.socket = directory / "bench.sock"
        token = directory / "token"
        self.token = secrets.token_hex(24)
        token.write_text(self.token)
        self.server = AlertServer(ServerConfig(listen=(f"unix://{self.socket}",)), self.hub)
        self.console = WebConsole(ConsoleConfig(enabled=True, listen_port=0, token_file=token, backlog=0), self.hub)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.server.start())
        self.run(self.console.start())
        self.url = self.console.url

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.run(self.console.stop())
        self.run(self.server.stop(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def sse_client(url: str, token: str, n: int, ready: asyncio.Event, parse: bool = True) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}api/stream?backlog=0", headers={"Authorization": f"Bearer {token}"}) as r:
            got, buffer = 0, b""
            async for chunk in r.content.iter_any():
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if block.startswith(b"id: ") and b"event: hello" in block:
                        ready.set()
                    elif b"event: alerts" in block:
                        data = block[block.index(b"data: ") + 6 :]
                        # Parsed as the page parses it, or only counted (the server's side alone).
                        got += len(json.loads(data)["alerts"]) if parse else data.count(b'"cursor":{')
                if got >= n:
                    return


def grpc_client(socket: Path, n: int, ready: threading.Event) -> None:
    """One batched subscriber on grpc's blocking API in its own thread (grpc.aio serves on the servers' loop;
    a second aio loop in one process is not supported by grpc)."""
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stub = alerts_pb2_grpc.AlertServiceStub(channel)
        call = stub.Subscribe(alerts_pb2.SubscribeRequest())
        call.initial_metadata()
        ready.set()
        got = 0
        for message in call:
            got += len(message.alerts)
            if got >= n:
                call.cancel()
                return


def deliver(servers: Servers, kind: str, n: int) -> float:
    """Alerts/s delivered to CLIENTS clients of `kind` (total deliveries / seconds)."""
    alerts = [make_alert(i) for i in range(n)]
    if kind == "grpc":
        readies = [threading.Event() for _ in range(CLIENTS)]
        threads = [threading.Thread(target=grpc_client, args=(servers.socket, n, e)) for e in readies]
        for t in threads:
            t.start()
        for e in readies:
            e.wait(60)
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            servers.hub.publish_many(alerts[i : i + 1000])
        for t in threads:
            t.join(600)
        return n * CLIENTS / (time.perf_counter() - t0)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    done: list[float] = []

    async def main() -> None:
        events = [asyncio.Event() for _ in range(CLIENTS)]
        parse = kind == "sse"
        tasks = [asyncio.create_task(sse_client(servers.url, servers.token, n, e, parse)) for e in events]
        await asyncio.gather(*(e.wait() for e in events))
        started.set()
        await asyncio.gather(*tasks)
        done.append(time.perf_counter())

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()))
    thread.start()
    started.wait(60)
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        servers.hub.publish_many(alerts[i : i + 1000])
    thread.join(600)
    loop.close()
    return n * CLIENTS / (done[0] - t0)


def open_page(servers: Servers) -> Any:
    """Headless Chromium on the console's page, past its token form, with a live stream."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-precise-memory-info",
                "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.get(str(servers.url))
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "token-form").is_displayed())
    driver.find_element(By.ID, "token-input").send_keys(servers.token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "status").text == "live")
    return driver


def page_at_rate(per_second: int, seconds: float) -> tuple[int, float, int, float]:
    """A page under `per_second` alerts/s for `seconds`: (alerts published, seconds from the last publish until
    the page held them all, animation frames drawn meanwhile, the longest gap between two frames in ms)."""
    from selenium.webdriver.support.ui import WebDriverWait

    directory = Path(tempfile.mkdtemp(prefix="falconet-bench-console-"))
    servers = Servers(directory, retention=per_second * int(seconds + 5))
    driver = open_page(servers)
    try:
        driver.execute_script("const s = window.falconetConsole.state; s.maxFrameGapMs = 0; s.frames = 0;")
        per_slice = per_second // 20
        n = 0
        start = time.monotonic()
        for k in range(int(seconds * 20)):
            servers.hub.publish_many([make_alert(n + i) for i in range(per_slice)])
            n += per_slice
            time.sleep(max(0.0, start + (k + 1) / 20 - time.monotonic()))  # the publishing rate
        last = time.monotonic()
        WebDriverWait(driver, 120, poll_frequency=0.01).until(
            lambda d: d.execute_script("return window.falconetConsole.state.received") >= n
        )
        lag = time.monotonic() - last
        frames, gap = driver.execute_script(
            "const s = window.falconetConsole.state; return [s.frames, s.maxFrameGapMs]"
        )
        return n, lag, int(frames), float(gap)
    finally:
        driver.quit()
        servers.stop()
        shutil.rmtree(directory, ignore_errors=True)


def page_memory(total: int, step: int) -> list[tuple[int, int, int]]:
    """(alerts published, alerts the page holds, JS heap bytes after GC) after each step."""
    from selenium.webdriver.support.ui import WebDriverWait

    directory = Path(tempfile.mkdtemp(prefix="falconet-bench-console-"))
    servers = Servers(directory, retention=step * 2)
    driver = open_page(servers)
    out: list[tuple[int, int, int]] = []
    try:

        def measure(published: int) -> None:
            WebDriverWait(driver, 120, poll_frequency=0.1).until(
                lambda d: d.execute_script("return window.falconetConsole.state.received") >= published
            )
            driver.execute_cdp_cmd("HeapProfiler.enable", {})
            driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
            heap = driver.execute_script("return performance.memory.usedJSHeapSize")
            held = driver.execute_script("return window.falconetConsole.state.alerts.length")
            out.append((published, int(held), int(heap)))

        measure(0)
        published = 0
        while published < total:
            batch = [make_alert(published + i) for i in range(step)]
            for i in range(0, step, 1000):
                servers.hub.publish_many(batch[i : i + 1000])
            published += step
            measure(published)
    finally:
        driver.quit()
        servers.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts per delivery run (default 20000)")
    parser.add_argument("--rounds", type=int, default=2, help="delivery runs of each kind, alternated")
    parser.add_argument("--skip-browser", action="store_true", help="no page-memory measurement")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="falconet-bench-console-"))
    servers = Servers(directory, retention=args.alerts * 2)
    try:
        print(f"delivery to {CLIENTS} clients, {args.alerts} alerts each (alerts/s = deliveries/s)")
        for r in range(args.rounds):
            grpc_rate = deliver(servers, "grpc", args.alerts)
            sse_rate = deliver(servers, "sse", args.alerts)
            counted = deliver(servers, "sse-counted", args.alerts)
            print(f"  round {r + 1}: batched gRPC (UNIX) {grpc_rate:,.0f}/s  web console SSE, JSON parsed "
                  f"{sse_rate:,.0f}/s (ratio {sse_rate / grpc_rate:.2f}), alerts only counted {counted:,.0f}/s "
                  f"(ratio {counted / grpc_rate:.2f})")  # fmt: skip
    finally:
        servers.stop()
        shutil.rmtree(directory, ignore_errors=True)
    if not args.skip_browser and shutil.which("chromium") and shutil.which("chromedriver"):
        n, lag, frames, gap = page_at_rate(1000, 10.0)
        print(f"page at 1,000 alerts/s for 10 s: {n} alerts, all held {lag * 1000:.0f} ms after the last publish, "
              f"{frames} frames drawn, longest frame gap {gap:.0f} ms")
        print("page memory (headless Chromium, after GC)")
        for published, held, heap in page_memory(100_000, 10_000):
            print(f"  {published:>7,} alerts published: page holds {held:>6,}, JS heap {heap / 1e6:6.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
