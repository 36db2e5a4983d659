"""The push channel over real HTTP: backlog, live batches, resume without gap or duplicate, losses, filters."""

from __future__ import annotations

import asyncio
import json

from console_support import ConsoleFactory, ConsoleHandle, Pages, last_position, make_alert, sequences

from falconet.model.alert import Priority
from falconet.server.hub import Hub, LOSS_RULE


def auth(handle: ConsoleHandle) -> dict[str, str]:
    assert handle.token is not None
    return {"Authorization": f"Bearer {handle.token}"}


def test_backlog_then_live_alerts_in_batches(token_console: ConsoleHandle) -> None:
    h = token_console
    for i in range(5):
        h.publish(make_alert(i))

    async def go() -> None:
        async with Pages(h) as pages:
            stream = await pages.open("backlog=3")
            events = await stream.until(lambda ev: sequences(ev) == [3, 4, 5])
            assert events[0].event == "hello" and events[0].data["position"] == f"{h.hub.epoch}:5"
            h.hub.publish_many([make_alert(i) for i in range(5, 5005)])
            events = await stream.until(lambda ev: len(sequences(ev)) == 5003)
            assert sequences(events) == list(range(3, 5006))
            batches = [e for e in events if e.event == "alerts"]
            # 5,000 alerts published at once reach the page in a few batches (MAX_BATCH each), not 5,000
            assert len(batches) <= 1 + 3, len(batches)
            assert batches[-1].id == f"{h.hub.epoch}:5005"

    asyncio.run(go())


def test_resume_after_position_has_no_gap_and_no_duplicate(token_console: ConsoleHandle) -> None:
    h = token_console

    async def go() -> None:
        async with Pages(h) as pages:
            stream = await pages.open()
            for i in range(10):
                h.publish(make_alert(i))
            events = await stream.until(lambda ev: len(sequences(ev)) == 10)
            position = last_position(events)
            stream.response.close()
            for i in range(10, 25):
                h.publish(make_alert(i))  # while the page is away
            again = await pages.open(f"after={position}")
            more = await again.until(lambda ev: len(sequences(ev)) >= 15)
            assert sequences(more) == list(range(11, 26))
            # The browser's own reconnection header resumes the same way.
            again.response.close()
            header = {**auth(h), "Last-Event-ID": f"{h.hub.epoch}:20"}
            third_stream = await pages.open("", header)
            third = await third_stream.until(lambda ev: len(sequences(ev)) >= 5)
            assert sequences(third) == [21, 22, 23, 24, 25]

    asyncio.run(go())


def test_a_cut_listener_resumes_from_the_cursor(token_console: ConsoleHandle) -> None:
    h = token_console

    async def go() -> None:
        async with Pages(h) as pages:
            stream = await pages.open()
            h.publish(make_alert(1))
            events = await stream.until(lambda ev: sequences(ev) == [1])
            await asyncio.to_thread(h.cut)
            try:
                await stream.until(lambda ev: False, timeout=10)
            except ConnectionError:
                pass  # the stream ended with the listener
            else:
                raise AssertionError("the stream outlived its listener")
            for i in range(2, 7):
                h.publish(make_alert(i))
            await asyncio.to_thread(h.restore)
            again = await pages.open(f"after={last_position(events)}")
            more = await again.until(lambda ev: len(sequences(ev)) >= 5)
            assert sequences(more) == [2, 3, 4, 5, 6]

    asyncio.run(go())


def test_a_page_behind_the_ring_is_told_what_it_lost(console_factory: ConsoleFactory) -> None:
    h = console_factory(hub=Hub(100, hostname="node-a"))

    async def go() -> None:
        async with Pages(h) as pages:
            stream = await pages.open()
            h.publish(make_alert(0))
            events = await stream.until(lambda ev: sequences(ev) == [1])
            stream.response.close()
            h.hub.publish_many([make_alert(i) for i in range(1, 500)])  # 2..500; the ring keeps 401..500
            again = await pages.open(f"after={last_position(events)}")
            more = await again.until(lambda ev: len(sequences(ev)) >= 100)
            losses = [e.data for e in more if e.event == "loss"]
            assert len(losses) == 1 and losses[0]["rule"] == LOSS_RULE
            assert losses[0]["output_fields"]["falconet.lost"] == 399
            assert losses[0]["output_fields"]["falconet.resume_sequence"] == 401
            assert sequences(more) == list(range(401, 501))

    asyncio.run(go())


