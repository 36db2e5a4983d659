"""The containerd client against a real containerd: plain containers run with `ctr`, and Kubernetes pods run by
containerd's own CRI plugin driven with `crictl` (so the plugin itself writes the records a kubelet causes).

Each test starts real containers from the locally built busybox image and checks what the client reports
against what the runtime itself says (`ctr`, `crictl inspect`, /proc of the container's process).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerd_env import (
    IMAGE_REF,
    IMAGE_REPO,
    IMAGE_TAG,
    PAUSE_REF,
    Containerd,
    container_config,
    image_digest,
    import_images,
    pod_config,
    start_containerd,
    wait_until,
)

from falconet.sensor.cgroups import container_from_cgroup
from falconet.sensor.containers.containerd import ContainerdClient
from falconet.sensor.containers.registry import EngineSettings, RuntimeEvent, RuntimeUnavailable

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    base = tmp_path_factory.mktemp("ctrd")
    env = start_containerd(base)
    try:
        import_images(env, base)
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="module")
def client(containerd: Containerd) -> Iterator[ContainerdClient]:
    c = ContainerdClient(EngineSettings(sockets=(str(containerd.socket),), timeout=5.0))
    yield c
    c.close()


def new_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def config_digest(env: Containerd, ref: str, namespace: str = "default") -> str:
    manifest = json.loads(env.ctr("content", "get", image_digest(env, ref, namespace), namespace=namespace).stdout)
    return str(manifest["config"]["digest"]).removeprefix("sha256:")


def task_pid(env: Containerd, cid: str) -> int:
    for line in env.ctr("tasks", "ls").stdout.splitlines()[1:]:
        cols = line.split()
        if cols and cols[0] == cid:
            return int(cols[1])
    raise AssertionError(f"no task for {cid}")


def test_plain_container(containerd: Containerd, client: ContainerdClient, tmp_path: Path) -> None:
    cid = new_id()
    shared = tmp_path / "shared"
    shared.mkdir()
    before = time.time_ns()
    containerd.ctr("run", "-d", "--label", "nerdctl/name=falconet-plain", "--label", "team=blue",
                   "--mount", f"type=bind,src={shared},dst=/data,options=rbind:ro", IMAGE_REF, cid,
                   "/bin/sleep", "600")
    try:
        got = client.lookup(cid)
        assert got is not None
        assert (got.id, got.full_id, got.type) == (cid[:12], cid, "containerd")
        assert got.name == "falconet-plain"
        assert (got.image, got.image_repository, got.image_tag) == (IMAGE_REF, IMAGE_REPO, IMAGE_TAG)
        assert got.image_digest == image_digest(containerd, IMAGE_REF)
        assert got.image_id == config_digest(containerd, IMAGE_REF)
        assert got.privileged is False
        assert (got.host_pid, got.host_network, got.host_ipc) == (False, False, False)
        assert got.labels["team"] == "blue" and got.labels["org.falconet.test"] == "busybox"  # image label too
        assert {"source": str(shared), "dest": "/data", "mode": "ro", "rdwr": False, "propagation": ""} in got.mounts
        assert got.start_ts is not None and before - 1_000_000_000 <= got.start_ts <= time.time_ns()
        assert (got.k8s_ns_name, got.k8s_pod_name, got.k8s_pod_uid, got.k8s_pod_sandbox_id) == (None,) * 4
        assert got.k8s_pod_labels == {}
        # The cgroup the runtime put it in names the same container (what the sensor keys lookups by).
        cgroup = Path(f"/proc/{task_pid(containerd, cid)}/cgroup").read_text()
        ref = container_from_cgroup(cgroup.splitlines()[-1].split(":", 2)[2])
        assert ref is not None and ref.full_id == cid
        assert client.lookup(cid[:12]) == got  # Falco's short id finds it too
    finally:
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        wait_until(lambda: containerd.ctr("tasks", "delete", cid, check=False).returncode == 0, 30, "task exit")
        containerd.ctr("containers", "delete", cid)
    assert client.lookup(cid) is None  # gone with its record


def test_plain_privileged_host_network(containerd: Containerd, client: ContainerdClient) -> None:
    cid = new_id()
    containerd.ctr("run", "-d", "--privileged", "--net-host", IMAGE_REF, cid, "/bin/sleep", "600")
    try:
        got = client.lookup(cid)
        assert got is not None
        assert got.privileged is True  # every capability and every device
        assert got.name == cid  # no name label: the id, as containerd has no other name
        assert (got.host_network, got.host_pid) == (True, False)
    finally:
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)


def run_pod(env: Containerd, work: Path, *, labels: dict[str, str], privileged: bool = False,
            host_network: bool = True) -> tuple[str, str, str, str]:
    """A pod with one running container: (pod id, container id, pod name, pod uid)."""
    uid = str(uuid.uuid4())
    name = f"web-{uid[:6]}"
    pc = pod_config(work, name, "team-a", uid, labels, privileged=privileged, host_network=host_network)
    pod = env.crictl("runp", str(pc)).stdout.strip()
    cc = container_config(work, "app", name, "team-a", uid, command=["/bin/sleep", "600"], privileged=privileged,
                          host_network=host_network)
    cid = env.crictl("create", pod, str(cc), str(pc)).stdout.strip()
    env.crictl("start", cid)
    return pod, cid, name, uid


def test_cri_pod_container_and_sandbox(containerd: Containerd, client: ContainerdClient, tmp_path: Path) -> None:
    pod, cid, name, uid = run_pod(containerd, tmp_path, labels={"app": "web", "tier": "front"})
    try:
        got = client.lookup(cid)
        assert got is not None
        assert (got.full_id, got.name, got.type) == (cid, "app", "containerd")
        assert (got.image_repository, got.image_tag) == (IMAGE_REPO, IMAGE_TAG)
        assert got.image_digest == image_digest(containerd, IMAGE_REF, "k8s.io")
        assert got.image_id == config_digest(containerd, IMAGE_REF, "k8s.io")
        assert (got.k8s_ns_name, got.k8s_pod_name, got.k8s_pod_uid) == ("team-a", name, uid)
        assert got.k8s_pod_sandbox_id == pod
        assert got.k8s_pod_labels == {"app": "web", "tier": "front"}
        assert got.k8s_pod_ip is None  # host network: the CRI reports no pod IP (kubelet uses the node's)
        assert got.privileged is False
        assert (got.host_network, got.host_pid, got.host_ipc) == (True, False, False)
        assert got.labels["io.kubernetes.container.name"] == "app"
        # What crictl (the CRI's own status) says agrees.
        status = json.loads(containerd.crictl("inspect", cid).stdout)
        assert status["status"]["metadata"]["name"] == got.name
        assert status["status"]["labels"] == got.labels
        cgroup = Path(f"/proc/{status['info']['pid']}/cgroup").read_text().splitlines()[-1].split(":", 2)[2]
        assert cgroup == f"/kubepods/besteffort/pod{uid}/{cid}"  # the cgroupfs driver's layout
        ref = container_from_cgroup(cgroup)
        assert ref is not None and ref.full_id == cid

        sandbox = client.lookup(pod)
        assert sandbox is not None
        assert (sandbox.name, sandbox.k8s_pod_name, sandbox.k8s_pod_sandbox_id) == (name, name, pod)
        assert sandbox.image == PAUSE_REF
    finally:
        containerd.crictl("stopp", pod, check=False)
        containerd.crictl("rmp", "-f", pod, check=False)
    assert client.lookup(cid) is None


def test_cri_privileged_container(containerd: Containerd, client: ContainerdClient, tmp_path: Path) -> None:
    pod, cid, _name, _uid = run_pod(containerd, tmp_path, labels={"app": "debug"}, privileged=True)
    try:
        got = client.lookup(cid)
        assert got is not None and got.privileged is True  # the CRI security context
        assert got.k8s_pod_labels == {"app": "debug"}
    finally:
        containerd.crictl("stopp", pod, check=False)
        containerd.crictl("rmp", "-f", pod, check=False)


def test_cri_pod_network_ip(containerd: Containerd, client: ContainerdClient, tmp_path: Path) -> None:
    pod, cid, name, _uid = run_pod(containerd, tmp_path, labels={"app": "net"}, host_network=False)
    try:
        status = json.loads(containerd.crictl("inspectp", pod).stdout)
        ip = status["status"]["network"]["ip"]
        assert ip.startswith("203.0.113.")  # the CRI's own PodSandboxStatus, from the test's CNI network
        got = client.lookup(cid)
        assert got is not None
        assert (got.k8s_pod_ip, got.ip, got.host_network, got.k8s_pod_name) == (ip, ip, False, name)
    finally:
        containerd.crictl("stopp", pod, check=False)
        containerd.crictl("rmp", "-f", pod, check=False)


def test_events_announce_create_and_exit(containerd: Containerd, client: ContainerdClient) -> None:
    stop = threading.Event()
    seen: list[RuntimeEvent] = []
    running = new_id()
    containerd.ctr("run", "-d", IMAGE_REF, running, "/bin/sleep", "600")  # before the stream: announced on connect

    def follow() -> None:
        for event in client.events(stop):
            seen.append(event)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    cid = new_id()
    try:
        wait_until(lambda: RuntimeEvent("start", running) in seen, 30, "the running container's start")
        assert seen[0] == RuntimeEvent("ready")
        # Connected (ready came after the subscription was made): later changes are not missed.
        containerd.ctr("run", "-d", IMAGE_REF, cid, "/bin/sleep", "600")
        wait_until(lambda: RuntimeEvent("start", cid) in seen, 30, "the create event")
        containerd.ctr("tasks", "exec", "--exec-id", "probe", cid, "/bin/true")  # an exec's exit is no exit
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        wait_until(lambda: RuntimeEvent("exit", cid) in seen, 30, "the exit event")
    finally:
        stop.set()
        thread.join(10)
        for c in (running, cid):
            containerd.ctr("tasks", "kill", "-s", "SIGKILL", c, check=False)
    assert not thread.is_alive()
    assert [e.kind for e in seen if e.full_id == cid] == ["start", "exit"]


def test_missing_or_dead_socket_is_unavailable(tmp_path: Path) -> None:
    missing = ContainerdClient(EngineSettings(sockets=(str(tmp_path / "none.sock"),), timeout=1.0))
    with pytest.raises(RuntimeUnavailable, match="no containerd socket"):
        missing.lookup(new_id())
    import socket

    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))  # bound, never listening: connections are refused
    try:
        refused = ContainerdClient(EngineSettings(sockets=(str(dead),), timeout=1.0))
        with pytest.raises(RuntimeUnavailable, match="UNAVAILABLE|DEADLINE"):
            refused.lookup(new_id())
        refused.close()
    finally:
        s.close()


def test_unknown_ids(client: ContainerdClient) -> None:
    assert client.lookup(new_id()) is None
    assert client.lookup("0123456789ab") is None
