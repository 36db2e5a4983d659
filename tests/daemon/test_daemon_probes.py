"""What fleet operators expect of each daemon (issue 13 item 5), against a real `falconet run` process on a
replay FIFO: `/healthz` and `/readyz` on the metrics listener, Falco's own metric names filled from what the
daemon measured, and Falco's `-o key=value` overrides (applied, kept across SIGHUP, bad ones named)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_harness import TEST_RULES, DaemonProcess, Fifo, base_config, open_event, read_json_lines, wait_until

pytestmark = pytest.mark.slow
Start = Callable[..., tuple[DaemonProcess, Fifo]]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def families(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(get(url)[1]):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def base_url(daemon: DaemonProcess) -> str:
    return daemon.metrics_url.removesuffix("/metrics")


def test_probes_answer_on_the_metrics_listener_and_readiness_ends_with_the_source(
    tmp_path: Path, start_daemon: Start
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    daemon, fifo = start_daemon(base_config(tmp_path, rules))
    fifo.open()
    url = base_url(daemon)
    assert get(url + "/healthz") == (200, "ok\n")
    # Ready once the engine thread polls the source (it starts right after the "ready" line).
    wait_until(lambda: get(url + "/readyz") == (200, "ok\n"), what="/readyz to answer 200")
    assert get(url + "/metrics")[1].startswith("# HELP")
    # The replay ends: the source is exhausted, the daemon stops, and until it is gone it is not ready.
    fifo.close()
    assert daemon.wait() == 0


def test_readiness_says_which_part_is_missing_when_grpc_is_off(tmp_path: Path, start_daemon: Start) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    # gRPC disabled: readiness does not wait for a server that is not configured.
    daemon, _ = start_daemon(base_config(tmp_path, rules), ["-o", "grpc.enabled=false"])
    url = base_url(daemon)
    wait_until(lambda: get(url + "/readyz") == (200, "ok\n"), what="/readyz 200 with gRPC off")
    assert "listening on" not in daemon.stderr()


def test_readiness_fails_while_no_rule_is_loaded(tmp_path: Path, start_daemon: Start) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)  # one WARNING rule; priority=error leaves none
    daemon, _ = start_daemon(base_config(tmp_path, rules), ["-o", "priority=error"])
    url = base_url(daemon)
    wait_until(lambda: get(url + "/healthz") == (200, "ok\n"), what="/healthz 200")
    assert get(url + "/readyz") == (503, "no rule is loaded (none in the files, or all disabled or below "
                                         "`priority`)\n")


def test_falco_metric_names_carry_what_the_daemon_measured(tmp_path: Path, start_daemon: Start) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    daemon, fifo = start_daemon(base_config(tmp_path, rules))
    fifo.send(open_event(1, "/etc/shadow"), open_event(2, "/etc/hostname"), open_event(3, "/etc/shadow", name="vi"))
    wait_until(lambda: len(read_json_lines(tmp_path / "alerts.json")) >= 2, what="two alerts")
    url = daemon.metrics_url
    m = wait_until(lambda: (f := families(url)).get("falcosecurity_scap_n_evts_total", [({}, 0)])[0][1] == 3 and f,
                   what="the engine's report of 3 source events")
    (labels, value), = m["falcosecurity_falco_rules_matches_total"]
    assert value == 2
    assert labels == {"rule_name": "Test shadow read", "priority": "4", "source": "syscall",
                      "tag_T1003": "true", "tag_test": "true"}
    assert m["falcosecurity_scap_n_drops_total"][0][1] == 0
    assert m["falcosecurity_evt_hostname_info"] == [({"hostname": "test-host"}, 1)]
    assert m["falcosecurity_scap_engine_name_info"] == [({"engine_name": "replay", "evt_source": "syscall"}, 1)]
    (version, one), = m["falcosecurity_falco_version_info"]
    assert one == 1 and version["version"]
    start = m["falcosecurity_falco_start_timestamp_nanoseconds"][0][1]
    assert m["falcosecurity_falco_reload_timestamp_nanoseconds"][0][1] == start
    assert m["falcosecurity_falco_memory_rss_bytes"][0][1] > 10 << 20  # a Python process with grpc loaded
    cpus = m["falcosecurity_falco_host_num_cpus_total"][0][1]
    assert cpus == os.cpu_count()
    assert 0 < m["falcosecurity_falco_cpu_usage_ratio"][0][1] <= cpus  # CPU time over the process's lifetime
    assert m["falcosecurity_falco_outputs_queue_num_drops_total"][0][1] == 0
    # falco_events (falco-exporter's name) is still there beside them.
    assert sum(v for _, v in m["falco_events"]) == 2
    # A SIGHUP reload moves the reload timestamp, not the start.
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line(r"reloaded:")
    m = families(url)
    assert m["falcosecurity_falco_reload_timestamp_nanoseconds"][0][1] > start
    assert m["falcosecurity_falco_start_timestamp_nanoseconds"][0][1] == start


def test_o_overrides_set_nested_keys_with_yaml_types_and_survive_a_reload(tmp_path: Path, start_daemon: Start) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    extra = tmp_path / "extra.yaml"
    extra.write_text(TEST_RULES.replace("Test shadow read", "Extra shadow read").replace("WARNING", "ERROR"))
    config = base_config(tmp_path, rules).replace("json_output: true", "json_output: false")
    daemon, fifo = start_daemon(config, [
        "-o", "json_output=true",                       # a YAML boolean
        "-o", f"rules_files[]={extra}",                  # appended to the file's list
        "-o", "rule_matching=all",
        "-o", "file_output.filename=" + str(tmp_path / "o.json"),  # nested
    ])
    fifo.send(open_event(1, "/etc/shadow"))
    got = wait_until(lambda: len(read_json_lines(tmp_path / "o.json")) >= 2 and read_json_lines(tmp_path / "o.json"),
                     what="both rules' alerts as JSON in the overridden file")
    assert sorted(a["rule"] for a in got) == ["Extra shadow read", "Test shadow read"]
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_line(r"reloaded: 2 rules files")  # the -o rules file is still there after the reload
    fifo.send(open_event(2, "/etc/shadow"))
    wait_until(lambda: len(read_json_lines(tmp_path / "o.json")) >= 4, what="JSON alerts after the reload")
    assert not (tmp_path / "alerts.json").exists() or read_json_lines(tmp_path / "alerts.json") == []


@pytest.mark.parametrize(("override", "says"), [
    ("webserver.listen_port", "-o webserver.listen_port: expected KEY=VALUE"),
    ("webserver.listen_port=[1, 2", "-o webserver.listen_port=[1, 2: the value is not valid YAML"),
    ("json_output.x=1", "-o json_output.x=1: json_output is bool True, not a mapping"),
    ("rules_files[7]=/x.yaml", "-o rules_files[7]=/x.yaml: rules_files has 1 entries; index 7 is past its end"),
    ("webserver.listen_port=http", "(set by -o webserver.listen_port=http)"),
    ("priority=loud", "(set by -o priority=loud)"),
    ("a..b=1", "-o a..b=1: '' in the key is not a name"),
])
def test_a_bad_override_is_refused_naming_it(tmp_path: Path, override: str, says: str) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    config = tmp_path / "falconet.yaml"
    config.write_text(base_config(tmp_path, rules))
    done = subprocess.run(
        [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(config), "--source", "replay:/dev/null",
         "-o", override],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1
    assert says in done.stderr, done.stderr
