"""End to end with containerd: `falconet run` with the real eBPF sensor and Falco's stable rules (unmodified),
real containers started by a test-started containerd (plain ones with `ctr`, Kubernetes pods by its CRI plugin
driven with `crictl`), real actions inside them; the alerts must say which container, image and pod did it.

The daemon's `dns` section maps kubernetes.default.svc.cluster.local to 192.0.2.10 (a documentation address),
which a pod's own network namespace (from the test's CNI network) carries on its loopback with a listener, so
the connection Falco's API-server rule looks for is made for real without leaving that namespace.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from containerd_env import (
    IMAGE_REF,
    IMAGE_REPO,
    IMAGE_TAG,
    Containerd,
    container_config,
    import_images,
    pod_config,
    start_containerd,
    unavailable,
    wait_until,
)

from container_live import METADATA_WAIT, DaemonProcess
from resources import SHARED, missing

pytestmark = [pytest.mark.containers, pytest.mark.bpf, pytest.mark.upstream]

UPSTREAM = SHARED / "upstream-rules" / "current" / "falco_rules.yaml"
TEST_RULES = Path(__file__).with_name("containerd_test_rules.yaml")
API_NAME = "kubernetes.default.svc.cluster.local"
API_ADDR = "192.0.2.10"  # documentation range; only ever configured inside a pod's own network namespace
FIELDS = ["container.id", "container.full_id", "container.name", "container.type", "container.image.repository",
          "container.image.tag", "container.privileged", "k8s.ns.name", "k8s.pod.name", "k8s.pod.uid",
          "k8s.pod.sandbox_id", "k8s.pod.ip", "k8s.pod.labels", "proc.cmdline", "fd.sip.name"]
NETCAT = "Netcat Remote Code Execution in Container"
DEBUGFS = "Debugfs Launched in Privileged Container"
SHELL = "Terminal shell in container"
K8S_API = "Contact K8S API Server From Container"


class Alerts:
    """The daemon's JSON alerts file, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._buf = ""
        self.all: list[dict[str, Any]] = []

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._pos)
                chunk = f.read()
                self._pos = f.tell()
            *lines, self._buf = (self._buf + chunk).split("\n")
            self.all.extend(json.loads(line) for line in lines if line.strip())
        return [a for a in self.all if pred(a)]

    def wait_for(self, rule: str, container_id: str, timeout: float = 60.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def find() -> bool:
            found[:] = self.matching(lambda a: a.get("rule") == rule and fields(a).get("container.id") == container_id)
            return bool(found)

        try:
            wait_until(find, timeout, f"{rule!r} from {container_id}")
            return found[0]
        except AssertionError:
            recent = [(a.get("rule"), fields(a).get("container.id")) for a in self.all[-15:]]
            raise AssertionError(f"no {rule!r} alert from {container_id}; last alerts: {recent}") from None


def fields(alert: dict[str, Any]) -> dict[str, Any]:
    return alert.get("output_fields") or {}


def live_config(work: Path, env: Containerd) -> str:
    config = {
        "rules_files": [str(UPSTREAM), str(TEST_RULES)],
        "rule_matching": "all",
        "json_output": True,
        "stdout_output": {"enabled": False},
        "file_output": {"enabled": True, "keep_alive": True, "filename": str(work / "alerts.json")},
        "grpc": {"enabled": True, "bind_address": [f"unix://{work / 'falconet.sock'}"]},
        "webserver": {"enabled": True, "listen_address": "127.0.0.1", "listen_port": 0},
        "container_engines": {"cri": {"sockets": [str(env.socket)]}, "docker": {"enabled": False},
                              "podman": {"enabled": False}},
        "append_output": [{"match": {"source": "syscall"}, "extra_fields": FIELDS}],
        "dns": {"hosts": {API_NAME: [API_ADDR]}},
        # Falco's rules cannot bound the open filter, so every open is shipped: room for other tests' bursts.
        "sensor": {"ring_buffer_bytes": 64 << 20},
        "container_metadata_wait": METADATA_WAIT,  # first alerts named however loaded the machine is
    }
    return yaml.safe_dump(config)


@dataclass
class Live:
    env: Containerd
    daemon: DaemonProcess
    alerts: Alerts
    work: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if not UPSTREAM.exists():
        missing(f"{UPSTREAM} is absent (../shared beside the checkout, or $FALCONET_SHARED)")
    base = tmp_path_factory.mktemp("ctrd-live")
    env = start_containerd(base / "containerd")
    daemon: DaemonProcess | None = None
    try:
        import_images(env, base)
        work = base / "daemon"
        work.mkdir()
        daemon = DaemonProcess(work, live_config(work, env))
        try:
            daemon.wait_for_line(r"falconet: ready", timeout=180)
            daemon.wait_for_line(r"container engine cri: connected", timeout=60)
        except AssertionError as exc:
            unavailable(f"falconet run with the eBPF sensor and containerd did not start:\n{exc}")
        yield Live(env, daemon, Alerts(work / "alerts.json"), work)
    finally:
        if daemon is not None:
            daemon.kill()
        env.stop()


def new_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def check_identity(alert: dict[str, Any], full_id: str, name: str, privileged: bool) -> None:
    f = fields(alert)
    assert (f["container.id"], f["container.full_id"], f["container.name"]) == (full_id[:12], full_id, name)
    assert (f["container.image.repository"], f["container.image.tag"]) == (IMAGE_REPO, IMAGE_TAG)
    assert f["container.privileged"] is privileged


def test_plain_container_netcat_first_alert_has_metadata(live: Live) -> None:
    """`nc -e` as the container's own process (exec'd by runc, so proc.name is nc; busybox sh would run the
    applet through /proc/self/exe): its very first alert already names the container."""
    cid, name = new_id(), f"fnt-ctrd-nc-{uuid.uuid4().hex[:6]}"
    live.env.ctr("run", "-d", "--label", f"nerdctl/name={name}", IMAGE_REF, cid,
                 "/bin/nc", "-e", "/bin/true", "127.0.0.1", "9")
    try:
        alert = live.alerts.wait_for(NETCAT, cid[:12])
        check_identity(alert, cid, name, privileged=False)
        f = fields(alert)
        assert f["container.type"] == "containerd"  # containerd's /<namespace>/<id> cgroup, then its record
        assert f["k8s.ns.name"] is None and f["k8s.pod.name"] is None  # not a pod
        assert f["proc.cmdline"] == "nc -e /bin/true 127.0.0.1 9"
    finally:
        live.env.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)


