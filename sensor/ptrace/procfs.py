"""What the eBPF probe reads from the kernel's task and file structures, read here from /proc instead.

The probe's `fill_task` reads the calling task's credentials, capabilities, session, process group, tty,
parent and pid-namespace numbers at every record; this module reads the same facts from /proc/TID/status
and /proc/TID/stat once per task and the tracer keeps them until a traced syscall may have changed them (an
exec, a set*id/capset/setsid/setpgid/unshare/setns, a parent's exit). The exec facts (the executable's path,
inode and times, the cgroup path that names a container) come from /proc/PID/exe and /proc/PID/cgroup, in the
encodings probe_exec.h gives them, so the Enricher cannot tell the two drivers apart.

Numbers are as the tracer's /proc sees them: tgid/tid in its pid namespace, cgroup paths relative to its
cgroup namespace (the probe reads host-wide ones).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass

from falconet.sensor.record import EXE_KNOWN, EXE_PATH_DELETED, EXE_PATH_KNOWN, EXE_PATH_PSEUDO, EXECINFO

NO_LOGINUID = 0xFFFFFFFF


@dataclass(slots=True)
class Identity:
    """The header fields of one task (the probe's fill_task), as of the last read."""

    tgid: int
    ppid: int
    loginuid: int  # u32, 0xFFFFFFFF when never logged in
    uid: int
    gid: int
    euid: int
    egid: int
    fsuid: int
    fsgid: int
    cap_inheritable: int
    cap_permitted: int
    cap_effective: int
    tty: int
    sid: int
    pgid: int
    vtid: int
    vpid: int
    vpgid: int
    pidns_level: int
    comm: bytes


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def read_identity(tid: int) -> Identity | None:
    """The task's identity now; None when it is gone."""
    status = _read(f"/proc/{tid}/status")
    stat = _read(f"/proc/{tid}/stat")
    if status is None or stat is None:
        return None
    f: dict[bytes, list[bytes]] = {}
    for line in status.split(b"\n"):
        key, _, val = line.partition(b":")
        f[key] = val.split()
    rest = stat[stat.rindex(b")") + 2:].split()
    uid, gid = f.get(b"Uid", [b"0"] * 4), f.get(b"Gid", [b"0"] * 4)
    nspid = f.get(b"NSpid") or [str(tid).encode()]
    nstgid = f.get(b"NStgid") or nspid
    nspgid = f.get(b"NSpgid") or [rest[2]]
    login = _read(f"/proc/{tid}/loginuid")
    raw_name = status.split(b"\n", 1)[0].partition(b":")[2].strip()
    return Identity(
        tgid=int(f.get(b"Tgid", [b"0"])[0]), ppid=int(f.get(b"PPid", [b"0"])[0]),
        loginuid=int(login) if login and login.strip() else NO_LOGINUID,
        uid=int(uid[0]), euid=int(uid[1]), fsuid=int(uid[3]), gid=int(gid[0]), egid=int(gid[1]), fsgid=int(gid[3]),
        cap_inheritable=int(f.get(b"CapInh", [b"0"])[0], 16), cap_permitted=int(f.get(b"CapPrm", [b"0"])[0], 16),
        cap_effective=int(f.get(b"CapEff", [b"0"])[0], 16),
        tty=int(rest[4]) & 0xFFFFFFFF, sid=int(rest[3]), pgid=int(rest[2]),
        vtid=int(nspid[-1]), vpid=int(nstgid[-1]), vpgid=int(nspgid[-1]) if len(nspgid) == len(nspid) else 0,
        pidns_level=len(nspid) - 1, comm=_unescape_name(raw_name)[:15],
    )


def _unescape_name(raw: bytes) -> bytes:
    """/proc/PID/status escapes a name's backslashes and newlines (\\\\, \\n); the probe sends the bytes."""
    return raw.replace(b"\\n", b"\n").replace(b"\\\\", b"\\")


def read_comm(tid: int) -> bytes | None:
    raw = _read(f"/proc/{tid}/comm")
    return raw[:-1][:15] if raw is not None else None


def monotonic_start_of_init() -> int:
    """The CLOCK_MONOTONIC start of pid 1 of the tracer's pid namespace (the probe's pidns_init_ts there),
    converted from /proc/1/stat's boot-time clock ticks; 0 when unreadable."""
    stat = _read("/proc/1/stat")
    if stat is None:
        return 0
    ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
    boot_to_mono = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()
    return max(0, ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK") - boot_to_mono)


# --- an exec's facts (probe_exec.h's put_exec_facts) ---------------------------------------------------------

class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long), ("rest", ctypes.c_long * 20)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _fs_magic(path: str) -> int:
    buf = _Statfs()
    return int(buf.f_type) & 0xFFFFFFFF if _libc.statfs(path.encode(), ctypes.byref(buf)) == 0 else 0


def exe_segments(pid: int, fsuid: int, fsgid: int) -> tuple[bytes, bytes]:
    """(SEG_STR0, SEG_BLOB) of a successful exec's record: the executable's path components leaf first and its
    struct execinfo. The overlay upper-layer flag and the inode flags (immutable) are not visible from user
    space and read as unset."""
    exe = f"/proc/{pid}/exe"
    flags = 0
    path = b""
    try:
        target = os.readlink(exe).encode("utf-8", "surrogateescape")
        if target.endswith(b" (deleted)"):
            flags |= EXE_PATH_DELETED
            target = target[: -len(b" (deleted)")]
        if target.startswith(b"/memfd:") or not target.startswith(b"/"):
            flags |= EXE_PATH_PSEUDO | EXE_PATH_DELETED
            path = target.lstrip(b"/") + b"\0"
        else:
            path = b"".join(p + b"\0" for p in reversed(target.strip(b"/").split(b"/")) if p)
        flags |= EXE_PATH_KNOWN
    except OSError:
        pass
    try:
        st = os.stat(exe)
        vfs = os.statvfs(exe)
    except OSError:
        return path, EXECINFO.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, fsuid, fsgid, flags, 0)
    blob = EXECINFO.pack(st.st_ino, st.st_ctime_ns // 1_000_000_000, st.st_mtime_ns // 1_000_000_000,
                         _fs_magic(exe), vfs.f_flag & os.ST_RDONLY, st.st_ctime_ns % 1_000_000_000,
                         st.st_mtime_ns % 1_000_000_000, st.st_mode, st.st_uid, st.st_gid, 0, fsuid, fsgid,
                         flags | EXE_KNOWN, 0)
    return path, blob


def cgroup_segment(pid: int) -> bytes:
    """SEG_EXTRA of an exec: the unified (v2) hierarchy's path, components leaf first, NUL-terminated each."""
    raw = _read(f"/proc/{pid}/cgroup") or b""
    for line in raw.split(b"\n"):
        if line.startswith(b"0::"):
            parts = [p for p in line[3:].split(b"/") if p]
            return b"".join(p + b"\0" for p in reversed(parts[-10:]))
    return b""
