"""Loss is never silent: a subscriber that stops reading slows nobody and is told what it lost; a cursor that
is no longer retained, or from before a restart, is recognised and the gap reported."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
from server_support import falco_request, make_alert, mtls_credentials, start_after, wait_until
from shared_server import ServerFactory

from falconet.model.alert import Cursor
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, types_pb2
from falconet.sdk.convert import alert_from_proto
from falconet.server.hub import LOSS_RULE

TOTAL = 20_000


def test_subscriber_that_never_reads_slows_nobody_and_is_told_its_loss(
    alert_server_factory: ServerFactory, certs_dir: Path
) -> None:
    handle = alert_server_factory(retention=1000)
    fast: list[outputs_pb2.response] = []
    with (
        grpc.insecure_channel(handle.unix_target) as slow_channel,
        grpc.secure_channel(handle.tcp_target, mtls_credentials(certs_dir)) as fast_channel,
    ):
        slow = outputs_pb2_grpc.serviceStub(slow_channel).sub(iter([falco_request()]))
        handle.publish(make_alert(0))
        assert next(slow).cursor.sequence == 1  # then it stops reading

        stream = alerts_pb2_grpc.AlertServiceStub(fast_channel).Subscribe(
            alerts_pb2.SubscribeRequest(start=types_pb2.Start(position=types_pb2.Start.POSITION_OLDEST))
        )

        def read_fast() -> None:
            for message in stream:
                fast.extend(message.alerts)
                if len(fast) >= TOTAL:
                    return

        reader = threading.Thread(target=read_fast)
        reader.start()
        # The fast subscriber keeps up chunk by chunk while the slow one holds nothing back.
        for start in range(1, TOTAL, 500):
            for i in range(start, min(start + 500, TOTAL)):
                handle.publish(make_alert(i))
            wait_until(lambda: len(fast) >= handle.hub.published, what="fast subscriber to keep up")
        reader.join(30)
        stream.cancel()
        assert [r.cursor.sequence for r in fast] == list(range(1, TOTAL + 1))
        assert not any(r.source == "internal" for r in fast)

        # The slow subscriber now reads: some alerts were still in flight, then it is told what it lost.
        seen: list[int] = [1]
        lost = 0
        reports = 0
        while seen[-1] < TOTAL:
            resp = next(slow)
            if resp.source == "internal":
                assert resp.rule == LOSS_RULE and not resp.HasField("cursor")
                lost += int(alert_from_proto(resp).output_fields["falconet.lost"])  # type: ignore[arg-type]
                reports += 1
            else:
                seen.append(resp.cursor.sequence)
        assert reports >= 1 and lost > 0
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert len(seen) + lost == TOTAL  # every alert either delivered or counted as lost
        [slow_stats] = [r for r in handle.hub.stats().readers if r.name == "sub"]
        assert slow_stats.dropped == lost
        slow.cancel()


def test_cursor_no_longer_retained_reports_the_gap(alert_server_factory: ServerFactory) -> None:
    handle = alert_server_factory(retention=100)
    for i in range(250):
        handle.publish(make_alert(i))
    with grpc.insecure_channel(handle.unix_target) as ch:
        got = list(
            outputs_pb2_grpc.serviceStub(ch).get(outputs_pb2.request(start=start_after(handle.hub.epoch, 20)))
        )
    gap = alert_from_proto(got[0])
    assert gap.source == "internal" and gap.output_fields["falconet.lost"] == 130  # 21..150
    assert [r.cursor.sequence for r in got[1:]] == list(range(151, 251))


def test_cursor_from_before_a_restart_is_recognised(alert_server_factory: ServerFactory) -> None:
    before = alert_server_factory()
    for i in range(5):
        before.publish(make_alert(i))
    old_cursor = before.hub.snapshot()[-1].alert.cursor
    assert old_cursor is not None
    before.stop()
    after = alert_server_factory()  # a new run: a new epoch
    assert after.hub.epoch != old_cursor.epoch
    for i in range(3):
        after.publish(make_alert(10 + i))
    with grpc.insecure_channel(after.unix_target) as ch:
        stream = alerts_pb2_grpc.AlertServiceStub(ch).Subscribe(
            alerts_pb2.SubscribeRequest(start=start_after(old_cursor.epoch, old_cursor.sequence))
        )
        first = next(stream)
        stream.cancel()
    gap, *rest = [alert_from_proto(r) for r in first.alerts]
    assert gap.source == "internal" and "another run" in gap.output and old_cursor.epoch in gap.output
    assert [a.cursor for a in rest] == [Cursor(after.hub.epoch, s) for s in (1, 2, 3)]
