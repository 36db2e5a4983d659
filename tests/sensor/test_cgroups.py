"""Container identity from cgroup paths (fixtures from other hosts' layouts), the v1 controller choice, the exe
facts' judgement, and the BTF lookups the new kernel reads rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
from falconet.sensor import btf as b
from falconet.sensor import cgroups as cg
from falconet.sensor.exefacts import is_exe_writable
from falconet.sensor.record import EXECINFO, ExecInfo, parse_execinfo

FIXTURES = Path(__file__).with_name("fixtures") / "cgroup_paths.txt"


def _cases() -> list[tuple[str, str, str]]:
    out = []
    for line in FIXTURES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            ctype, full_id, path = line.split(None, 2)
            out.append((ctype, full_id, path))
    return out


CASES = _cases()


def test_fixture_covers_every_runtime_and_host() -> None:
    assert {c[0] for c in CASES} == {"docker", "containerd", "cri-o", "podman", "host"}
    assert len(CASES) >= 30


@pytest.mark.parametrize(("ctype", "full_id", "path"), CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_identity_from_fixture_path(ctype: str, full_id: str, path: str) -> None:
    ref = cg.container_from_cgroup(path)
    if ctype == "host":
        assert ref is None
        assert cg.container_id_from_cgroup(path) == cg.HOST_ID
        return
    assert ref == cg.ContainerRef(ctype, full_id)
    assert ref.id == full_id[:12] and len(ref.id) == 12
    # what the kernel hands over (leaf first) rebuilds the same path
    parts = path.strip("/").split("/")
    assert cg.path_from_components(list(reversed(parts))) == "/" + "/".join(parts)


def test_v2_path_first_then_v1() -> None:
    docker = f"/docker/{'a' * 64}"
    podman = f"/libpod_parent/libpod-{'b' * 64}"
    assert cg.container_from_paths([docker, podman]) == cg.ContainerRef("docker", "a" * 64)
    assert cg.container_from_paths(["/", podman]) == cg.ContainerRef("podman", "b" * 64)
    assert cg.container_from_paths(["/", "/process_api/" + "c" * 32]) is None
    assert cg.path_from_components([]) == "/"


@pytest.mark.parametrize(("path", "uid"), [
    ("/kubepods/besteffort/pod6b0a4a8e-5d7f-4c3b-9a1e-2f8d7c6b5a40/" + "a" * 64, "6b0a4a8e-5d7f-4c3b-9a1e-2f8d7c6b5a40"),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod03f3f104_3215_44f2_9686_d4dd1f05a7ed.slice/"
     "cri-containerd-" + "a" * 64 + ".scope", "03f3f104-3215-44f2-9686-d4dd1f05a7ed"),
    ("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod"
     "1e597579_417e_482f_bf65_5fe170c3aebd.slice/cri-containerd-" + "a" * 64 + ".scope",
     "1e597579-417e-482f-bf65-5fe170c3aebd"),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod187bff14cccb94f179e943eacce55bb3.slice",
     "187bff14cccb94f179e943eacce55bb3"),
    ("/docker/" + "a" * 64, None),
    ("/system.slice/podman.service", None),
])
def test_pod_uid(path: str, uid: str | None) -> None:
    assert cg.pod_uid_from_cgroup(path) == uid


HYBRID = """\
25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
30 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_ONLY = "25 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
CPU_ONLY = "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"


def test_v1_controller_from_the_mount_table() -> None:
    assert cg.v1_controller(HYBRID) == "memory"
    assert cg.v1_controller(V2_ONLY) is None
    assert cg.v1_controller(CPU_ONLY) == "cpu"
    assert cg.v1_controller("") is None
    # a named hierarchy alone (name=systemd) has no controller the kernel indexes in css_set.subsys
    assert cg.v1_controller("29 25 0:26 / /x rw - cgroup cgroup rw,name=systemd\n") is None


def test_kernel_btf_has_what_the_identity_reads_need() -> None:
    btf = b.BTF.load()
    offsets = b.kernel_offsets(btf)
    for macro in ("OFF_KERNFS_NODE_PARENT", "OFF_CSS_SET_SUBSYS", "OFF_CSS_CGROUP", "OFF_UPID_NS",
                  "OFF_PIDNS_CHILD_REAPER", "OFF_MM_EXE_FILE", "OFF_INODE_CTIME_SEC", "OFF_SB_MAGIC",
                  "OFF_OVL_UPPERDENTRY"):
        assert offsets[macro] >= 0, macro
    assert b.subsys_id(btf, "memory") >= 0 and b.subsys_id(btf, "nosuch") == -1
    assert b.subsys_id(btf, "cpu") != b.subsys_id(btf, "memory")
    # a member spelled either way (kernfs_node.parent became __parent in 6.15)
    assert btf.offset("kernfs_node", "__parent|parent") == offsets["OFF_KERNFS_NODE_PARENT"]
    with pytest.raises(b.BTFError, match="none of"):
        btf.offset("kernfs_node", "nosuch|alsonot")


def _info(**kw: int | bool) -> ExecInfo:
    base: dict[str, int | bool] = dict(ino=5, ctime_ns=1, mtime_ns=1, sb_magic=0xEF53, sb_flags=0,
                                       mode=0o100755, uid=0, gid=0, iflags=0, fsuid=1000, fsgid=1000,
                                       upper_layer=False)
    base.update(kw)
    return ExecInfo(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "caps", "want"), [
    ({}, 0, False),  # root's 0755 file, another user
    ({"mode": 0o100777}, 0, True),  # others may write
    ({"uid": 1000}, 0, True),  # the user's own file
    ({"uid": 1000, "mode": 0o100557}, 0, False),  # owner class decides: no owner w bit, others' does not count
    ({"gid": 1000, "mode": 0o100775}, 0, True),  # group write
    ({}, 1 << 1, True),  # CAP_DAC_OVERRIDE
    ({"sb_flags": 1, "mode": 0o100777}, 1 << 1, False),  # read-only mount: nobody
    ({"iflags": 8, "uid": 1000}, 1 << 1, False),  # immutable: nobody
])
def test_exe_writable(kw: dict[str, int], caps: int, want: bool) -> None:
    assert is_exe_writable(_info(**kw), caps) is want


def test_execinfo_decoding() -> None:
    raw = EXECINFO.pack(42, 1_700_000_000, 1_600_000_000, 0x794C7630, 0, 5, 6, 0o100755, 0, 0, 0, 1000, 1000, 3, 0)
    info = parse_execinfo(raw)
    assert info is not None and info.ino == 42 and info.upper_layer
    assert info.ctime_ns == 1_700_000_000_000_000_005 and info.mtime_ns == 1_600_000_000_000_000_006
    assert parse_execinfo(EXECINFO.pack(*([0] * 15))) is None  # the kernel found no file
    assert parse_execinfo(raw[:10]) is None
