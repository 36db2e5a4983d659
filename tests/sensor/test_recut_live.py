"""The record cuts (sensor/recut.py, probe_recut.h) change no event and no alert: as root, two real sensors at
once, set up as the daemon sets them up for the default rules (event types, open filter, event gates, the
user-space open gate), one with the cuts and one without, watch one workload. The workload makes every kind of
record the cuts keep in the kernel (failed opens of paths rules look for, absolute and relative, failed closes,
dups, fcntls and chdirs, fcntl commands that change no fd, a fork's record in the parent) around the records
they must not touch (an fcntl F_DUPFD and F_SETFD of a sensitive file's fd, dup2 of it in a forked child, a
relative open after a chdir), and the events of its processes, and the default rules' alerts on them, must be
the same from both sensors, while the sensor with the cuts read fewer records."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from falconet.model.event import Event
from falconet.rules import DEFAULT_RULES
from falconet.rules.engine import Engine
from falconet.sensor import SensorConfig
from falconet.sensor.recut import FAIL_INERT

from .conftest import PY, LiveSensor, start_or_skip

pytestmark = pytest.mark.bpf

WORKLOAD = """
import fcntl, os, sys
base, token = sys.argv[1], sys.argv[2]
os.chdir(base)
def attempt(call, *args):
    try:
        return call(*args)
    except OSError:
        return None
for name in ("/root/.ssh/id_rsa-" + token, "/etc/shadow-" + token, "id_rsa", ".bashrc", "sub/x.h", "../nothere"):
    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_TRUNC):
        attempt(os.open, name, flags)
attempt(os.close, 4321)
attempt(fcntl.fcntl, 4321, fcntl.F_GETFL)
attempt(os.dup2, 4321, 40)
attempt(os.chdir, "/nonexistent-" + token)
fd = os.open("/etc/shadow", os.O_RDONLY)
for cmd in (fcntl.F_GETFL, fcntl.F_GETFD):
    fcntl.fcntl(fd, cmd)
fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
high = fcntl.fcntl(fd, fcntl.F_DUPFD, 700)  # above the fds a test process's table may hold
fcntl.fcntl(high, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
os.mkdir("sub")
os.chdir("sub")
rel = os.open("keyfile-" + token, os.O_WRONLY | os.O_CREAT, 0o600)
pid = os.fork()
if pid == 0:
    os.dup2(high, 7)
    os.dup2(rel, 8)
    os.read(7, 1)
    os.execv("/bin/true", ["/bin/true", "child-" + token])
os.waitpid(pid, 0)
os.close(high)
os.close(fd)
os.execv("/bin/true", ["/bin/true", "end-" + token])
"""


def _config(cuts: bool, types: frozenset[str] | None) -> SensorConfig:
    return SensorConfig(ringbuf_bytes=16 << 20, syscalls=set(types) if types is not None else None,
                        record_cuts=cuts)


@contextmanager
def _pair(engine: Engine) -> Iterator[tuple[LiveSensor, LiveSensor]]:
    """Two live sensors set up as the daemon sets one up for `engine`'s rules: without and with the cuts."""
    types = engine.event_types
    sensors: list[LiveSensor] = []
    try:
        for cuts in (False, True):
            live = LiveSensor(start_or_skip(_config(cuts, types)))
            sensors.append(live)
            s = live.sensor
            s.set_open_prefixes(engine.open_path_prefixes())  # as server.pipeline.apply_open_filter
            gate = engine.open_gate()
            s.enricher.open_gate = gate.may_match
            s.enricher.fd_type_gate = gate.fd_type_may_match
            s.set_event_gates(engine.event_gates(sorted(types or ())))
        yield sensors[0], sensors[1]
    finally:
        for live in sensors:
            live.close()


def _view(e: Event) -> tuple[object, ...]:
    fd = e.fd
    p = e.proc
    return (e.type, e.res, e.tid, tuple(sorted((k, repr(v)) for k, v in e.args.items())),
            None if fd is None else (fd.num, fd.type, fd.name, fd.flags), p.pid, p.name, p.exe, p.exepath,
            p.cwd, tuple(p.args), p.user.uid, p.parent.pid if p.parent else None)


def test_the_cuts_change_no_event_and_no_alert(tmp_path: Path) -> None:
    engine = Engine.from_files([str(DEFAULT_RULES)])
    with _pair(engine) as (plain, cut):
        alerts, cut_count = _compare(engine, plain, cut, tmp_path)
    assert "Read sensitive authentication file" in {rule for rule, _ in alerts}  # the workload is seen, matched
    assert cut_count >= 20  # 12 failed opens and the other cut kinds at least


FAILURE_RULES = """
- rule: failed open
  desc: a failed open (the cut of failed opens must not apply)
  condition: evt.type = openat and evt.rawres < 0 and fd.name startswith /etc/shadow-
  output: failed %fd.name %evt.res
  priority: WARNING
- rule: fcntl of a key
  desc: fcntl delivered (no command may be cut)
  condition: evt.type = fcntl and fd.name = /etc/shadow
  output: fcntl %evt.args
  priority: WARNING
- rule: fork
  desc: the parent's fork record delivered
  condition: evt.type = clone and evt.rawres > 0 and proc.name = python
  output: fork %evt.res
  priority: WARNING
- rule: failed dup
  desc: a failed dup2
  condition: evt.type = dup2 and evt.failed = true
  output: dup2 %evt.res
  priority: WARNING
- rule: exec
  desc: no alert, delivers the execs that end the workload
  condition: evt.type = execve and proc.name = nothing-is-called-this
  output: exec
  priority: WARNING
"""


def test_rules_on_what_the_cuts_would_keep_back_still_see_it(tmp_path: Path) -> None:
    engine = Engine.from_texts([("failures.yaml", FAILURE_RULES)])
    with _pair(engine) as (plain, cut):
        alerts, _cut_count = _compare(engine, plain, cut, tmp_path)
    got = {rule for rule, _ in alerts}
    assert got == {"failed open", "fcntl of a key", "fork", "failed dup"}, got
    assert sum(rule == "fcntl of a key" for rule, _ in alerts) >= 5  # every command, F_GETFL included


def _compare(engine: Engine, plain: LiveSensor, cut: LiveSensor, tmp_path: Path) -> tuple[list[tuple[str, str]], int]:
    """Runs the workload once under both sensors; checks what the cut sensor delivered against the plain one's;
    returns the alerts (the same from both) and the records the cut sensor cut meanwhile."""
    token = uuid.uuid4().hex[:10]

    def workload() -> int:
        proc = subprocess.Popen([PY, "-c", WORKLOAD, str(tmp_path), token])
        assert proc.wait(timeout=60) == 0
        return proc.pid

    def keep(pid: int, e: Event) -> bool:
        return e.proc.pid == pid or e.proc.ppid == pid

    def done(kept: list[Event]) -> bool:
        return any(e.type == "execve" and f"end-{token}" in e.args.get("args", []) for e in kept)

    stats0 = [live.sensor.stats() for live in (plain, cut)]
    for live in (plain, cut):
        live.take()  # what arrived before this workload is not about it
    pid = workload()
    got: list[list[Event]] = [[], []]
    deadline = time.monotonic() + 30
    while not all(done(events) for events in got) and time.monotonic() < deadline:
        for live, events in zip((plain, cut), got, strict=True):
            events.extend(e for e in live.take() if keep(pid, e))
    drops = [live.sensor.stats().kernel_drops for live in (plain, cut)]
    assert all(done(events) for events in got), f"the workload's end did not arrive (kernel drops {drops})"
    stats1 = [live.sensor.stats() for live in (plain, cut)]
    # Every event the cut sensor delivered is the plain sensor's, field for field (the tables agree), in order;
    # the plain sensor's others are failed calls the cuts may keep back, and no rule matches them.
    views = [[_view(e) for e in events] for events in got]
    missing: list[Event | None] = list(got[0])
    at = 0
    for view in views[1]:
        while at < len(views[0]) and views[0][at] != view:
            at += 1
        assert at < len(views[0]), f"an event of the cut sensor the plain one lacks: {view}"
        missing[at] = None
        at += 1
    left = [e for e in missing if e is not None]
    assert all(e.res < 0 and e.type in FAIL_INERT for e in left), [_view(e) for e in left]
    assert not [a for e in left for a in engine.process(e)]
    alerts = [[(a.rule, a.output) for e in events for a in engine.process(e)] for events in got]
    assert alerts[0] == alerts[1]
    assert stats1[0].cut == stats0[0].cut == 0
    return alerts[0], stats1[1].cut - stats0[1].cut
