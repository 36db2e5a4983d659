"""A subscription started at "now" that loses the server before its first alert resumes where it started (the
server's `falconet-position` header), so alerts published while it was disconnected still arrive.

The server is really stopped and another one started on the same socket path (through a symlink the test
swaps), either serving the same hub (a lost connection; the position may be `EPOCH:0`) or a fresh hub (a
restart: another epoch, which the server reports with a loss alert before the new run's alerts). The alerts
are published before the new server is up, so they can only arrive by resuming from the recorded position.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sdk_support import Collector, make_alert, wait_until, without_cursor

from falconet.model.alert import Alert, Cursor
from falconet.sdk import AsyncClient, Backoff, Client
from falconet.sdk._query import Query
from falconet.sdk._resume import Resume, parse_position, position_of
from falconet.server.hub import LOSS_RULE, Hub

FAST = Backoff(initial=0.02, maximum=0.2)


@dataclass
class Switch:
    """A socket path (a symlink) whose server the test can replace, like a daemon restarting in place."""

    first: Any
    certs: Path
    link: Path
    servers: list[Any] = field(default_factory=list)

    def subscribed(self, hub: Hub) -> None:
        # The server creates a stream's reader right after sending its headers: once it exists, the position is
        # on its way to the client, ahead of anything that ends the stream.
        wait_until(lambda: len(hub.stats().readers) == 1, what="the subscription to reach the server")

    def restart(self, *, same_hub: bool, publish: list[Alert]) -> Hub:
        """Stops the server, publishes `publish` while none is up, then serves them from a new server."""
        from shared_server import start_server  # the shared fixture's own starter, to serve a hub again

        self.first.stop()
        hub = self.first.hub if same_hub else Hub()
        for alert in publish:
            hub.publish(alert)
        second = start_server(self.certs, hub=hub)
        self.servers.append(second)
        tmp = self.link.parent / "new"
        os.symlink(second.unix_path, tmp)
        os.replace(tmp, self.link)
        return hub


@pytest.fixture
def switch(alert_server: Any, certs_dir: Path) -> Iterator[Switch]:
    link_dir = Path(tempfile.mkdtemp(prefix="fn-pos-"))
    link = link_dir / "falconet.sock"
    os.symlink(alert_server.unix_path, link)
    sw = Switch(alert_server, certs_dir, link)
    try:
        yield sw
    finally:
        for s in sw.servers:
            s.stop()
        shutil.rmtree(link_dir, ignore_errors=True)


def _expect(got: list[Alert], sent: list[Alert], old: Hub, hub: Hub, *, same_hub: bool, before: int) -> None:
    if not same_hub:
        gap, got = got[0], got[1:]
        assert gap.rule == LOSS_RULE and gap.source == "internal"
        assert f"cursor {old.epoch}:{before} is from another run" in gap.output  # resumed from the position
    assert [without_cursor(a) for a in got] == [without_cursor(a) for a in sent]
    first = before + 1 if same_hub else 1
    assert [a.cursor for a in got] == [Cursor(hub.epoch, s) for s in range(first, first + len(sent))]


@pytest.mark.parametrize("batched", [False, True], ids=["sub", "batched"])
@pytest.mark.parametrize(
    ("same_hub", "before"), [(True, 0), (True, 2), (False, 2)], ids=["lost-empty", "lost", "restart"]
)
def test_cut_before_the_first_alert_resumes_where_it_started(
    switch: Switch, caplog: pytest.LogCaptureFixture, batched: bool, same_hub: bool, before: int
) -> None:
    hub = switch.first.hub
    for i in range(before):
        hub.publish(make_alert(100 + i))  # before the subscription: not for it
    sent = [make_alert(i) for i in range(3)]
    client = Client(unix_socket=switch.link, backoff=FAST)
    try:
        with caplog.at_level(logging.WARNING, logger="falconet.sdk"):
            stream = Collector(client.subscribe(start="now", batched=batched))
            switch.subscribed(hub)
            new_hub = switch.restart(same_hub=same_hub, publish=sent)
            got = stream.take(len(sent) + (0 if same_hub else 1))
    finally:
        client.close()
    _expect(got, sent, hub, new_hub, same_hub=same_hub, before=before)
    assert f"resuming after {hub.epoch}:{before}" in caplog.text
    assert "may be missed" not in caplog.text


@pytest.mark.parametrize(
    ("batched", "same_hub", "before"),
    [(False, True, 0), (True, False, 1)],
    ids=["sub-lost-empty", "batched-restart"],
)
def test_async_cut_before_the_first_alert_resumes_where_it_started(
    switch: Switch, caplog: pytest.LogCaptureFixture, batched: bool, same_hub: bool, before: int
) -> None:
    hub = switch.first.hub
    for i in range(before):
        hub.publish(make_alert(100 + i))
    sent = [make_alert(i) for i in range(3)]

    async def main() -> tuple[list[Alert], Hub]:
        async with AsyncClient(unix_socket=switch.link, backoff=FAST) as client:
            stream = await client.subscribe(start="now", batched=batched)
            first = asyncio.ensure_future(anext(stream))  # the stream opens on the first read
            await asyncio.to_thread(switch.subscribed, hub)
            new_hub = await asyncio.to_thread(switch.restart, same_hub=same_hub, publish=sent)
            got = [await first]
            got += [await anext(stream) for _ in range(len(sent) - (1 if same_hub else 0))]
            await stream.aclose()
            return got, new_hub

    with caplog.at_level(logging.WARNING, logger="falconet.sdk"):
        got, new_hub = asyncio.run(asyncio.wait_for(main(), 60))
    _expect(got, sent, hub, new_hub, same_hub=same_hub, before=before)
    assert f"resuming after {hub.epoch}:{before}" in caplog.text
    assert "may be missed" not in caplog.text


def test_position_header_parsing_and_precedence(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_position("3f2a:0") == Cursor("3f2a", 0)
    assert parse_position(b"a:b:17") == Cursor("a:b", 17)
    with caplog.at_level(logging.WARNING, logger="falconet.sdk"):
        for bad in ("", "17", ":5", "e:", "e:-1", "e:x", "e:\u0661"):
            assert parse_position(bad) is None, bad
    assert "malformed falconet-position" in caplog.text
    assert position_of(None) is None
    assert position_of((("other", "x"), ("falconet-position", "e:4"))) == Cursor("e", 4)

    resume = Resume(Query())
    assert resume.blind_spot
    resume.started_at(None)  # a server without the header (Falco): still blind
    assert resume.blind_spot and resume.start_after() is None
    resume.started_at(Cursor("e", 4))
    assert not resume.blind_spot and resume.start_after() == Cursor("e", 4)
    assert resume.accept(make_alert(0, cursor=Cursor("e", 5)))
    resume.started_at(Cursor("e", 3))  # never back within a run
    assert resume.start_after() == Cursor("e", 5)
    assert not resume.accept(make_alert(1, cursor=Cursor("e", 5)))  # a replay is still refused
    resume.started_at(Cursor("f", 0))  # a new run: its position replaces the stale cursor
    assert resume.start_after() == Cursor("f", 0)
    assert resume.accept(make_alert(2, cursor=Cursor("f", 1)))
    assert resume.delivered == 2
