"""The input service: open on the UNIX socket, over mTLS only for allow-listed Common Names."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from server_support import make_alert, mtls_credentials
from shared_server import ServerFactory, ServerHandle

from falconet.certs import issue_client
from falconet.model.alert import Cursor
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import inputs_pb2, inputs_pb2_grpc
from falconet.sdk.convert import alert_to_proto


def _publish(channel: grpc.Channel, batches: list[list[outputs_pb2.response]]) -> inputs_pb2.PublishResponse:
    stub = inputs_pb2_grpc.InputServiceStub(channel)
    requests = iter([inputs_pb2.PublishRequest(alerts=b) for b in batches])
    reply: inputs_pb2.PublishResponse = stub.Publish(requests, timeout=30)
    return reply


def test_unix_socket_clients_may_publish_and_cursors_are_the_hubs(alert_server: ServerHandle) -> None:
    sent = [make_alert(i, cursor=Cursor("forged", 99)) for i in range(5)]
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        reply = _publish(ch, [[alert_to_proto(a) for a in sent[:2]], [alert_to_proto(a) for a in sent[2:]]])
    assert reply.accepted == 5
    assert (reply.last.epoch, reply.last.sequence) == (alert_server.hub.epoch, 5)
    stored = [e.alert for e in alert_server.hub.snapshot()]
    for i, alert in enumerate(stored):
        assert alert.cursor == Cursor(alert_server.hub.epoch, i + 1)
        alert.cursor = None
        assert alert == make_alert(i)


def test_mtls_clients_need_an_allow_listed_common_name(
    alert_server_factory: ServerFactory, certs_dir: Path
) -> None:
    issue_client(certs_dir, "publisher", force=True)
    handle = alert_server_factory(input_allow_cns=frozenset({"publisher"}))
    batch = [[alert_to_proto(make_alert(0))]]
    with grpc.secure_channel(handle.tcp_target, mtls_credentials(certs_dir)) as ch:
        with pytest.raises(grpc.RpcError) as info:
            _publish(ch, batch)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'falconet-client'" in (info.value.details() or "") and "allow-list" in (
        info.value.details() or ""
    )
    assert handle.hub.published == 0
    with grpc.secure_channel(handle.tcp_target, mtls_credentials(certs_dir, "publisher")) as ch:
        assert _publish(ch, batch).accepted == 1
    assert handle.hub.published == 1


def test_mtls_publish_is_denied_when_no_allow_list_is_configured(
    alert_server: ServerHandle, certs_dir: Path
) -> None:
    with grpc.secure_channel(alert_server.tcp_target, mtls_credentials(certs_dir)) as ch:
        with pytest.raises(grpc.RpcError) as info:
            _publish(ch, [[alert_to_proto(make_alert(0))]])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "allow-list is empty" in (info.value.details() or "")


def test_malformed_alert_is_refused_naming_it_and_earlier_ones_stay_published(
    alert_server: ServerHandle
) -> None:
    good = [alert_to_proto(make_alert(i)) for i in range(3)]
    bad = outputs_pb2.response(rule="broken", output_fields={"n": "{oops"}, output_fields_json=["n"])
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        with pytest.raises(grpc.RpcError) as info:
            _publish(ch, [good[:2], [good[2], bad, alert_to_proto(make_alert(9))]])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "alert 4 of the stream" in (info.value.details() or "")
    assert "3 alerts before it were published" in (info.value.details() or "")
    assert alert_server.hub.published == 3
