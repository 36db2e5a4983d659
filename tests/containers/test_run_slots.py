"""Two test runs at once on one machine: each has its own dockerd, and never touches one it did not start.

Real flocks, real processes standing for someone else's dockerd (their pid in the slot's pidfile), and a real
second dockerd beside this run's (what a second run's fixture starts)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from container_images import IMAGE_REF
from container_runtimes import RUN_LIMITS, Dockerd, RuntimeStartError, label
from resources import missing, require_root
from run_slots import NoFreeSlot, RunSlot, pid_alive


def _slot_with_pidfile(pid: int) -> int:
    """A free slot whose docker.pid now names `pid`, released again (as a killed run would leave it)."""
    slot = RunSlot.claim()
    slot.docker_pidfile.write_text(f"{pid}\n")
    slot.release()
    return slot.index


def _clear_pidfile(index: int) -> None:
    slot = RunSlot.claim(index)
    slot.docker_pidfile.unlink(missing_ok=True)
    slot.release()


@pytest.mark.root
def test_a_slot_whose_pidfile_names_a_live_process_is_never_claimed_and_never_signalled() -> None:
    require_root("claiming a slot under /run")
    sleeper = subprocess.Popen(["sleep", "600"])  # stands for a dockerd this run did not start
    index = _slot_with_pidfile(sleeper.pid)
    try:
        with pytest.raises(NoFreeSlot):
            RunSlot.claim(index)
        other = RunSlot.claim()
        assert other.index != index
        other.release()
        assert sleeper.poll() is None  # not signalled by any of it
    finally:
        sleeper.kill()
        sleeper.wait(10)
    # Its process gone (as a dead dockerd's would be), the slot is free again.
    _clear_pidfile(index)


@pytest.mark.root
def test_a_dead_or_zombie_pid_in_the_pidfile_frees_the_slot() -> None:
    """This sandbox's pid 1 leaves orphans unreaped: a killed dockerd stays a zombie, which must not hold its
    slot forever."""
    require_root("claiming a slot under /run")
    child = subprocess.Popen(["true"])  # exits; unreaped until wait(): a zombie
    deadline = time.monotonic() + 10
    while pid_alive(child.pid):
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    assert Path(f"/proc/{child.pid}").exists()  # still there, as a zombie
    index = _slot_with_pidfile(child.pid)
    try:
        RunSlot.claim(index).release()
    finally:
        child.wait(10)
        _clear_pidfile(index)


@pytest.mark.root
def test_dockerd_refuses_to_start_over_a_live_pidfile_it_did_not_write() -> None:
    """Even in a slot it holds (a claim racing a hand-started dockerd): the fixture starts nothing, signals
    nothing, and says whose pid it found."""
    require_root("claiming a slot under /run")
    if shutil.which("dockerd") is None:
        missing("dockerd is not installed (make setup installs Debian's docker.io)")
    slot = RunSlot.claim()
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        slot.docker_pidfile.write_text(f"{sleeper.pid}\n")
        d = Dockerd(slot)
        with pytest.raises(RuntimeStartError, match=f"live process {sleeper.pid}, which this run did not start"):
            d.start()
        assert d.proc is None and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait(10)
        slot.docker_pidfile.unlink(missing_ok=True)
        slot.release()


@pytest.mark.containers
def test_a_second_runs_dockerd_beside_this_ones_shares_nothing(dockerd: Dockerd) -> None:
    """What a second test run's fixture does while this run's dockerd serves: its own slot, socket, pidfile,
    exec-root and data-root; its containers invisible here; its stop (with its cleanup) leaves this run's
    dockerd and containers running."""
    mine = f"fnt-slot-mine-{uuid.uuid4().hex[:8]}"
    dockerd.cli("run", "-d", "--name", mine, "--label", label(), "--network", "none", *RUN_LIMITS, IMAGE_REF)
    slot = RunSlot.claim()
    second = Dockerd(slot)
    try:
        assert slot.index != dockerd.slot.index
        paths = ("socket", "pidfile", "exec_root", "data_root", "log")
        assert all(getattr(second, p) != getattr(dockerd, p) for p in paths)
        second.start()
        second.ensure_image()
        theirs = f"fnt-slot-theirs-{uuid.uuid4().hex[:8]}"
        second.cli("run", "-d", "--name", theirs, "--label", slot.label, "--network", "none", *RUN_LIMITS,
                   IMAGE_REF)
        assert second.proc is not None and dockerd.proc is not None and second.proc.pid != dockerd.proc.pid
        assert theirs not in dockerd.cli("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert mine not in second.cli("ps", "-a", "--format", "{{.Names}}").stdout.split()
    finally:
        second.stop()
        slot.release()
    try:
        assert dockerd.up()
        assert dockerd.cli("inspect", "--format", "{{.State.Running}}", mine).stdout.strip() == "true"
    finally:
        dockerd.cli("rm", "-f", mine, check=False)
