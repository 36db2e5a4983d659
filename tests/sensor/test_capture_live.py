"""`falconet capture` keeps its tail: a burst right before the stop is in the file, every record of it.

A poll takes at most POLL_BATCH (4,096) records, so a capture that ended with one last poll lost whatever else
the kernel still held. Here a child makes 20,000 opens of paths carrying a marker, exits, and the capture is
stopped at once (SIGTERM) while most of the burst is still in the ring buffer; the file must hold exactly
20,000 events with the marker.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from falconet.sensor.sensor import POLL_BATCH

from resources import require_root

pytestmark = [pytest.mark.bpf, pytest.mark.root]

BURST = 20_000


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> None:
    """Reads the capture's stderr until its ready line (the sensor is live then)."""
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    seen = ""
    deadline = time.monotonic() + timeout
    while "capturing" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            pytest.fail(f"capture never became ready: {seen!r}")
        if sel.select(left):
            seen += proc.stderr.readline()
    sel.close()


def test_a_burst_right_before_stop_is_captured_whole(tmp_path: Path) -> None:
    require_root("the live capture")
    assert BURST > POLL_BATCH  # otherwise this would not test the drain
    marker = f"falconet-tail-{uuid.uuid4().hex}"
    out = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "falconet.server.cli", "capture", "-w", str(out), "-s", "openat",
           "--ringbuf-bytes", str(64 << 20)]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(proc, timeout=120)
        burst = (
            "import os\n"
            f"for i in range({BURST}):\n"
            "    try:\n"
            f"        os.open('/tmp/{marker}/missing-%d' % i, os.O_RDONLY)\n"
            "    except FileNotFoundError:\n"
            "        pass\n"
        )
        subprocess.run([sys.executable, "-c", burst], check=True, timeout=120)
        os.kill(proc.pid, signal.SIGTERM)  # right after the burst: most of it is still in the kernel
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "kernel drops 0" in err, err  # a drop would be the ring's size, not the drain
    names: set[str] = set()
    prefix = f"/tmp/{marker}/missing-"
    with out.open(encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            name = event.get("args", {}).get("name")
            if event["type"] == "openat" and isinstance(name, str) and name.startswith(prefix):
                names.add(name)
    assert len(names) == BURST, f"{len(names)} of {BURST} opens captured"


def test_drops_are_reported_while_capturing(tmp_path: Path) -> None:
    """A one-page ring buffer under a tight open loop loses events: the capture says so on stderr while it
    runs (what a reader of the file, or a test retrying a dropped action, needs), and again when it stops."""
    require_root("the live capture")
    cmd = [sys.executable, "-m", "falconet.server.cli", "capture", "-w", str(tmp_path / "events.jsonl"),
           "-s", "openat", "--ringbuf-bytes", "4096"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    load: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(proc, timeout=120)
        load = subprocess.Popen(
            [sys.executable, "-c", "import os\nwhile True:\n    os.close(os.open('/etc/hostname', os.O_RDONLY))"]
        )
        assert proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        line, deadline = "", time.monotonic() + 60
        while "falconet capture: kernel drops" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                pytest.fail(f"no drop reported while capturing; last line {line!r}")
            if sel.select(left):
                line = proc.stderr.readline()
        sel.close()
        total = int(line.split("kernel drops ")[1].split()[0])
        assert total > 0 and f"(+{total})" in line  # the first report: everything lost so far is new
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if load is not None:
            load.kill()
            load.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    closing = err.strip().splitlines()[-1]
    assert closing.startswith("captured ") and int(closing.rsplit(" ", 1)[1]) >= total, err
