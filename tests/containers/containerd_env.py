"""A containerd the tests start themselves (own root, state and socket), with its CRI plugin, and crictl.

This machine has a hybrid cgroup v1 layout, no systemd and no image registry, so the CRI plugin is configured
for the cgroupfs driver, its sandbox (pause) image is the locally built busybox image (imported into the
`k8s.io` namespace before any pod is run). Pods use either the node's network, or their own network namespace
from Debian's CNI plugins: a bridge with no address on the host (so nothing is routed to or from it) and pod
addresses from the documentation range POD_SUBNET. The streaming server that `crictl exec` talks to listens
on 127.0.0.1. When CI=true a containerd that cannot start
FAILS the tests (never skips).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from oci_archive import write_oci_archive
from resources import missing

REPO = Path(__file__).resolve().parents[2]
CRICTL = REPO / ".tools" / "bin" / "crictl"
PAUSE_REF = "localhost/falconet-pause:1"
IMAGE_REPO = "localhost/falconet-busybox"
IMAGE_TAG = "1.35-test"
IMAGE_REF = f"{IMAGE_REPO}:{IMAGE_TAG}"
POD_SUBNET = "203.0.113.64/26"  # documentation range (RFC 5737); nothing outside the pods' namespaces
CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
IMAGE_CACHE = Path(os.environ.get("FALCONET_TEST_IMAGE_CACHE", "/var/cache/falconet-tests"))


def unavailable(why: str) -> NoReturn:
    """A missing runtime: a failure when CI=true (CI must have one), a skip elsewhere (tests/resources.py)."""
    missing(why)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _cni_config(base: Path, bridge: str) -> str:
    """A bridge without a gateway address (isGateway false, no masquerading): pods reach only each other."""
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "falconet-test",
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False, "hairpinMode": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "dataDir": str(base / "cni-ipam")},
        }],
    })


def _config(base: Path, sock: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_REF}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{base / 'cni-conf'}"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
"""


@dataclass
class Containerd:
    """A running containerd: `ctr(...)` and `crictl(...)` run against its socket."""

    base: Path
    proc: subprocess.Popen[bytes]
    bridge: str = ""

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def state(self) -> Path:
        return self.base / "state"

    def ctr(self, *args: str, namespace: str = "default", check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "-n", namespace, *args], check=check,
                              capture_output=True, text=True, timeout=timeout)

    def crictl_argv(self, *args: str) -> list[str]:
        endpoint = f"unix://{self.socket}"
        return [str(CRICTL), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--timeout", "60s", *args]

    def crictl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.crictl_argv(*args), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def log(self) -> str:
        path = self.base / "containerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Removes what the tests left (pods, containers, tasks), then stops containerd and its shims."""
        if self.proc.poll() is None:
            if CRICTL.exists():
                pods = self.crictl("pods", "-q", check=False).stdout.split()
                for pod in pods:
                    self.crictl("stopp", pod, check=False)
                    self.crictl("rmp", "-f", pod, check=False)
            for line in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
                self.ctr("tasks", "delete", "-f", line, check=False)
            for line in self.ctr("containers", "ls", "-q", check=False).stdout.split():
                self.ctr("containers", "delete", line, check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Shims outlive containerd by design; end the ones of this instance (their address names our socket).
        for pid_dir in Path("/proc").iterdir():
            if pid_dir.name.isdigit():
                try:
                    cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and str(self.socket).encode() in \
                        b" ".join(cmdline):
                    try:
                        os.kill(int(pid_dir.name), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(self.base / "root")], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(self.base / "state")], capture_output=True)


