"""One real rootful Podman container under the live sensor: identity, pid 1, and a dropped binary's upper layer.

The kernel-side check with a real runtime (the cgroup layouts themselves are covered for every runtime by
test_containers_live.py). Podman here: runc (Debian's crun 1.8 refuses this hybrid cgroup layout), the cgroupfs
manager (no systemd), explicit ulimits (root lacks CAP_SYS_RESOURCE), no network. The image is a busybox-static
rootfs imported under its own name (kept between runs). The Makefile's runtime installs belong to the runtime
tests' owner; this file needs only `podman` and `runc` on PATH.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from falconet.model.event import Event
from falconet.rules.engine import Engine, Resolvers

from resources import missing, shared_path

from .conftest import LiveSensor, collect

pytestmark = [pytest.mark.bpf, pytest.mark.containers, pytest.mark.upstream]

IMAGE = "localhost/falconet-ck/busybox:kernel"
DROP_RULE = "Drop and execute new binary in container"
PODMAN_FLAGS = ["--runtime", "runc", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit",
                "nproc=4096:4096"]
APPLETS = ("sh", "cat", "cp", "sleep", "true")
IMAGE_LOCK = Path(os.environ.get("FALCONET_TEST_RUN", "/run/falconet-test")) / "podman-images.lock"
"""The lock file tests/containers/container_runtimes.py's `_host_lock("podman-images")` takes."""


def _podman() -> str:
    exe = shutil.which("podman")
    if exe is None or shutil.which("runc") is None:
        missing("podman and runc are needed (apt-get install podman runc; the Makefile's container packages)")
    return exe


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add("/bin/busybox", arcname="bin/busybox")
        for name in APPLETS:
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def _ensure_image(podman: str) -> None:
    """Imports under the host-wide lock tests/containers' runs take too: Podman's image store is shared by every
    run on the machine, and two imports at once can leave one of them with a half-registered image."""
    IMAGE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(IMAGE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if subprocess.run([podman, "image", "exists", IMAGE], timeout=60).returncode == 0:
            return
        subprocess.run([podman, "import", "-", IMAGE], input=_rootfs_tar(), check=True, capture_output=True,
                       timeout=120)
    finally:
        os.close(fd)


def test_real_podman_container_identity_pid1_and_upper_layer(sensor: LiveSensor) -> None:
    podman = _podman()
    _ensure_image(podman)
    marker = f"ck-podman-{os.getpid()}-{time.monotonic_ns()}"
    name = f"falconet-ck-{os.getpid()}"
    # paths, not applet names: busybox sh runs its own applets without an exec
    script = ("/bin/cat /etc/hostname >/dev/null; cp /bin/busybox /tmp/dropped; "
              "/tmp/dropped cat /etc/hostname >/dev/null; true")
    subprocess.run([podman, "rm", "-f", name], capture_output=True, timeout=60)

    def workload() -> str:
        subprocess.run([podman, "rm", "-f", name], capture_output=True, timeout=60)
        run = subprocess.run([podman, "run", "--name", name, *PODMAN_FLAGS, IMAGE, "/bin/sh", "-c", script, marker],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        cid = subprocess.run([podman, "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()
        subprocess.run([podman, "rm", "-f", name], capture_output=True, timeout=60)
        return cid

    def is_sh(proc: object) -> bool:  # the container's sh (podman's own command line carries the marker too)
        return getattr(proc, "name", None) == "sh" and marker in getattr(proc, "args", [])

    def keep(_cid: str, e: Event) -> bool:
        mine = is_sh(e.proc) or is_sh(e.proc.parent)
        return mine and (e.type == "execve" and e.res == 0 or (
            e.type == "openat" and e.fd is not None and e.fd.name == "/etc/hostname"))

    def done(k: list[Event]) -> bool:
        return all(any(e.type == "execve" and e.proc.exe == x for e in k) for x in ("/tmp/dropped", "/bin/cat")) \
            and any(e.proc.vpid == 1 for e in k)

    cid, evs = collect(sensor, workload, keep, done, timeout=60)
    assert len(cid) == 64
    for e in evs:
        assert (e.container.id, e.container.full_id, e.container.type) == (cid[:12], cid, "podman"), e.type
        assert e.proc.container_id == cid[:12]
    init = next(e for e in evs if e.type == "execve" and is_sh(e.proc))
    assert init.proc.vpid == 1 and init.vtid == 1 and init.proc.pid != 1
    assert init.proc.pidns_init_start_ts is not None
    assert abs(init.proc.pidns_init_start_ts - init.proc.start_ts) < 1_000_000_000
    from_image = [e for e in evs if e.type == "execve" and e.proc.exe == "/bin/cat"]
    dropped = [e for e in evs if e.type == "execve" and e.proc.exe == "/tmp/dropped"]
    assert from_image and dropped
    # the kernel's file, seen from the container's root: the applet symlink resolves to busybox
    assert all(e.proc.exepath == "/bin/busybox" for e in from_image)
    assert all(e.proc.exepath == "/tmp/dropped" for e in dropped)
    assert all(e.proc.exe_upper_layer is False and e.proc.vpid > 1 for e in from_image)
    assert all(e.proc.exe_upper_layer is True for e in dropped)
    assert dropped[0].proc.pidns_init_start_ts == init.proc.pidns_init_start_ts
    # Falco's stable rule, loaded unmodified, fires on the dropped binary and not on the image's own
    stable = shared_path("upstream-rules", "current", "falco_rules.yaml")
    engine = Engine.from_files([stable], resolvers=Resolvers(hostname=lambda: "ck", dns=lambda _n: []))
    assert DROP_RULE in engine.matching_rules(dropped[0])
    assert DROP_RULE not in engine.matching_rules(from_image[0])
