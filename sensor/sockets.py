"""Socket fds as the Enricher builds them: family, protocol and the connection tuple from the kernel's socket
(struct sockinfo) or the sockaddr a syscall passed; and the text forms of addresses and fixed-size user structs."""

from __future__ import annotations

import socket
import struct
from typing import Any

from falconet.model.event import Fd
from falconet.sensor.record import SockInfo
from falconet.sensor.state import O_CLOEXEC

SOCK_CLOEXEC = 0o2000000


def sockaddr_text(family: str, addr: str, port: int) -> str:
    return addr if family == "unix" else f"{addr}:{port}"


def blob_field(syscall: str, fieldname: str, blob: bytes) -> int | None:
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


def apply_family(fd: Fd, family: int, stype: int, proto: int) -> None:
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


def socket_fd(num: int, domain: int, stype: int, proto: int) -> Fd:
    fd = Fd(num=num, type="ipv4", flags=O_CLOEXEC if stype & SOCK_CLOEXEC else 0)
    apply_family(fd, domain, stype, proto)
    if domain not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK):
        fd.type = "unknown"
    return fd


def set_tuple(fd: Fd, info: SockInfo | None, sa: Any, *, server: bool, listener: Fd | None) -> None:
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
