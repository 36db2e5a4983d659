"""Records -> Events without a kernel: the Enricher fed encoded records, as the ring buffer would."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from falconet.sensor import record as r
from falconet.sensor import syscalls as sc
from falconet.sensor.sensor import Enricher
from falconet.sensor.state import AT_FDCWD, NameDb, ProcessTable

CID = "0123456789ab" + "c" * 52


def _names(tmp_path: Path) -> NameDb:
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n")
    (tmp_path / "group").write_text("root:x:0:\nwww-data:x:33:\n")
    return NameDb(tmp_path / "passwd", tmp_path / "group")


def _rec(kind: int, tgid: int, nr: int = -1, res: int = 0, args: tuple[int, ...] = (0,) * 6,
         comm: str = "sh", segs: dict[int, bytes] | None = None, uid: int = 0, ppid: int = 50) -> bytes:
    segments = [b""] * 6
    for k, v in (segs or {}).items():
        segments[k] = v
    args = tuple(a & 0xFFFFFFFFFFFFFFFF for a in args) + (0,) * (6 - len(args))
    return r.encode(r.Record(kind=kind, ts=1000, tgid=tgid, tid=tgid, ppid=ppid, loginuid=1000, uid=uid, gid=uid,
                             euid=uid, egid=uid, cap_inheritable=0, cap_permitted=0, cap_effective=0, tty=0,
                             sid=1, pgid=tgid, cpu=0, vtid=tgid, vpid=tgid, vpgid=tgid, pidns_level=0,
                             pidns_init_ts=0, nr=nr, res=res, args=args, comm=comm,
                             segments=tuple(segments)))


def _enricher(tmp_path: Path) -> Enricher:
    t = ProcessTable()
    web = t.ensure(50)
    web.comm, web.exepath, web.exe, web.cwd, web.ppid = "nginx", "/usr/sbin/nginx", "nginx", "/srv", 1
    init = t.ensure(1)
    init.comm = "systemd"
    web.args_known = init.args_known = True  # as if seeded from /proc (ensure() alone knows no image)
    return Enricher(t, _names(tmp_path), wanted=None, mono_to_epoch_ns=10**18)


def test_fork_exec_gives_the_new_image_with_parent_and_container(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    assert e.feed(_rec(r.REC_FORK, 50, args=(60, 17), comm="nginx", uid=33, ppid=1)) is None
    assert e.feed(_rec(r.REC_EXECARGS, 60, nr=59, comm="nginx", uid=33, segs={
        r.SEG_STR0: b"/bin/sh\0", r.SEG_EXTRA: b"sh\0-c\0cat /etc/shadow\0", r.SEG_EXTRA2: b"PATH=/bin\0"})) is None
    ev = e.feed(_rec(r.REC_SYSCALL, 60, nr=59, res=0, comm="sh", uid=33,
                     segs={r.SEG_EXTRA: f"docker-{CID}.scope\0".encode()}))
    assert ev is not None and ev.type == "execve" and ev.res == 0
    p = ev.proc
    assert (p.pid, p.ppid, p.name, p.exe, p.exepath, p.args) == (60, 50, "sh", "sh", "/bin/sh", ["-c", "cat /etc/shadow"])
    assert p.cmdline == "sh -c cat /etc/shadow"
    assert p.cwd == "/srv" and p.env == ["PATH=/bin"]
    assert p.user.name == "www-data" and p.group.name == "www-data" and p.user.loginuid == 1000
    assert p.parent is not None and p.parent.name == "nginx" and p.parent.parent.name == "systemd"  # type: ignore[union-attr]
    assert ev.container.id == CID[:12] and p.container_id == CID[:12]
    assert ev.args["exe"] == "sh" and ev.args["args"] == ["-c", "cat /etc/shadow"] and ev.args["filename"] == "/bin/sh"
    assert ev.ts == 10**18 + 1000


def test_open_through_dirfd_dup_and_close(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    opendir = sc.BY_NAME["openat"].nr
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=opendir, res=5, args=(AT_FDCWD, 0, 0o200000, 0),
                     segs={r.SEG_STR0: b"../etc\0"}))
    assert ev is not None and ev.fd is not None and (ev.fd.name, ev.fd.type) == ("/etc", "directory")
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=opendir, res=6, args=(5, 0, 0, 0), segs={r.SEG_STR0: b"./shadow\0"}))
    assert ev is not None and ev.fd is not None
    assert (ev.fd.num, ev.fd.name, ev.fd.nameraw) == (6, "/etc/shadow", "./shadow")
    assert ev.args == {"fd": 6, "dirfd": 5, "name": "/etc/shadow", "flags": 0, "mode": 0}
    e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["dup2"].nr, res=9, args=(6, 9)))
    e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["close"].nr, res=0, args=(6,)))
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["fchmod"].nr, res=0, args=(9, 0o777)))
    assert ev is not None and ev.fd is not None and ev.fd.name == "/etc/shadow" and ev.args["mode"] == 0o777
    assert e.table.fd(50, 6) is None


def test_failed_open_still_names_the_file(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["open"].nr, res=-13, args=(0, 0),
                     segs={r.SEG_STR0: b"secret\0"}))
    assert ev is not None and ev.res == -13 and ev.fd is not None and ev.fd.name == "/srv/secret"
    assert e.table.fd(50, -13) is None


def test_connect_tuple_from_kernel_socket(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["socket"].nr, res=4, args=(2, 1, 0)))
    sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 3333) + socket.inet_aton("203.0.113.7") + b"\0" * 8
    si = r.SOCKINFO.pack(2, 1, 6, 40000, 3333, socket.inet_aton("10.0.0.2") + b"\0" * 12,
                         socket.inet_aton("203.0.113.7") + b"\0" * 12)
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["connect"].nr, res=-115, args=(4, 0, 16),
                     segs={r.SEG_SOCK: sa, r.SEG_EXTRA: si}))
    assert ev is not None and ev.fd is not None
    assert ev.fd.name == "10.0.0.2:40000->203.0.113.7:3333"
    assert (ev.fd.sip, ev.fd.sport, ev.fd.l4proto, ev.fd.connected) == ("203.0.113.7", 3333, "tcp", True)
    assert ev.args == {"res": -115, "tuple": ev.fd.name, "fd": 4, "addr": "203.0.113.7:3333"}
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["sendmsg"].nr, res=10, args=(4,), segs={r.SEG_EXTRA: si}))
    assert ev is not None and ev.fd is not None and ev.fd.name == "10.0.0.2:40000->203.0.113.7:3333"


def test_symlinkat_params(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["symlinkat"].nr, res=0, args=(0, AT_FDCWD, 0),
                     segs={r.SEG_STR0: b"/etc/shadow\0", r.SEG_STR1: b"link\0"}))
    assert ev is not None
    assert ev.args == {"res": 0, "target": "/etc/shadow", "linkdirfd": AT_FDCWD, "linkpath": "/srv/link"}


def test_unwanted_events_keep_state_but_are_not_delivered(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    e.wanted = frozenset({"fchdir"})
    assert e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["openat"].nr, res=7, args=(AT_FDCWD, 0, 0o200000),
                       segs={r.SEG_STR0: b"/var/log\0"})) is None
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=sc.BY_NAME["fchdir"].nr, res=0, args=(7,)))
    assert ev is not None and ev.proc.cwd == "/var/log"


def test_exit_forgets_the_process(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    e.feed(_rec(r.REC_FORK, 50, args=(61, 17), comm="nginx"))
    assert e.table.get(61) is not None
    e.feed(_rec(r.REC_EXIT, 61, args=(1,)))
    assert e.table.get(61) is None


def test_cached_ancestors_follow_changes(tmp_path: Path) -> None:
    e = _enricher(tmp_path)
    e.feed(_rec(r.REC_FORK, 50, args=(70, 17), comm="nginx"))
    close = sc.BY_NAME["close"].nr
    first = e.feed(_rec(r.REC_SYSCALL, 70, nr=close, res=0, args=(9,), comm="nginx"))
    again = e.feed(_rec(r.REC_SYSCALL, 70, nr=close, res=0, args=(9,), comm="nginx"))
    assert first is not None and again is not None and again.proc is first.proc  # shared while unchanged
    # the parent (50) execs something else: the child's next event must show it
    e.feed(_rec(r.REC_EXECARGS, 50, nr=59, comm="nginx", segs={r.SEG_STR0: b"/usr/bin/perl\0",
                                                            r.SEG_EXTRA: b"perl\0-e\0x\0"}))
    e.feed(_rec(r.REC_SYSCALL, 50, nr=59, res=0, comm="perl", ppid=1))
    after = e.feed(_rec(r.REC_SYSCALL, 70, nr=close, res=0, args=(9,), comm="nginx"))
    assert after is not None and after.proc.parent is not None
    assert (after.proc.parent.name, after.proc.parent.exepath) == ("perl", "/usr/bin/perl")
    assert first.proc.parent is not None and first.proc.parent.name == "nginx"  # old events keep their view


def test_exec_in_a_v1_only_container_with_exe_facts_then_a_host_exec(tmp_path: Path) -> None:
    """The v1 path names the container when the unified one is the root; exe facts follow the exec; the next
    exec with host paths makes the process a host process again (the parse cache must not mix them up)."""
    e = _enricher(tmp_path)
    info = r.EXECINFO.pack(77, 1_700_000_000, 1_600_000_000, r.OVERLAYFS_SUPER_MAGIC, 0, 5, 6, 0o100755, 0, 0, 0,
                           33, 33, r.EXE_KNOWN | r.EXE_UPPER, 0)
    podman = f"libpod-{CID}\0libpod_parent\0".encode()
    for _ in range(2):  # the second time from the cache
        ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=59, res=0, uid=33,
                         segs={r.SEG_BLOB: info, r.SEG_EXTRA: b"", r.SEG_EXTRA2: podman}))
        assert ev is not None
        assert (ev.container.id, ev.container.full_id, ev.container.type) == (CID[:12], CID, "podman")
        assert ev.proc.exe_upper_layer is True and ev.proc.exe_ino == 77
        assert ev.proc.exe_ino_ctime == 1_700_000_000_000_000_005 and ev.proc.exe_writable is False  # root's 0755
    ev = e.feed(_rec(r.REC_SYSCALL, 50, nr=59, res=0, uid=33, segs={r.SEG_EXTRA: b"session-1.scope\0user.slice\0"}))
    assert ev is not None and (ev.container.id, ev.container.full_id, ev.container.type) == ("host", "host", None)
    assert ev.proc.exe_ino is None and ev.proc.exe_upper_layer is False
