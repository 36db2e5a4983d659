"""Issue 10, defect 4: every stream message fits gRPC's default 4 MiB limit, and GetAll returns everything.

The clients here are stock grpc channels with the default receive limit, so a message over 4 MiB fails the
call, as it would for any gRPC client in any language that keeps the default.
"""

from __future__ import annotations

from typing import Any

import grpc
from server_support import make_alert, start_oldest

from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, inputs_pb2, inputs_pb2_grpc
from falconet.sdk.convert import alert_to_proto
from falconet.server.alert_input import MAX_ALERT_BYTES
from falconet.server.streams import MAX_MESSAGE_BYTES, OVERSIZE_RULE

GRPC_DEFAULT_LIMIT = 4 << 20


def _big(i: int, size: int) -> Any:
    return make_alert(i, output=f"{i}:" + "x" * size)


def _batches(target: str, method: str) -> list[alerts_pb2.SubscribeResponse]:
    with grpc.insecure_channel(target) as ch:
        stub = alerts_pb2_grpc.AlertServiceStub(ch)
        if method == "GetAll":
            return list(stub.GetAll(alerts_pb2.GetAllRequest(), timeout=60))
        call = stub.Subscribe(alerts_pb2.SubscribeRequest(start=start_oldest()), timeout=60)
        out = []
        for message in call:
            out.append(message)
            if message.alerts and message.alerts[-1].cursor.sequence >= _newest[target]:
                call.cancel()
                break
        return out


_newest: dict[str, int] = {}


def test_get_all_returns_every_retained_alert_in_bounded_messages(alert_server: Any) -> None:
    # The case: 300 retained alerts of 20 KiB, published through the input service.
    sent = [alert_to_proto(_big(i, 20_000)) for i in range(300)]
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        stub = inputs_pb2_grpc.InputServiceStub(ch)
        requests = [inputs_pb2.PublishRequest(alerts=sent[i : i + 100]) for i in range(0, 300, 100)]
        assert stub.Publish(iter(requests), timeout=60).accepted == 300
    _newest[alert_server.unix_target] = 300
    for method in ("GetAll", "Subscribe"):
        messages = _batches(alert_server.unix_target, method)
        assert [r.cursor.sequence for m in messages for r in m.alerts] == list(range(1, 301)), method
        assert len(messages) > 1 and all(m.ByteSize() < GRPC_DEFAULT_LIMIT for m in messages)


def test_alerts_too_large_for_one_message_never_fail_a_reader(alert_server: Any) -> None:
    # Alerts that reached the hub without the input's size limit (the engine publishes directly): many small
    # ones, one just under the message bound, one over 4 MiB, then a small one.
    small = [_big(i, 20_000) for i in range(60)]
    near = _big(60, MAX_MESSAGE_BYTES - 4096)
    huge = _big(61, 5 << 20)
    for alert in [*small, near, huge, make_alert(62)]:
        alert_server.publish(alert)
    _newest[alert_server.unix_target] = 63
    for method in ("GetAll", "Subscribe"):
        messages = _batches(alert_server.unix_target, method)
        got = [r for m in messages for r in m.alerts]
        assert [r.cursor.sequence for r in got] == list(range(1, 64)), method
        assert all(m.ByteSize() < GRPC_DEFAULT_LIMIT for m in messages)
        assert got[59].output == small[59].output and got[60].output == near.output
        assert got[61].rule == OVERSIZE_RULE and got[61].source == "internal"
        assert f"{alert_server.hub.epoch}:62" in got[61].output and "too large" in got[61].output
        assert got[62].rule == make_alert(62).rule
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        singles = list(
            outputs_pb2_grpc.serviceStub(ch).get(outputs_pb2.request(start=start_oldest()), timeout=60)
        )
    assert [r.rule for r in singles[60:]] == [near.rule, OVERSIZE_RULE, make_alert(62).rule]
    assert MAX_ALERT_BYTES < MAX_MESSAGE_BYTES < GRPC_DEFAULT_LIMIT
