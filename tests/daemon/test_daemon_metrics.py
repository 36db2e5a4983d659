"""The Prometheus endpoint, scraped over real HTTP: falco_events as falco-exporter labels it, and loss counters."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from falconet.model.alert import Alert, Priority
from falconet.server.metrics import DaemonMetrics


def alert(rule: str, priority: Priority, tags: list[str], **fields: str | None) -> Alert:
    return Alert(
        time_ns=1,
        rule=rule,
        priority=priority,
        source="syscall",
        output="x",
        output_fields=dict(fields),
        tags=tags,
        hostname="node-1",
    )


@pytest.fixture
def metrics() -> Iterator[tuple[DaemonMetrics, str]]:
    m = DaemonMetrics()
    host, port = m.serve("127.0.0.1", 0)
    yield m, f"http://{host}:{port}/metrics"
    m.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        body: bytes = resp.read()
        return body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_falco_events_carry_falco_exporter_labels(metrics: tuple[DaemonMetrics, str]) -> None:
    m, url = metrics
    for _ in range(3):
        m.count_alert(alert("Read sensitive file untrusted", Priority.WARNING, ["mitre_credential_access", "T1555"]))
    m.count_alert(
        alert("Shell in pod", Priority.NOTICE, [], **{"k8s.ns.name": "prod", "k8s.pod.name": "web-1"})
    )
    text = scrape(url)
    # The exposition name is falco_events itself, as falco-exporter's dashboards query it.
    assert "# TYPE falco_events untyped" in text
    assert (
        'falco_events{hostname="node-1",k8s_ns_name="",k8s_pod_name="",priority="4",'
        'rule="Read sensitive file untrusted",source="syscall",tags=",T1555,mitre_credential_access,"} 3.0'
    ) in text
    got = samples(text)
    shell = frozenset(
        {
            ("rule", "Shell in pod"),
            ("priority", "5"),
            ("hostname", "node-1"),
            ("source", "syscall"),
            ("tags", ""),
            ("k8s_ns_name", "prod"),
            ("k8s_pod_name", "web-1"),
        }
    )
    assert got[("falco_events", shell)] == 1.0


def test_loss_and_cost_counters_are_exposed(metrics: tuple[DaemonMetrics, str]) -> None:
    m, url = metrics
    m.observe_batch(100, 0.0002)
    m.observe_batch(50, 0.0001)
    m.kernel_drops += 7
    m.alerts_rate_limited += 2
    m.output_drops = lambda: {"http": (5, 1), "file": (0, 0)}
    m.subscriber_drops = lambda: {"sub-1": 9}
    m.hub_totals = lambda: (100, 180, 20)
    got = samples(scrape(url))
    none: frozenset[tuple[str, str]] = frozenset()
    assert got[("falconet_events_total", none)] == 150
    assert got[("falconet_kernel_drops_total", none)] == 7
    assert got[("falconet_alerts_rate_limited_total", none)] == 2
    assert got[("falconet_output_alerts_dropped_total", frozenset({("output", "http"), ("reason", "queue_full")}))] == 5
    assert got[("falconet_output_alerts_dropped_total", frozenset({("output", "http"), ("reason", "write_failed")}))] == 1
    assert got[("falconet_subscriber_alerts_dropped_total", frozenset({("subscriber", "sub-1")}))] == 9
    assert got[("falconet_hub_alerts_published_total", none)] == 100
    assert got[("falconet_subscribers_alerts_delivered_total", none)] == 180
    assert got[("falconet_subscribers_alerts_dropped_total", none)] == 20
    assert got[("falconet_rule_evaluation_seconds_count", none)] == 2
    assert got[("falconet_rule_evaluation_seconds_sum", none)] == pytest.approx(0.000004)


def test_events_the_filters_kept_back_are_exposed_per_filter(metrics: tuple[DaemonMetrics, str]) -> None:
    m, url = metrics
    m.filtered = lambda: {"kernel_record_cuts": 12, "user_open_gate": 34, "user_fd_type_gate": 5}
    got = samples(scrape(url))
    for name, value in (("kernel_record_cuts", 12), ("user_open_gate", 34), ("user_fd_type_gate", 5)):
        assert got[("falconet_events_filtered_total", frozenset({("filter", name)}))] == value
