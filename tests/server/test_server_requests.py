"""Falconet's request fields: filters applied by the server, and bad values refused with INVALID_ARGUMENT
before any alert is sent."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import pytest
from server_support import make_alert, start_after, start_oldest
from shared_server import ServerFactory, ServerHandle

from falconet.model.alert import Alert, Priority
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, types_pb2

# Numbers where the stubs want enum members (ignore[arg-type]): what any client can put on the wire.
BAD_REQUESTS: dict[str, tuple[types_pb2.Filter | None, types_pb2.Start | str | None, str]] = {
    "unknown priority number": (
        types_pb2.Filter(min_priority=42), None, "min_priority 42 is not a priority"  # type: ignore[arg-type]
    ),
    "empty rule name": (types_pb2.Filter(rules=["ok", ""]), None, r"filter.rules\[1\]"),
    "blank tag": (types_pb2.Filter(tags=[" x"]), None, r"filter.tags\[0\]"),
    "unspecified start position": (None, types_pb2.Start(position=0), "POSITION_UNSPECIFIED"),  # type: ignore[arg-type]
    "unknown start position": (None, types_pb2.Start(position=9), "not a known position"),  # type: ignore[arg-type]
    "empty start": (None, types_pb2.Start(), "start is present but empty"),
    "cursor without epoch": (None, start_after("", 3), "epoch is empty"),
    "cursor ahead of the server": (None, "ahead", "ahead of this server's newest alert"),
}


def _start(alert_server: ServerHandle, spec: types_pb2.Start | str | None) -> types_pb2.Start | None:
    if spec == "ahead":
        return start_after(alert_server.hub.epoch, 1000)
    assert not isinstance(spec, str)
    return spec


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_fields_are_invalid_argument_before_any_alert(
    alert_server: ServerHandle, case: str
) -> None:
    flt, start_spec, message = BAD_REQUESTS[case]
    for i in range(3):
        alert_server.publish(make_alert(i))
    start = _start(alert_server, start_spec)
    kwargs: dict[str, Any] = {k: v for k, v in (("filter", flt), ("start", start)) if v is not None}
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        falco = outputs_pb2_grpc.serviceStub(ch)
        batched = alerts_pb2_grpc.AlertServiceStub(ch)
        calls: dict[str, Callable[[], Iterable[Any]]] = {
            "get": lambda: falco.get(outputs_pb2.request(**kwargs)),
            "sub": lambda: falco.sub(iter([outputs_pb2.request(**kwargs)])),
            "Subscribe": lambda: batched.Subscribe(alerts_pb2.SubscribeRequest(**kwargs)),
        }
        if "start" not in kwargs:
            calls["GetAll"] = lambda: batched.GetAll(alerts_pb2.GetAllRequest(**kwargs))
        for name, call in calls.items():
            received: list[Any] = []
            with pytest.raises(grpc.RpcError) as info:
                for item in call():
                    received.append(item)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert re.search(message, info.value.details() or ""), name
            assert received == [], name
    # Refused requests consumed nothing from the Falco cursor.
    assert alert_server.hub.falco_cursor("unix") == 0


def test_filters_select_on_the_server(alert_server: ServerHandle) -> None:
    alerts = [make_alert(i) for i in range(40)]
    for alert in alerts:
        alert_server.publish(alert)
    cases: list[tuple[types_pb2.Filter, Callable[[Alert], bool]]] = [
        (types_pb2.Filter(min_priority=Priority.ERROR), lambda a: a.priority <= Priority.ERROR),  # type: ignore[arg-type]
        (types_pb2.Filter(rules=["Rule 1", "Rule 2"]), lambda a: a.rule in ("Rule 1", "Rule 2")),
        (types_pb2.Filter(tags=["t2"]), lambda a: "t2" in a.tags),
        (types_pb2.Filter(sources=["k8s_audit"]), lambda a: a.source == "k8s_audit"),
        (
            types_pb2.Filter(min_priority=Priority.NOTICE, tags=["t0"], sources=["syscall"]),  # type: ignore[arg-type]
            lambda a: a.priority <= Priority.NOTICE and "t0" in a.tags and a.source == "syscall",
        ),
    ]
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        falco = outputs_pb2_grpc.serviceStub(ch)
        batched = alerts_pb2_grpc.AlertServiceStub(ch)
        for flt, predicate in cases:
            expected = [a.cursor.sequence for a in alerts if predicate(a)]  # type: ignore[union-attr]
            assert expected and len(expected) < len(alerts)
            got = [
                r.cursor.sequence for r in falco.get(outputs_pb2.request(filter=flt, start=start_oldest()))
            ]
            assert got == expected
            got_all = [
                r.cursor.sequence
                for m in batched.GetAll(alerts_pb2.GetAllRequest(filter=flt))
                for r in m.alerts
            ]
            assert got_all == expected


def test_get_all_is_everything_retained_in_batches(alert_server_factory: ServerFactory) -> None:
    handle = alert_server_factory(retention=500)
    for i in range(1200):
        handle.publish(make_alert(i))
    with grpc.insecure_channel(handle.unix_target) as ch:
        messages = list(alerts_pb2_grpc.AlertServiceStub(ch).GetAll(alerts_pb2.GetAllRequest(max_batch=64)))
    assert all(len(m.alerts) <= 64 for m in messages) and len(messages) >= 8
    assert [r.cursor.sequence for m in messages for r in m.alerts] == list(range(701, 1201))
