"""Records in probe.c's format (struct record_hdr + payload segments), built from what the tracer read.

The Enricher decodes these bytes exactly as it decodes the ring buffer's, so the process, fd and credential
tables and every event field come from the one code path both drivers share.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence

from falconet.sensor.ptrace.procfs import Identity
from falconet.sensor.record import HDR, HDR_SIZE, SOCKINFO

_U64 = (1 << 64) - 1


def _signed(v: int) -> int:
    v &= _U64
    return v - (1 << 64) if v & (1 << 63) else v


def pack(kind: int, tid: int, ident: Identity, nr: int, res: int, args: Sequence[int],
         segments: Sequence[bytes] = (), init_ts: int = 0) -> bytes:
    """One record: the header as fill_task fills it (cpu 0: not known to a tracer) and the segments in enum
    segment order (SEG_STR0, SEG_STR1, SEG_SOCK, SEG_BLOB, SEG_EXTRA, SEG_EXTRA2)."""
    lens = [len(s) for s in segments] + [0] * (6 - len(segments))
    payload = b"".join(segments)
    a = [x & _U64 for x in args] + [0] * (6 - len(args))
    return HDR.pack(time.monotonic_ns(), kind, HDR_SIZE + len(payload), ident.tgid, tid, ident.ppid,
                    ident.loginuid, ident.uid, ident.gid, ident.euid, ident.egid, ident.cap_inheritable,
                    ident.cap_permitted, ident.cap_effective, ident.tty, ident.sid, ident.pgid, 0, ident.vtid,
                    ident.vpid, ident.vpgid, ident.pidns_level, init_ts if not ident.pidns_level else 0,
                    nr, _signed(res), *a, ident.comm, *lens, 0) + payload


def sockinfo(fd: int) -> bytes:
    """struct sockinfo of probe.c for a socket this process holds a copy of (pidfd_getfd): the kernel's view
    through getsockname/getpeername and the SO_DOMAIN/SO_TYPE/SO_PROTOCOL options. b"" when not a socket."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        return b""
    try:
        family = s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        stype = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        proto = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        laddr, lport = _addr(family, _name(s.getsockname))
        raddr, rport = _addr(family, _name(s.getpeername))
    except OSError:
        return b""
    finally:
        s.detach()
    return SOCKINFO.pack(family, stype, proto, lport, rport, laddr, raddr)


def _name(call: Callable[[], object]) -> object:
    try:
        return call()
    except OSError:
        return None  # not connected (yet): the probe reads zeros there too


def _addr(family: int, name: object) -> tuple[bytes, int]:
    if not isinstance(name, tuple) or len(name) < 2:
        return b"\0" * 16, 0
    host, port = str(name[0]), int(name[1])
    try:
        if family == socket.AF_INET:
            return socket.inet_pton(socket.AF_INET, host).ljust(16, b"\0"), port
        if family == socket.AF_INET6:
            return socket.inet_pton(socket.AF_INET6, host.split("%")[0]), port
    except OSError:
        pass
    return b"\0" * 16, 0


def strv(items: Sequence[bytes], max_entries: int, area: int) -> tuple[bytes, int, int]:
    """A NUL-separated list as put_user_strv builds it: at most max_entries within `area` bytes (the last
    entry cut there). Returns (bytes, entries whole, bytes of those entries)."""
    out = b""
    whole = whole_bytes = 0
    for item in items[:max_entries]:
        if len(out) >= area:
            break
        out += item + b"\0"
        if len(out) <= area:
            whole += 1
            whole_bytes = len(out)
    return out[:area], whole, whole_bytes


U32 = struct.Struct("<I")
