"""The engine thread yields the CPU while it keeps up and competes once it falls behind (server/daemon_sched.py).

The daemon runs in this process with a source that stands in for the kernel: each poll, on the engine thread,
reads that thread's real nice value from the kernel and hands the engine a batch whose age the test chooses."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_harness import TEST_RULES, base_config
from resources import require_root

from falconet.model.event import Event, Process, User
from falconet.server.daemon import Daemon
from falconet.server.daemon_config import ConfigError, parse_config
from falconet.server.daemon_sched import BEHIND_EVENTS, CAUGHT_UP_NS, YIELD_NICE, may_return_to_nice_0
from falconet.server.source import KernelFilter, SourceCounters


FRESH = -1_000_000_000
"""An age for a batch that must count as young however late the engine thread gets to it: stamped a second
ahead, so no scheduling delay on a loaded machine can make it look older than CAUGHT_UP_NS."""
LATE = 10_000_000_000


def _events(n: int, age_ns: int) -> list[Event]:
    """n events whose first happened age_ns ago (wall clock, as the sensor stamps them)."""
    proc = Process(pid=4242, ppid=1, name="cat", exe="cat", exepath="/usr/bin/cat", user=User(0, "root"))
    ts = time.time_ns() - age_ns
    return [Event(num=i, ts=ts + i, type="close", tid=4242, res=0, proc=proc) for i in range(n)]


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class _ScriptedSource:
    """A live source (not `replay`) that serves `script`'s batches one per poll, then ends the daemon, and notes
    the engine thread's nice value at each poll (before that poll's batch reaches the engine)."""

    name = "scripted"

    def __init__(self, script: list[tuple[int, int]]) -> None:
        """script: (events, age of the first in ns) per poll; stamped when polled."""
        self.script = script
        self.seen: list[int] = []

    def start(self) -> None: ...

    def kernel_filter(self) -> KernelFilter | None:
        return None

    def poll(self, timeout_ms: int) -> list[Event] | None:
        self.seen.append(_nice_of_this_thread())
        return _events(*self.script.pop(0)) if self.script else None

    def counters(self) -> SourceCounters:
        return SourceCounters(0, 0)

    def close(self) -> None: ...


def _run(tmp_path: Path, source: _ScriptedSource, extra: str = "") -> Daemon:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    stderr = io.StringIO()
    daemon = Daemon(parse_config(base_config(tmp_path, rules) + extra, base_dir=tmp_path), source=source,
                    stderr=stderr)
    daemon.prepare()
    assert asyncio.run(daemon._main()) == 0, stderr.getvalue()
    return daemon


def test_the_engine_thread_yields_while_it_keeps_up_and_competes_when_behind(tmp_path: Path) -> None:
    require_root("setting a thread's nice value back to 0")
    source = _ScriptedSource([
        (5, FRESH),                  # keeping up: still yielding
        (5, LATE),                   # the oldest event is older than BEHIND_NS: compete
        (5, CAUGHT_UP_NS + 1_000_000),  # not yet caught up (any delay only ages it): stays competing
        (5, FRESH),                  # caught up: yield again
        (BEHIND_EVENTS, FRESH),      # a backlog, however young: compete
        (5, FRESH),
    ])
    daemon = _run(tmp_path, source, f"sensor: {{engine_nice: {YIELD_NICE}}}\n")
    assert source.seen == [YIELD_NICE, YIELD_NICE, 0, 0, YIELD_NICE, 0, YIELD_NICE]
    assert daemon.engine_nice.switches == 5  # start, behind, caught up, backlog, caught up
    assert _nice_of_this_thread() == 0  # only the engine thread was ever changed


def test_by_default_and_with_engine_nice_0_the_thread_never_yields(tmp_path: Path) -> None:
    for extra in ("", "sensor: {engine_nice: 0}\n"):
        source = _ScriptedSource([(5, FRESH), (5, LATE), (5, FRESH)])
        _run(tmp_path, source, extra)
        assert source.seen == [0, 0, 0, 0]


def test_a_configured_nice_value_is_the_one_used(tmp_path: Path) -> None:
    require_root("setting a thread's nice value back to 0")
    source = _ScriptedSource([(5, FRESH), (5, LATE)])
    _run(tmp_path, source, "sensor: {engine_nice: 3}\n")
    assert source.seen == [3, 3, 0]


def test_engine_nice_outside_0_to_19_is_a_clear_config_error(tmp_path: Path) -> None:
    for bad, words in (("20", "from 0 to 19, got 20"), ("-1", "at least 0"), ("'high'", "at least 0")):
        with pytest.raises(ConfigError) as err:
            parse_config(f"sensor: {{engine_nice: {bad}}}\n", base_dir=tmp_path)
        assert words in str(err.value)
        assert "engine_nice" in str(err.value)


def test_without_the_right_to_come_back_to_0_the_thread_never_yields() -> None:
    """A thread that could not return to nice 0 once behind would lose events: so it does not yield at all.
    Run as an unprivileged user (nobody), who may raise a nice value but not lower it."""
    require_root("switching to another user")
    code = ("from falconet.server.daemon_sched import EngineNice; import os, threading; e = EngineNice(10); "
            "e.start(); print(e.nice, e.yielding, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))")
    done = subprocess.run([sys.executable, "-c", code], user=65534, group=65534, extra_groups=[],
                          capture_output=True, text=True, cwd="/", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "False", "0"]  # configured 10; never yielded; the kernel agrees


def test_only_cap_sys_nice_or_rlimit_nice_allows_coming_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (0, 0))  # the usual RLIMIT_NICE
    assert may_return_to_nice_0("CapEff:\t0000000000800000\n")  # bit 23 alone
    assert not may_return_to_nice_0("CapEff:\t000001ffff7fffff\n")  # everything but CAP_SYS_NICE
    assert not may_return_to_nice_0("Name:\tx\n")
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (20, 20))  # nice may go down to 20 - 20 = 0
    assert may_return_to_nice_0("CapEff:\t0000000000000000\n")


def test_the_poll_interval_reaches_the_sensor_and_a_change_needs_a_restart(tmp_path: Path) -> None:
    """sensor.poll_interval_ms (sensor/wakeup.py): how often the engine thread reads while events keep coming."""
    from falconet.server.reload import restart_needed
    from falconet.server.source_ebpf import SensorSource

    default = parse_config("", base_dir=tmp_path)
    assert default.poll_interval_ms == 1
    config = parse_config("sensor: {poll_interval_ms: 7}\n", base_dir=tmp_path)
    source = SensorSource(config.ring_buffer_bytes, None, config.snaplen, config.poll_interval_ms)
    assert source._sensor.config.poll_interval_ms == 7
    assert restart_needed(default, config) and not restart_needed(config, config)


def test_a_poll_interval_outside_0_to_1000_ms_is_a_clear_config_error(tmp_path: Path) -> None:
    assert parse_config("sensor: {poll_interval_ms: 0}\n", base_dir=tmp_path).poll_interval_ms == 0  # 0: off
    for bad, words in (("-1", "at least 0"), ("1001", "at most 1000"), ("'soon'", "at least 0")):
        with pytest.raises(ConfigError) as err:
            parse_config(f"sensor: {{poll_interval_ms: {bad}}}\n", base_dir=tmp_path)
        assert words in str(err.value) and "poll_interval_ms" in str(err.value)