def test_plain_privileged_container_debugfs(live: Live) -> None:
    cid, name = new_id(), f"fnt-ctrd-priv-{uuid.uuid4().hex[:6]}"
    live.env.ctr("run", "-d", "--privileged", "--label", f"nerdctl/name={name}", IMAGE_REF, cid,
                 "/bin/sleep", "600")
    try:
        live.env.ctr("tasks", "exec", "--exec-id", "debugfs", cid, "/bin/sh", "-c",
                     "ln -s /bin/busybox /tmp/debugfs; /tmp/debugfs -R stats /dev/null || true")
        alert = live.alerts.wait_for(DEBUGFS, cid[:12])
        check_identity(alert, cid, name, privileged=True)
    finally:
        live.env.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)


def run_pod(live: Live, *, host_network: bool, command: tuple[str, ...] = ("/bin/sleep", "600"),
            labels: dict[str, str] | None = None) -> tuple[str, str, str, str]:
    """A pod with one running container `app`: (pod id, container id, pod name, pod uid)."""
    uid = str(uuid.uuid4())
    name = f"web-{uid[:6]}"
    pc = pod_config(live.work, name, "team-a", uid, labels or {"app": "web"}, host_network=host_network)
    pod = live.env.crictl("runp", str(pc)).stdout.strip()
    cc = container_config(live.work, "app", name, "team-a", uid, command=list(command), host_network=host_network)
    cid = live.env.crictl("create", pod, str(cc), str(pc)).stdout.strip()
    live.env.crictl("start", cid)
    return pod, cid, name, uid


def remove_pod(live: Live, pod: str) -> None:
    live.env.crictl("stopp", pod, check=False)
    live.env.crictl("rmp", "-f", pod, check=False)


