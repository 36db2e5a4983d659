"""Fuzzing the real server with what strangers send: request messages (filters, positions, cursors, batch
sizes), raw bytes in their place, and published alerts. Whatever arrives, the server answers OK or
INVALID_ARGUMENT (with a message free of control characters), never UNKNOWN, INTERNAL or a hang, and goes on
serving everything it accepted. The corpus (tests/server/corpus/) runs first, then hypothesis."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from fuzz_support import METHODS, CorpusRequest, corpus_alerts, corpus_requests, requests, wire_alerts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_support import mtls_credentials
from shared_server import ServerHandle, start_server

from falconet.certs import init_certs
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.api.falconet.v1 import alerts_pb2, inputs_pb2
from falconet.sdk.convert import alert_from_proto
from falconet.server.limits import Limits

ANSWERS = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CALL_SECONDS = 20
"""Per call: a server that hangs on an input fails with DEADLINE_EXCEEDED instead of hanging the test."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    certs = tmp_path_factory.mktemp("fuzz-certs")
    init_certs(certs)
    # Hypothesis opens and cancels streams faster than the server retires them, so the default limit of
    # concurrent streams per connection (test_server_limits.py) would refuse some (RST_STREAM
    # REFUSED_STREAM): that is the limit working, not what this module tests.
    handle = start_server(certs, retention=2000, limits=Limits(max_streams_per_connection=100_000))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def channels(server: ServerHandle) -> Iterator[dict[str, grpc.Channel]]:
    unix = grpc.insecure_channel(server.unix_target)
    tls = grpc.secure_channel(server.tcp_target, mtls_credentials(server.certs))
    try:
        yield {"unix": unix, "tls": tls}
    finally:
        unix.close()
        tls.close()


def _raw(data: bytes) -> bytes:
    return data


def _no_controls(text: str) -> bool:
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def answer(channel: grpc.Channel, method: str, data: bytes) -> tuple[grpc.StatusCode, str]:
    """How the server answers `data` (serialized, or raw bytes) sent to `method`; a live stream it accepted
    (its headers arrived) counts as OK and is cancelled."""
    path = METHODS[method]
    try:
        if method in ("GetAll", "get"):
            for _ in channel.unary_stream(path, _raw, _raw)(data, timeout=CALL_SECONDS):
                pass
            return grpc.StatusCode.OK, ""
        if method == "Subscribe":
            call = channel.unary_stream(path, _raw, _raw)(data, timeout=CALL_SECONDS)
        else:
            call = channel.stream_stream(path, _raw, _raw)(iter([data]), timeout=CALL_SECONDS)
        call.initial_metadata()  # headers (accepted) or trailers (refused), whichever comes
        call.cancel()
        code = call.code()
        return (grpc.StatusCode.OK if code == grpc.StatusCode.CANCELLED else code), call.details() or ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


def publish(channel: grpc.Channel, alerts: list[outputs_pb2.response]) -> tuple[grpc.StatusCode, str]:
    data = inputs_pb2.PublishRequest(alerts=alerts).SerializeToString()
    try:
        channel.stream_unary("/falconet.v1.InputService/Publish", _raw, _raw)(iter([data]), timeout=CALL_SECONDS)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


def still_serves_everything(channel: grpc.Channel) -> int:
    """GetAll from the oldest retained alert ends normally and every message parses; returns the count."""
    count = 0
    for message in channel.unary_stream(METHODS["GetAll"], _raw, _raw)(b"", timeout=CALL_SECONDS):
        count += len(alerts_pb2.GetAllResponse.FromString(message).alerts)
    return count


def _check(code: grpc.StatusCode, details: str, what: str) -> None:
    assert code in ANSWERS, f"{what}: {code.name}: {details}"
    assert _no_controls(details), f"{what}: control characters in the status message {details!r}"


@pytest.mark.parametrize("item", corpus_requests(), ids=lambda c: f"requests.txt:{c.line}")
@pytest.mark.parametrize("via", ["unix", "tls"])
def test_corpus_requests(channels: dict[str, grpc.Channel], item: CorpusRequest, via: str) -> None:
    code, details = answer(channels[via], item.method, item.data)
    _check(code, details, f"{item.method} requests.txt:{item.line}")


@FUZZ
@given(st.sampled_from(sorted(METHODS)).flatmap(lambda m: st.tuples(st.just(m), requests(m))))
def test_any_request_message_is_answered(channels: dict[str, grpc.Channel], case: tuple[str, object]) -> None:
    method, message = case
    data = message.SerializeToString()  # type: ignore[attr-defined]
    code, details = answer(channels["unix"], method, data)
    _check(code, details, f"{method}({message})")


@FUZZ
@given(st.sampled_from(sorted(METHODS)), st.binary(max_size=64))
def test_any_bytes_in_place_of_a_request_are_answered(
    channels: dict[str, grpc.Channel], method: str, data: bytes
) -> None:
    code, details = answer(channels["tls"], method, data)
    _check(code, details, f"{method}({data.hex()})")


def test_corpus_alerts_are_accepted_or_refused_and_then_served(channels: dict[str, grpc.Channel]) -> None:
    for number, alert in enumerate(corpus_alerts(), start=1):
        code, details = publish(channels["unix"], [alert])
        _check(code, details, f"alerts.txt entry {number} ({alert.rule!r})")
    still_serves_everything(channels["unix"])


@FUZZ
@given(st.lists(wire_alerts(), min_size=1, max_size=3))
def test_any_published_alert_is_accepted_or_refused_and_then_served(
    channels: dict[str, grpc.Channel], alerts: list[outputs_pb2.response]
) -> None:
    code, details = publish(channels["unix"], alerts)
    _check(code, details, f"Publish({alerts})")
    still_serves_everything(channels["unix"])


@FUZZ
@given(st.binary(max_size=128))
def test_any_bytes_published_are_answered(channels: dict[str, grpc.Channel], data: bytes) -> None:
    try:
        channels["unix"].stream_unary("/falconet.v1.InputService/Publish", _raw, _raw)(iter([data]), timeout=CALL_SECONDS)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    _check(code, details, f"Publish bytes {data.hex()}")
    still_serves_everything(channels["unix"])



@settings(max_examples=300, deadline=None)
@given(wire_alerts())
def test_any_wire_alert_decodes_for_a_client_or_raises_value_error(alert: outputs_pb2.response) -> None:
    """What a client (falco-client, the SDK) does with whatever a server sends: an Alert, or ValueError for
    the one kind no Alert can hold (an unknown priority number), which clients skip with a warning."""
    try:
        alert_from_proto(outputs_pb2.response.FromString(alert.SerializeToString()))
    except ValueError:
        assert not 0 <= alert.priority <= 7