def start_containerd(base: Path) -> Containerd:
    """Starts containerd with the CRI plugin under `base`; fails (or skips outside CI) if it cannot."""
    if os.geteuid() != 0:
        unavailable("containerd needs root")
    for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (make setup installs Debian's containerd and runc)")
    if not CRICTL.exists():
        unavailable(f"{CRICTL} is missing (make tools-containers installs the pinned crictl)")
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN / plugin).exists():
            unavailable(f"{CNI_BIN / plugin} is missing (make setup installs Debian's containernetworking-plugins)")
    for d in ("root", "state", "cni-conf"):
        (base / d).mkdir(parents=True, exist_ok=True)
    sock = base / "containerd.sock"
    bridge = f"fcri{uuid.uuid4().hex[:8]}"
    (base / "cni-conf" / "10-falconet-test.conflist").write_text(_cni_config(base, bridge))
    (base / "config.toml").write_text(_config(base, sock))
    with (base / "containerd.log").open("wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml"), "--log-level", "info"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = Containerd(base, proc, bridge)

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"containerd exited ({proc.returncode}):\n{env.log()}")
        return sock.exists() and env.ctr("version", check=False, timeout=10).returncode == 0

    try:
        wait_until(serving, 60, "containerd to serve its socket")
        plugins = env.ctr("plugins", "ls").stdout
        cri_line = next((ln for ln in plugins.splitlines() if "io.containerd.grpc.v1" in ln and " cri " in ln), "")
        if not cri_line.rstrip().endswith("ok"):
            raise AssertionError(f"containerd's CRI plugin did not load: {cri_line!r}\n{env.log()}")
    except AssertionError as exc:
        env.stop()
        unavailable(str(exc))
    return env


def import_images(env: Containerd, work: Path) -> None:
    """Imports the pause and test images into both namespaces (built once, cached between runs)."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    images = {
        PAUSE_REF: (IMAGE_CACHE / "falconet-pause.oci.tar", ["/bin/sleep", "2147483647"], {}),
        IMAGE_REF: (IMAGE_CACHE / "falconet-busybox.oci.tar", ["/bin/sh"], {"org.falconet.test": "busybox"}),
    }
    for ref, (path, cmd, labels) in images.items():
        tmp = work / (path.name + ".tmp")
        write_oci_archive(tmp, ref, cmd, labels)
        if not path.exists() or path.read_bytes() != tmp.read_bytes():
            tmp.replace(path)
        for ns in ("k8s.io", "default"):
            env.ctr("images", "import", "--no-unpack" if False else "--all-platforms", str(path), namespace=ns)
            if ns == "default":
                env.ctr("images", "unpack", ref, namespace=ns, check=False)


def image_digest(env: Containerd, ref: str, namespace: str = "default") -> str:
    """The manifest digest containerd stores for `ref` (what container.image.digest must be)."""
    for line in env.ctr("images", "ls", namespace=namespace).stdout.splitlines()[1:]:
        cols = line.split()
        if cols and cols[0] == ref:
            return next(c for c in cols if c.startswith("sha256:"))
    raise AssertionError(f"{ref} not in containerd's image list")


def pod_config(work: Path, name: str, namespace: str, uid: str, labels: dict[str, str], *,
               privileged: bool = False, host_network: bool = True) -> Path:
    """A pod sandbox config as a kubelet sends it: for a host-network pod no hostname (the node's UTS namespace);
    the cgroupfs driver's parent cgroup; a privileged sandbox when a container of it is (as a kubelet does)."""
    network = 2 if host_network else 0  # NamespaceMode NODE / POD
    kube = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid}
    config: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "attempt": 0},
        "log_directory": str(work / "pod-logs" / uid),
        **({} if host_network else {"hostname": name}),
        "labels": {**labels, **kube},
        "annotations": {"kubernetes.io/config.source": "api"},
        "linux": {
            "cgroup_parent": f"/kubepods/besteffort/pod{uid}",
            "security_context": {"privileged": privileged,
                                 "namespace_options": {"network": network, "pid": 1, "ipc": 0}},
        },
    }
    path = work / f"pod-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(config))
    return path


def container_config(work: Path, name: str, pod_name: str, namespace: str, uid: str, *,
                     command: list[str], privileged: bool = False, host_network: bool = True) -> Path:
    """A container config as a kubelet sends it (its io.kubernetes.* labels included)."""
    config: dict[str, Any] = {
        "metadata": {"name": name, "attempt": 0},
        "image": {"image": IMAGE_REF},
        "command": command,
        "log_path": f"{name}.log",
        "labels": {"io.kubernetes.container.name": name, "io.kubernetes.pod.name": pod_name,
                   "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid},
        "linux": {"security_context": {"privileged": privileged,
                                       "namespace_options": {"network": 2 if host_network else 0, "pid": 1,
                                                             "ipc": 0}}},
    }
    path = work / f"ctr-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(config))
    return path
