"""The Enricher: kernel records in, enriched `falconet.model.event.Event`s out. Pure user space, no kernel.

It keeps the process and fd tables (`state`) from the records' lifecycle and fd effects, joins an exec's
arguments (EXECARGS) to its result, reads the container identity and exe facts an exec carries (`cgroups`,
`exefacts`), and gives each event Falco's parameter names (`syscalls`). Fed bytes or Records, so every rule of
enrichment is testable without BPF; the live Sensor (sensor.py) only adds the ring buffer in front.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from falconet.model.event import Container, Event, Fd, Group, Process, User
from falconet.model.syscalls import EVENT_PARAMS
from falconet.sensor import cgroups
from falconet.sensor import syscalls as sc
from falconet.sensor.argplan import Plan, plan_of
from falconet.sensor.exefacts import apply_exec
from falconet.sensor.openfilter import OPEN_KEEP, open_need
from falconet.sensor.record import (
    _COMMS,
    _NO_SEGMENTS,
    EXECARGS_LOST,
    HDR,
    HDR_SIZE,
    NO_LOGINUID_U32,
    REC_EXECARGS,
    REC_EXECENV,
    REC_EXIT,
    REC_FORK,
    REC_SYSCALL,
    SEG_BLOB,
    SEG_EXTRA,
    SEG_EXTRA2,
    SEG_SOCK,
    SEG_STR0,
    Record,
    RecordError,
    _comm,
    decode,
    parse_execinfo,
    parse_exe_path,
    parse_sockaddr,
    parse_sockinfo,
)
from falconet.sensor.sockets import SOCK_CLOEXEC, apply_family, set_tuple, socket_fd
from falconet.sensor.state import AT_FDCWD, O_CLOEXEC, NameDb, ProcessTable, ProcInfo, fd_as, resolve_path

NO_FD = ""  # rules/fd_type_gate.py's NO_FD: the fd type asked for an event whose fd.type is missing

ANCESTOR_DEPTH = 8  # proc.aname[N] goes this far up
NO_PATHS: dict[str, tuple[str, str]] = {}
_ZERO_LENS = (0, 0, 0, 0, 0, 0)
_ZERO_LENS5 = (0, 0, 0, 0, 0)
_OPENS = ("open", "openat", "openat2", "creat")
O_DIRECTORY = 0o200000
F_DUPFD, F_SETFD, F_DUPFD_CLOEXEC = 0, 2, 1030
FD_CLOEXEC = 1
EINPROGRESS = errno.EINPROGRESS

# Event type -> its uid and gid parameters ((name, is_uid)): Falco shows them as user and group names.
_ID_PARAMS: dict[str, tuple[tuple[str, bool], ...]] = {
    etype: ids for etype, params in EVENT_PARAMS.items()
    if (ids := tuple((p.name, p.kind == "uid") for p in params if p.kind in ("uid", "gid")))
}


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _i64(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


# The register holding an open's flags, as the syscall table copies it (model/syscalls.py: `flags=u1`, `u2`).
_FLAGS_REG = {"open": 1, "openat": 2}


class Enricher:
    """Records -> Events, keeping the process and fd tables. Pure user space: fed bytes or Records."""

    def __init__(self, table: ProcessTable | None = None, names: NameDb | None = None,
                 wanted: set[str] | None = None, mono_to_epoch_ns: int = 0) -> None:
        self.table = table or ProcessTable()
        self.names = names or NameDb()
        # syscall number -> (its Spec, its Plan, whether its events are delivered): the per-record lookups, once
        # (and whether it is an undelivered close, which feed_batch handles without a Record)
        self._routes: dict[int, tuple[sc.Spec, Plan, bool, bool]] = {}
        # (fd number, flags, (raw, absolute) path) -> the Fd an open made: a host opens the same files over and
        # over, and an Fd is never changed in place once made (changes replace it), so equal opens share one
        self._open_fds: dict[tuple[int, int, tuple[str, str]], Fd] = {}
        self._wanted: frozenset[str] | None = frozenset(wanted) if wanted is not None else None
        self.offset_ns = mono_to_epoch_ns
        self.num = 0
        # the open gate and its memo, one reference (see the open_gate property)
        self._gate: tuple[Callable[[str, str, int], bool], dict[tuple[str, int, str], bool]] | None = None
        self.gated_opens = 0
        # (event type, fd type) -> may a rule match an event of this type on an fd of this type
        # (rules/fd_type_gate.py; an event without an fd, or of an fd of no known type, asks with NO_FD); None: any
        # may. Set with open_gate; the fd table has taken the syscall first.
        self.fd_type_gate: Callable[[str, str], bool] | None = None
        self.gated_fd_events = 0
        self._pending_exec: dict[int, Record] = {}
        # the environment beyond the EXECARGS record's entries (REC_EXECENV): (entries of EXECARGS to keep, rest)
        self._pending_env: dict[int, tuple[int, list[str]]] = {}
        self._host_init_ts: int | None = None  # start of the initial pid namespace's init (ns since the epoch)
        # (v2 path, v1 path) as the kernel sent them -> the container they name: a host runs few distinct
        # cgroups and execs in each over and over, so each pair is parsed once
        self._cgroup_refs: dict[tuple[bytes, bytes], cgroups.ContainerRef | None] = {}
        # pid -> (ProcInfo, its gen, Process, table epoch when checked): shared until something changes
        self._cache: dict[int, tuple[ProcInfo, int, Process, int]] = {}
        self._host = Container()
        # pid -> (ProcInfo, its gen, the identity key _update last applied to it)
        self._ident: dict[int, tuple[ProcInfo, int, tuple[object, ...]]] = {}
        # an absolute path's segment bytes -> (its text, its lexically folded form): a host opens the same
        # files over and over, and for an absolute path both are a function of the bytes alone
        self._absolute: dict[bytes, tuple[str, str]] = {}
        # (the directory a relative path resolves against, the path's segment bytes) -> (its text, its absolute
        # form): a build opens the same relative names (headers, objects) from the same directories over and
        # over, and the pair determines both (state.resolve_path is a pure function of them)
        self._relative: dict[tuple[str | None, bytes], tuple[str, str]] = {}
        self._containers: dict[cgroups.ContainerRef, Container] = {}

    @property
    def wanted(self) -> frozenset[str] | None:
        """The event types delivered as Events (None: all); the others only keep the tables."""
        return self._wanted

    @wanted.setter
    def wanted(self, names: frozenset[str] | None) -> None:
        self._wanted = frozenset(names) if names is not None else None
        self._routes = {}

    def _route(self, nr: int) -> tuple[sc.Spec, Plan, bool, bool] | None:
        spec = sc.BY_NR.get(nr)
        if spec is None:
            return None
        plan = plan_of(spec)
        wanted = self._wanted is None or spec.name in self._wanted
        route = self._routes[nr] = (spec, plan, wanted, plan.close and not wanted and not spec.exec)
        return route

    def feed(self, data: bytes) -> Event | None:
        return self.handle(decode(data))

    def feed_batch(self, data: bytes, offsets: list[int], lengths: list[int]) -> tuple[list[Event], int]:
        """Records data[offsets[i] : offsets[i] + lengths[i]] in order (a ring buffer batch, sensor.ringbuf)
        -> (the events, how many records were malformed and skipped). The same as `feed` on each record, in
        one loop without a bytes object per record; decode() is spelled out here for the common shape (no
        payload, or payload segments that fit) because a call per record is a measurable share of its cost."""
        out: list[Event] = []
        errors = 0
        syscall, handle = self._syscall, self.handle
        unpack, new, comms = HDR.unpack_from, tuple.__new__, _COMMS
        end_of = len(data)
        if not isinstance(data, bytes):
            data = bytes(data)  # slices of the payload must be bytes, as decode gives them
        procs, ident, routes, absolute = self.table.procs, self._ident, self._routes, self._absolute
        for off, n in zip(offsets, lengths, strict=True):
            if n >= HDR_SIZE and off + n <= end_of:
                v = unpack(data, off)
                comm = comms.get(v[31])
                if comm is None:
                    comm = _comm(v[31])
                checked = False
                if v[1] == REC_SYSCALL:
                    # The task's identity as it came, against what its process last took (_update's check, from
                    # the header): when equal, the Record needs no identity work, and an undelivered close none
                    # at all (only forgetting its fd), so it is done here without building one.
                    p = procs.get(v[3])
                    seen = ident.get(v[3])
                    if p is not None and seen is not None and seen[0] is p and seen[1] == p.gen and (
                            seen[2] == (v[5:17], v[19:23], comm, self._host_init_ts)):
                        checked = True
                        route = routes.get(v[23])
                        if route is not None and route[3]:
                            if not v[24]:
                                num = v[25] & 0xFFFFFFFF
                                p.fds.pop(num - (1 << 32) if num & 0x80000000 else num, None)
                            continue
                        if route is not None and route[1].opens and v[33:38] == _ZERO_LENS5 and (
                                HDR_SIZE + v[32] <= n):  # one path, an absolute one seen before: no Record
                            pos = off + HDR_SIZE
                            blob = data[pos : pos + v[32]]
                            got = absolute.get(blob) if blob[:1] == b"/" else self._relative_seen(p, route[1], v, blob)
                            if got is not None:
                                ev = self._open_record(route, p, v, got, (blob, b"", b"", b"", b"", b""))
                                if ev is not None:
                                    out.append(ev)
                                continue
                lens = v[32:38]
                if lens == _ZERO_LENS:
                    segments = _NO_SEGMENTS
                elif lens[1:] == _ZERO_LENS5 and HDR_SIZE + lens[0] <= n:  # one path, the most common payload
                    pos = off + HDR_SIZE
                    segments = (data[pos : pos + lens[0]], b"", b"", b"", b"", b"")
                else:
                    segments = None
                if segments is not None:
                    loginuid = v[6]
                    rec = new(Record, (v[1], v[0], v[3], v[4], v[5],
                                       -1 if loginuid == NO_LOGINUID_U32 else loginuid,
                                       *v[7:25], v[25:31], comm, segments))
                    ev = syscall(rec, checked) if checked else (syscall(rec) if v[1] == REC_SYSCALL else handle(rec))
                    if ev is not None:
                        out.append(ev)
                    continue
            try:
                rec = decode(data, off, n)  # several payload segments (or a malformed record), checked
            except RecordError:
                errors += 1
                continue
            ev = syscall(rec) if rec.kind == REC_SYSCALL else handle(rec)
            if ev is not None:
                out.append(ev)
        return out, errors

    def handle(self, rec: Record) -> Event | None:
        if rec.kind == REC_SYSCALL:
            return self._syscall(rec)
        if rec.kind == REC_EXECARGS:
            self._pending_exec[rec.tgid] = rec
            self._pending_env.pop(rec.tgid, None)
        elif rec.kind == REC_EXECENV:
            self._pending_env[rec.tgid] = (rec.args[1], rec.strings(SEG_EXTRA2))
        elif rec.kind == REC_FORK:
            self._update(self.table.ensure(rec.tgid), rec)
            self.table.fork(rec.tgid, rec.args[0], rec.args[1], self.offset_ns + rec.ts)
        elif rec.kind == REC_EXIT:
            self.table.exit(rec.tgid)
            self._pending_exec.pop(rec.tgid, None)
            self._pending_env.pop(rec.tgid, None)
        return None

    # --- per-record state ----------------------------------------------------------------------------------

    def _container_of(self, rec: Record) -> cgroups.ContainerRef | None:
        key = (rec.segments[SEG_EXTRA], rec.segments[SEG_EXTRA2])
        if key in self._cgroup_refs:
            return self._cgroup_refs[key]
        ref = cgroups.container_from_paths(
            cgroups.path_from_components(rec.strings(seg)) for seg in (SEG_EXTRA, SEG_EXTRA2))
        if len(self._cgroup_refs) >= 4096:
            self._cgroup_refs.clear()
        self._cgroup_refs[key] = ref
        return ref

    def _update(self, p: ProcInfo, rec: Record) -> None:
        """What the kernel told us about the task at this moment overrides anything remembered.

        proc.pidns_init_start_ts: the kernel reads it inside pid namespaces on every record, and in the initial
        one only on the rarer lifecycle records (it never changes there), which this remembers."""
        init_ts: int | None
        if rec.pidns_init_ts:
            init_ts = self.offset_ns + rec.pidns_init_ts
            if not rec.pidns_level:
                self._host_init_ts = init_ts
        else:
            init_ts = None if rec.pidns_level else self._host_init_ts
        # The same task sends the same identity record after record: compare it as it came (ppid..pgid and
        # vpid, vpgid are contiguous in Record) with what this process object last took, before field by field.
        # Only _update changes these fields of a ProcInfo, and it bumps gen, so (object, gen, key) is exact.
        key = ((rec.ppid, NO_LOGINUID_U32 if rec.loginuid == -1 else rec.loginuid, *rec[6:16]), rec[18:22], rec.comm,
               self._host_init_ts)  # the header's own order and values (feed_batch compares it unconverted)
        seen = self._ident.get(p.pid)
        if seen is not None and seen[0] is p and seen[1] == p.gen and seen[2] == key:
            return
        if len(self._ident) >= 65536:
            self._ident.clear()
        now = (rec.comm, rec.ppid, rec.uid, rec.gid, rec.euid, rec.egid, rec.loginuid, rec.tty, rec.sid, rec.pgid,
               rec.cap_inheritable, rec.cap_permitted, rec.cap_effective, rec.vpid, rec.vpgid, init_ts)
        if now != (p.comm, p.ppid, p.uid, p.gid, p.euid, p.egid, p.loginuid, p.tty, p.sid, p.pgid,
                   p.cap_inheritable, p.cap_permitted, p.cap_effective, p.vpid, p.vpgid, p.pidns_init_ts):
            (p.comm, p.ppid, p.uid, p.gid, p.euid, p.egid, p.loginuid, p.tty, p.sid, p.pgid,
             p.cap_inheritable, p.cap_permitted, p.cap_effective, p.vpid, p.vpgid, p.pidns_init_ts) = now
            p.gen += 1
            self.table.epoch += 1
        self._ident[p.pid] = (p, p.gen, key)

    def _syscall(self, rec: Record, checked: bool = False) -> Event | None:
        """One syscall record: the tables' work, then (when its type is delivered) the Event. The hot path of the
        sensor: every lookup that depends only on the syscall number is made once (`_route`), and the identity
        check is the cached comparison of _update, inline (`checked`: the caller made it, and it held)."""
        route = self._routes.get(rec.nr)
        if route is None:
            route = self._route(rec.nr)
            if route is None:
                return None
        spec, plan, wanted, _quiet_close = route
        pid = rec.tgid
        p = self.table.procs.get(pid)
        if p is None:
            p = self.table.ensure(pid)
        if not p.exepath and not p.exe:
            p.exe = rec.comm
        if not checked:
            self._update(p, rec)
        fd: Fd | None = None
        if spec.exec:
            args = self._exec(rec, spec, p)
        elif wanted or plan.args_for_state:
            paths = self._paths(rec, plan, pid) if plan.paths else NO_PATHS
            args = plan.build(rec.res, rec.args, rec.segments, paths)
            if plan.opens:
                got = paths.get("p0")
                fd = self._open(rec.res, spec.name, p, got, args)
                if wanted and got is not None and self._gate is not None and self._gated(spec.name, got, args):
                    return None
            else:
                fd = self._fd_effects(rec, spec, pid, paths, args)
                if wanted and self.fd_type_gate is not None and not self.fd_type_gate(
                        spec.name, fd.type or NO_FD if fd is not None else NO_FD):
                    self.gated_fd_events += 1  # no rule accepts this fd's type here (rules/fd_type_gate.py)
                    return None
        elif plan.state:  # not delivered: only what the tables need (no argument of this record is shown)
            if plan.close:  # the most common of them, spelled out: _fd_effects' close on the process at hand
                if rec.res == 0:
                    num = rec.args[0] & 0xFFFFFFFF
                    p.fds.pop(num - (1 << 32) if num & 0x80000000 else num, None)
            else:
                self._fd_effects(rec, spec, pid, NO_PATHS, {})
            return None
        else:
            return None

        if not wanted:
            return None
        return self._event(p, spec.name, rec.ts, rec.tid, rec.res, args, fd, rec.vtid)

    def _event(self, p: ProcInfo, name: str, ts: int, tid: int, res: int, args: dict[str, Any], fd: Fd | None,
               vtid: int) -> Event:
        """The delivered Event of a record of process `p`, numbered."""
        self.num += 1
        proc = self._process(p, ANCESTOR_DEPTH)
        ref = p.container
        container = self._host if ref is None else self._containers.get(ref)
        if container is None:
            container = self._container(ref)
        ids = _ID_PARAMS.get(name)
        return Event(self.num, self.offset_ns + ts, name, tid, res, proc, args, fd, container, "syscall",
                     self._id_names(ids, args) if ids else {}, vtid)

    def _open_record(self, route: tuple[sc.Spec, Plan, bool, bool], p: ProcInfo, v: tuple[Any, ...],
                     got: tuple[str, str], segments: tuple[bytes, ...]) -> Event | None:
        """A record of the open family, of a task whose identity is unchanged, naming an absolute path seen
        before (`got`): _syscall's work for it, straight from the unpacked header (no Record)."""
        spec, plan, wanted, _quiet_close = route
        res = v[24]
        gate = self._gate
        if gate is not None and wanted:
            # An open the gate already ruled out, of an Fd already made: only the fd table's part of _open, with
            # the flags register plan.build would have copied (the memo and Fd cache keys are the same).
            reg = _FLAGS_REG.get(spec.name)
            if reg is not None:
                flags = v[25 + reg] or 0
                fd = self._open_fds.get((res, flags, got)) if gate[1].get((spec.name, flags, got[1])) else None
                if fd is not None:
                    if res >= 0:
                        p.fds[res] = fd
                    self.gated_opens += 1
                    return None
        args = plan.build(res, v[25:31], segments, {"p0": got})
        fd = self._open(res, spec.name, p, got, args)
        if not wanted or (gate is not None and self._gated(spec.name, got, args)):
            return None
        return self._event(p, spec.name, v[0], v[4], res, args, fd, v[18])

    def _gated(self, name: str, got: tuple[str, str], args: dict[str, Any]) -> bool:
        """True when the open gate (rules/open_gate.py, set by the daemon) says no rule can match this open
        of a file (the fd table has taken it already): its Event is not built. Counted in `gated_opens`. The
        answer depends on the type, the flags and fd.name only, so it is memoised with the gate."""
        current = self._gate
        if current is None:
            return False
        gate, memo = current
        key = (name, args.get("flags") or 0, got[1])
        no = memo.get(key)
        if no is None:
            need = open_need(name, key[1])
            no = not (need & OPEN_KEEP or gate(name, got[1], need))
            if len(memo) >= 65536:
                memo.clear()
            memo[key] = no
        if no:
            self.gated_opens += 1
        return no

    @property
    def open_gate(self) -> Callable[[str, str, int], bool] | None:
        """(event type, fd.name, open kind set) -> may a rule match this open (rules/open_gate.py); None:
        every open may. Set by whoever loads the rules (the daemon, with the open filter on), from any thread:
        the gate and its memo are replaced together. Opens it rules out still update the fd table; only
        their Events are not built."""
        return self._gate[0] if self._gate is not None else None

    @open_gate.setter
    def open_gate(self, gate: Callable[[str, str, int], bool] | None) -> None:
        self._gate = (gate, {}) if gate is not None else None

    def _open(self, res: int, name: str, p: ProcInfo, got: tuple[str, str] | None,
              args: dict[str, Any]) -> Fd | None:
        """The open family's effect (_fd_effects' first case, the most frequent record with one): the new fd,
        for the path parameter's (raw, absolute) `got`."""
        if got is None:
            return None
        flags = args.get("flags") or 0
        if name == "creat":
            flags = 0o1101  # O_CREAT|O_WRONLY|O_TRUNC, which creat means
            args["flags"] = flags
        key = (res, flags, got)
        fd = self._open_fds.get(key)
        if fd is None:
            if len(self._open_fds) >= 4096:
                self._open_fds.clear()
            fd = self._open_fds[key] = Fd(res if res >= 0 else -1, "directory" if flags & O_DIRECTORY else "file",
                                          got[1], got[0], None, None, flags)
        if res >= 0:
            p.fds[res] = fd
        return fd

    def _container(self, ref: cgroups.ContainerRef | None) -> Container:
        """The Container of events in `ref`'s cgroup: one object shared by its events (consumers treat events
        as read-only, and a container's metadata replaces the object rather than filling it in)."""
        if ref is None:
            return self._host
        if len(self._containers) >= 4096:
            self._containers.clear()
        got = self._containers[ref] = Container(id=ref.id, full_id=ref.full_id, type=ref.type)
        return got

    def _id_names(self, ids: tuple[tuple[str, bool], ...], args: dict[str, Any]) -> dict[str, str]:
        """uid/gid arguments as Falco renders them: the user's or group's name when the host knows the id
        (so `evt.arg.uid=nobody` matches), the number otherwise. (Inside a container the host's names are
        used, as for user.name.)"""
        out: dict[str, str] = {}
        for pname, is_uid in ids:
            value = args.get(pname)
            if not isinstance(value, int) or value < 0:
                continue
            if is_uid:
                user = self.names.user(value)
                if user is not None:
                    out[pname] = user[0]
            else:
                group = self.names.group(value)
                if group is not None:
                    out[pname] = group
        return out

    def _paths(self, rec: Record, plan: Plan, pid: int) -> dict[str, tuple[str, str]]:
        """"p0"/"p1" -> (raw, absolute) for the path parameters of this syscall."""
        absolute = self._absolute
        if len(plan.paths) == 1:  # the usual case, without the loop: one absolute path seen before
            key, seg, _dirarg = plan.paths[0]
            got = absolute.get(rec.segments[seg])
            if got is not None:
                return {key: got}
        out: dict[str, tuple[str, str]] = {}
        for key, seg, dirarg in plan.paths:
            blob = rec.segments[seg]
            got = absolute.get(blob)
            if got is not None:  # an absolute path seen before: its text and folded form depend on nothing else
                out[key] = got
                continue
            raw = rec.text(seg)
            if raw is None:
                continue
            if raw.startswith("/"):
                if len(absolute) >= 4096:
                    absolute.clear()
                out[key] = absolute[blob] = (raw, self.table.abspath(pid, raw))
                continue
            dirfd = _i32(rec.args[dirarg]) if dirarg >= 0 else AT_FDCWD
            base = self.table.dir_of(pid, dirfd)
            relative = self._relative
            got = relative.get((base, blob))
            if got is None:
                if len(relative) >= 4096:
                    relative.clear()
                got = relative[(base, blob)] = (raw, resolve_path(base, raw))
            out[key] = got
        return out

    def _relative_seen(self, p: ProcInfo, plan: Plan, v: tuple[Any, ...], blob: bytes) -> tuple[str, str] | None:
        """The (raw, absolute) pair of a relative path parameter (the first of `plan`) as _paths last made it
        for the same directory, from the unpacked header `v`; None when not seen (or empty): then the Record
        path makes it. The directory is read as table.dir_of reads it (the cwd, or the dirfd's name)."""
        if not blob:
            return None
        dirarg = plan.paths[0][2]
        base = p.cwd
        if dirarg >= 0:
            num = v[25 + dirarg] & 0xFFFFFFFF
            dirfd = num - (1 << 32) if num & 0x80000000 else num
            if dirfd != AT_FDCWD:
                f = p.fds.get(dirfd)
                base = f.name if f is not None else None
        return self._relative.get((base, blob))

    def _exec(self, rec: Record, spec: sc.Spec, p: ProcInfo) -> dict[str, Any]:
        """The exec's parameters, joined from its EXECARGS record, and (on success) the process's new image.

        The kernel sends EXECARGS just before the exec's own record, from the same sys_exit. Without it (the
        ring buffer had room for the small exec record but not for the arguments: the kernel then sends an
        EXECARGS_LOST stand-in, or nothing when even that did not fit) the arguments are unknown: the process
        says so (args_known) rather than showing an exec without arguments."""
        pending = self._pending_exec.pop(rec.tgid, None)
        more = self._pending_env.pop(rec.tgid, None)
        if pending is not None and pending.args[0] & EXECARGS_LOST:
            pending = None
        known = pending is not None
        filename = pending.text(SEG_STR0) if pending else None
        argv = pending.strings(SEG_EXTRA) if pending else []
        env = pending.strings(SEG_EXTRA2) if pending else []
        if more is not None and pending is not None:
            env = env[: more[0]] + more[1]  # the kernel's count of whole entries, then the rest it read
        if rec.res == 0:
            dirpath = None
            if spec.exec == 2:
                dirfd = _i32(rec.args[0])
                dirpath = self.table.dir_of(rec.tgid, dirfd) if dirfd != AT_FDCWD else None
            ref = self._container_of(rec)
            self.table.exec(rec.tgid, filename, argv, env, ref.id if ref else cgroups.HOST_ID, dirpath,
                            container=ref,
                            exepath=parse_exe_path(rec.segments[SEG_STR0], rec.segments[SEG_BLOB]),
                            args_known=known)
            apply_exec(p, parse_execinfo(rec.segments[SEG_BLOB]), rec.cap_effective)
        args: dict[str, Any] = {
            "res": rec.res,
            "exe": argv[0] if argv else (filename or ("" if known else None)),
            "args": argv[1:] if known else None,
            "tid": rec.tid,
            "pid": rec.tgid,
            "ptid": rec.ppid,
            "cwd": p.cwd,
            "comm": rec.comm,
            "env": env if known else None,
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
        if name in _OPENS:
            return self._open(rec.res, name, t.ensure(pid), paths.get("p0"), args)
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
                # A new Fd, not the table's changed in place: events already made (of this batch, or still
                # queued for the engine) share that object and must keep the flags they had at their syscall.
                cur = fd_as(cur, cur.num, ((cur.flags or 0) & ~O_CLOEXEC) | (O_CLOEXEC if a[2] & FD_CLOEXEC else 0))
                t.add_fd(pid, cur)
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
            fd = socket_fd(res, _i32(a[0]), _i32(a[1]), _i32(a[2]))
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
                apply_family(cur, info.family, info.type, info.protocol)
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
                apply_family(fd, info.family, info.type, info.protocol)
            set_tuple(fd, info, sa, server=True, listener=listener)
        elif name == "bind":
            if info is not None:
                apply_family(fd, info.family, info.type, info.protocol)
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
                apply_family(fd, info.family, info.type, info.protocol)
            if name == "connect" or sa is not None or (info is not None and info.rport):
                set_tuple(fd, info, sa, server=False, listener=None)
            if name == "connect" and ok:
                fd.connected = True
        if "tuple" in args:
            args["tuple"] = fd.name
        if ok and (name in ("accept", "accept4", "connect", "bind", "listen")):
            t.add_fd(pid, fd)
        elif ok and fd.name != cur.name and fd.l4proto != "tcp" and not fd.connected and (
                name in ("sendto", "recvfrom", "sendmsg", "recvmsg")):
            # An unconnected datagram socket talking to a new peer: the fd now names that peer (Falco's
            # fd.name_changed, which the UDP branches of its inbound/outbound macros need). The table keeps the
            # new name, so the next datagram to the same peer is not a change.
            t.add_fd(pid, Fd(**{k: getattr(fd, k) for k in fd.__slots__}))
            fd.name_changed = True
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
            pid=p.pid, ppid=p.ppid, name=p.comm, exe=p.exe, exepath=p.exepath, args=list(p.args),
            args_known=p.args_known, cwd=p.cwd,
            env=list(p.env), tty=p.tty, sid=p.sid, vpid=p.vpid or p.pid, pgid=p.pgid, vpgid=p.vpgid,
            start_ts=p.start_ts,
            user=User(uid=p.uid, name=user[0] if user else None, homedir=user[1] if user else None,
                      shell=user[2] if user else None, loginuid=p.loginuid,
                      loginname=login[0] if login else None),
            group=Group(gid=p.gid, name=self.names.group(p.gid)),
            euid=p.euid, egid=p.egid, cap_permitted=p.cap_permitted, cap_effective=p.cap_effective,
            cap_inheritable=p.cap_inheritable, exe_from_memfd=p.exe_from_memfd, container_id=p.container_id,
            exe_writable=p.exe_writable, pidns_init_start_ts=p.pidns_init_ts,
            exe_upper_layer=f.upper_layer if (f := p.exe_file) is not None else False,
            exe_ino=f.ino if f is not None else None, exe_ino_ctime=f.ctime_ns if f is not None else None,
            exe_ino_mtime=f.mtime_ns if f is not None else None,
            parent=parent,
        )
