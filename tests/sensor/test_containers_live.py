"""Container identity and the kernel facts container rules need, from the live sensor in the real kernel.

Identity: for each runtime layout the test makes the runtime's real cgroup path (mkdir under the mounted
hierarchies, nested under this test's own cgroup so no resource limit is escaped), moves a waiting child into it
the way a runtime's init does (write its pid to cgroup.procs, then exec the payload) and asserts the events of
real syscalls there carry container.id / full_id / type. Each layout is placed three ways: in the unified (v2)
hierarchy only (what a v2-only host gives), in the v1 controller's hierarchy only (a runtime that leaves the
unified one alone on a hybrid or v1 host), and in both (runc's cgroupfs driver on this hybrid host).

Kernel facts: a real pid namespace (unshare), a real overlayfs mount with a binary dropped into it after the
mount, setsid, and an executable made writable or not for another user (setpriv).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from falconet.model.event import Event
from falconet.rules.fields import resolve
from falconet.sensor import cgroups

from .conftest import LiveSensor, collect

# root besides BPF: cgroups, mounts, pid namespaces and another user's identity
pytestmark = [pytest.mark.bpf, pytest.mark.root]

CID = "4f2b9c1d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"
SANDBOX = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
POD_UID = "6b0a4a8e-5d7f-4c3b-9a1e-2f8d7c6b5a40"
POD_SLICE = POD_UID.replace("-", "_")

# (layout, cgroup path relative to the test's own cgroup, container.type, full id; None = a host cgroup)
LAYOUTS: list[tuple[str, str, str | None, str | None]] = [
    ("docker-cgroupfs", f"docker/{CID}", "docker", CID),
    ("docker-systemd", f"system.slice/docker-{CID}.scope", "docker", CID),
    ("podman-rootful-cgroupfs", f"libpod_parent/libpod-{CID}", "podman", CID),
    ("podman-rootful-systemd-crun", f"machine.slice/libpod-{CID}.scope/container", "podman", CID),
    ("podman-rootless", f"user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope", "podman",
     CID),
    ("containerd-cri-cgroupfs", f"kubepods/besteffort/pod{POD_UID}/{CID}", "containerd", CID),
    ("containerd-plain-ctr", f"default/{CID}", "containerd", CID),
    ("containerd-cri-cgroupfs-sandbox", f"kubepods/besteffort/pod{POD_UID}/{SANDBOX}", "containerd", SANDBOX),
    ("containerd-cri-systemd",
     f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SLICE}.slice/cri-containerd-{CID}.scope",
     "containerd", CID),
    ("cri-o-systemd", f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SLICE}.slice/crio-{CID}.scope",
     "cri-o", CID),
    ("cri-o-cgroupfs", f"kubepods/burstable/pod{POD_UID}/crio-{CID}", "cri-o", CID),
    ("cri-o-conmon", f"kubepods.slice/kubepods-burstable-pod{POD_SLICE}.slice/crio-conmon-{CID}.scope", None, None),
    ("host-service", "system.slice/falconet-test.service", None, None),
]
PAYLOAD = "cat /etc/hostname >/dev/null"


def _hierarchies() -> dict[str, Path]:
    """Where each hierarchy of this host is mounted: "v2" (unified) and "v1" (the controller the sensor reads)."""
    out: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if tail[0] == "cgroup2":
            out.setdefault("v2", Path(fields[4]))
    controller = cgroups.v1_controller()
    if controller is not None:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            pre, _, post = line.partition(" - ")
            tail = post.split()
            if tail[0] == "cgroup" and controller in tail[2].split(","):
                out["v1"] = Path(pre.split()[4])
    return out


def _own_cgroup(hierarchy: str) -> str:
    """This process's cgroup in a hierarchy ("v2": the 0:: line; "v1": the sensor's controller)."""
    controller = cgroups.v1_controller()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, names, path = line.split(":", 2)
        if hierarchy == "v2" and num == "0" and names == "":
            return path
        if hierarchy == "v1" and controller in names.split(","):
            return path
    raise AssertionError(f"no {hierarchy} line in /proc/self/cgroup")


class CgroupPlace:
    """A cgroup path made in the chosen hierarchies, removed (leaf first) afterwards."""

    def __init__(self, rel: str, where: tuple[str, ...]) -> None:
        mounts = _hierarchies()
        missing = [w for w in where if w not in mounts]
        if missing:
            # Another host kind (v2-only has no v1 hierarchy): those placements do not exist there. CI runs on
            # this machine kind (hybrid), where a missing hierarchy is a defect.
            msg = f"this host has no {missing} cgroup hierarchy mounted ({mounts})"
            if os.environ.get("CI") == "true":
                pytest.fail(msg)
            pytest.skip(msg)
        self.dirs: list[Path] = []
        for w in where:
            base = mounts[w] / _own_cgroup(w).lstrip("/")
            top = base / "falconet-ck"
            self.dirs.append(top / rel)
            (top / rel).mkdir(parents=True, exist_ok=True)
        self._tops = [mounts[w] / _own_cgroup(w).lstrip("/") / "falconet-ck" for w in where]

    def enter(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for top in self._tops:
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            top.rmdir()


def _run_in(place: CgroupPlace, marker: str) -> int:
    """A child that the test moves into the cgroup before it execs `sh -c 'cat /etc/hostname' <marker>`."""
    child = subprocess.Popen(["/bin/sh", "-c", f'read go; exec /bin/sh -c "{PAYLOAD}" "$0"', marker],
                             stdin=subprocess.PIPE, text=True)
    assert child.stdin is not None
    try:
        place.enter(child.pid)
        child.stdin.write("go\n")
        child.stdin.close()
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return child.pid


@pytest.mark.parametrize("where", [("v2",), ("v1",), ("v2", "v1")], ids=["v2-only", "v1-only", "hybrid-both"])
@pytest.mark.parametrize(("layout", "rel", "ctype", "full_id"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_identity_of_each_runtime_layout(sensor: LiveSensor, layout: str, rel: str, ctype: str | None,
                                         full_id: str | None, where: tuple[str, ...]) -> None:
    place = CgroupPlace(rel, where)
    marker = f"ck-{layout}-{'-'.join(where)}"
    try:
        pid, evs = collect(
            sensor, lambda: _run_in(place, marker),
            lambda pid, e: (e.type == "execve" and e.proc.pid == pid and e.res == 0 and PAYLOAD in e.proc.args)
            or (e.type == "openat" and e.fd is not None and e.fd.name == "/etc/hostname"
                and (e.proc.pid == pid or (e.proc.parent is not None and e.proc.parent.pid == pid))),
            lambda k: any(e.type == "openat" for e in k) and any(e.type == "execve" for e in k))
    finally:
        place.remove()
    for e in evs:
        if full_id is None:
            assert (e.container.id, e.container.full_id, e.proc.container_id) == ("host", "host", "host"), layout
        else:
            assert e.container.full_id == full_id, (layout, e.type)
            assert e.container.id == full_id[:12] and e.proc.container_id == full_id[:12]
            assert e.container.type == ctype
    assert pid


def test_pid_namespace_view(sensor: LiveSensor) -> None:
    """unshare's child is pid 1 of a new pid namespace; a setsid'd grandchild leads its own session and group."""
    marker = "ck-pidns-marker"

    def workload() -> int:
        subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "/bin/sh", "-c",
                        'cat /etc/hostname >/dev/null; setsid cat /etc/hostname "$0" >/dev/null 2>&1; exit 0', marker],
                       check=True, timeout=60, start_new_session=True)
        return 0

    def keep(_c: int, e: Event) -> bool:
        return (e.type == "execve" and e.res == 0 and marker in e.proc.args) or (
            e.type == "openat" and e.fd is not None and e.fd.name == "/etc/hostname"
            and e.proc.parent is not None and marker in e.proc.parent.args)

    _, evs = collect(sensor, workload, keep,
                     lambda k: sum(1 for e in k if e.type == "openat") >= 2 and any(e.proc.vpid == 1 for e in k))
    init = next(e for e in evs if e.type == "execve" and e.proc.name == "sh")
    assert init.proc.vpid == 1 and init.vtid == 1 and init.proc.pid != 1
    # The namespace's init is this very process: its start is the namespace's.
    assert init.proc.pidns_init_start_ts is not None
    assert abs(init.proc.pidns_init_start_ts - init.proc.start_ts) < 50_000_000
    plain, leader = (e for e in evs if e.type == "openat")
    assert plain.proc.vpid not in (0, 1, plain.proc.pid) and plain.vtid == plain.proc.vpid
    assert plain.proc.pidns_init_start_ts == init.proc.pidns_init_start_ts
    # setsid: its own session and group, numbered in the namespace; the session leader is itself.
    assert leader.proc.sid == leader.proc.pid and leader.proc.vpgid == leader.proc.vpid != 0
    assert leader.proc.pgid == leader.proc.pid
    # The plain cat's group is unshare's, outside the namespace: no number there (Falco's vpgid 0).
    assert plain.proc.vpgid == 0 and plain.proc.pgid != plain.proc.pid
    # ... and as the engine's fields read them
    for field, e, want in (("proc.vpid", init, 1), ("thread.vtid", init, 1), ("proc.is_vpgid_leader", leader, True),
                           ("proc.sname", leader, "cat"), ("proc.sname", plain, _field(plain, "proc.sname")),
                           ("proc.vpgid", leader, leader.proc.vpid),
                           ("proc.pidns_init_start_ts", plain, init.proc.pidns_init_start_ts)):
        assert _field(e, field) == want, field
    # unshare leads the session the workload was started in (start_new_session): an ancestor outside the namespace.
    # Without it the leader is whatever ran pytest, which may be gone or unseen (CI's runner is).
    assert _field(plain, "proc.sname") == "unshare"


def _field(e: Event, name: str) -> object:
    return resolve(name).extract(e)


def test_host_process_pid_view(sensor: LiveSensor) -> None:
    _, evs = collect(sensor, lambda: subprocess.run(["/bin/cat", "/etc/hostname"], capture_output=True,
                                                    check=True, timeout=30).returncode,
                     lambda _c, e: e.type == "openat" and e.fd is not None and e.fd.name == "/etc/hostname"
                     and e.proc.name == "cat" and e.proc.ppid == os.getpid(),
                     lambda k: len(k) >= 1)
    p = evs[0].proc
    assert p.vpid == p.pid and evs[0].vtid == evs[0].tid and p.vpgid == p.pgid
    host_init = int(Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert p.pidns_init_start_ts is not None
    boot_ns = p.pidns_init_start_ts - host_init * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    # the kernel's start of pid 1, read by the probe, agrees with /proc's (in clock ticks) to a few ticks
    assert abs(boot_ns - (time.time_ns() - time.monotonic_ns())) < 100_000_000


@pytest.fixture
def overlay() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="falconet-ovl-"))
    lower, upper, work, merged = (root / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    shutil.copy2("/bin/busybox", lower / "lowerbin")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True, timeout=30)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True, timeout=30)
        shutil.rmtree(root)


def _exec_events(sensor: LiveSensor, argv: list[str], marker: str, exepath: str | None = None) -> list[Event]:
    """The successful execs of `argv + [marker]` (only those of `exepath` when given: setpriv execs first)."""
    _, evs = collect(sensor, lambda: subprocess.run(argv + [marker], capture_output=True, timeout=30).returncode,
                     lambda _c, e: e.type == "execve" and e.res == 0 and marker in e.proc.args
                     and (exepath is None or e.proc.exepath == exepath),
                     lambda k: len(k) >= 1)
    return evs


def test_exe_upper_layer_and_inode_facts(sensor: LiveSensor, overlay: Path) -> None:
    """A binary copied into the mounted overlay (the upper layer) vs one the lower layer brought."""
    dropped = overlay / "upperbin"
    shutil.copy2("/bin/busybox", dropped)  # written after the mount: lands in the upper layer
    os.utime(dropped, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    low = _exec_events(sensor, [str(overlay / "lowerbin"), "echo"], "ck-lower")[0]
    up = _exec_events(sensor, [str(dropped), "echo"], "ck-upper")[0]
    assert low.proc.exepath == str(overlay / "lowerbin") and up.proc.exepath == str(dropped)
    assert low.proc.exe_upper_layer is False
    assert up.proc.exe_upper_layer is True
    assert _field(up, "proc.is_exe_upper_layer") is True and _field(low, "proc.is_exe_upper_layer") is False
    assert _field(up, "proc.exe_ino.mtime") == 1_600_000_000_123_456_789
    st = os.stat(dropped)
    assert up.proc.exe_ino == st.st_ino
    assert up.proc.exe_ino_mtime == st.st_mtime_ns == 1_600_000_000_123_456_789
    assert up.proc.exe_ino_ctime == st.st_ctime_ns
    assert low.proc.exe_ino == os.stat(overlay / "lowerbin").st_ino
    # a plain host binary is on no overlay at all
    host = _exec_events(sensor, ["/bin/busybox", "echo"], "ck-hostbin")[0]
    assert host.proc.exe_upper_layer is False and host.proc.exe_ino == os.stat("/bin/busybox").st_ino


@pytest.fixture
def bindir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="falconet-exe-"))
    d.chmod(0o755)  # another user must reach the binaries
    try:
        yield d
    finally:
        shutil.rmtree(d)


def test_exe_writable_for_the_user_that_runs_it(sensor: LiveSensor, bindir: Path) -> None:
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    roots = bindir / "rootowned"
    shutil.copy2("/bin/busybox", roots)
    roots.chmod(0o755)
    world = bindir / "worldwritable"
    shutil.copy2("/bin/busybox", world)
    world.chmod(0o777)
    owned = bindir / "nobodyowned"
    shutil.copy2("/bin/busybox", owned)
    os.chown(owned, 65534, 65534)
    owned.chmod(0o755)
    ro_owner = bindir / "nobodyreadonly"
    shutil.copy2("/bin/busybox", ro_owner)
    os.chown(ro_owner, 65534, 65534)
    ro_owner.chmod(0o555 | stat.S_IWOTH)  # others may write, the owner may not: the owner's bits decide

    def one(argv: list[str], marker: str) -> Event:
        return _exec_events(sensor, argv + ["echo"], marker, exepath=argv[-1])[0]

    assert one(nobody + [str(roots)], "ck-w1").proc.exe_writable is False
    assert one(nobody + [str(world)], "ck-w2").proc.exe_writable is True
    assert one(nobody + [str(owned)], "ck-w3").proc.exe_writable is True
    assert one(nobody + [str(ro_owner)], "ck-w4").proc.exe_writable is False
    e = one(nobody + [str(roots)], "ck-w5")
    assert e.proc.user.uid == 65534
    # root: the owner's write bit (and CAP_DAC_OVERRIDE besides)
    assert one([str(roots)], "ck-w6").proc.exe_writable is True
