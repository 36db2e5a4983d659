"""Real container runtimes for the tests: a dockerd of their own and rootful Podman, started and stopped here.

dockerd runs with `--bridge=none --iptables=false --ip6tables=false --ip-masq=false` (its default 172.17/16
bridge and its iptables rules would change forwarding for every other test), with its socket, pidfile,
exec-root and data-root in this run's slot (run_slots.py: two runs at once each have their own dockerd; the
data-root persists, so the imported image is cached for the slot's next run; its containerd namespace is the
slot's too, so even a containerd shared through /run/containerd/containerd.sock keeps them apart). It is started through
`setpriv --pdeathsig TERM`, so a test run that is killed takes its dockerd down with it instead of leaving it
to hold the slot. Podman runs rootful with `--runtime runc` (Debian's crun 1.8 refuses this hybrid cgroup
layout) and the cgroupfs manager (no systemd here); its storage is the host's (shared by every run, so only
containers labelled with this run's slot are removed); its API exists only while `podman system service`
runs, which `PodmanService` starts on a socket in the slot. Root lacks CAP_SYS_RESOURCE on this machine kind,
so every container gets explicit ulimits (RUN_LIMITS); networks are `none` only.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from container_images import IMAGE_REF, rootfs_tar
from run_slots import LABEL_KEY, RUN_ROOT, RunSlot, run_slot

DOCKER = "/usr/bin/docker"  # Debian's CLI, matching its dockerd (another docker may come first on PATH)
RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
CMD_CHANGE = 'CMD ["/bin/sleep","3600"]'
PDEATHSIG = ("setpriv", "--pdeathsig", "TERM")


def label() -> str:
    """This run's container label (`falconet-test=slotN`): its cleanup removes only what carries it."""
    return run_slot().label


class RuntimeStartError(Exception):
    """A runtime could not be started (the message says why, with its log's tail)."""


def _run(args: list[str], timeout: float = 120, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res  # type: ignore[no-any-return]


def _wait(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeStartError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def _host_lock(name: str) -> Iterator[None]:
    """An flock every run on this machine shares, for state that is host-wide (Podman's image store)."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    fd = os.open(RUN_ROOT / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Dockerd:
    """A dockerd in a slot this process holds (this run's by default; a test may claim another)."""

    def __init__(self, slot: RunSlot | None = None) -> None:
        self.slot = slot if slot is not None else run_slot()
        self.socket = self.slot.run_dir / "docker.sock"
        self.pidfile = self.slot.docker_pidfile
        self.exec_root = self.slot.run_dir / "docker-exec"
        self.data_root = self.slot.data_dir / "docker"
        self.log = self.slot.run_dir / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([DOCKER, "-H", f"unix://{self.socket}", *args], timeout=timeout, check=check)

    def up(self) -> bool:
        try:
            return self.socket.exists() and self.cli("version", timeout=10, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> None:
        """Starts dockerd in the slot; the first start also removes what a killed earlier run of the slot left."""
        if not Path("/usr/sbin/dockerd").exists() and not Path("/usr/bin/dockerd").exists():
            raise RuntimeStartError("dockerd is not installed (Debian's docker.io; make setup installs it)")
        if self.slot.lock_fd < 0:
            raise RuntimeStartError(f"slot {self.slot.index} was released: its dockerd is no longer this run's")
        foreign = self.slot.foreign_dockerd()
        if foreign is not None and (self.proc is None or foreign != self.proc.pid):
            raise RuntimeStartError(f"{self.pidfile} names live process {foreign}, which this run did not start")
        self.slot.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*PDEATHSIG, "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                 "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                 "--host", f"unix://{self.socket}", "--pidfile", str(self.pidfile), "--storage-driver", "overlay2",
                 "--containerd-namespace", f"falconet-slot{self.slot.index}",
                 "--containerd-plugins-namespace", f"falconet-slot{self.slot.index}-plugins"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        try:
            _wait(lambda: self.proc is not None and (self.proc.poll() is not None or self.up()), 60, "dockerd")
        except RuntimeStartError as exc:
            raise RuntimeStartError(f"{exc}: {self._log_tail()}") from None
        if self.proc.poll() is not None:
            raise RuntimeStartError(f"dockerd exited ({self.proc.returncode}): {self._log_tail()}")
        if not self._started_once:
            self._started_once = True
            self._remove_ours()

    def _remove_ours(self) -> None:
        """Every test container and network in this data-root is this slot's: a killed run's leftovers, or
        this run's at its end (the networks would otherwise hold the slot's subnet)."""
        ids = self.cli("ps", "-aq", "--filter", f"label={LABEL_KEY}", check=False).stdout.split()
        if ids:
            self.cli("rm", "-f", *ids, check=False)
        self.cli("network", "prune", "-f", check=False)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def ensure_image(self, ref: str = IMAGE_REF) -> None:
        if self.cli("image", "inspect", ref, check=False).returncode != 0:
            self.cli("import", "--change", CMD_CHANGE, str(rootfs_tar()), ref)

    def kill(self) -> None:
        """SIGKILL to dockerd and its containerd (its process group), as a crash: the socket stays behind and
        refuses; the containers' shims live on, as they do when a service manager restarts dockerd."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            # The killed containerd is nobody's child to reap here (this sandbox's pid 1 does not reap orphans),
            # so as a zombie its pid still "exists" and a restarted dockerd would wait on it forever: its pid
            # file goes, as the dead process's would on a host with a reaping init.
            (self.exec_root / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.up():
            self._remove_ours()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Podman:
    """The host's rootful Podman: its storage and networks are every run's, so this run touches only what
    carries its slot's label, and imports images under a host-wide lock."""

    BASE = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")

    def __init__(self) -> None:
        self.slot = run_slot()

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([*self.BASE, *args], timeout=timeout, check=check)

    def check(self) -> None:
        if not Path("/usr/bin/podman").exists():
            raise RuntimeStartError("podman is not installed (Debian's podman; make setup installs it)")
        if not Path("/usr/sbin/runc").exists() and not Path("/usr/bin/runc").exists():
            raise RuntimeStartError("runc is not installed")
        res = self.cli("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
        if res.returncode != 0:
            raise RuntimeStartError(f"podman info failed: {res.stderr.strip()[-1000:]}")

    def ensure_image(self, ref: str = IMAGE_REF) -> None:
        with _host_lock("podman-images"):
            if self.cli("image", "exists", ref, check=False).returncode != 0:
                self.cli("import", "--change", CMD_CHANGE, str(rootfs_tar()), ref)

    def cleanup(self) -> None:
        """Removes this slot's containers and networks (this run's, or a killed earlier run's of the slot)."""
        ids = self.cli("ps", "-aq", "--filter", f"label={self.slot.label}", check=False).stdout.split()
        if ids:
            self.cli("rm", "-f", "-t", "0", *ids, check=False)
        nets = self.cli("network", "ls", "-q", "--filter", f"label={self.slot.label}", check=False).stdout.split()
        if nets:
            self.cli("network", "rm", "-f", *nets, check=False)


class PodmanService:
    """`podman system service` on a socket of its own (what systemd's podman.socket provides elsewhere)."""

    def __init__(self) -> None:
        self.socket = run_slot().run_dir / "podman.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)  # the slot's: a killed earlier run's, never a live one's
        self.proc = subprocess.Popen(
            [*PDEATHSIG, *Podman.BASE, "system", "service", "--time=0", f"unix://{self.socket}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        _wait(lambda: self.socket.exists() or (self.proc is not None and self.proc.poll() is not None), 30,
              "podman system service")
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeStartError(f"podman system service exited: {err[-1000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
