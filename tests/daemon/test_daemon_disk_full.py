"""Issue 10, defect 6: shutting down with the file output's disk full does not crash the daemon.

A tmpfs of a few KiB, mounted by the test and filled to the last byte, holds the file output: every write fails
(counted), the final flush at close raises ENOSPC, and the daemon says so in one line, exits normally and
removes its socket.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import TEST_RULES, open_event


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tiny tmpfs with no byte left (root only: it mounts)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full test mounts a tmpfs and needs root (CI runs as root)")
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        (mount / "alerts.txt").touch()  # the output's file exists before the disk fills
        with open(mount / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_at_shutdown_is_reported_and_the_daemon_exits_cleanly(
    tmp_path: Path, full_disk: Path, start_daemon: Any
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    sock = tmp_path / "falconet.sock"
    config = f"""
rules_files: [{rules}]
json_output: false
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {full_disk / 'alerts.txt'}}}
grpc:
  enabled: true
  bind_address: ["unix://{sock}"]
grpc_output: {{enabled: true}}
webserver: {{enabled: false}}
"""
    daemon, fifo = start_daemon(config)
    assert sock.is_socket()
    fifo.send(*[open_event(i, "/etc/shadow") for i in range(1, 4)])
    fifo.close()  # the end of the replay: the daemon shuts down
    status = daemon.wait()
    err = daemon.stderr()
    assert "Traceback" not in err, err
    assert status == 0, err
    assert "the file output could not be closed cleanly" in err and "No space left on device" in err, err
    assert not sock.exists()
    assert (full_disk / "alerts.txt").stat().st_size == 0
