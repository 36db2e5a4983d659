"""The alert JSON and its wire form against the shared test vectors (the ones Go and Rust check too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from falconet.model.text import json_safe
from falconet.model.alert import Alert, Cursor, Priority
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.convert import alert_from_proto, alert_to_proto

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "sdk/python/testdata/alert_vectors.json").read_text(
        encoding="utf-8"
    )
)


def _alert(data: dict[str, Any]) -> Alert:
    cur = data["cursor"]
    return Alert(
        time_ns=data["time_ns"],
        rule=data["rule"],
        priority=Priority(data["priority"]),
        source=data["source"],
        output=data["output"],
        output_fields=dict(data["output_fields"]),
        tags=list(data["tags"]),
        hostname=data["hostname"],
        cursor=Cursor(cur["epoch"], cur["sequence"]) if cur else None,
    )


def _proto(data: dict[str, Any]) -> outputs_pb2.response:
    body = {k: v for k, v in data.items() if v is not None and k not in ("time",)}
    msg = json_format.ParseDict(
        {**body, "priority": int(data["priority"]), "source_deprecated": int(data["source_deprecated"])},
        outputs_pb2.response(),
    )
    msg.time.seconds = data["time"]["seconds"]
    msg.time.nanos = data["time"]["nanos"]
    return msg


def canonical_line(doc: dict[str, Any]) -> str:
    doc = dict(doc)
    doc["output_fields"] = dict(sorted(doc["output_fields"].items()))
    return json_safe(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))


def test_vectors_cover_every_priority_family_and_source_kind() -> None:
    sources = {v["alert"]["source"] for v in VECTORS["vectors"]}
    assert {"syscall", "k8s_audit", "internal"} <= sources and len(sources) >= 4
    assert len(VECTORS["invalid"]) >= 5


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_alert_to_json(vector: dict[str, Any]) -> None:
    alert = _alert(vector["alert"])
    doc = alert.to_json_dict()
    assert doc == vector["json"]
    assert list(doc) == list(vector["json"])  # key order is part of the canonical line
    assert canonical_line(doc) == vector["line"] == alert.to_json_line()
    assert Alert.from_json_dict(json.loads(vector["line"])) == alert


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_alert_to_proto_and_back(vector: dict[str, Any]) -> None:
    alert = _alert(vector["alert"])
    expected = _proto(vector["proto"])
    got = alert_to_proto(alert)
    assert got == expected
    assert got.HasField("cursor") == (vector["proto"]["cursor"] is not None)
    assert alert_from_proto(expected) == alert
    # Typed values survive the round trip with their types (4242 stays int, "1234" stays str).
    for key, value in alert_from_proto(expected).output_fields.items():
        assert type(value) is type(vector["alert"]["output_fields"][key])


@pytest.mark.parametrize("case", VECTORS["parse"], ids=lambda c: c["name"])
def test_parse_normalises(case: dict[str, Any]) -> None:
    assert Alert.from_json_dict(json.loads(case["input"])).to_json_dict() == case["json"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_inputs_are_rejected_naming_the_problem(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=case["error_mentions"]):
        Alert.from_json_dict(json.loads(case["input"]))


def test_proto_with_bad_json_marker_is_rejected_strictly_and_kept_as_text_by_clients() -> None:
    msg = outputs_pb2.response(rule="r", output_fields={"a": "not json"}, output_fields_json=["a"])
    with pytest.raises(ValueError, match="output_fields\\['a'\\]"):
        alert_from_proto(msg, strict=True)
    assert alert_from_proto(msg).output_fields == {"a": "not json"}


def test_old_falco_server_without_source_string_reads_the_enum() -> None:
    msg = outputs_pb2.response(rule="r", source_deprecated=1)  # type: ignore[arg-type]  # the number on the wire
    assert alert_from_proto(msg).source == "k8s_audit"
