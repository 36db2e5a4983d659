"""The daemon in this process, for what a subprocess cannot show: an engine failing on one event, and a kernel
that drops on demand (the live tests force real drops with a tiny ring buffer; this one checks the actions)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daemon_harness import TEST_RULES, base_config, open_event, read_json_lines

from falconet.model.alert import Alert
from falconet.model.audit import AuditEvent
from falconet.model.event import Event
from falconet.model.prefilter import EventGate
from falconet.server.daemon import DROP_RULE, ENGINE_ERROR_RULE, Daemon, build_engine
from falconet.server.daemon_config import DaemonConfig, load_config, parse_config
from falconet.server.outputs import close_all
from falconet.server.source import KernelFilter, SourceCounters


class _FailsOnSecond:
    """The real engine, except that it raises on event 2 (stands in for an engine bug on an odd event)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.event_types = engine.event_types
        self.load_result = engine.load_result

    @property
    def enabled_rules(self) -> list[object]:
        return list(self.engine.enabled_rules)

    def process(self, event: Event | AuditEvent) -> list[Alert]:
        if event.num == 2:
            raise KeyError("boom")
        result: list[Alert] = self.engine.process(event)
        return result

    def open_path_prefixes(self) -> dict[str, list[str]] | None:
        prefixes: dict[str, list[str]] | None = self.engine.open_path_prefixes()
        return prefixes

    def open_path_blockers(self) -> list[str]:
        blockers: list[str] = self.engine.open_path_blockers()
        return blockers

    def buffer_event_types(self) -> frozenset[str] | None:
        types: frozenset[str] | None = self.engine.buffer_event_types()
        return types

    def reads_environment(self) -> bool:
        return bool(self.engine.reads_environment())

    def event_gates(self, names: Iterable[str]) -> dict[str, EventGate]:
        gates: dict[str, EventGate] = self.engine.event_gates(names)
        return gates


def test_an_event_the_engine_fails_on_is_counted_and_reported_and_the_rest_still_alert(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    capture = tmp_path / "capture.jsonl"
    capture.write_text("".join(json.dumps(open_event(i, "/etc/shadow", pid=100 + i)) + "\n" for i in (1, 2, 3)))
    config = parse_config(base_config(tmp_path, rules), base_dir=tmp_path)
    stderr = io.StringIO()

    def failing_engine(config: DaemonConfig, hostname: str) -> _FailsOnSecond:
        return _FailsOnSecond(build_engine(config, hostname))

    daemon = Daemon(config, source=f"replay:{capture}", stderr=stderr, build_engine=failing_engine)
    daemon.prepare()
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


class _DroppingSource:
    """Stands in for the kernel: no events, and 10 more ring-buffer drops each time it is asked."""

    name = "fake"

    def __init__(self) -> None:
        self.drops = 0
        self._idle = threading.Event()

    def start(self) -> None: ...
    def kernel_filter(self) -> KernelFilter | None:
        return None

    def poll(self, timeout_ms: int) -> list[Event] | None:
        self._idle.wait(timeout_ms / 1000)  # a poll with nothing to read lasts its timeout, as the sensor's does
        return []

    def counters(self) -> SourceCounters:
        self.drops += 10
        return SourceCounters(1000, self.drops)

    def close(self) -> None: ...


def test_kernel_drops_alert_once_per_the_drop_rate_log_and_exit_when_configured(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    text = base_config(tmp_path, rules) + "syscall_event_drops: {actions: [log, alert, exit], rate: 0.01, max_burst: 1}\n"
    stderr = io.StringIO()
    daemon = Daemon(parse_config(text, base_dir=tmp_path), source=_DroppingSource(), stderr=stderr)
    daemon.prepare()
    assert asyncio.run(daemon._main()) == 1  # the exit action
    drops = [a for a in read_json_lines(tmp_path / "alerts.json") if a["rule"] == DROP_RULE]
    assert len(drops) == 1  # the tick after the first also saw drops, but the drop alert's rate allows one
    assert drops[0]["source"] == "internal" and drops[0]["priority"] == "Debug"
    assert drops[0]["output"] == "Falco internal: syscall event drop. 10 system calls dropped in last second."
    assert drops[0]["output_fields"]["n_drops"] == "10" and drops[0]["output_fields"]["n_evts"] == "1010"
    log = stderr.getvalue()
    assert log.count("Falco internal: syscall event drop. 10 system calls dropped in last second.") == 2
    assert "exiting: syscall_event_drops.actions includes exit" in log
    assert daemon.metrics.kernel_drops == 20


class _UndecodableSource(_DroppingSource):
    """No ring-buffer drop, but 3 more records each time that user space could not decode (malformed)."""

    def counters(self) -> SourceCounters:
        self.drops += 3
        return SourceCounters(500, 0, self.drops)


def test_records_user_space_could_not_decode_are_reported_as_drops_not_lost_silently(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    text = base_config(tmp_path, rules) + "syscall_event_drops: {actions: [alert, exit], rate: 0.01, max_burst: 1}\n"
    daemon = Daemon(parse_config(text, base_dir=tmp_path), source=_UndecodableSource(), stderr=io.StringIO())
    daemon.prepare()
    assert asyncio.run(daemon._main()) == 1
    drops = [a for a in read_json_lines(tmp_path / "alerts.json") if a["rule"] == DROP_RULE]
    assert len(drops) == 1
    fields = drops[0]["output_fields"]
    assert (fields["n_drops"], fields["n_drops_bug"], fields["n_drops_buffer_total"]) == ("3", "3", "0")
    assert daemon.metrics.undecoded_records == 6 and daemon.metrics.kernel_drops == 0  # the exit tick and the last


def test_a_reload_builds_everything_before_the_swap_and_a_failed_one_leaves_the_running_set(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    config_path = tmp_path / "falconet.yaml"
    config_path.write_text(base_config(tmp_path, rules))
    stderr = io.StringIO()
    daemon = Daemon(load_config(config_path), source=_DroppingSource(), config_path=config_path, stderr=stderr)
    daemon.prepare()
    first = daemon.running
    try:
        # A rule that does not compile: nothing of the new set may replace the running one.
        rules.write_text(TEST_RULES.replace("fd.name = /etc/shadow", "fd.name = (/etc/shadow"))
        assert daemon.reload() is False
        assert daemon.running is first
        assert daemon.metrics.rules_reload_failures == 1 and daemon.metrics.rules_reloads == 0
        # A file output that cannot be opened fails the build the same way, after the rules compiled.
        rules.write_text(TEST_RULES)
        config_path.write_text(base_config(tmp_path, rules).replace(
            str(tmp_path / "alerts.json"), str(tmp_path / "no-such-dir" / "alerts.json")))
        assert daemon.reload() is False
        assert daemon.running is first
        assert "cannot be opened for appending" in stderr.getvalue()
        # A good file: config, engine, outputs and limiters are replaced together.
        config_path.write_text(base_config(tmp_path, rules, rule_matching="all"))
        assert daemon.reload() is True
        second = daemon.running
        assert second.config.rule_matching == "all" and second.engine is not first.engine
        assert second.outputs and second.limiter is not first.limiter
    finally:
        close_all(daemon.running.outputs, 5.0)
