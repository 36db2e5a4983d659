"""Shared by the daemon benchmarks: the C workloads, and `falconet run` as a subprocess on a given rules set."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_STABLE = REPO.parent / "shared" / "upstream-rules" / "current" / "falco_rules.yaml"


def build_loops(directory: Path) -> Path:
    """Compiles bench/daemon_loops.c; returns the binary."""
    out = directory / "daemon_loops"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(Path(__file__).with_name("daemon_loops.c"))], check=True)
    return out


CANDIDATE_PATH = "/etc/shadow"
TRUSTED_READER = "unix_chkpwd"
"""A name in the default rules' auth_binaries: its reads of CANDIDATE_PATH reach the engine and raise nothing."""


def trusted_reader(loops: Path) -> Path:
    """A copy of the loops binary named TRUSTED_READER (its comm, hence proc.name), beside it."""
    reader = loops.with_name(TRUSTED_READER)
    shutil.copy2(loops, reader)
    return reader


class Daemon:
    """`falconet run` with the eBPF sensor on `rules`, gRPC on a UNIX socket in a temporary directory, which
    goes when the daemon stops (also when it never became ready: the error carries its stderr)."""

    def __init__(self, rules: list[Path], *, metrics_port: int = 0, extra: str = "", cpu: int | None = None,
                 module: str = "falconet.server.cli", module_args: tuple[str, ...] | list[str] = ()):
        """`module` (with `module_args` before `run`): another entry point that ends in falconet's CLI, such
        as bench.latency_path's probing wrapper."""
        self.dir = Path(tempfile.mkdtemp(prefix="falconet-bench-"))
        self.socket = self.dir / "falconet.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self.log: IO[str] | None = None
        self.metrics_url = ""
        self._entry = [module, *module_args]
        try:
            self._start(rules, metrics_port, extra, cpu)
        except BaseException:
            self.stop()
            raise

    def _start(self, rules: list[Path], metrics_port: int, extra: str, cpu: int | None) -> None:
        config = self.dir / "falconet.yaml"
        config.write_text(
            f"rules_files: [{', '.join(str(r) for r in rules)}]\n"
            "stdout_output: {enabled: false}\n"
            f"grpc: {{enabled: true, bind_address: ['unix://{self.socket}']}}\n"
            f"webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: {metrics_port}}}\n" + extra
        )
        cmd = [sys.executable, "-m", *self._entry, "run", "-c", str(config)]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.log = open(self.dir / "stderr.txt", "w+")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=dict(os.environ))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = (self.dir / "stderr.txt").read_text()
            m = re.search(r"metrics on (http://\S+)", text)
            if m:
                self.metrics_url = m.group(1)
            if "falconet: ready" in text:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"falconet run exited:\n{text}")
            time.sleep(0.2)
        raise RuntimeError(f"falconet run did not become ready:\n{text[-4000:]}")

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "started in __init__"
        return self._proc

    def settled_counters(self) -> tuple[float, float]:
        """(events evaluated, kernel drops) once the daemon has drained what the ring buffer held and its engine
        thread has reported the sensor's counters again (it does so once a second, so a reading taken right after
        a workload could miss its last second's drops)."""
        deadline = time.monotonic() + 120
        last = scrape(self.metrics_url).get("falconet_events_total", 0.0)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = scrape(self.metrics_url).get("falconet_events_total", 0.0)
            if now - last < 500:
                break
            last = now
        time.sleep(1.2)  # one more engine report (once a second) after the drain
        m = scrape(self.metrics_url)
        drops = max(m.get("falconet_kernel_drops_total", 0.0), m.get("falcosecurity_scap_n_drops_total", 0.0))
        return m.get("falconet_events_total", 0.0), drops

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a minute), then the directory goes; safe to call more than once."""
        if self._proc is not None and self._proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of the daemon's metrics endpoint."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


def machine_state() -> str:
    """What else loads this machine: the load average and BPF tracepoint programs attached by others, which
    every syscall of every row pays for (a benchmark on a shared machine must say so)."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30).stdout
        import json

        progs = [p for p in json.loads(out or "[]") if p.get("type") in ("tracepoint", "raw_tracepoint")]
        foreign = f"{len(progs)} tracepoint BPF programs already attached"
    except (OSError, ValueError, subprocess.TimeoutExpired):
        foreign = "attached BPF programs unknown (bpftool failed)"
    return f"load average {' '.join(load)}; {foreign}"


def close_inherited_high_fds() -> list[int]:
    """Closes the fds of 64 and above this process inherited (a shell or a harness that leaks one), and says which.

    A child inherits an fd table sized for its parent's highest open fd at the fork, and keeps it through exec. The
    kernel's directory check for a kept-back open (sensor/probe_openfilter.h) reads the fd through files->fd_array
    only while that table is the small one every process starts with (fds below 64), so a stray fd 255 in the
    shell that started the bench would give every timed loop the slower path, and two runs from two shells would
    not compare. The daemon is started from here too; it opens its own fds after its start."""
    high = [fd for fd in (int(name) for name in os.listdir("/proc/self/fd")) if fd >= 64]
    for fd in high:
        try:
            os.close(fd)
        except OSError:
            pass  # the directory listing's own fd, or one closed meanwhile
    return high
