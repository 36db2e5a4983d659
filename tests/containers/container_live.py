"""The live daemon for the container tests, and one interface over Docker and Podman for the actions.

`falconet run` with the real eBPF sensor, Falco's stable rules loaded unmodified from the shared upstream copy
(plus container_test_rules.yaml), the packaged default `append_output` (so alerts carry the container and pod
identity), JSON alerts to a file, container engines pointing at the test runtimes' sockets, and a generous
metadata wait (METADATA_WAIT).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from container_images import IMAGE_REF, IMAGE_REPO, IMAGE_TAG
from container_runtimes import DOCKER, RUN_LIMITS, Podman, label
from resources import SHARED

from falconet.server.daemon_config import PACKAGED_CONFIG

UPSTREAM = SHARED / "upstream-rules" / "current" / "falco_rules.yaml"
TEST_RULES = Path(__file__).with_name("container_test_rules.yaml")
METADATA_WAIT = 5.0
"""The daemons' container_metadata_wait: generous, so the first-alert tests prove the name is filled whenever
the runtime gives it at all, not that a loaded machine's runtime answers within the 0.5 s default (the
expiry path is tests/sensor/test_container_metadata.py's)."""


def live_config(work: Path, docker_socket: Path | None, podman_socket: Path | None, extra: str = "") -> str:
    if not UPSTREAM.exists():
        from resources import missing

        missing(f"{UPSTREAM} is absent (../shared beside the checkout, or $FALCONET_SHARED)")
    append = yaml.safe_load(PACKAGED_CONFIG.read_text())["append_output"]
    engines: dict[str, Any] = {
        "docker": {"enabled": docker_socket is not None, "sockets": [str(docker_socket or "/nonexistent")]},
        "podman": {"enabled": podman_socket is not None, "sockets": [str(podman_socket or "/nonexistent")]},
    }
    return (
        f"""
rules_files: [{UPSTREAM}, {TEST_RULES}]
rule_matching: all
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {work / 'alerts.json'}}}
grpc:
  enabled: true
  bind_address: ["unix://{work / 'falconet.sock'}"]
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0}}
sensor: {{ring_buffer_bytes: {64 << 20}}}
container_metadata_wait: {METADATA_WAIT}
"""
        + yaml.safe_dump({"container_engines": engines, "append_output": append})
        + extra
    )


class Alerts:
    """The daemon's JSON alerts file, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._buf = ""
        self.all: list[dict[str, Any]] = []

    def _read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            f.seek(self._pos)
            chunk = f.read()
            self._pos = f.tell()
        *lines, self._buf = (self._buf + chunk).split("\n")
        self.all.extend(json.loads(line) for line in lines if line.strip())

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        self._read()
        return [a for a in self.all if pred(a)]

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(pred)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                recent = [(a.get("rule"), a.get("output_fields", {}).get("container.id"),
                           a.get("output_fields", {}).get("container.name"))
                          for a in self.all if a.get("output_fields", {}).get("container.id") != "host"][-15:]
                raise AssertionError(f"no alert {what} within {timeout:g}s; last alerts: {recent}")
            time.sleep(0.02)


@dataclass
class Live:
    """The running daemon and its alerts."""

    daemon: DaemonProcess
    alerts: Alerts

    def drops(self) -> int:
        """Seconds in which the kernel dropped events (the daemon logs each such second)."""
        return self.daemon.stderr().count("syscall event drop")

    def expect(self, act: Callable[[], Callable[[dict[str, Any]], bool]], what: str,
               attempts: int = 3) -> dict[str, Any]:
        """Runs `act` (which returns the predicate of the alert it must raise) and waits for that alert.

        The action is run again only when the kernel dropped events meanwhile (a reported loss, common when
        other test suites flood this 2-core machine): a missing alert without a drop fails at once."""
        for _ in range(attempts):
            before = self.drops()
            pred = act()
            try:
                return self.alerts.wait_for(pred, what, timeout=20)
            except AssertionError:
                if self.drops() == before:
                    raise
        raise AssertionError(f"{what}: the kernel dropped events during each of {attempts} attempts")


def of(rule: str, container: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """An alert of `rule` (from the container named `container`, when given)."""
    return lambda a: a.get("rule") == rule and (
        container is None or a.get("output_fields", {}).get("container.name") == container
    )


@dataclass
class Runtime:
    """Docker or Podman, driven through its own CLI as a user would."""

    kind: str
    base: list[str]
    repository: str  # what the runtime reports as the image's repository
    tag: str = IMAGE_TAG

    def cli(self, *args: str, timeout: float = 120, check: bool = True,
            stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, stdin=stdin)
        if check and res.returncode != 0:
            raise AssertionError(f"{self.kind} {' '.join(args)} failed ({res.returncode}): {res.stderr[-1500:]}")
        return res

    def name(self, what: str) -> str:
        return f"fnt-{self.kind}-{what}-{uuid.uuid4().hex[:8]}"

    def run(self, name: str, *cmd: str, image: str = IMAGE_REF, opts: tuple[str, ...] = (),
            detach: bool = True) -> str:
        """Starts a container; returns the full id the runtime reports (detached) or its output (not)."""
        network = () if "--network" in opts else ("--network", "none")
        args = ["run", "--name", name, "--label", label(), "--label", "app=falconet-test", *network,
                *RUN_LIMITS, *opts]
        res = self.cli(*args, *(["-d"] if detach else ["--rm"]), image, *cmd)
        return res.stdout.strip()

    def exec(self, name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("exec", name, *cmd, check=check)

    def exec_tty(self, name: str, shell_cmd: str) -> None:
        """`exec -it` from a terminal: `script` gives the CLI a pty, as a user's terminal would."""
        inner = " ".join([*self.base, "exec", "-it", name, "sh", "-c", f"'{shell_cmd}'"])
        res = subprocess.run(["script", "-qec", inner, "/dev/null"], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise AssertionError(f"exec -it failed ({res.returncode}): {res.stdout[-500:]} {res.stderr[-500:]}")

    def full_id(self, name: str) -> str:
        return self.cli("inspect", "--format", "{{.Id}}", name).stdout.strip()

    def remove(self, *names: str) -> None:
        """Killed at once: the containers' pid 1 (sleep) ignores SIGTERM, so Podman's `rm -f` would wait out
        its 10 s stop timeout per call (Docker's `rm -f` kills at once)."""
        self.cli("rm", "-f", *(("-t", "0") if self.kind == "podman" else ()), *names, check=False)


def docker_runtime(socket: Path) -> Runtime:
    return Runtime("docker", [DOCKER, "-H", f"unix://{socket}"], IMAGE_REPO)


def podman_runtime() -> Runtime:
    return Runtime("podman", list(Podman.BASE), f"localhost/{IMAGE_REPO}")


class DaemonProcess:
    """`falconet run --source ebpf` as a subprocess; its stderr collected line by line."""

    def __init__(self, work: Path, config: str) -> None:
        (work / "falconet.yaml").write_text(config)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(work / "falconet.yaml"), "--source", "ebpf"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=work,
            env=dict(os.environ, FALCO_HOSTNAME="test-host", PYTHONUNBUFFERED="1"),
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    if m := rx.search(line):
                        return m
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"falconet run never printed {pattern!r}:\n" + "\n".join(self._lines))
                self._cond.wait(0.2)

    @property
    def metrics_url(self) -> str:
        return self.wait_for_line(r"metrics on (http://\S+)").group(1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def start_live_daemon(work: Path, config: str) -> DaemonProcess:
    daemon = DaemonProcess(work, config)
    daemon.wait_for_line(r"falconet: ready", timeout=180)
    return daemon
