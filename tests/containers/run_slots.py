"""One test run's own place for its container runtimes, so that runs on one machine at once never meet.

Two runs of tests/containers (two worktrees, a developer's run beside CI's) used to share one dockerd
(socket, pidfile, exec-root and data-root at fixed paths): the second run's fixture stopped the first run's
dockerd, and each run's cleanup removed the other's containers. Now each run claims a numbered slot with an
exclusive flock on RUN_ROOT/slot-N/lock, held by this process until it exits (the kernel drops the lock when
the process dies, however it dies). Everything of a runtime lives in its slot: the dockerd socket, pidfile,
exec-root (with the containerd dockerd starts) and log under RUN_ROOT/slot-N, its data-root under
DATA_ROOT/slot-N, the Podman API socket, the label value on every container and network the run creates
(`falconet-test=slotN`), and the documentation-range subnets its network tests create (Podman's networks
are host-wide, so two runs must not ask for the same one).

Why slots rather than a fresh directory per run: the data-root keeps the imported images, so the next run
in the same slot (a run after a run, the usual case) finds them there, as a single shared data-root did;
only a run beside another pays one `docker import` into the second slot's data-root, once per slot.

A slot whose dockerd pidfile names a live process is never claimed, so a run never signals, reuses or
cleans a dockerd it did not start (an orphan still shutting down, one started by hand); the run takes the
next slot. Once claimed, what the slot still holds (containers, networks and label of a run that was killed)
is this run's to remove: no live run can own it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

RUN_ROOT = Path(os.environ.get("FALCONET_TEST_RUN", "/run/falconet-test"))
DATA_ROOT = Path(os.environ.get("FALCONET_TEST_ROOT", "/var/lib/falconet-test"))
LABEL_KEY = "falconet-test"
MAX_SLOTS = 14
"""Each slot gets two /29 subnets of 198.51.100.0/24 from .16 on: 14 slots fill it."""


class NoFreeSlot(Exception):
    """Every slot is held by a live run or has a live dockerd of someone else's in it."""


def pid_alive(pid: int) -> bool:
    """A process exists and is not a zombie (this sandbox's pid 1 leaves orphans unreaped: a dead dockerd's
    pid stays in /proc as a zombie, and must not keep its slot busy forever)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class RunSlot:
    """A claimed slot: its paths, label and subnets. Released when `release()` runs or the process exits."""

    index: int
    lock_fd: int

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / f"slot-{self.index}"

    @property
    def data_dir(self) -> Path:
        return DATA_ROOT / f"slot-{self.index}"

    @property
    def docker_pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def label(self) -> str:
        """`key=value` for `--label` and `--filter label=`: marks what this run (this slot) created."""
        return f"{LABEL_KEY}=slot{self.index}"

    def subnet(self, kind: str) -> str:
        """A /29 of 198.51.100.0/24 (a documentation range) for `kind`'s ("docker" or "podman") test network."""
        base = 16 + 16 * self.index + (8 if kind == "podman" else 0)
        return f"198.51.100.{base}/29"

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    @classmethod
    def claim(cls, index: int | None = None) -> RunSlot:
        """The first free slot (or slot `index` only): locked, and with no live dockerd of anyone else's."""
        for i in range(MAX_SLOTS) if index is None else (index,):
            slot = cls._try(i)
            if slot is not None:
                return slot
        raise NoFreeSlot(f"no free slot under {RUN_ROOT} (each is held by a live run, or its docker.pid names a "
                         f"live process this run did not start)")

    @classmethod
    def _try(cls, i: int) -> RunSlot | None:
        run_dir = RUN_ROOT / f"slot-{i}"
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        slot = cls(i, fd)
        if slot.foreign_dockerd() is not None:
            slot.release()
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return slot

    def foreign_dockerd(self) -> int | None:
        """The live process the slot's docker.pid names, if any: never ours at claim time, so never touched."""
        try:
            pid = int(self.docker_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None


_this_run: RunSlot | None = None


def run_slot() -> RunSlot:
    """This process's slot, claimed on first use (not at import: collecting the tests needs no root)."""
    global _this_run
    if _this_run is None:
        _this_run = RunSlot.claim()
    return _this_run
