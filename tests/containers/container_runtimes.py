"""Real container runtimes for the tests: a dockerd of their own and rootful Podman, started and stopped here.

dockerd runs with `--bridge=none --iptables=false --ip6tables=false --ip-masq=false` (its default 172.17/16
bridge and its iptables rules would change forwarding for every other test), its own socket, data-root and
exec-root under FALCONET_TEST_ROOT (the data-root persists, so the imported image is cached between runs).
Podman runs rootful with `--runtime runc` (Debian's crun 1.8 refuses this hybrid cgroup layout) and the
cgroupfs manager (no systemd here); its API exists only while `podman system service` runs, which
`PodmanService` starts on a socket of its own. Root lacks CAP_SYS_RESOURCE on this machine kind, so every
container gets explicit ulimits (RUN_LIMITS); networks are `none` only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from container_images import IMAGE_REF, rootfs_tar

RUN_DIR = Path("/run/falconet-test")
DATA_DIR = Path(os.environ.get("FALCONET_TEST_ROOT", "/var/lib/falconet-test"))
DOCKER = "/usr/bin/docker"  # Debian's CLI, matching its dockerd (another docker may come first on PATH)
RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
LABEL = "falconet-test=1"
CMD_CHANGE = 'CMD ["/bin/sleep","3600"]'


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


class Dockerd:
    def __init__(self) -> None:
        self.socket = RUN_DIR / "docker.sock"
        self.pidfile = RUN_DIR / "docker.pid"
        self.log = RUN_DIR / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([DOCKER, "-H", f"unix://{self.socket}", *args], timeout=timeout, check=check)

    def up(self) -> bool:
        try:
            return self.socket.exists() and self.cli("version", timeout=10, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> None:
        if not Path("/usr/sbin/dockerd").exists() and not Path("/usr/bin/dockerd").exists():
            raise RuntimeStartError("dockerd is not installed (Debian's docker.io; make setup installs it)")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                 "--data-root", str(DATA_DIR / "docker"), "--exec-root", str(RUN_DIR / "docker-exec"),
                 "--host", f"unix://{self.socket}", "--pidfile", str(self.pidfile), "--storage-driver", "overlay2"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        try:
            _wait(lambda: self.proc is not None and (self.proc.poll() is not None or self.up()), 60, "dockerd")
        except RuntimeStartError as exc:
            raise RuntimeStartError(f"{exc}: {self._log_tail()}") from None
        if self.proc.poll() is not None:
            raise RuntimeStartError(f"dockerd exited ({self.proc.returncode}): {self._log_tail()}")

    def _stop_leftover(self) -> None:
        """A dockerd a previous (killed) test run left with our pidfile: ours, so stopped."""
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"dockerd" in cmdline and str(self.socket).encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: not Path(f"/proc/{pid}").exists(), 30, "the leftover dockerd to stop")

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
            (RUN_DIR / "docker-exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.up():
            ids = self.cli("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
            if ids:
                self.cli("rm", "-f", *ids, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Podman:
    BASE = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")

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
        if self.cli("image", "exists", ref, check=False).returncode != 0:
            self.cli("import", "--change", CMD_CHANGE, str(rootfs_tar()), ref)

    def cleanup(self) -> None:
        ids = self.cli("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
        if ids:
            self.cli("rm", "-f", "-t", "0", *ids, check=False)


class PodmanService:
    """`podman system service` on a socket of its own (what systemd's podman.socket provides elsewhere)."""

    def __init__(self) -> None:
        self.socket = RUN_DIR / "podman.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        self.proc = subprocess.Popen(
            [*Podman.BASE, "system", "service", "--time=0", f"unix://{self.socket}"],
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
