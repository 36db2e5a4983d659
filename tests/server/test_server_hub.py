"""The hub on its own: sequencing, retention and counted loss, cursors, Falco cursors, cross-thread wake-ups."""

from __future__ import annotations

import asyncio
import threading

import pytest
from server_support import make_alert

from falconet.model.alert import Cursor, Priority
from falconet.server.hub import LOSS_RULE, AlertFilter, Hub


def test_publish_assigns_cursors_from_one_and_fills_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALCO_HOSTNAME", "falco-host")
    hub = Hub(retention=10, epoch="e1")
    a = make_alert(0, hostname="")
    b = make_alert(1, hostname="relay-host")
    assert hub.publish(a) == Cursor("e1", 1)
    assert hub.publish(b) == Cursor("e1", 2)
    assert a.cursor == Cursor("e1", 1) and a.hostname == "falco-host"
    assert b.hostname == "relay-host"  # an alert relayed from another host keeps its host name
    assert hub.published == 2


def test_epochs_differ_between_hubs() -> None:
    assert Hub().epoch != Hub().epoch


def test_reader_reads_in_order_then_counts_what_the_ring_overwrote() -> None:
    hub = Hub(retention=100)
    reader = hub.reader(1)
    for i in range(50):
        hub.publish(make_alert(i))
    entries, lost = reader.take(10)
    assert [e.seq for e in entries] == list(range(1, 11)) and lost == 0
    for i in range(50, 300):
        hub.publish(make_alert(i))
    # Next wanted: 11; retained: 201..300, so 190 were lost.
    entries, lost = reader.take(1000)
    assert lost == 190 and reader.dropped == 190
    assert [e.seq for e in entries] == list(range(201, 301))
    assert entries[-1].alert.output == "alert number 299 <&> é"
    assert hub.stats().readers[0].dropped == 190
    loss = hub.loss_alert(reader, lost, entries[0].seq)
    assert loss.source == "internal" and loss.rule == LOSS_RULE
    assert loss.output_fields["falconet.lost"] == 190 and "11..200" in loss.output
    reader.delivered = 110
    reader.close()
    stats = hub.stats()
    assert not stats.readers and (stats.dropped_total, stats.delivered_total) == (190, 110)


def test_start_positions_and_gaps() -> None:
    hub = Hub(retention=5, epoch="now")
    for i in range(12):
        hub.publish(make_alert(i))
    assert hub.oldest == 8 and hub.newest == 12
    assert hub.start_oldest().next_seq == 8
    assert hub.start_now().next_seq == 13
    ok = hub.start_after(Cursor("now", 9))
    assert ok.next_seq == 10 and ok.gap_alert is None
    edge = hub.start_after(Cursor("now", 7))  # the alert after 7 is the oldest retained: nothing lost
    assert edge.next_seq == 8 and edge.gap_alert is None
    gap = hub.start_after(Cursor("now", 3))
    assert gap.next_seq == 8 and gap.gap_alert is not None
    assert gap.gap_alert.output_fields["falconet.lost"] == 4
    other = hub.start_after(Cursor("before-restart", 3))
    assert other.next_seq == 8 and other.gap_alert is not None
    assert "another run" in other.gap_alert.output and other.gap_alert.output_fields["falconet.lost"] is None
    with pytest.raises(ValueError, match="ahead of this server's newest"):
        hub.start_after(Cursor("now", 13))


def test_falco_cursors_are_per_identity_and_only_move_forward() -> None:
    hub = Hub(retention=100)
    for i in range(5):
        hub.publish(make_alert(i))
    assert hub.start_falco("a").next_seq == 1
    hub.advance_falco_cursor("a", 5)
    hub.advance_falco_cursor("a", 3)
    assert hub.falco_cursor("a") == 5
    assert hub.start_falco("a").next_seq == 6
    assert hub.start_falco("b").next_seq == 1


def test_falco_cursor_behind_the_ring_reports_the_gap() -> None:
    hub = Hub(retention=10)
    hub.publish(make_alert(0))
    hub.advance_falco_cursor("a", 1)
    for i in range(30):
        hub.publish(make_alert(i))
    start = hub.start_falco("a")
    assert start.next_seq == hub.oldest == 22
    assert start.gap_alert is not None and start.gap_alert.output_fields["falconet.lost"] == 20


def test_concurrent_publishers_get_unique_contiguous_sequences() -> None:
    hub = Hub(retention=100_000)
    cursors: list[list[int]] = [[] for _ in range(4)]

    def produce(k: int) -> None:
        for i in range(5000):
            cursors[k].append(hub.publish(make_alert(i)).sequence)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = sorted(s for part in cursors for s in part)
    assert every == list(range(1, 20_001))
    assert all(part == sorted(part) for part in cursors)  # each producer's alerts stay in its order


def test_a_waiting_reader_wakes_when_another_thread_publishes() -> None:
    hub = Hub()

    async def consume() -> list[int]:
        reader = hub.reader(1)
        got: list[int] = []
        while len(got) < 3:
            entries, _ = reader.take(10)
            got += [e.seq for e in entries]
            if not entries:
                await reader.wait()
        return got

    async def main() -> list[int]:
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0)  # let it start waiting
        thread = threading.Thread(target=lambda: [hub.publish(make_alert(i)) for i in range(3)])
        thread.start()
        result = await asyncio.wait_for(task, 10)
        thread.join()
        return result

    assert asyncio.run(main()) == [1, 2, 3]