def test_filters_apply_on_the_server(token_console: ConsoleHandle) -> None:
    h = token_console
    h.publish(make_alert(1, priority=Priority.DEBUG))
    h.publish(make_alert(2, priority=Priority.CRITICAL, rule="Shell", host="node-b", tags=("shell",)))
    h.publish(make_alert(3, priority=Priority.ERROR, rule="Shell", host="node-a", output="reads /etc/SHADOW"))
    h.publish(make_alert(4, priority=Priority.ERROR, rule="Other", source="k8s_audit"))

    async def seqs(query: str, n: int) -> list[int]:
        async with Pages(h) as pages:
            stream = await pages.open(query)
            return sequences(await stream.until(lambda ev: len(sequences(ev)) >= n))

    assert asyncio.run(seqs("priority=error", 3)) == [2, 3, 4]
    assert asyncio.run(seqs("rule=Shell", 2)) == [2, 3]
    assert asyncio.run(seqs("rule=Shell&host=node-b", 1)) == [2]
    assert asyncio.run(seqs("tag=shell", 1)) == [2]
    assert asyncio.run(seqs("source=k8s_audit", 1)) == [4]
    assert asyncio.run(seqs("q=etc/shadow", 1)) == [3]

    async def live() -> list[int]:
        async with Pages(h) as pages:
            stream = await pages.open("rule=Shell&backlog=0")
            h.publish(make_alert(5, rule="Other"))
            h.publish(make_alert(6, rule="Shell"))
            return sequences(await stream.until(lambda ev: len(sequences(ev)) >= 1))

    assert asyncio.run(live()) == [6]


def test_bad_requests_are_refused_with_the_reason(token_console: ConsoleHandle) -> None:
    h = token_console

    async def go() -> None:
        async with Pages(h) as pages:
            for query, needle in (
                ("priority=loud", "priority"), ("after=nonsense", "after"), (f"after={h.hub.epoch}:99", "ahead"),
                ("q=" + "x" * 300, "q:"), ("backlog=many", "invalid literal"),
            ):  # fmt: skip
                response = await pages.session.get(f"{h.url}api/stream?{query}", headers=auth(h))
                assert response.status == 400, query
                assert needle in json.loads(await response.text())["message"], query
            for method in ("POST", "PUT", "DELETE"):
                response = await pages.session.request(method, f"{h.url}api/stream", headers=auth(h))
                assert response.status == 405
            response = await pages.session.get(f"{h.url}static/..%2fapp.py")
            assert response.status == 404

    asyncio.run(go())


def test_chart_counts_match_what_was_published(token_console: ConsoleHandle) -> None:
    h = token_console
    published = {Priority.WARNING: 7, Priority.ERROR: 3, Priority.DEBUG: 2}
    for priority, n in published.items():
        for i in range(n):
            h.publish(make_alert(i, priority=priority, rule=f"rule-{priority.falco_name}", host=f"host-{i % 2}"))

    async def go() -> dict[str, object]:
        async with Pages(h) as pages:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                response = await pages.session.get(f"{h.url}api/stats?window=hour", headers=auth(h))
                stats: dict[str, object] = await response.json()
                if stats["total"] == 12 or loop.time() > deadline:
                    return stats
                await asyncio.sleep(0.05)  # polling an HTTP endpoint (its counts lag the hub by a task switch)

    stats = asyncio.run(go())
    assert stats["total"] == 12
    buckets = stats["buckets"]
    assert isinstance(buckets, list)
    names = stats["priorities"]
    assert isinstance(names, list)
    totals = {name: sum(row[i] for row in buckets) for i, name in enumerate(names)}
    assert totals == {p.falco_name: published.get(p, 0) for p in Priority}
    assert stats["top_rules"] == [["rule-Warning", 7], ["rule-Error", 3], ["rule-Debug", 2]]
    assert sorted(map(tuple, stats["top_hosts"])) == [("host-0", 7), ("host-1", 5)]  # type: ignore[call-overload]


def test_one_credential_holds_a_bounded_number_of_streams(token_console: ConsoleHandle) -> None:
    from falconet.server.console.app import MAX_STREAMS_PER_IDENTITY

    h = token_console

    async def go() -> None:
        async with Pages(h) as pages:
            for _ in range(MAX_STREAMS_PER_IDENTITY):
                stream = await pages.open()
                await stream.until(lambda ev: any(e.event == "hello" for e in ev))
            response = await pages.session.get(f"{h.url}api/stream", headers=auth(h))
            assert response.status == 429
            assert "too many open streams" in (await response.json())["message"]
            response.close()
            pages.streams.pop().response.close()  # one page closes: the next may open
            deadline = asyncio.get_running_loop().time() + 10
            while h.console.open_streams >= MAX_STREAMS_PER_IDENTITY:  # the server notices the closed socket
                assert asyncio.get_running_loop().time() < deadline, "the closed stream was never released"
                await asyncio.sleep(0.02)
            await pages.open()

    asyncio.run(go())


def test_a_filtered_stream_tells_the_page_how_far_it_looked(token_console: ConsoleHandle) -> None:
    """Alerts that do not match still move the page's position, so a resume does not count them as lost."""
    h = token_console

    async def go() -> None:
        async with Pages(h) as pages:
            stream = await pages.open("rule=Rare&backlog=0")
            h.hub.publish_many([make_alert(i) for i in range(50)])
            events = await stream.until(lambda ev: bool(ev) and last_position(ev) == f"{h.hub.epoch}:50")
            assert sequences(events) == []

    asyncio.run(go())
