"""The subject and id contract between nodes and aggregators: one token per host, reversible, collision-free."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falconet.server.fleet.names import (
    NODES_BUCKET,
    alert_subject,
    all_alerts,
    escape_host,
    host_of_subject,
    msg_id,
    node_permissions,
    unescape_host,
)

SUBJECT_TOKEN_FORBIDDEN = set(".*> \t\r\n")
KV_KEY_ALLOWED = set("-/_=.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


@given(st.text(max_size=80))
def test_escape_is_one_valid_token_and_reversible(host: str) -> None:
    token = escape_host(host)
    assert token and not SUBJECT_TOKEN_FORBIDDEN & set(token)
    assert set(token) <= KV_KEY_ALLOWED
    assert unescape_host(token) == host
    assert host_of_subject(alert_subject(host)) == host


@given(st.text(max_size=20), st.text(max_size=20))
def test_distinct_hosts_distinct_tokens(a: str, b: str) -> None:
    assert (escape_host(a) == escape_host(b)) == (a == b)


def test_examples() -> None:
    assert escape_host("node-1.eu.example") == "node-1=2Eeu=2Eexample"
    assert alert_subject("a.b") == "falconet.alerts.a=2Eb"
    assert all_alerts() == "falconet.alerts.*"
    assert escape_host("") == "="
    assert msg_id("ab12", 7) == "ab12-7"


@pytest.mark.parametrize("bad", ["", "a.b", "=2", "=zz", "a b", "=FF", "==41", "=41"])
def test_unescape_refuses_what_escape_cannot_produce(bad: str) -> None:
    with pytest.raises(ValueError):
        unescape_host(bad)


def test_subject_outside_prefix_refused() -> None:
    with pytest.raises(ValueError):
        host_of_subject("other.alerts.x")


def test_heartbeat_round_trip_and_hostile_values() -> None:
    from falconet.server.fleet.names import Heartbeat

    hb = Heartbeat(host="n.1", epoch="ab", seq=3, ts_ns=10, version="0.3", rules_version="v7")
    assert Heartbeat.from_json(hb.to_json()) == hb
    for bad in (b"{", b"[]", b'{"host":"h","epoch":"e","seq":-1,"ts_ns":1}',
                b'{"host":"h","epoch":"e","seq":true,"ts_ns":1}', b'{"host":1,"epoch":"e","seq":1,"ts_ns":1}',
                b'{"host":"h","epoch":"e","seq":1}', b"\xff"):
        with pytest.raises(ValueError):
            Heartbeat.from_json(bad)


def test_node_permissions_write_only_the_nodes_own_subject_and_key() -> None:
    perms = node_permissions("web-1.eu.example")
    token = escape_host("web-1.eu.example")
    writes = [p for p in perms["publish"] if not p.startswith("$JS.API.")]
    assert writes == [alert_subject("web-1.eu.example"), f"$KV.{NODES_BUCKET}.{token}"]
    assert not any("*" in p or ">" in p for p in writes) and "." not in token
    assert not any(".CREATE." in p for p in perms["publish"])
    assert sum(".CREATE." in p for p in node_permissions("x", create=True)["publish"]) == 2