def test_wire_form_is_made_once_per_entry() -> None:
    hub = Hub()
    hub.publish(make_alert(1))
    [entry] = hub.snapshot()
    assert entry.wire() is entry.wire()
    assert entry.framed() is entry.framed()
    assert entry.framed().endswith(entry.wire())


def test_filter_semantics() -> None:
    alert = make_alert(3)  # priority ERROR, rule "Rule 3", tags t0/common, source syscall
    assert alert.priority == Priority.ERROR
    assert AlertFilter().matches(alert)
    assert AlertFilter(min_priority=Priority.WARNING).matches(alert)
    assert AlertFilter(min_priority=Priority.ERROR).matches(alert)
    assert not AlertFilter(min_priority=Priority.CRITICAL).matches(alert)
    assert AlertFilter(rules=frozenset({"Rule 3", "x"})).matches(alert)
    assert not AlertFilter(rules=frozenset({"Rule 4"})).matches(alert)
    assert AlertFilter(tags=frozenset({"nope", "common"})).matches(alert)
    assert not AlertFilter(tags=frozenset({"nope"})).matches(alert)
    assert not AlertFilter(sources=frozenset({"k8s_audit"})).matches(alert)


class _Pending:
    """A store that never commits: published alerts stay invisible to readers."""

    oldest: int | None = None

    def notify(self) -> None:
        pass

    def read(self, first: int, max_n: int) -> list[tuple[int, bytes]]:
        return []


class _Recording(_Pending):
    """A store that counts the wake-ups the hub gives its writer."""

    def __init__(self) -> None:
        self.calls = 0

    def notify(self) -> None:
        self.calls += 1


def test_the_store_writer_is_woken_for_the_first_alert_since_each_drain_and_not_per_alert() -> None:
    """`Hub.publish` (the engine thread's, once per alert) wakes the writer only when nothing was pending: the
    writer clears its wake-up before it drains, so later alerts until the next drain need none. The batch calls
    wake it once per call (a cheap check when it is awake already)."""
    store = _Recording()
    hub = Hub(16, store=store)
    hub.publish_received([(make_alert(1, rule="r1"), b"\x12\x02r1", 0)])
    assert store.calls == 1
    hub.publish(make_alert(1, rule="e1"))
    hub.publish(make_alert(2, rule="e2"))
    assert store.calls == 1  # r1 was still pending: the writer is already woken
    entries, _ = hub.drain_unsynced()
    assert [e.alert.rule for e in entries] == ["r1", "e1", "e2"]
    hub.publish(make_alert(3, rule="e3"))
    hub.publish(make_alert(4, rule="e4"))
    assert store.calls == 2
    hub.publish_many([make_alert(5, rule="e5")])
    assert store.calls == 3
    entries, _ = hub.drain_unsynced(1)  # a bounded drain leaves the rest: the writer drains on at once
    assert [e.alert.rule for e in entries] == ["e3"]
    hub.publish(make_alert(6, rule="e6"))
    assert store.calls == 3
    assert [e.alert.rule for e in hub.drain_unsynced()[0]] == ["e4", "e5", "e6"]
    hub.publish(make_alert(7, rule="e7"))
    assert store.calls == 4


def test_pending_lists_the_oldest_alerts_awaiting_the_next_drain_without_taking_them() -> None:
    """What the store's writer converts while it commits the group before them."""
    hub = Hub(16, store=_Pending())
    for i in range(5):
        hub.publish(make_alert(i, rule=f"p{i}"))
    assert [e.alert.rule for e in hub.pending(3)] == ["p0", "p1", "p2"]
    assert [e.alert.rule for e in hub.pending(10)] == ["p0", "p1", "p2", "p3", "p4"]
    assert [e.alert.rule for e in hub.drain_unsynced(2)[0]] == ["p0", "p1"]
    assert [e.alert.rule for e in hub.pending(10)] == ["p2", "p3", "p4"]
    hub.drain_unsynced()
    assert hub.pending(10) == []


def test_wait_durable_wakes_once_its_alert_is_committed_and_not_at_every_commit_before() -> None:
    """A publisher waiting for its last alert (the input service's ack) is resolved by the commit that makes it
    visible; earlier commits leave it waiting and wake no event loop for it. A detached store releases it."""
    hub = Hub(16, store=_Pending())
    for i in range(5):
        hub.publish(make_alert(i))

    async def main() -> tuple[bool, bool, bool, bool]:
        last = asyncio.ensure_future(hub.wait_durable(5))
        second = asyncio.ensure_future(hub.wait_durable(2))
        await asyncio.sleep(0)
        hub.mark_durable(1)
        await asyncio.sleep(0.01)
        none_yet = not last.done() and not second.done()
        waiting = len(hub._durable_waiters)
        hub.mark_durable(3)  # from another thread in the server: the writer's
        await asyncio.wait_for(second, 5)
        second_only = not last.done() and len(hub._durable_waiters) == 1 and waiting == 2
        await hub.wait_durable(3)  # already committed: returns at once
        hub.publish(make_alert(6))
        sixth = asyncio.ensure_future(hub.wait_durable(6))
        hub.mark_durable(5)
        await asyncio.wait_for(last, 5)
        still = not sixth.done()
        hub.detach_store()  # memory only from now: everything published is visible
        await asyncio.wait_for(sixth, 5)
        return none_yet, second_only, still, hub._durable_waiters == []

    assert asyncio.run(main()) == (True, True, True, True)
