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
    assert body.splitlines() == ["the event source is not running", "the rules are not loaded",
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
