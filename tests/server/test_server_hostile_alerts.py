"""Issue 10, defect 1: one alert must not kill every client.

The input service refuses, over a real socket, every alert a client could not render (naming the field), and
every client reading an alert the wire can carry (one already retained, or from a foreign server) survives it:
`falco-client get` and `subscribe --from oldest`, in text and JSON, print it on one line and go on.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_support import make_alert

from falconet.model.alert import Alert, Priority
from falconet.model.alert_checks import AlertInvalid, check_publishable
from falconet.model.text import has_controls
from falconet.sdk.api.falco import outputs_pb2, schema_pb2
from falconet.sdk.api.falconet.v1 import inputs_pb2, inputs_pb2_grpc
from falconet.sdk.convert import alert_to_proto, decode_or_skip
from falconet.server.alert_input import alert_from_input

FALCO_CLIENT = str(Path(sys.executable).parent / "falco-client")


def _good() -> outputs_pb2.response:
    return alert_to_proto(make_alert(1))


def _with(**changes: Any) -> outputs_pb2.response:
    msg = _good()
    for key, value in changes.items():
        if key == "seconds":
            msg.time.seconds = value
        elif key == "nanos":
            msg.time.nanos = value
        elif key == "field":
            name, raw, typed = value
            msg.output_fields[name] = raw
            if typed:
                msg.output_fields_json.append(name)
        else:
            setattr(msg, key, value)
    return msg


HOSTILE = [
    ("time 2^62 seconds", _with(seconds=1 << 62), "time"),
    ("time before year 1", _with(seconds=-62_135_596_801), "time"),
    ("nanos out of range", _with(nanos=-1), "time.nanos"),
    ("NaN", _with(field=("x.nan", "NaN", True)), "output_fields['x.nan']"),
    ("Infinity", _with(field=("x.inf", "-Infinity", True)), "output_fields['x.inf']"),
    ("float beyond a double", _with(field=("x.big", "1e400", True)), "output_fields['x.big']"),
    ("integer beyond 64 bits", _with(field=("x.int", str(1 << 64), True)), "output_fields['x.int']"),
    ("negative beyond 64 bits", _with(field=("x.neg", str(-(1 << 63) - 1), True)), "output_fields['x.neg']"),
    ("object in a typed field", _with(field=("x.obj", '{"a":1}', True)), "output_fields['x.obj']"),
    ("not JSON in a typed field", _with(field=("x.txt", "{oops", True)), "output_fields['x.txt']"),
    ("empty rule", _with(rule=""), "rule"),
    ("blank rule", _with(rule="  \t"), "rule"),
    ("unknown priority", _with(priority=99), "priority"),
    ("negative priority", _with(priority=-1), "priority"),
    ("internal source", _with(source="internal"), "source"),
    ("internal by the old enum", _with(source="", source_deprecated=schema_pb2.INTERNAL), "source"),
]


def _publish(target: str, messages: list[outputs_pb2.response]) -> inputs_pb2.PublishResponse:
    with grpc.insecure_channel(target) as ch:
        stub = inputs_pb2_grpc.InputServiceStub(ch)
        reply: inputs_pb2.PublishResponse = stub.Publish(
            iter([inputs_pb2.PublishRequest(alerts=messages)]), timeout=30
        )
        return reply


@pytest.mark.parametrize(("name", "message", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_input_refuses_each_unrenderable_alert_naming_the_field(
    alert_server: Any, name: str, message: outputs_pb2.response, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _publish(alert_server.unix_target, [_good(), message])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert f"alert 2 of the stream: {field}:" in details, details
    assert alert_server.hub.published == 1  # the good one before it, and nothing else
    assert _publish(alert_server.unix_target, [_good()]).accepted == 1  # the server carries on


def test_json_priority_true_is_refused() -> None:
    with pytest.raises(ValueError, match="priority"):
        Alert.from_json_dict({"rule": "r", "priority": True})


def _client(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FALCO_CLIENT, "--unix-socket", str(server.unix_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("output", ["text", "json"])
def test_retained_alerts_no_calendar_can_print_do_not_kill_clients(alert_server: Any, output: str) -> None:
    # Alerts that reached the hub without the input's checks (an engine bug, an old store): the clients must
    # still print each of them on one line and carry on to the next.
    odd = [
        make_alert(0, time_ns=(1 << 62) * 1_000_000_000),
        make_alert(1, time_ns=-(1 << 63) * 1_000_000_000, output_fields={"nan": math.nan, "inf": -math.inf}),
        make_alert(2, output_fields={"huge": 1 << 70}, output="evil\x1b]0;owned\x07\nFAKE: Critical line"),
        make_alert(3),
    ]
    for alert in odd:
        alert_server.publish(alert)
    for args in (["get"], ["subscribe", "--from", "oldest", "--count", "4"]):
        res = _client(alert_server, "--output", output, *args)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        lines = res.stdout.splitlines()
        assert len(lines) == 4, res.stdout
        assert not any(has_controls(line) for line in lines)
        if output == "json":
            docs = [json.loads(line, parse_constant=_no_constants) for line in lines]
            assert docs[0]["time"].startswith("146138514283-")
            assert docs[1]["output_fields"] == {"inf": "-Infinity", "nan": "NaN"}
            assert docs[2]["output_fields"]["huge"] == 1 << 70
            assert docs[3]["rule"] == "Rule 3"
        else:
            assert "evil\\x1b]0;owned\\x07\\nFAKE: Critical line" in lines[2]


def _no_constants(name: str) -> None:
    raise AssertionError(f"invalid JSON constant {name}")


# -- properties over the wire message -------------------------------------------------------------------------

_text = st.text(max_size=40)
_scalar_json = st.one_of(
    st.integers(min_value=-(1 << 80), max_value=1 << 80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "true", "null", "[1]", '{"a":1}', "", "x"]),
    _text,
)


@st.composite
def wire_messages(draw: st.DrawFn) -> outputs_pb2.response:
    """Any `falco.outputs.response` a peer can send (every field, any value its type allows)."""
    msg = outputs_pb2.response(
        rule=draw(_text),
        output=draw(_text),
        hostname=draw(_text),
        source=draw(st.one_of(_text, st.sampled_from(["", "internal", "syscall"]))),
        tags=draw(st.lists(_text, max_size=3)),
    )
    # Open enums: any int32 travels, whether or not the enum names it.
    msg.priority = draw(st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1))  # type: ignore[assignment]
    msg.source_deprecated = draw(st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1))  # type: ignore[assignment]
    msg.time.seconds = draw(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
    msg.time.nanos = draw(st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1))
    for key, (raw, typed) in draw(st.dictionaries(_text, st.tuples(_scalar_json, st.booleans()), max_size=4)).items():
        msg.output_fields[key] = raw
        if typed:
            msg.output_fields_json.append(key)
    if draw(st.booleans()):
        msg.cursor.epoch = draw(_text)
        msg.cursor.sequence = draw(st.integers(min_value=0, max_value=(1 << 64) - 1))
    return msg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire_messages())
def test_any_wire_message_is_rendered_on_one_clean_line_or_skipped(msg: outputs_pb2.response) -> None:
    from falconet.sdk.cli import _render

    wire = msg.SerializeToString()
    alert = decode_or_skip(outputs_pb2.response.FromString(wire))
    if alert is None:
        assert msg.priority not in {int(p) for p in Priority}
        return
    line = _render(alert, "json")
    assert "\n" not in line and not has_controls(line)
    json.loads(line, parse_constant=_no_constants)
    text = _render(alert, "text")
    assert "\n" not in text and not has_controls(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire_messages())
def test_input_accepts_only_alerts_every_client_reads_back_exactly(msg: outputs_pb2.response) -> None:
    try:
        alert = alert_from_input(msg)
    except AlertInvalid as exc:
        assert exc.field and str(exc).startswith(exc.field)
        return
    check_publishable(alert)
    again = decode_or_skip(outputs_pb2.response.FromString(alert_to_proto(alert).SerializeToString()))
    assert again == alert
    doc = json.loads(alert.to_json_line(), parse_constant=_no_constants)
    assert Alert.from_json_dict(doc) == alert