def test_cri_pod_terminal_shell_names_the_pod(live: Live) -> None:
    """`crictl exec -it` (kubectl exec's path into a pod) from a terminal: the shell alert names pod and
    namespace, from the labels the CRI plugin itself wrote."""
    pod, cid, pod_name, uid = run_pod(live, host_network=True)
    try:
        crictl = " ".join(live.env.crictl_argv("exec", "-it", cid, "/bin/sh", "-c", "exit 0"))
        res = subprocess.run(["script", "-qec", crictl, "/dev/null"], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout[-500:] + res.stderr[-500:]
        alert = live.alerts.wait_for(SHELL, cid[:12])
        check_identity(alert, cid, "app", privileged=False)
        f = fields(alert)
        assert (f["k8s.ns.name"], f["k8s.pod.name"], f["k8s.pod.uid"]) == ("team-a", pod_name, uid)
        assert (f["k8s.pod.sandbox_id"], f["container.type"]) == (pod[:12], "containerd")
        assert f["k8s.pod.ip"] is None  # host network
    finally:
        remove_pod(live, pod)


def test_cri_pod_first_alert_names_pod_and_image(live: Live) -> None:
    """A pod whose container's own first process is the action: the alert (held for the metadata, at most
    METADATA_WAIT here) already has the container, image and pod."""
    pod, cid, pod_name, uid = run_pod(live, host_network=True, command=("/bin/nc", "-e", "/bin/true", "127.0.0.1", "9"),
                                      labels={"app": "first", "tier": "edge"})
    try:
        alert = live.alerts.wait_for(NETCAT, cid[:12])
        check_identity(alert, cid, "app", privileged=False)
        f = fields(alert)
        assert (f["k8s.ns.name"], f["k8s.pod.name"], f["k8s.pod.uid"]) == ("team-a", pod_name, uid)
        assert f["k8s.pod.labels"] == "app:first, tier:edge"
    finally:
        remove_pod(live, pod)


def test_k8s_api_server_from_a_pod_and_not_from_the_host(live: Live) -> None:
    pod, cid, pod_name, _uid = run_pod(live, host_network=False)
    try:
        status = json.loads(live.env.crictl("inspectp", pod).stdout)
        sandbox_pid, pod_ip = status["info"]["pid"], status["status"]["network"]["ip"]
        netns = ["nsenter", "-t", str(sandbox_pid), "-n"]
        subprocess.run([*netns, "ip", "addr", "add", f"{API_ADDR}/32", "dev", "lo"], check=True)
        listener = subprocess.Popen(
            [*netns, "/usr/bin/python3", "-c",
             "import socket,sys; s=socket.create_server(('%s', 443)); print('up', flush=True)\n"
             "for _ in range(2): s.accept()[0].close()" % API_ADDR],
            stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
            live.env.crictl("exec", cid, "/bin/sh", "-c", f"echo hi | nc -w 2 {API_ADDR} 443")
            alert = live.alerts.wait_for(K8S_API, cid[:12])
            check_identity(alert, cid, "app", privileged=False)
            f = fields(alert)
            assert (f["k8s.ns.name"], f["k8s.pod.name"], f["k8s.pod.ip"]) == ("team-a", pod_name, pod_ip)
            assert f["fd.sip.name"] == API_NAME

            # The same connection from a host process (in the pod's network namespace, but in no container).
            tok = uuid.uuid4().hex[:10]
            host_code = (f"import socket; socket.create_connection(('{API_ADDR}', 443), 5).close(); "
                         f"open('/tmp/falconet-ctrd-barrier-{tok}', 'w').close()")
            subprocess.run([*netns, "/usr/bin/python3", "-c", host_code, tok], check=True, timeout=30)
            wait_until(lambda: bool(live.alerts.matching(lambda a: tok in a.get("output", "")
                                                         and a.get("rule") == "Test containerd barrier")), 60,
                       "the host barrier")
            host = live.alerts.matching(lambda a: tok in str(fields(a).get("proc.cmdline")))
            rules = {a["rule"] for a in host}
            assert "Test connect to the cluster API name" in rules and K8S_API not in rules
            hf = fields(next(a for a in host if a["rule"] == "Test connect to the cluster API name"))
            assert (hf["container.id"], hf["container.name"], hf["k8s.ns.name"], hf["k8s.pod.name"]) == (
                "host", "host", None, None)
        finally:
            listener.kill()
            listener.wait(10)
            if listener.stdout is not None:
                listener.stdout.close()
    finally:
        remove_pod(live, pod)
        Path(f"/tmp/falconet-ctrd-barrier-{locals().get('tok', 'none')}").unlink(missing_ok=True)


def test_daemon_survives_containerd_restart(live: Live) -> None:
    """Kept last: containerd killed under the running daemon (one log line), then back: metadata recovers."""
    live.env.proc.kill()
    live.env.proc.wait(30)
    live.daemon.wait_for_line(r"container engine cri unavailable", timeout=60)
    assert live.daemon.proc.poll() is None
    restarted = start_containerd(live.env.base)
    subprocess.run(["ip", "link", "del", live.env.bridge], capture_output=True)
    live.env.proc, live.env.bridge = restarted.proc, restarted.bridge
    live.daemon.wait_for_line(r"container engine cri: connected again", timeout=60)
    cid, name = new_id(), f"fnt-ctrd-back-{uuid.uuid4().hex[:6]}"
    live.env.ctr("run", "-d", "--label", f"nerdctl/name={name}", IMAGE_REF, cid,
                 "/bin/nc", "-e", "/bin/true", "127.0.0.1", "9")
    try:
        check_identity(live.alerts.wait_for(NETCAT, cid[:12]), cid, name, privileged=False)
    finally:
        live.env.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
