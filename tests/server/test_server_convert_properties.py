"""Property: any alert survives Alert -> protobuf -> Alert and Alert -> JSON -> Alert unchanged, typed values
included (the output_fields_json marker is what makes the protobuf direction exact)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from falconet.model.alert import Alert, Cursor, Priority
from falconet.sdk.api.falco import outputs_pb2
from falconet.sdk.convert import alert_from_proto, alert_to_proto

text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)
values = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
alerts = st.builds(
    Alert,
    time_ns=st.integers(min_value=0, max_value=2**63 - 1),
    rule=text,
    priority=st.sampled_from(list(Priority)),
    source=st.sampled_from(["syscall", "k8s_audit", "internal", "okta", "aws_cloudtrail"]),
    output=text,
    output_fields=st.dictionaries(text, values, max_size=8),
    tags=st.lists(text, max_size=5),
    hostname=text,
    cursor=st.one_of(
        st.none(),
        st.builds(
            Cursor,
            st.text(alphabet="0123456789abcdef", min_size=1, max_size=12),
            st.integers(min_value=1, max_value=2**64 - 1),
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(alerts)
def test_protobuf_round_trip_is_exact(alert: Alert) -> None:
    wire = alert_to_proto(alert).SerializeToString()
    back = alert_from_proto(outputs_pb2.response.FromString(wire))
    assert back == alert
    assert {k: type(v) for k, v in back.output_fields.items()} == {
        k: type(v) for k, v in alert.output_fields.items()
    }


@settings(max_examples=300, deadline=None)
@given(alerts)
def test_json_round_trip_is_exact(alert: Alert) -> None:
    line = json.dumps(alert.to_json_dict(), separators=(",", ":"), ensure_ascii=False)
    assert Alert.from_json_dict(json.loads(line)) == alert
