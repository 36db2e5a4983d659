"""The Sensor: loads probe.c into the kernel, reads its ring buffer, and turns records into enriched Events.

Pipeline: kernel record bytes -> `record.decode` (pure) -> this module's `Enricher` (process/fd tables from
`state`, names, Falco parameter names from `syscalls`) -> `falconet.model.event.Event`. The Enricher needs no
kernel, so everything after the ring buffer is testable with bytes alone.

What reaches user space is decided in the kernel: `set_syscalls(names)` writes the `sysconf` map (syscall id ->
on/off), so changing the rule set never recompiles. Syscalls the tables need (process lifecycle always; fd
lifecycle unless `track_fds=False`) stay on; the Enricher uses them to keep state but hands the caller only the
events it asked for.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falconet.model.event import Container, Event, Fd, Group, Process, User
from falconet.sensor import btf as btfmod
from falconet.sensor import syscalls as sc
from falconet.sensor.record import (
    REC_EXECARGS,
    REC_EXIT,
    REC_FORK,
    REC_SYSCALL,
    SEG_BLOB,
    SEG_EXTRA,
    SEG_EXTRA2,
    SEG_SOCK,
    SEG_STR0,
    SEG_STR1,
    Record,
    RecordError,
    SockInfo,
    decode,
    parse_sockaddr,
    parse_sockinfo,
)
from falconet.sensor.state import (
    AT_FDCWD,
    O_CLOEXEC,
    NameDb,
    ProcessTable,
    ProcInfo,
    container_id_from_cgroup,
)

PROBE_C = Path(__file__).with_name("probe.c")
ANCESTOR_DEPTH = 8  # proc.aname[N] goes this far up
SWEEP_SECONDS = 60.0  # how often processes whose exit record was dropped are forgotten
POLL_BATCH = 4096  # records one poll() takes at most: bounds its latency and memory under a flood
O_DIRECTORY = 0o200000
F_DUPFD, F_SETFD, F_DUPFD_CLOEXEC = 0, 2, 1030
FD_CLOEXEC = 1
SOCK_CLOEXEC = 0o2000000
EINPROGRESS = errno.EINPROGRESS


class SensorError(Exception):
    """The sensor cannot start; the message says what is missing (root, BPF, BTF, headers, tracefs)."""


RINGBUF_MIN_BYTES = 4096
"""One page: the smallest BPF ring buffer the kernel makes."""


def ringbuf_bytes_valid(n: int) -> bool:
    """The kernel makes a BPF ring buffer only of a power-of-two number of pages; the daemon's configuration
    checks `sensor.ring_buffer_bytes` with this too, so a file that loads also starts the sensor."""
    return n >= RINGBUF_MIN_BYTES and not n & (n - 1)


@dataclass(slots=True)
class SensorConfig:
    ringbuf_bytes: int = 8 << 20
    syscalls: set[str] | None = None  # event names to deliver; None = every syscall the sensor knows
    exclude_pids: set[int] = field(default_factory=lambda: {os.getpid()})
    track_fds: bool = True  # keep the fd table (ships open/close/... to user space even if no rule needs them)
    seed_from_proc: bool = True
    # Optional kernel-side filter for the open family (see set_open_prefixes); None = every open is emitted.
    open_prefixes: list[str] | dict[str, list[str]] | None = None

    def validate(self) -> None:
        n = self.ringbuf_bytes
        if not ringbuf_bytes_valid(n):
            raise SensorError(f"ringbuf_bytes must be a power of two of at least 4096, not {n}")


@dataclass(slots=True)
class SensorStats:
    events: int = 0  # events handed to the caller
    records: int = 0  # records read from the ring buffer (including state-only ones)
    kernel_drops: int = 0  # ring buffer reserve/output failures, summed over CPUs
    kernel_drops_per_cpu: list[int] = field(default_factory=list)
    kernel_emitted: int = 0  # records the kernel wrote
    inflight_full: int = 0  # syscalls whose enter could not be stored (their exit is lost)
    path_filtered: int = 0  # opens the open-prefix filter kept in the kernel, and their closes (by design)
    decode_errors: int = 0
    swept: int = 0  # processes forgotten because they were gone without an exit record (a dropped one)


def program_text(config: SensorConfig, offsets: dict[str, int] | None = None) -> tuple[str, list[str]]:
    """(C source, cflags) exactly as start() compiles them; offsets from the running kernel's BTF by default."""
    if offsets is None:
        offsets = btfmod.kernel_offsets(btfmod.BTF.load())
    cred_len = max(v for k, v in offsets.items() if k.startswith("OFF_CRED_")) + 8
    flags = btfmod.cflags(offsets) + [
        f"-DCRED_READ_LEN={cred_len}",
        f"-DRINGBUF_PAGES={config.ringbuf_bytes // 4096}",
        f"-DCLONE_NR={sc.CLONE_NR}",
        f"-DCLONE3_NR={sc.CLONE3_NR}",
        f"-DVFORK_NR={sc.VFORK_NR}",
    ]
    return PROBE_C.read_text(), flags


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _i64(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


class Enricher:
    """Records -> Events, keeping the process and fd tables. Pure user space: fed bytes or Records."""

    def __init__(self, table: ProcessTable | None = None, names: NameDb | None = None,
                 wanted: set[str] | None = None, mono_to_epoch_ns: int = 0) -> None:
        self.table = table or ProcessTable()
        self.names = names or NameDb()
        self.wanted: frozenset[str] | None = frozenset(wanted) if wanted is not None else None
        self.offset_ns = mono_to_epoch_ns
        self.num = 0
        self._pending_exec: dict[int, Record] = {}
        # pid -> (ProcInfo, its gen, Process, table epoch when checked): shared until something changes
        self._cache: dict[int, tuple[ProcInfo, int, Process, int]] = {}

    def feed(self, data: bytes) -> Event | None:
        return self.handle(decode(data))

    def handle(self, rec: Record) -> Event | None:
        if rec.kind == REC_SYSCALL:
            return self._syscall(rec)
        if rec.kind == REC_EXECARGS:
            self._pending_exec[rec.tgid] = rec
        elif rec.kind == REC_FORK:
            self._update(self.table.ensure(rec.tgid), rec)
            self.table.fork(rec.tgid, rec.args[0], rec.args[1], self.offset_ns + rec.ts)
        elif rec.kind == REC_EXIT:
            self.table.exit(rec.tgid)
            self._pending_exec.pop(rec.tgid, None)
        return None

    # --- per-record state ----------------------------------------------------------------------------------

    def _update(self, p: ProcInfo, rec: Record) -> None:
        """What the kernel told us about the task at this moment overrides anything remembered."""
        now = (rec.comm, rec.ppid, rec.uid, rec.gid, rec.euid, rec.egid, rec.loginuid, rec.tty, rec.sid, rec.pgid,
               rec.cap_inheritable, rec.cap_permitted, rec.cap_effective)
        if now == (p.comm, p.ppid, p.uid, p.gid, p.euid, p.egid, p.loginuid, p.tty, p.sid, p.pgid,
                   p.cap_inheritable, p.cap_permitted, p.cap_effective):
            return
        (p.comm, p.ppid, p.uid, p.gid, p.euid, p.egid, p.loginuid, p.tty, p.sid, p.pgid,
         p.cap_inheritable, p.cap_permitted, p.cap_effective) = now
        p.gen += 1
        self.table.epoch += 1

    def _syscall(self, rec: Record) -> Event | None:
        spec = sc.BY_NR.get(rec.nr)
        if spec is None:
            return None
        pid = rec.tgid
        p = self.table.ensure(pid)
        if not p.exepath and not p.exe:
            p.exe = rec.comm
        self._update(p, rec)
        args: dict[str, Any] = {}
        fd: Fd | None = None
        name = spec.name
        res = rec.res
        if spec.exec:
            args = self._exec(rec, spec, p)
        else:
            paths = self._paths(rec, spec, pid)
            args = self._params(rec, spec, paths)
            fd = self._fd_effects(rec, spec, pid, paths, args)

        if self.wanted is not None and name not in self.wanted:
            return None
        self.num += 1
        proc = self._process(p, ANCESTOR_DEPTH)
        return Event(num=self.num, ts=self.offset_ns + rec.ts, type=name, tid=rec.tid, res=res, proc=proc,
                     args=args, fd=fd, container=Container(id=p.container_id))

    def _paths(self, rec: Record, spec: sc.Spec, pid: int) -> dict[str, tuple[str, str]]:
        """"p0"/"p1" -> (raw, absolute) for the path parameters of this syscall."""
        out: dict[str, tuple[str, str]] = {}
        for _pname, src in spec.params:
            if src[:1] != "p":
                continue
            key, _, dirarg = src.partition("@")
            raw = rec.text(SEG_STR0 if key == "p0" else SEG_STR1)
            if raw is None:
                continue
            dirfd = _i32(rec.args[int(dirarg)]) if dirarg else AT_FDCWD
            out[key] = (raw, self.table.abspath(pid, raw, dirfd))
        return out

    def _params(self, rec: Record, spec: sc.Spec, paths: dict[str, tuple[str, str]]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        blob = rec.segments[SEG_BLOB]
        for pname, src in spec.params:
            value: Any = None
            if src == "res":
                value = rec.res
            elif src[0] in "iul" and src[1:].isdigit():
                raw = rec.args[int(src[1:])]
                value = _i32(raw) if src[0] == "i" else _i64(raw) if src[0] == "l" else raw
            elif src in ("s0", "s1"):
                value = rec.text(SEG_STR0 if src == "s0" else SEG_STR1)
            elif src[0] == "p":
                got = paths.get(src.partition("@")[0])
                value = got[1] if got else None
            elif src == "sock":
                sa = parse_sockaddr(rec.segments[SEG_SOCK])
                value = _sockaddr_text(sa.family, sa.addr, sa.port) if sa else None
            elif src == "tuple":
                value = None  # filled from the fd once known
            elif src.startswith("blob."):
                value = _blob_field(spec.name, src[5:], blob)
            args[pname] = value
        return args

    def _exec(self, rec: Record, spec: sc.Spec, p: ProcInfo) -> dict[str, Any]:
        pending = self._pending_exec.pop(rec.tgid, None)
        filename = pending.text(SEG_STR0) if pending else None
        argv = pending.strings(SEG_EXTRA) if pending else []
        env = pending.strings(SEG_EXTRA2) if pending else []
        if rec.res == 0:
            cgroup = rec.text(SEG_EXTRA)
            dirpath = None
            if spec.exec == 2:
                dirfd = _i32(rec.args[0])
                dirpath = self.table.dir_of(rec.tgid, dirfd) if dirfd != AT_FDCWD else None
            self.table.exec(rec.tgid, filename, argv, env,
                            container_id_from_cgroup(cgroup) if cgroup is not None else None, dirpath)
        args: dict[str, Any] = {
            "res": rec.res,
            "exe": argv[0] if argv else (filename or ""),
            "args": argv[1:],
            "tid": rec.tid,
            "pid": rec.tgid,
            "ptid": rec.ppid,
            "cwd": p.cwd,
            "comm": rec.comm,
            "env": env,
            "tty": rec.tty,
            "loginuid": rec.loginuid,
            "uid": rec.uid,
            "gid": rec.gid,
            "cap_inheritable": rec.cap_inheritable,
            "cap_permitted": rec.cap_permitted,
            "cap_effective": rec.cap_effective,
            "filename": filename,
            "trusted_exepath": p.exepath if rec.res == 0 else None,
        }
        if spec.exec == 2:  # execveat's own parameters (its AT_* flags are not the exe flags)
            args["dirfd"] = _i32(rec.args[0])
            args["pathname"] = filename
            args["exec_flags"] = rec.args[4]
        return args

    def _fd_effects(self, rec: Record, spec: sc.Spec, pid: int, paths: dict[str, tuple[str, str]],
                    args: dict[str, Any]) -> Fd | None:
        """Updates the fd table for what the syscall did; returns the fd the event is about."""
        t = self.table
        res = rec.res
        a = rec.args
        name = spec.name
        if name in ("open", "openat", "openat2", "creat"):
            got = paths.get("p0")
            if got is None:
                return None
            flags = args.get("flags") or 0
            if name == "creat":
                flags = 0o1101  # O_CREAT|O_WRONLY|O_TRUNC, which creat means
                args["flags"] = flags
            fd = Fd(num=res if res >= 0 else -1, type="directory" if flags & O_DIRECTORY else "file",
                    name=got[1], nameraw=got[0], flags=flags)
            if res >= 0:
                t.add_fd(pid, fd)
            return fd
        if name == "memfd_create":
            fd = Fd(num=res, type="memfd", name="/memfd:" + (args.get("name") or ""),
                    flags=O_CLOEXEC if a[1] & 1 else 0)
            if res >= 0:
                t.add_fd(pid, fd)
            return fd
        if name in ("userfaultfd", "bpf") and res >= 0:
            fd = Fd(num=res, type=name)
            t.add_fd(pid, fd)
            return fd
        if name == "close":
            num = _i32(a[0])
            return t.close(pid, num) if res == 0 else t.fd(pid, num)
        if name in ("dup", "dup2", "dup3"):
            if res >= 0:
                t.dup(pid, _i32(a[0]), res, cloexec=name == "dup3" and bool(a[2] & O_CLOEXEC))
                return t.fd(pid, res)
            return t.fd(pid, _i32(a[0]))
        if name == "fcntl":
            num, cmd = _i32(a[0]), _i32(a[1])
            if res >= 0 and cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
                t.dup(pid, num, res, cloexec=cmd == F_DUPFD_CLOEXEC)
                return t.fd(pid, res)
            cur = t.fd(pid, num)
            if res == 0 and cmd == F_SETFD and cur is not None:
                cur.flags = ((cur.flags or 0) & ~O_CLOEXEC) | (O_CLOEXEC if a[2] & FD_CLOEXEC else 0)
            return cur
        if name == "chdir":
            got = paths.get("p0")
            if res == 0 and got is not None:
                t.chdir(pid, got[1])
            return None
        if name == "fchdir":
            if res == 0:
                t.fchdir(pid, _i32(a[0]))
            return t.fd(pid, _i32(a[0]))
        if name in ("pipe", "pipe2", "socketpair"):
            if res == 0:
                kind = "pipe" if name != "socketpair" else "unix"
                cloexec = O_CLOEXEC if (name == "pipe2" and a[1] & O_CLOEXEC) or (
                    name == "socketpair" and a[1] & SOCK_CLOEXEC) else 0
                for key in ("fd1", "fd2"):
                    if args.get(key) is not None:
                        t.add_fd(pid, Fd(num=args[key], type=kind, flags=cloexec,
                                         sockfamily="unix" if kind == "unix" else None))
            return None
        if name == "socket":
            if res < 0:
                return None
            fd = _socket_fd(res, _i32(a[0]), _i32(a[1]), _i32(a[2]))
            t.add_fd(pid, fd)
            return fd
        if spec.sockfd != sc.NO_ARG:
            return self._socket_event(rec, spec, pid, args)
        # Any other syscall acting on an fd: the event is about that fd.
        for pname, src in spec.params:
            if pname == "fd" and src.startswith("i"):
                return t.fd(pid, _i32(a[int(src[1:])]))
        return None

    def _socket_event(self, rec: Record, spec: sc.Spec, pid: int, args: dict[str, Any]) -> Fd | None:
        t = self.table
        res = rec.res
        name = spec.name
        num = res if spec.sockfd == sc.SOCKFD_RES else _i32(rec.args[spec.sockfd])
        if num < 0:
            return None
        ok = res >= 0 or (name == "connect" and res == -EINPROGRESS)
        cur = t.fd(pid, num)
        info = parse_sockinfo(rec.segments[SEG_EXTRA])
        sa = parse_sockaddr(rec.segments[SEG_SOCK])
        if cur is None:
            cur = Fd(num=num, type="ipv4")
            if info is not None:
                _apply_family(cur, info.family, info.type, info.protocol)
            elif sa is not None:
                cur.type = sa.family if sa.family in ("ipv4", "ipv6", "unix") else cur.type
                cur.sockfamily = "unix" if sa.family == "unix" else "ip"
        fd = Fd(**{k: getattr(cur, k) for k in cur.__slots__})
        fd.num = num
        if name in ("accept", "accept4"):
            listener = t.fd(pid, _i32(rec.args[0]))
            fd.is_server = True
            fd.connected = True
            if listener is not None:
                fd.type, fd.l4proto, fd.sockfamily = listener.type, listener.l4proto, listener.sockfamily
            if info is not None:
                _apply_family(fd, info.family, info.type, info.protocol)
            _set_tuple(fd, info, sa, server=True, listener=listener)
        elif name == "bind":
            if info is not None:
                _apply_family(fd, info.family, info.type, info.protocol)
            if sa is not None and fd.sockfamily == "unix":
                fd.name = sa.addr
            elif sa is not None:
                fd.sip, fd.sport = (info.laddr, info.lport) if info and ok else (sa.addr, sa.port)
                fd.name = f"{fd.sip}:{fd.sport}"
        elif name == "listen":
            fd.is_server = True
            if info is not None and info.family in (socket.AF_INET, socket.AF_INET6):
                fd.sip, fd.sport = info.laddr, info.lport
                fd.name = f"{fd.sip}:{fd.sport}"
        elif name in ("connect", "sendto", "recvfrom", "sendmsg", "recvmsg"):
            if info is not None:
                _apply_family(fd, info.family, info.type, info.protocol)
            if name == "connect" or sa is not None or (info is not None and info.rport):
                _set_tuple(fd, info, sa, server=False, listener=None)
            if name == "connect" and ok:
                fd.connected = True
        if "tuple" in args:
            args["tuple"] = fd.name
        if ok and (name in ("accept", "accept4", "connect", "bind", "listen")):
            t.add_fd(pid, fd)
        return fd

    # --- building Events --------------------------------------------------------------------------------------

    def _process(self, p: ProcInfo, depth: int) -> Process:
        """The event's process with its ancestors. Process objects are shared between events until the
        process or an ancestor changes (consumers treat events as read-only), which saves building them per
        event."""
        hit = self._cache.get(p.pid)
        if hit is not None and hit[3] == self.table.epoch and hit[0] is p:
            return hit[2]  # nothing about any process changed since this chain was built
        return self._ancestor(p, depth)

    def _ancestor(self, p: ProcInfo, depth: int) -> Process:
        parent = None
        if depth > 0 and p.ppid and p.ppid != p.pid:
            pp = self.table.get(p.ppid)
            if pp is not None:
                parent = self._ancestor(pp, depth - 1)
        hit = self._cache.get(p.pid)
        if hit is not None and hit[0] is p and hit[1] == p.gen and hit[2].parent is parent:
            if hit[3] != self.table.epoch:
                self._cache[p.pid] = (p, p.gen, hit[2], self.table.epoch)
            return hit[2]
        proc = self._make(p, parent)
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[p.pid] = (p, p.gen, proc, self.table.epoch)
        return proc

    def _make(self, p: ProcInfo, parent: Process | None) -> Process:
        user = self.names.user(p.uid)
        login = self.names.user(p.loginuid) if p.loginuid >= 0 else None
        return Process(
            pid=p.pid, ppid=p.ppid, name=p.comm, exe=p.exe, exepath=p.exepath, args=list(p.args), cwd=p.cwd,
            env=list(p.env), tty=p.tty, sid=p.sid, vpid=p.pid, pgid=p.pgid, vpgid=p.pgid, start_ts=p.start_ts,
            user=User(uid=p.uid, name=user[0] if user else None, homedir=user[1] if user else None,
                      shell=user[2] if user else None, loginuid=p.loginuid,
                      loginname=login[0] if login else None),
            group=Group(gid=p.gid, name=self.names.group(p.gid)),
            euid=p.euid, egid=p.egid, cap_permitted=p.cap_permitted, cap_effective=p.cap_effective,
            cap_inheritable=p.cap_inheritable, exe_from_memfd=p.exe_from_memfd, container_id=p.container_id,
            parent=parent,
        )


OPEN_KINDS = {"read": 1, "write": 2, "other": 4}  # the trie value bits of probe.c (OPEN_READ, ...)


def _prefix_masks(prefixes: Iterable[str] | Mapping[str, Iterable[str]]) -> dict[bytes, int]:
    """Trie entries: prefix bytes (first 64) -> kinds covered, each OR-ing in those of its shorter prefixes,
    because the kernel's lookup returns only the longest match."""
    items = prefixes.items() if isinstance(prefixes, Mapping) else ((p, OPEN_KINDS) for p in prefixes)
    own: dict[bytes, int] = {}
    for path, kinds in items:
        mask = 0
        for kind in kinds:
            if kind not in OPEN_KINDS:
                raise ValueError(f"unknown open kind {kind!r} for prefix {path!r}; expected read, write or other")
            mask |= OPEN_KINDS[kind]
        raw = path.encode("utf-8", "surrogateescape")[:64]
        own[raw] = own.get(raw, 0) | mask
    return {raw: mask | _or_shorter(own, raw) for raw, mask in own.items()}


def _or_shorter(own: dict[bytes, int], raw: bytes) -> int:
    out = 0
    for other, mask in own.items():
        if len(other) < len(raw) and raw.startswith(other):
            out |= mask
    return out


def _sockaddr_text(family: str, addr: str, port: int) -> str:
    return addr if family == "unix" else f"{addr}:{port}"


def _blob_field(syscall: str, fieldname: str, blob: bytes) -> int | None:
    flags: int
    mode: int
    resolve: int
    fd1: int
    fd2: int
    if syscall == "openat2" and len(blob) >= 24:
        flags, mode, resolve = struct.unpack_from("<QQQ", blob)
        return {"flags": flags, "mode": mode, "resolve": resolve}.get(fieldname)
    if len(blob) >= 8 and fieldname in ("fd1", "fd2"):
        fd1, fd2 = struct.unpack_from("<ii", blob)
        return fd1 if fieldname == "fd1" else fd2
    return None


_L4: dict[int, str] = {int(socket.SOCK_STREAM): "tcp", int(socket.SOCK_DGRAM): "udp", int(socket.SOCK_RAW): "raw"}


def _apply_family(fd: Fd, family: int, stype: int, proto: int) -> None:
    if family == socket.AF_INET:
        fd.type, fd.sockfamily = "ipv4", "ip"
    elif family == socket.AF_INET6:
        fd.type, fd.sockfamily = "ipv6", "ip"
    elif family == socket.AF_UNIX:
        fd.type, fd.sockfamily = "unix", "unix"
        fd.l4proto = None
        return
    elif family == socket.AF_NETLINK:
        fd.type, fd.sockfamily = "netlink", None
        return
    else:
        return
    l4 = _L4.get(stype & 0xF)
    if proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
        l4 = "icmp"
    fd.l4proto = l4


def _socket_fd(num: int, domain: int, stype: int, proto: int) -> Fd:
    fd = Fd(num=num, type="ipv4", flags=O_CLOEXEC if stype & SOCK_CLOEXEC else 0)
    _apply_family(fd, domain, stype, proto)
    if domain not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK):
        fd.type = "unknown"
    return fd


def _set_tuple(fd: Fd, info: SockInfo | None, sa: Any, *, server: bool, listener: Fd | None) -> None:
    """Client/server ends from the kernel's socket when it knows them, else from the sockaddr passed."""
    if fd.sockfamily == "unix":
        path = sa.addr if sa is not None and sa.family == "unix" else (listener.name if listener else None)
        fd.name = path or fd.name
        return
    local = (info.laddr, info.lport) if info is not None else (None, None)
    remote = (info.raddr, info.rport) if info is not None and info.rport else (
        (sa.addr, sa.port) if sa is not None and sa.family in ("ipv4", "ipv6") else (None, None))
    if server:
        (fd.sip, fd.sport), (fd.cip, fd.cport) = local, remote
    else:
        (fd.cip, fd.cport), (fd.sip, fd.sport) = local, remote
    if fd.sip is not None or fd.cip is not None:
        fd.name = f"{fd.cip or '0.0.0.0'}:{fd.cport or 0}->{fd.sip or '0.0.0.0'}:{fd.sport or 0}"


class Sensor:
    """The live sensor. Not thread-safe except set_syscalls/stats, which the daemon may call from elsewhere."""

    def __init__(self, config: SensorConfig | None = None) -> None:
        self.config = config or SensorConfig()
        self.config.validate()
        self._bpf: Any = None
        self._raw: list[bytes] = []
        self._stats = SensorStats()
        self.enricher = Enricher(wanted=self.config.syscalls)
        self.untraced: frozenset[str] = frozenset()
        self._last_sweep = time.monotonic()

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        _preflight()
        try:
            from bcc import BPF  # noqa: PLC0415 (heavy, root-only import kept out of module import)
        except ImportError as exc:
            raise SensorError(f"bcc is not importable ({exc}); install python3-bpfcc (make setup)") from None
        try:
            text, cflags = program_text(self.config)
        except btfmod.BTFError as exc:
            raise SensorError(str(exc)) from None
        try:
            self._bpf = BPF(text=text.encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for compile and load failures
            raise SensorError(f"the BPF program failed to compile or load: {exc}") from None
        self.enricher.offset_ns = time.time_ns() - time.monotonic_ns()
        self._bpf[b"events"].open_ring_buffer(self._on_record)
        self._write_sysconf(self.config.syscalls)
        excluded = self._bpf[b"excluded"]
        for pid in self.config.exclude_pids:
            excluded[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
        if self.config.open_prefixes is not None:
            self.set_open_prefixes(self.config.open_prefixes)
        # Seed after the probes are live, so no process slips between the snapshot and the first event.
        if self.config.seed_from_proc:
            boot_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            self.enricher.table.seed_from_proc(boot_ns=boot_ns)

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> Sensor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- control ---------------------------------------------------------------------------------------------

    def set_syscalls(self, names: Iterable[str] | None) -> frozenset[str]:
        """Changes the delivered event types in the kernel (no recompile). None = every known syscall.

        Returns the names the sensor cannot trace (ignored), so the caller can warn about them."""
        return self._write_sysconf(set(names) if names is not None else None)

    def _write_sysconf(self, names: set[str] | None) -> frozenset[str]:
        known = set(sc.BY_NAME)
        wanted = known if names is None else names & known
        untraced = frozenset() if names is None else frozenset(names - known)
        on = wanted | sc.PROCESS_STATE | (sc.FD_STATE if self.config.track_fds else set())
        self.enricher.wanted = frozenset(wanted)
        self.untraced = untraced
        table = self._bpf[b"sysconf"]
        for spec in sc.BY_NAME.values():
            leaf = table.Leaf()
            leaf.on = 1 if spec.name in on else 0
            leaf.str0, leaf.str1, leaf.sock, leaf.socklen = spec.str0, spec.str1, spec.sock, spec.socklen
            leaf.blob, leaf.bloblen, leaf.exec, leaf.sockfd = spec.blob, spec.bloblen, spec.exec, spec.sockfd
            leaf.pathfilter, leaf.fdeffect = spec.pathfilter, spec.fdeffect
            table[ctypes.c_int(spec.nr)] = leaf
        return untraced

    def set_open_prefixes(self, prefixes: Iterable[str] | Mapping[str, Iterable[str]] | None) -> None:
        """Turns the kernel-side open-path filter on (with these prefixes) or off (None).

        `prefixes` is either paths (each covering every open under it) or a mapping path -> the kinds of
        open it covers: "read" (O_RDONLY/O_RDWR), "write" (O_WRONLY/O_RDWR) and "other" (any flag beyond the
        access mode and O_NONBLOCK/O_CLOEXEC/O_DIRECTORY/O_NOFOLLOW/O_NOCTTY/O_NOATIME/O_LARGEFILE, e.g.
        O_CREAT or O_TRUNC). With it on, an open/openat/openat2/creat whose path is absolute, lexically clean
        (no `//`, `/./`, `/../`, at most 256 bytes) and not under a prefix covering its kind is not emitted:
        no event, and its fd stays unknown to the fd table. Relative or dotted paths always pass (the kernel
        cannot resolve them cheaply), and so do openat2 and opens with O_DIRECTORY or O_PATH (a directory fd
        may become a dirfd or fchdir target whose path user space needs). It is only conservative if the
        prefixes cover every path any loaded rule can match on fd.name/fd.directory/fd.filename/evt.arg.* of
        ANY event (fds outlive their open); prefixes are compared on their first 64 bytes, which only widens
        them. The close of a kept-back fd stays in the kernel too (user space never knew the fd); any fd
        creation that reaches user space clears that mark for its number first. Filtered opens and closes
        are counted in stats().path_filtered."""
        trie = self._bpf[b"open_prefixes"]
        on = self._bpf[b"path_filter_on"]
        # Off while the trie changes: an empty or half-filled trie with the filter on would drop opens a rule
        # needs (off only lets more through).
        on[ctypes.c_int(0)] = ctypes.c_uint32(0)
        trie.clear()
        if prefixes is None:
            return
        masks = _prefix_masks(prefixes)
        for raw, mask in masks.items():
            key = trie.Key()
            key.prefixlen = len(raw) * 8
            for i, byte in enumerate(raw):
                key.data[i] = byte
            trie[key] = ctypes.c_uint8(mask)
        on[ctypes.c_int(0)] = ctypes.c_uint32(1)

    def exclude_pid(self, pid: int) -> None:
        self._bpf[b"excluded"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    # --- data ------------------------------------------------------------------------------------------------

    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        self._raw.append(ctypes.string_at(data, size))
        # Under a flood libbpf would keep consuming as long as the kernel keeps producing, so poll() would
        # never return and the backlog would grow without bound. A negative return makes libbpf stop after
        # this record (which it has consumed: nothing is lost or read twice); the rest waits in the ring
        # buffer, where overflow is counted as kernel drops.
        return -1 if len(self._raw) >= POLL_BATCH else 0

    def poll(self, timeout_ms: int = 100) -> list[Event]:
        """Waits up to timeout_ms for records; returns the enriched events (state-only records are absorbed).

        Takes at most POLL_BATCH records per call, so a caller's loop stays responsive under any load."""
        if self._bpf is None:
            raise SensorError("the sensor is not started")
        self._bpf.ring_buffer_poll(timeout_ms)
        now = time.monotonic()
        if now - self._last_sweep > SWEEP_SECONDS:
            self._last_sweep = now
            self._stats.swept += self.enricher.table.sweep()
        raw, self._raw = self._raw, []
        out: list[Event] = []
        st = self._stats
        for data in raw:
            st.records += 1
            try:
                ev = self.enricher.feed(data)
            except RecordError:
                st.decode_errors += 1
                continue
            if ev is not None:
                out.append(ev)
        st.events += len(out)
        return out

    def stats(self) -> SensorStats:
        st = self._stats
        if self._bpf is not None:
            counters = self._bpf[b"counters"]
            drops = [int(v) for v in counters.getvalue(ctypes.c_int(0))]
            st.kernel_drops_per_cpu = drops
            st.kernel_drops = sum(drops)
            st.inflight_full = sum(int(v) for v in counters.getvalue(ctypes.c_int(1)))
            st.kernel_emitted = sum(int(v) for v in counters.getvalue(ctypes.c_int(2)))
            st.path_filtered = sum(int(v) for v in counters.getvalue(ctypes.c_int(3)))
        return SensorStats(**{k: getattr(st, k) for k in SensorStats.__slots__})


def _preflight() -> None:
    """Says plainly what is missing before bcc produces a less readable error."""
    if os.geteuid() != 0:
        raise SensorError("the eBPF sensor needs root (CAP_BPF and CAP_PERFMON): run it as root")
    try:
        sc.check_arch()
    except sc.UnknownSyscall as exc:
        raise SensorError(str(exc)) from None
    if not btfmod.VMLINUX_BTF.exists():
        raise SensorError(f"kernel BTF is missing ({btfmod.VMLINUX_BTF}); the kernel needs CONFIG_DEBUG_INFO_BTF")
    build = Path("/lib/modules") / os.uname().release / "build"
    if not build.exists():
        raise SensorError(f"kernel headers for bcc are missing ({build}); run `make setup`")
    tracing = Path("/sys/kernel/tracing/events/raw_syscalls")
    if not tracing.exists() and not Path("/sys/kernel/debug/tracing/events/raw_syscalls").exists():
        raise SensorError("tracefs is not mounted at /sys/kernel/tracing; run `make setup` "
                          "(mount -t tracefs nodev /sys/kernel/tracing)")
