"""Falco's semantics for clients that send none of Falconet's fields, over the real server (UNIX and mTLS).

Per client identity, the backlog is a queue (`get` and the start of `sub` take what this identity has not seen),
while live alerts fan out to every open `sub`.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_support import falco_request, make_alert, mtls_credentials, start_oldest, wait_until
from shared_server import ServerFactory, ServerHandle

from falconet.certs import issue_client
from falconet.model.alert import Cursor
from falconet.rules.loader import ENGINE_VERSION_TEXT
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc, version_pb2, version_pb2_grpc
from falconet.sdk.convert import alert_from_proto


def _requests(q: queue.Queue[outputs_pb2.request | None]) -> Iterator[outputs_pb2.request]:
    while True:
        item = q.get()
        if item is None:
            return
        yield item


def _rules(responses: list[outputs_pb2.response]) -> list[str]:
    return [r.output for r in responses]


def test_alerts_published_while_nobody_listens_reach_the_next_get_once(alert_server: ServerHandle) -> None:
    for i in range(3):
        alert_server.publish(make_alert(i))
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        stub = outputs_pb2_grpc.serviceStub(ch)
        first = list(stub.get(falco_request()))
        epoch = alert_server.hub.epoch
        assert [alert_from_proto(r) for r in first] == [
            make_alert(i, cursor=Cursor(epoch, i + 1)) for i in range(3)
        ]
        assert list(stub.get(falco_request())) == []  # a second get sees only what is new
        alert_server.publish(make_alert(3))
        again = list(stub.get(falco_request()))
        assert [r.cursor.sequence for r in again] == [4]


def test_sub_receives_backlog_then_live_alerts_without_further_requests(alert_server: ServerHandle) -> None:
    for i in range(2):
        alert_server.publish(make_alert(i))  # published just before anyone subscribed
    q: queue.Queue[outputs_pb2.request | None] = queue.Queue()
    q.put(falco_request())
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        stream = outputs_pb2_grpc.serviceStub(ch).sub(_requests(q))
        got = [next(stream), next(stream)]
        assert [r.cursor.sequence for r in got] == [1, 2]
        for i in range(2, 6):
            alert_server.publish(make_alert(i))
        got += [next(stream) for _ in range(4)]  # no request sent for these: the server streams continuously
        q.put(falco_request())  # a keep-alive changes nothing
        alert_server.publish(make_alert(6))
        got.append(next(stream))
        assert [r.cursor.sequence for r in got] == [1, 2, 3, 4, 5, 6, 7]
        assert [alert_from_proto(r).output for r in got] == [make_alert(i).output for i in range(7)]
        stream.cancel()
        q.put(None)
        # A reconnecting Falco client does not count alerts twice: its cursor moved with what it was sent.
        assert list(outputs_pb2_grpc.serviceStub(ch).get(falco_request())) == []


def test_concurrent_subscribers_both_receive_every_live_alert(
    alert_server: ServerHandle, certs_dir: Path
) -> None:
    queues: list[queue.Queue[outputs_pb2.request | None]] = [queue.Queue(), queue.Queue()]
    for q in queues:
        q.put(falco_request())
    with (
        grpc.insecure_channel(alert_server.unix_target) as a,
        grpc.secure_channel(alert_server.tcp_target, mtls_credentials(certs_dir)) as b,
    ):
        streams = [
            outputs_pb2_grpc.serviceStub(a).sub(_requests(queues[0])),
            outputs_pb2_grpc.serviceStub(b).sub(_requests(queues[1])),
        ]
        wait_until(lambda: len(alert_server.hub.stats().readers) == 2, what="two subscribers")
        for i in range(20):
            alert_server.publish(make_alert(i))
        for stream in streams:
            assert [next(stream).cursor.sequence for _ in range(20)] == list(range(1, 21))
            stream.cancel()
    for q in queues:
        q.put(None)


def test_two_identities_do_not_take_alerts_from_each_other(
    alert_server: ServerHandle, certs_dir: Path, tmp_path: Path
) -> None:
    issue_client(certs_dir, "other-consumer", force=True)
    for i in range(4):
        alert_server.publish(make_alert(i))
    with (
        grpc.secure_channel(alert_server.tcp_target, mtls_credentials(certs_dir)) as one,
        grpc.secure_channel(alert_server.tcp_target, mtls_credentials(certs_dir, "other-consumer")) as two,
        grpc.insecure_channel(alert_server.unix_target) as local,
    ):
        s1, s2, s3 = (outputs_pb2_grpc.serviceStub(c) for c in (one, two, local))
        assert [r.cursor.sequence for r in s1.get(falco_request())] == [1, 2, 3, 4]
        assert [r.cursor.sequence for r in s2.get(falco_request())] == [1, 2, 3, 4]
        assert list(s1.get(falco_request())) == []
        alert_server.publish(make_alert(4))
        assert [r.cursor.sequence for r in s3.get(falco_request())] == [1, 2, 3, 4, 5]
        assert [r.cursor.sequence for r in s1.get(falco_request())] == [5]
        assert [r.cursor.sequence for r in s2.get(falco_request())] == [5]


def test_reads_with_a_start_position_touch_no_falco_cursor(alert_server: ServerHandle) -> None:
    for i in range(3):
        alert_server.publish(make_alert(i))
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        stub = outputs_pb2_grpc.serviceStub(ch)
        for _ in range(2):
            assert len(list(stub.get(outputs_pb2.request(start=start_oldest())))) == 3
        assert len(list(stub.get(falco_request()))) == 3


def test_sub_that_closes_its_requests_before_the_first_gets_nothing(alert_server: ServerHandle) -> None:
    alert_server.publish(make_alert(0))
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        assert list(outputs_pb2_grpc.serviceStub(ch).sub(iter([]))) == []
        # Nothing was sent, so the alert is still there for the next read.
        assert len(list(outputs_pb2_grpc.serviceStub(ch).get(falco_request()))) == 1


def test_version_reports_falconet_and_engine_versions(alert_server: ServerHandle) -> None:
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        v = version_pb2_grpc.serviceStub(ch).version(version_pb2.request())
    assert v.version and f"{v.major}.{v.minor}.{v.patch}" in v.version
    assert v.engine_version == f"{v.engine_major}.{v.engine_minor}.{v.engine_patch}"
    assert v.engine_version == ENGINE_VERSION_TEXT
    assert len(v.engine_fields_checksum) == 64


def test_alerts_carry_falco_hostname(
    certs_dir: Path, alert_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCO_HOSTNAME", "sensor-7")
    handle = alert_server_factory()
    handle.publish(make_alert(0, hostname=""))
    with grpc.insecure_channel(handle.unix_target) as ch:
        [resp] = list(outputs_pb2_grpc.serviceStub(ch).get(falco_request()))
    assert resp.hostname == "sensor-7"
