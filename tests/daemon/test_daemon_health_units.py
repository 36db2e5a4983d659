"""The probe answers and the kernel-headers check, in process: what /readyz and /healthz say for each missing
part, served over real HTTP by the metrics listener, and the one sentence a node without headers gets."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from falconet.server.health import STALL_SECONDS
from falconet.server.kernel_headers import headers_problem
from falconet.server.metrics import DaemonMetrics


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[DaemonMetrics, str]]:
    m = DaemonMetrics()
    host, port = m.serve("127.0.0.1", 0)
    yield m, f"http://{host}:{port}"
    m.close()


def test_readiness_lists_every_part_not_up_yet(served: tuple[DaemonMetrics, str]) -> None:
    m, url = served
    status, body = get(url + "/readyz")
    assert status == 503
    assert body.splitlines() == ["the event source is not running",
                                 "no rule is loaded (none in the files, or all disabled or below `priority`)",
                                 "the gRPC server is not listening"]
    m.health.source_running = lambda: True
    m.health.rules_loaded = lambda: True
    assert get(url + "/readyz") == (503, "the gRPC server is not listening\n")
    m.health.grpc_listening = lambda: True
    assert get(url + "/readyz") == (200, "ok\n")
    m.health.stopping = True
    assert get(url + "/readyz") == (503, "the daemon is stopping\n")


def test_liveness_fails_when_the_engine_loop_stalls(served: tuple[DaemonMetrics, str]) -> None:
    m, url = served
    assert get(url + "/healthz") == (200, "ok\n")  # just started: the engine has time to begin
    m.engine_report(10, 0)
    assert get(url + "/healthz") == (200, "ok\n")
    assert m.health.last_pass is not None
    m.health.last_pass -= STALL_SECONDS + 5  # the engine's last report, long ago
    status, body = get(url + "/healthz")
    assert status == 503 and body.startswith("the engine loop has not completed a pass for 3")
    assert get(url + "/readyz")[0] == 503  # a stuck daemon is not ready either


def test_other_paths_still_serve_the_metrics(served: tuple[DaemonMetrics, str]) -> None:
    _, url = served
    for path in ("/metrics", "/"):
        status, body = get(url + path)
        assert status == 200 and "falconet_events_total" in body


def test_missing_kernel_headers_are_named_with_what_to_mount_or_install(tmp_path: Path) -> None:
    modules = tmp_path / "lib-modules"
    release = "6.1.0-test-amd64"
    problem = headers_problem(release, modules)
    assert problem is not None
    assert f"({modules}/{release}/build does not exist)" in problem
    assert "apt-get install linux-headers-6.1.0-test-amd64" in problem
    assert "mount the host's /lib/modules and /usr/src read-only" in problem
    build = modules / release / "build"
    build.parent.mkdir(parents=True)
    os.symlink("/usr/src/linux-headers-absent", build)  # what a pod sees with /lib/modules but not /usr/src
    assert "is a link to /usr/src/linux-headers-absent, which does not exist here" in (
        headers_problem(release, modules) or "")
    build.unlink()
    build.mkdir()
    assert "is empty" in (headers_problem(release, modules) or "")
    (build / "Makefile").write_text("# headers\n")
    assert headers_problem(release, modules) is None


@pytest.mark.root
def test_the_daemon_names_missing_kernel_headers_before_anything_else(tmp_path: Path) -> None:
    """The real `falconet run --source ebpf` in a mount namespace where /lib/modules is an empty tmpfs (what a
    pod without the host's /lib/modules sees): one line saying what to mount or install, exit status 1."""
    import subprocess
    import sys

    from resources import require_root

    require_root("a mount namespace with an empty /lib/modules")
    rules = tmp_path / "rules.yaml"
    rules.write_text("- rule: r\n  desc: d\n  condition: evt.type = open\n  output: o\n  priority: INFO\n")
    config = tmp_path / "falconet.yaml"
    config.write_text(f"rules_files: [{rules}]\ngrpc: {{enabled: false}}\nwebserver: {{enabled: false}}\n")
    script = ('mount -t tmpfs none /lib/modules && exec "$0" -m falconet.server.cli run -c "$1" --source ebpf')
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable,
                           str(config)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    release = os.uname().release
    lines = done.stderr.splitlines()
    assert lines == [
        f"falconet: the eBPF sensor cannot be compiled: the kernel headers bcc needs are missing "
        f"(/lib/modules/{release}/build does not exist); install the headers of kernel {release} on the host "
        f"(Debian: apt-get install linux-headers-{release}, or `make setup`), or, in a container, mount the "
        "host's /lib/modules and /usr/src read-only"
    ], done.stderr
