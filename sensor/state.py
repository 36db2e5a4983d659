"""Process and fd tables: what the sensor knows about every process between its events.

Seeded from /proc once at start (processes that already run), then maintained only from kernel events: fork
copies the parent (fds, cwd, exe, args), exec replaces the image and drops close-on-exec fds, exit forgets the
process, chdir/fchdir move its cwd, and the fd-creating syscalls (open family, socket/accept/connect/bind,
pipe, memfd_create, dup family, fcntl(F_DUPFD)) and close keep its fd table. Paths are resolved lexically the
way the kernel received them: relative to the cwd or to a dirfd, with `.` and `..` folded.

Everything here is plain data: no kernel, so the tables are tested alone. Names of users and groups come from
the host's /etc/passwd and /etc/group (cached, reloaded when they change); container.id from the cgroup path.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
from dataclasses import dataclass, field, replace
from pathlib import Path

from falconet.model.event import Fd
from falconet.sensor.cgroups import HOST_ID, ContainerRef, container_from_cgroup
from falconet.sensor.record import ExecInfo
from falconet.sensor.cgroups import container_id_from_cgroup as container_id_from_cgroup  # re-exported

AT_FDCWD = -100
O_CLOEXEC = 0o2000000
CLONE_THREAD = 0x10000
CLONE_FILES = 0x400

def fd_as(src: Fd, num: int, flags: int | None) -> Fd:
    """A copy of `src` with another number and flags (a dup, an F_SETFD): dataclasses.replace spelled out, whose
    generic field loop was a measurable share of a build's dup2 records (tests/sensor/test_state.py checks this
    names every field)."""
    return Fd(num, src.type, src.name, src.nameraw, src.ino, src.dev, flags, src.l4proto, src.sockfamily, src.cip,
              src.cport, src.sip, src.sport, src.is_server, src.connected, src.name_changed)


def resolve_path(base: str | None, path: str) -> str:
    """`path` as an absolute path: relative ones against `base` (a directory), `.`/`..` folded lexically."""
    if not path.startswith("/"):
        if not base:
            return path  # unknown base: keep what the syscall got rather than invent a directory
        path = base.rstrip("/") + "/" + path
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("//") else out


@dataclass(slots=True)
class ProcInfo:
    """What the tables remember about one process (thread group)."""

    pid: int
    ppid: int = 0
    comm: str = ""
    exe: str = ""
    exepath: str = ""
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    cwd: str | None = None
    container_id: str = "host"
    container: ContainerRef | None = None  # None: a host process (container_id "host")
    start_ts: int = 0
    uid: int = 0
    gid: int = 0
    euid: int = 0
    egid: int = 0
    loginuid: int = -1
    tty: int = 0
    sid: int = 0
    pgid: int = 0
    cap_inheritable: int = 0
    cap_permitted: int = 0
    cap_effective: int = 0
    exe_from_memfd: bool = False
    # Kernel facts (probe.c): pid-namespace view and the executable as exec found it; None = not known.
    vpid: int = 0
    vpgid: int = 0
    pidns_init_ts: int | None = None  # ns since the epoch
    exe_file: ExecInfo | None = None  # the executable at the exec; immutable, so a forked child shares it
    exe_writable: bool = False  # judged at the exec, with the credentials it gave (exefacts.py)
    fds: dict[int, Fd] = field(default_factory=dict)
    gen: int = 0  # bumped whenever a field an Event's Process shows changes (lets the sensor cache ancestors)
    args_known: bool = True  # False: the last exec's arguments were lost in the kernel (exe, args, env unknown)

    def forked(self, pid: int, start_ts: int, fds: dict[int, Fd]) -> ProcInfo:
        """A copy for a new child process: every field of this one but its pid, parent, start, fd table and
        generation (dataclasses.replace, spelled out: a fork per exec makes its generic field loop a
        measurable share of an exec's cost; tests/sensor/test_state.py checks this names every field)."""
        return ProcInfo(pid, self.pid, self.comm, self.exe, self.exepath, list(self.args), list(self.env), self.cwd,
                        self.container_id, self.container, start_ts, self.uid, self.gid, self.euid, self.egid,
                        self.loginuid, self.tty, self.sid, self.pgid, self.cap_inheritable, self.cap_permitted,
                        self.cap_effective, self.exe_from_memfd, self.vpid, self.vpgid, self.pidns_init_ts,
                        self.exe_file, self.exe_writable, fds, 0, self.args_known)


class ProcessTable:
    """tgid -> ProcInfo, and the operations kernel events perform on it."""

    def __init__(self) -> None:
        self.procs: dict[int, ProcInfo] = {}
        # Bumped by every change to any process's identity fields or to the set of processes: while it
        # stands still, a cached ancestor chain is still right without walking it.
        self.epoch = 0

    def get(self, pid: int) -> ProcInfo | None:
        return self.procs.get(pid)

    def ensure(self, pid: int) -> ProcInfo:
        """The process, created empty when an event names one the tables never saw (its fork and exec records
        were dropped, or it ran before the tables were seeded): its image is unknown, so its arguments are too
        (args_known False: proc.cmdline <NA>, not the bare name of a process without arguments)."""
        p = self.procs.get(pid)
        if p is None:
            p = self.procs[pid] = ProcInfo(pid, args_known=False)
            self.epoch += 1
        return p

    # --- lifecycle ---------------------------------------------------------------------------------------

    def fork(self, parent_pid: int, child_tid: int, flags: int, ts: int) -> ProcInfo | None:
        """A clone/fork: a thread joins its process (nothing to do); a new process copies its parent."""
        if flags & CLONE_THREAD:
            return None
        parent = self.ensure(parent_pid)
        # The table's Fds are never changed in place (a change replaces the entry), so the child's table shares
        # them; only the table itself is the child's own (unless CLONE_FILES shares it too).
        child = parent.forked(child_tid, ts, parent.fds if flags & CLONE_FILES else dict(parent.fds))
        self.procs[child_tid] = child
        self.epoch += 1
        return child

    def exec(self, pid: int, filename: str | None, argv: list[str], env: list[str],
             container_id: str | None, dirfd_path: str | None = None, *,
             container: ContainerRef | None = None, exepath: str | None = None,
             args_known: bool = True) -> ProcInfo:
        """A successful execve: new image, same pid, close-on-exec fds gone.

        `exepath` is the executable's path as the kernel walked it; without it (an older kernel, a path too
        deep) the filename argument resolved against the cwd or dirfd stands in, which is wrong for
        /proc/self/fd/N and for execveat(fd, "", AT_EMPTY_PATH). `args_known` False: the exec's argument record
        was lost, so `argv` and `env` stand for unknown, not for none."""
        p = self.ensure(pid)
        base = dirfd_path if dirfd_path is not None else p.cwd
        if exepath is not None:
            p.exepath = exepath
        elif filename:
            p.exepath = resolve_path(base, filename)
        else:
            p.exepath = ""  # a new image of no known path: not the old image's
        p.exe = argv[0] if argv else (filename or "")
        p.args = argv[1:]
        p.env = env
        p.args_known = args_known
        p.exe_from_memfd = p.exepath.startswith("/memfd:")
        if container_id is not None:
            p.container_id = container_id
            p.container = container if container_id != HOST_ID else None
        p.fds = {n: fd for n, fd in p.fds.items() if not (fd.flags or 0) & O_CLOEXEC}
        p.gen += 1
        self.epoch += 1
        return p

    def exit(self, pid: int) -> None:
        if self.procs.pop(pid, None) is not None:
            self.epoch += 1

    def chdir(self, pid: int, path: str) -> None:
        p = self.ensure(pid)
        p.cwd = resolve_path(p.cwd, path)
        p.gen += 1
        self.epoch += 1

    def fchdir(self, pid: int, fd: int) -> None:
        p = self.ensure(pid)
        f = p.fds.get(fd)
        if f is not None and f.name:
            p.cwd = f.name
            p.gen += 1
            self.epoch += 1

    # --- paths and fds -----------------------------------------------------------------------------------

    def dir_of(self, pid: int, dirfd: int) -> str | None:
        """The directory a *at() syscall resolves against: the cwd for AT_FDCWD, else the dirfd's path."""
        p = self.procs.get(pid)
        if p is None:
            return None
        if dirfd == AT_FDCWD:
            return p.cwd
        f = p.fds.get(dirfd)
        return f.name if f is not None else None

    def abspath(self, pid: int, path: str, dirfd: int = AT_FDCWD) -> str:
        if path.startswith("/"):
            return resolve_path(None, path)
        return resolve_path(self.dir_of(pid, dirfd), path)

    def fd(self, pid: int, num: int) -> Fd | None:
        p = self.procs.get(pid)
        return p.fds.get(num) if p is not None else None

    def add_fd(self, pid: int, fd: Fd) -> None:
        self.ensure(pid).fds[fd.num] = fd

    def close(self, pid: int, num: int) -> Fd | None:
        p = self.procs.get(pid)
        return p.fds.pop(num, None) if p is not None else None

    def dup(self, pid: int, old: int, new: int, cloexec: bool = False) -> None:
        p = self.ensure(pid)
        src = p.fds.get(old)
        if src is None:
            p.fds.pop(new, None)
            return
        flags = (src.flags or 0) & ~O_CLOEXEC | (O_CLOEXEC if cloexec else 0)
        p.fds[new] = fd_as(src, new, flags)

    def sweep(self, proc_root: Path = Path("/proc")) -> int:
        """Forgets processes that no longer exist: only those whose exit record was lost (kernel drops) are
        still here, and without this the table would grow for ever. Returns how many were forgotten.

        At once, so only for a table whose events are all read: a live sensor runs behind the kernel, and a
        process gone from /proc may still have records waiting in the ring buffer. It uses `absent` when it
        looks and `forget` once it has read everything the kernel had written by then (sensor.poll)."""
        return self.forget(self.absent(proc_root))

    def absent(self, proc_root: Path = Path("/proc")) -> dict[int, ProcInfo]:
        """The processes of the table that /proc no longer has, as they are now (for `forget`)."""
        return {pid: p for pid, p in self.procs.items() if not (proc_root / str(pid)).exists()}

    def forget(self, absent: dict[int, ProcInfo]) -> int:
        """Forgets the processes `absent` found, unless their entry changed since: an exit record came (gone
        already) or the pid was reused by a new process (a new entry, kept). Returns how many were forgotten."""
        gone = [pid for pid, p in absent.items() if self.procs.get(pid) is p]
        for pid in gone:
            del self.procs[pid]
        self.epoch += 1
        return len(gone)

    # --- seeding -----------------------------------------------------------------------------------------

    def seed_from_proc(self, proc_root: Path = Path("/proc"), boot_ns: int = 0) -> int:
        """Reads every running process once; returns how many were read. Races with exits are expected."""
        n = 0
        sockets = read_socket_table(proc_root / "net")
        for entry in proc_root.iterdir():
            if not entry.name.isdigit():
                continue
            info = read_proc(entry, boot_ns, sockets)
            if info is not None:
                self.procs[info.pid] = info
                n += 1
        self.epoch += 1
        return n


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _hex_addr(text: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6}: host-order hex words, then the port."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    # each 32-bit word is in host (little-endian) order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def read_socket_table(net: Path = Path("/proc/net")) -> dict[int, Fd]:
    """socket inode -> Fd (type, tuple) from /proc/net, for the sockets that exist at seeding."""
    out: dict[int, Fd] = {}
    for fname, fam, proto in (("tcp", "ipv4", "tcp"), ("tcp6", "ipv6", "tcp"),
                              ("udp", "ipv4", "udp"), ("udp6", "ipv6", "udp")):
        for line in (_read(net / fname) or b"").decode().splitlines()[1:]:
            f = line.split()
            if len(f) < 10:
                continue
            (lip, lport), (rip, rport) = _hex_addr(f[1]), _hex_addr(f[2])
            listening = f[3] == "0A" and proto == "tcp"
            fd = Fd(-1, type=fam, l4proto=proto, sockfamily="ip")
            if listening or (rport == 0 and proto == "udp"):
                fd.sip, fd.sport, fd.is_server = lip, lport, True
                fd.name = f"{lip}:{lport}"
            else:
                fd.cip, fd.cport, fd.sip, fd.sport, fd.connected = lip, lport, rip, rport, True
                fd.name = f"{lip}:{lport}->{rip}:{rport}"
            out[int(f[9])] = fd
    for line in (_read(net / "unix") or b"").decode("utf-8", "replace").splitlines()[1:]:
        f = line.split()
        if len(f) >= 7:
            out[int(f[6])] = Fd(-1, type="unix", sockfamily="unix", name=f[7] if len(f) > 7 else None)
    return out


def fd_from_link(num: int, target: str, flags: int | None = None,
                 sockets: dict[int, Fd] | None = None) -> Fd:
    """An fd as /proc/<pid>/fd shows it (seeding only)."""
    if target.startswith("socket:"):
        ino = int(target[len("socket:["):-1])
        known = (sockets or {}).get(ino)
        if known is not None:
            return replace(known, num=num, flags=flags)
        return Fd(num, type="unix", sockfamily="unix", name=None, flags=flags)
    if target.startswith("pipe:"):
        return Fd(num, type="pipe", name=target, flags=flags)
    if target.startswith("anon_inode:"):
        kind = target[len("anon_inode:"):].strip("[]")
        return Fd(num, type={"eventpoll": "eventpoll", "eventfd": "event", "inotify": "inotify",
                             "signalfd": "signalfd", "timerfd": "timerfd", "bpf-map": "bpf",
                             "bpf-prog": "bpf", "userfaultfd": "userfaultfd",
                             "io_uring": "io_uring"}.get(kind, kind), name=target, flags=flags)
    if target.startswith("/memfd:"):
        return Fd(num, type="memfd", name=target.removesuffix(" (deleted)"), flags=flags)
    return Fd(num, type="directory" if os.path.isdir(target) else "file", name=target, flags=flags)


def read_proc(entry: Path, boot_ns: int = 0, sockets: dict[int, Fd] | None = None) -> ProcInfo | None:
    """One /proc/<pid> directory -> ProcInfo, or None when the process vanished meanwhile."""
    pid = int(entry.name)
    stat = _read(entry / "stat")
    status = _read(entry / "status")
    if stat is None or status is None:
        return None
    # comm may contain spaces and parentheses: the fields after it start after the LAST ')'.
    s = stat.decode("utf-8", "replace")
    comm = s[s.index("(") + 1 : s.rindex(")")]
    rest = s[s.rindex(")") + 2 :].split()
    info = ProcInfo(pid, ppid=int(rest[1]), comm=comm, pgid=int(rest[2]), sid=int(rest[3]),
                    tty=int(rest[4]))
    clk = os.sysconf("SC_CLK_TCK")
    info.start_ts = boot_ns + int(rest[19]) * 1_000_000_000 // clk
    for line in status.decode("utf-8", "replace").splitlines():
        key, _, val = line.partition(":")
        parts = val.split()
        if key == "Uid" and len(parts) >= 2:
            info.uid, info.euid = int(parts[0]), int(parts[1])
        elif key == "Gid" and len(parts) >= 2:
            info.gid, info.egid = int(parts[0]), int(parts[1])
        elif key == "CapInh" and parts:
            info.cap_inheritable = int(parts[0], 16)
        elif key == "CapPrm" and parts:
            info.cap_permitted = int(parts[0], 16)
        elif key == "CapEff" and parts:
            info.cap_effective = int(parts[0], 16)
    cmdline = _read(entry / "cmdline") or b""
    argv = [a.decode("utf-8", "surrogateescape") for a in cmdline.split(b"\0")[:-1]]
    info.exe = argv[0] if argv else ""
    info.args = argv[1:]
    environ = _read(entry / "environ") or b""
    info.env = [e.decode("utf-8", "surrogateescape") for e in environ.split(b"\0") if e]
    try:
        # as the kernel spells it, " (deleted)" included: the same text an exec seen live gives (probe_exec.h)
        info.exepath = os.readlink(entry / "exe")
    except OSError:
        info.exepath = ""
    info.exe_from_memfd = info.exepath.startswith("/memfd:")
    try:
        info.cwd = os.readlink(entry / "cwd")
    except OSError:
        info.cwd = None
    login = _read(entry / "loginuid")
    if login is not None and login.strip():
        v = int(login)
        info.loginuid = -1 if v == 0xFFFFFFFF else v
    _seed_kernel_facts(entry, info, status)
    cgroup = (_read(entry / "cgroup") or b"").decode("utf-8", "replace")
    info.container_id = HOST_ID
    for line in cgroup.splitlines():
        ref = container_from_cgroup(line.split(":", 2)[-1])
        if ref is not None:
            info.container_id, info.container = ref.id, ref
            break
    try:
        for fdname in os.listdir(entry / "fd"):
            try:
                target = os.readlink(entry / "fd" / fdname)
            except OSError:
                continue
            info.fds[int(fdname)] = fd_from_link(int(fdname), target, fd_flags(entry, fdname), sockets)
    except OSError:
        pass
    return info


def fd_flags(entry: Path, fdname: str) -> int | None:
    """The fd's status flags with its close-on-exec bit, as /proc/<pid>/fdinfo/<fd> shows them (octal): without
    them a seeded process's exec would keep the O_CLOEXEC fds it closes. None when the fd went meanwhile."""
    info = _read(entry / "fdinfo" / fdname)
    if info is None:
        return None
    for line in info.split(b"\n"):
        if line.startswith(b"flags:"):
            try:
                return int(line[6:].strip(), 8)
            except ValueError:
                return None
    return None


def _seed_kernel_facts(entry: Path, info: ProcInfo, status: bytes) -> None:
    """For processes already running when the sensor starts (their exec was before the probe): what /proc still
    shows of the pid-namespace view and the executable. Later execs take these from the kernel instead."""
    info.vpid, info.vpgid = info.pid, info.pgid
    for line in status.decode("utf-8", "replace").splitlines():
        key, _, val = line.partition(":")
        parts = val.split()
        if key == "NSpid" and parts:
            info.vpid = int(parts[-1])
        elif key == "NSpgid" and parts:
            info.vpgid = int(parts[-1])
    try:
        st = os.stat(entry / "exe")
    except OSError:
        return
    # only what stat shows; the overlay layer and the exec's credentials are unknown here
    info.exe_file = ExecInfo(st.st_ino, st.st_ctime_ns, st.st_mtime_ns, 0, 0, st.st_mode, st.st_uid, st.st_gid, 0,
                        info.euid, info.egid, False)


class NameDb:
    """uid/gid -> name (+ home and shell for users) from the host's passwd and group files, cached."""

    def __init__(self, passwd: Path = Path("/etc/passwd"), group: Path = Path("/etc/group")) -> None:
        self._passwd, self._group = passwd, group
        self._users: dict[int, tuple[str, str, str]] = {}
        self._groups: dict[int, str] = {}
        self._stamp: tuple[float, float] | None = None

    def _refresh(self) -> None:
        try:
            stamp = (self._passwd.stat().st_mtime, self._group.stat().st_mtime)
        except OSError:
            stamp = (0.0, 0.0)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._users, self._groups = {}, {}
        for line in (_read(self._passwd) or b"").decode("utf-8", "replace").splitlines():
            f = line.split(":")
            if len(f) >= 7 and f[2].isdigit():
                self._users.setdefault(int(f[2]), (f[0], f[5], f[6]))
        for line in (_read(self._group) or b"").decode("utf-8", "replace").splitlines():
            f = line.split(":")
            if len(f) >= 3 and f[2].isdigit():
                self._groups.setdefault(int(f[2]), f[0])

    def refresh_if_changed(self) -> None:
        self._refresh()

    def user(self, uid: int) -> tuple[str, str, str] | None:
        if self._stamp is None:
            self._refresh()
        return self._users.get(uid)

    def group(self, gid: int) -> str | None:
        if self._stamp is None:
            self._refresh()
        return self._groups.get(gid)
