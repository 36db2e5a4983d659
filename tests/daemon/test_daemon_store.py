"""The daemon's alert store (`alert_store` in the config, `--store`/`--no-store` on `falconet run`): sequences,
epoch and alerts carry over a restart; a store that cannot be written shows in the metrics and an internal
alert while alerts still reach every output and subscriber."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

from daemon_harness import TEST_RULES, DaemonProcess, Fifo, base_config, open_event, read_json_lines, wait_until
import pytest
from prometheus_client.parser import text_string_to_metric_families
from resources import require_root

Start = Callable[..., tuple[DaemonProcess, Fifo]]


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


def _rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(TEST_RULES)
    return path


def test_alerts_and_sequences_carry_over_a_restart(tmp_path: Path, start_daemon: Start) -> None:
    store = tmp_path / "state" / "alerts.db"
    config = base_config(tmp_path, _rules(tmp_path), alert_store=f"{{path: {store}}}")
    daemon, fifo = start_daemon(config)
    fifo.send(open_event(1, "/etc/shadow"), open_event(2, "/etc/shadow", name="less"))
    wait_until(lambda: len(read_json_lines(tmp_path / "alerts.json")) >= 2, what="two alerts")
    m = wait_until(lambda: (v := _metrics(daemon.metrics_url)).get("falconet_store_alerts_committed_total") == 2
                   and v, what="two alerts committed")
    assert m["falconet_store_healthy"] == 1 and m["falconet_store_failures_total"] == 0
    fifo.close()
    assert daemon.wait() == 0
    first = read_json_lines(tmp_path / "alerts.json")
    (tmp_path / "alerts.json").unlink()

    daemon, fifo = start_daemon(config)
    daemon.wait_for_line(r"alert store .*: epoch \w+, 2 alerts, newest 2")
    fifo.send(open_event(3, "/etc/shadow", name="vi"))
    (third,) = wait_until(lambda: read_json_lines(tmp_path / "alerts.json"), what="the third alert")
    assert third["cursor"] == {"epoch": first[0]["cursor"]["epoch"], "sequence": 3}
    fifo.close()
    assert daemon.wait() == 0


@pytest.mark.root
def test_an_unwritable_store_is_reported_and_alerts_still_flow(tmp_path: Path, start_daemon: Start) -> None:
    require_root("mounting a read-only tmpfs")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(readonly)], check=True)
    try:
        config = base_config(tmp_path, _rules(tmp_path))
        daemon, fifo = start_daemon(config, ["--store", str(readonly / "alerts.db")])
        daemon.wait_for_line(r"alert store .*: not usable, alerts kept in memory only")
        fifo.send(open_event(1, "/etc/shadow"))
        alerts = wait_until(lambda: (a := read_json_lines(tmp_path / "alerts.json")) and len(a) >= 2 and a,
                            what="the store failure and the alert in the file output")
        rules = [a["rule"] for a in alerts]
        assert "Falconet internal: alert store failure" in rules and "Test shadow read" in rules
        failure = next(a for a in alerts if a["rule"] == "Falconet internal: alert store failure")
        assert "Read-only file system" in failure["output"] and failure["source"] == "internal"
        m = _metrics(daemon.metrics_url)
        assert m["falconet_store_healthy"] == 0 and m["falconet_store_failures_total"] >= 1
        fifo.close()
        assert daemon.wait() == 0
    finally:
        subprocess.run(["umount", "-l", str(readonly)], capture_output=True)
