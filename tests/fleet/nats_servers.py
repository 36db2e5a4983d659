"""Real NATS servers with JetStream for the fleet tests: one server, or a three-server cluster on loopback.

Each server is the pinned `nats-server` that `make nats-tools` builds from its Go module into .tools/bin (the
version the fleet is tested against, docs/fleet.md "NATS versions"), run as a child process with its own store
directory and ports; a test can kill one (`kill`, SIGKILL), stop it for a while (`stop`) and start it again on the
same ports and store (`start`), which is what the outage tests need. Readiness is the server's own monitoring
endpoint answering `/healthz?js-enabled-only=true`, polled with a deadline, never a sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from resources import REPO, in_ci, missing

NATS_SERVER = "nats-server"
# Where `make nats-tools` puts the pinned build (Makefile: NATS_SERVER_VERSION).
PINNED = REPO / ".tools" / "bin" / NATS_SERVER
CHOOSE = "FALCONET_NATS_SERVER"
"""Names another nats-server binary to run the fleet tests against (e.g. /usr/sbin/nats-server, Debian's)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_binary() -> str:
    """$FALCONET_NATS_SERVER if set (another version on purpose); else the pinned nats-server; locally, without
    it, one on PATH (e.g. Debian's); else `missing`.

    With CI=true only the pinned build counts: Debian 12's 2.9.10 failed the combined scenario about one run in
    four (docs/fleet.md, "NATS versions"), so a run on it would test the server's bugs, not ours. Locally the
    fallback keeps the fleet tests runnable before the first `make nats-tools`; pytest's header says which.
    """
    chosen = os.environ.get(CHOOSE)
    if chosen:
        if not os.access(chosen, os.X_OK):
            missing(f"${CHOOSE}={chosen} is not an executable")
        return chosen
    if os.access(PINNED, os.X_OK):
        return str(PINNED)
    if in_ci():
        missing(f"the pinned nats-server is not built at {PINNED} (make nats-tools)")
    path = shutil.which(NATS_SERVER) or next(
        (p for p in ("/usr/bin/nats-server", "/usr/sbin/nats-server") if os.access(p, os.X_OK)), None)
    if path is None:
        missing(f"no nats-server: neither the pinned build at {PINNED} (make nats-tools) nor one on PATH")
    return path


def describe_binary() -> str:
    """Which nats-server `nats_binary` picks and what its `--version` says, never failing (a report header)."""
    binary = os.environ.get(CHOOSE) or (str(PINNED) if os.access(PINNED, os.X_OK) else shutil.which(NATS_SERVER))
    if binary is None:
        return "no nats-server" + (" (CI=true: the fleet tests fail)" if in_ci() else "")
    if binary != str(PINNED) and not os.environ.get(CHOOSE) and in_ci():
        return f"{binary} is not the pinned build (CI=true: the fleet tests fail)"
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{binary}: {e}"
    return f"{binary} ({out.stdout.strip() or out.stderr.strip()})"


@dataclass
class NatsServer:
    """One nats-server process; `url` is what clients connect to."""

    name: str
    store: Path
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    cluster_name: str = "falconet-test"
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            'listen: "127.0.0.1:%d"' % self.port,
            'http: "127.0.0.1:%d"' % self.http_port,
            f'jetstream {{ store_dir: "{self.store}", max_memory_store: 64MB, max_file_store: 1GB }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes if p != self.cluster_port)
            lines.append(f'cluster {{ name: "{self.cluster_name}", listen: "127.0.0.1:{self.cluster_port}", '
                         f"routes: [{routes}] }}")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store.parent / f"{self.name}.conf"
        conf.write_text(self.config_text())
        log = open(self.store.parent / f"{self.name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([nats_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the server says JetStream is up (a cluster member: once it has a meta leader), or fail."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.http_port}/healthz?js-enabled-only=true", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.05)  # polling interval of a condition with a deadline, not synchronisation
        raise TimeoutError(f"nats-server {self.name} not ready in {timeout}s ({last}): {self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        path = self.store.parent / f"{self.name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait: an orderly shutdown (lame duck is not waited for)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class NatsCluster:
    """Three (or `size`) JetStream servers routed to each other on loopback."""

    servers: list[NatsServer]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = 60.0) -> None:
        for s in self.servers:
            s.start(wait=False)
        for s in self.servers:
            s.wait_ready(timeout)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def single_server(base: Path, name: str = "n1") -> NatsServer:
    return NatsServer(name=name, store=base / name / "js")


def cluster(base: Path, size: int = 3) -> NatsCluster:
    ports = [free_port() for _ in range(size)]
    servers = [NatsServer(name=f"c{i + 1}", store=base / f"c{i + 1}" / "js", cluster_port=ports[i], routes=ports)
               for i in range(size)]
    return NatsCluster(servers)
