"""The daemon in this process, for what a subprocess cannot show: an engine failing on one event."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from daemon_harness import TEST_RULES, base_config, open_event, read_json_lines

from falconet.rules.alert import Alert
from falconet.rules.event import Event
from falconet.server.daemon import ENGINE_ERROR_RULE, Daemon
from falconet.server.daemon_config import parse_config


class _FailsOnSecond:
    """The real engine, except that it raises on event 2 (stands in for an engine bug on an odd event)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.event_types = engine.event_types

    def process(self, event: Event) -> list[Alert]:
        if event.num == 2:
            raise KeyError("boom")
        result: list[Alert] = self.engine.process(event)
        return result


def test_an_event_the_engine_fails_on_is_counted_and_reported_and_the_rest_still_alert(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    capture = tmp_path / "capture.jsonl"
    capture.write_text("".join(json.dumps(open_event(i, "/etc/shadow", pid=100 + i)) + "\n" for i in (1, 2, 3)))
    config = parse_config(base_config(tmp_path, rules), base_dir=tmp_path)
    stderr = io.StringIO()
    daemon = Daemon(config, source=f"replay:{capture}", stderr=stderr)
    daemon.prepare()
    daemon.engine = _FailsOnSecond(daemon.engine)
    assert asyncio.run(daemon._main()) == 0, stderr.getvalue()
    alerts = read_json_lines(tmp_path / "alerts.json")
    assert [(a["rule"], a["output_fields"].get("proc.name")) for a in alerts if a["source"] == "syscall"] == [
        ("Test shadow read", "cat"), ("Test shadow read", "cat")
    ]
    (report,) = [a for a in alerts if a["source"] == "internal"]
    assert report["rule"] == ENGINE_ERROR_RULE
    assert report["output_fields"]["n_failed"] == 1
    assert report["output_fields"]["last_error"] == "KeyError: 'boom' (event 2, openat)"
    assert daemon.metrics.engine_errors == 1
    assert "the engine failed on 1 events" in stderr.getvalue()
