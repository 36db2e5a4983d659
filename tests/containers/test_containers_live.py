"""End to end, as root: real Docker and Podman containers, the real eBPF sensor in a real `falconet run`,
Falco's stable container rules loaded unmodified, alerts read from the daemon's JSON output.

Each action runs in containers named for it alone, so its alerts are told apart by container.name (which the
packaged append_output puts in every syscall alert's output_fields). "No alert" is checked behind a barrier:
the same container opens a /tmp/falconet-barrier-* file afterwards (test rule "Test barrier"); a container's
events reach the engine in order, so once the barrier's alert is in, any alert of the earlier action would be.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from container_images import ALLOWED_REPO, IMAGE_TAG
from container_live import Alerts, Live, Runtime, docker_runtime, live_config, of, podman_runtime, start_live_daemon
from container_runtimes import Dockerd, PodmanService, label
from run_slots import run_slot

pytestmark = [pytest.mark.containers, pytest.mark.bpf, pytest.mark.upstream]

SHELL = "Terminal shell in container"
PACKET = "Packet socket created in container"
NETCAT = "Netcat Remote Code Execution in Container"
DEBUGFS = "Debugfs Launched in Privileged Container"
RELEASE_AGENT = "Detect release_agent File Container Escapes"
DROP_EXEC = "Drop and execute new binary in container"
BARRIER = "Test barrier"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, dockerd: Dockerd,
         podman_service: PodmanService) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("containers-live")
    daemon = start_live_daemon(work, live_config(work, dockerd.socket, podman_service.socket))
    try:
        yield Live(daemon, Alerts(work / "alerts.json"))
    finally:
        daemon.kill()
        (work / "daemon.log").write_text(daemon.stderr())  # for the failures this module's asserts cannot name


@pytest.fixture(params=["docker", "podman"])
def rt(request: pytest.FixtureRequest, dockerd: Dockerd, podman_service: PodmanService) -> Iterator[Runtime]:
    runtime = docker_runtime(dockerd.socket) if request.param == "docker" else podman_runtime()
    names: list[str] = []
    runtime.name = _tracking(runtime.name, names)  # type: ignore[method-assign]
    yield runtime
    if names:
        runtime.remove(*names)


def _tracking(make: Any, names: list[str]) -> Any:
    def name(what: str) -> str:
        n = make(what)
        names.append(n)
        return str(n)

    return name


def barrier(rt: Runtime, live: Live, name: str) -> None:
    def act() -> Any:
        path = f"/tmp/falconet-barrier-{uuid.uuid4().hex[:8]}"
        rt.exec(name, "touch", path)
        return lambda a: a.get("rule") == BARRIER and path in a.get("output", "")

    live.expect(act, f"the barrier in {name}")


def in_container(rt: Runtime, name: str, rule: str, *cmd: str) -> Any:
    """An action: `cmd` run in the container (its exit status is not the point), expecting `rule` from it."""

    def act() -> Any:
        rt.exec(name, *cmd, check=False)
        return of(rule, name)

    return act


def assert_identity(alert: dict[str, Any], rt: Runtime, name: str, full_id: str) -> None:
    f = alert["output_fields"]
    assert len(full_id) == 64, full_id
    assert f["container.id"] == full_id[:12]
    assert f["container.name"] == name
    assert f["container.image.repository"] == rt.repository
    assert f["container.image.tag"] == IMAGE_TAG


def test_first_alert_of_a_just_started_container_carries_its_name_and_image(live: Live, rt: Runtime) -> None:
    names: list[str] = []

    def act() -> Any:
        name = rt.name("first")
        names.append(name)
        # The action is the first process's first child, right after start. (Paths, not applet names:
        # busybox's shell runs a bare applet name as /proc/self/exe, which Falco sees as proc.name=exe.)
        rt.run(name, "sh", "-c", "/bin/nc -w 1 127.0.0.1 9 -e /bin/true; exit 0", detach=False)
        return lambda a: a.get("rule") == NETCAT and a["output_fields"].get("container.name") in names

    f = live.expect(act, f"{NETCAT} from a new container")["output_fields"]
    assert f["container.name"] == names[-1] and f["container.image.repository"] == rt.repository
    assert f["container.image.tag"] == IMAGE_TAG and len(f["container.id"]) == 12


def test_container_rules_fire_with_identity(live: Live, rt: Runtime) -> None:
    name = rt.name("actions")
    full_id = rt.run(name, opts=("--cap-add", "NET_RAW"))
    assert rt.full_id(name) == full_id

    # An interactive shell with a terminal, as `kubectl exec -it` / `docker exec -it` gives.
    def shell() -> Any:
        rt.exec_tty(name, "exit 0")
        return of(SHELL, name)

    assert_identity(live.expect(shell, f"{SHELL} in {name}"), rt, name, full_id)
    # A packet socket (busybox arping opens an AF_PACKET socket first thing).
    packet = in_container(rt, name, PACKET, "arping", "-c", "1", "-w", "1", "-I", "lo", "127.0.0.1")
    assert_identity(live.expect(packet, f"{PACKET} in {name}"), rt, name, full_id)
    # nc -e to a listener on loopback inside the container.
    netcat = in_container(rt, name, NETCAT, "sh", "-c",
                          "/bin/nc -l -p 4444 -w 5 >/dev/null & /bin/sleep 0.3; /bin/nc -w 2 127.0.0.1 4444 -e /bin/echo hi")
    assert_identity(live.expect(netcat, f"{NETCAT} in {name}"), rt, name, full_id)
    # Not privileged: debugfs raises nothing here.
    rt.exec(name, "/usr/sbin/debugfs", check=False)
    barrier(rt, live, name)
    assert not live.alerts.matching(of(DEBUGFS, name))


def test_privileged_container(live: Live, podman_service: PodmanService) -> None:
    """Podman's --privileged works on this machine kind (Docker's fails to apply its capabilities here)."""
    rt = podman_runtime()
    name = rt.name("priv")
    try:
        full_id = rt.run(name, opts=("--privileged",))
        debugfs = in_container(rt, name, DEBUGFS, "/usr/sbin/debugfs")
        assert_identity(live.expect(debugfs, f"{DEBUGFS} in {name}"), rt, name, full_id)
        # The release_agent escape writes a file of that name with CAP_SYS_ADMIN (here a harmless one in /tmp).
        agent = in_container(rt, name, RELEASE_AGENT, "sh", "-c", "echo /x > /tmp/release_agent")
        assert_identity(live.expect(agent, f"{RELEASE_AGENT} in {name}"), rt, name, full_id)
    finally:
        rt.remove(name)


def test_exclusion_on_image_repository_suppresses_the_alert(live: Live, rt: Runtime) -> None:
    allowed, other = rt.name("allowed"), rt.name("other")
    rt.run(allowed, image=f"{ALLOWED_REPO}:{IMAGE_TAG}")
    rt.run(other)

    def shells() -> Any:
        rt.exec_tty(allowed, "exit 0")
        rt.exec_tty(other, "exit 0")
        return of(SHELL, other)

    live.expect(shells, f"{SHELL} in {other}")
    barrier(rt, live, allowed)
    assert not live.alerts.matching(of(SHELL, allowed))


def test_container_fields(live: Live, rt: Runtime) -> None:
    name = rt.name("fields")
    marker = Path(f"/run/falconet-test/mount-{uuid.uuid4().hex[:8]}")
    marker.write_text("x")
    try:
        full_id = rt.run(name, opts=("-v", f"{marker}:/mnt/marker:ro"))
        alert = live.expect(in_container(rt, name, "Test container fields", "uname"), f"fields of {name}")
    finally:
        marker.unlink()
    out = alert["output"]
    assert f"id={full_id[:12]} full={full_id} name={name} type={rt.kind}" in out
    assert f"repo={rt.repository} tag={IMAGE_TAG}" in out
    assert "privileged=false" in out
    assert f"dest=/mnt/marker src={marker} mode=ro rdwr=false" in out, out
    assert f"{marker}:/mnt/marker:ro:false:" in out, out  # container.mounts
    assert "host_pid=false host_net=false host_ipc=false" in out
    assert "app=falconet-test" in out and "app:falconet-test" in out
    image_id = rt.cli("inspect", "--format", "{{.Image}}", name).stdout.strip().removeprefix("sha256:")
    assert f"image_id={image_id}" in out
    assert "start=<NA>" not in out


def test_host_actions_carry_no_container(live: Live) -> None:
    """The same actions on the host: container rules stay silent, host alerts say container.id=host."""
    token = uuid.uuid4().hex[:8]

    def act() -> Any:
        subprocess.run(["script", "-qec", f"sh -c 'exit 0 {token}'", "/dev/null"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30, check=True)
        subprocess.run(["busybox", "nc", "-w", "1", "127.0.0.1", "9", "-e", "/bin/true", token],
                       capture_output=True, timeout=30, check=False)
        path = Path(f"/tmp/falconet-barrier-{token}-{uuid.uuid4().hex[:4]}")
        path.touch()
        path.unlink()
        return lambda a: a.get("rule") == BARRIER and str(path) in a.get("output", "")

    f = live.expect(act, "the host barrier")["output_fields"]
    assert f["container.id"] == "host"
    assert f["container.image.repository"] is None and f["container.image.tag"] is None
    assert not live.alerts.matching(lambda a: a.get("rule") in (SHELL, NETCAT) and token in a.get("output", ""))


def test_drop_and_execute_and_its_image_exclusion(live: Live, rt: Runtime) -> None:
    """A binary written into the running container and executed (the overlay's upper layer); the upstream
    allow-list keyed on container.image.repository silences it for the image it names."""
    name, allowed = rt.name("drop"), rt.name("drop-allowed")
    full_id = rt.run(name)
    rt.run(allowed, image=f"{ALLOWED_REPO}:{IMAGE_TAG}")
    drop = "cp /bin/busybox /tmp/true && /tmp/true"  # busybox runs as the applet its file is named
    assert_identity(live.expect(in_container(rt, name, DROP_EXEC, "sh", "-c", drop), f"{DROP_EXEC} in {name}"),
                    rt, name, full_id)
    rt.exec(allowed, "sh", "-c", drop)
    barrier(rt, live, allowed)
    assert not live.alerts.matching(of(DROP_EXEC, allowed))
    # The image's own binaries never count as dropped.
    rt.exec(name, "true")
    barrier(rt, live, name)
    assert len(live.alerts.matching(of(DROP_EXEC, name))) == 1


def test_a_containers_first_process_is_its_pid_1(live: Live, rt: Runtime) -> None:
    names: list[str] = []

    def act() -> Any:
        names.append(rt.name("init"))
        rt.run(names[-1])
        return lambda a: a.get("rule") == "Test container init" and a["output_fields"].get("container.name") in names

    alert = live.expect(act, "the init exec of a new container")
    assert "vpid=1 " in alert["output"], alert["output"]
    assert f"pid={alert['output_fields']['proc.pid']}" in alert["output"] and alert["output_fields"]["proc.pid"] != 1


def test_container_ip_on_a_documentation_range_network(live: Live, rt: Runtime) -> None:
    """container.ip: the address the runtime gave the container on an internal network (no gateway, no NAT)
    of 198.51.100.0/24, which the test creates and removes (this host's own network is 192.0.2.0/24). The subnet
    is this run's slot's: Podman's networks are host-wide, and a run beside this one makes its own."""
    subnet = run_slot().subnet(rt.kind)
    net = f"fnt-{rt.kind}-net-{uuid.uuid4().hex[:6]}"
    rt.cli("network", "create", "--internal", "--label", label(), "--subnet", subnet, net)
    name = rt.name("ip")
    try:
        rt.run(name, opts=("--network", net))
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        ip = rt.cli("inspect", "--format", fmt, name).stdout.strip()
        assert ip.startswith("198.51.100."), ip
        alert = live.expect(in_container(rt, name, "Test container ip", "hostname"), f"the address of {name}")
        assert f"ip={ip})" in alert["output"], alert["output"]
    finally:
        rt.remove(name)
        rt.cli("network", "rm", net, check=False)


def test_runtime_killed_while_the_daemon_runs(live: Live, dockerd: Dockerd) -> None:
    """dockerd killed: alerts keep flowing, one log line and the engine's metric say so; after it restarts
    a new container's alerts carry its metadata again. (Last in this module: it restarts dockerd.)"""
    rt = docker_runtime(dockerd.socket)
    dockerd.kill()
    deadline = time.monotonic() + 30
    while "container engine docker unavailable" not in live.daemon.stderr():
        assert time.monotonic() < deadline, live.daemon.stderr()[-2000:]
        time.sleep(0.05)
    metrics = urllib.request.urlopen(live.daemon.metrics_url, timeout=10).read().decode()
    assert 'falconet_container_engine_up{engine="docker"} 0.0' in metrics
    assert 'falconet_container_engine_errors_total{engine="docker"} 1.0' in metrics
    # Host alerts keep flowing while the runtime is down.
    token = uuid.uuid4().hex[:8]

    def host_barrier() -> Any:
        path = Path(f"/tmp/falconet-barrier-{token}-{uuid.uuid4().hex[:4]}")
        path.touch()
        path.unlink()
        return lambda a: a.get("rule") == BARRIER and str(path) in a.get("output", "")

    assert live.expect(host_barrier, "a host alert while dockerd is down")["output_fields"]["container.id"] == "host"
    dockerd.start()
    deadline = time.monotonic() + 60
    while "container engine docker: connected again" not in live.daemon.stderr():
        assert time.monotonic() < deadline, live.daemon.stderr()[-2000:]
        time.sleep(0.05)
    assert live.daemon.stderr().count("container engine docker unavailable") == 1
    name = rt.name("after-restart")
    try:
        full_id = rt.run(name, opts=("--cap-add", "NET_RAW"))
        packet = in_container(rt, name, PACKET, "arping", "-c", "1", "-w", "1", "-I", "lo", "127.0.0.1")
        assert_identity(live.expect(packet, f"{PACKET} in {name} after the restart"), rt, name, full_id)
    finally:
        rt.remove(name)
