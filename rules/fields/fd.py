"""fd.* fields: the file descriptor the event acts on, as the sensor's fd table described it.

For sockets, "client" and "server" are the connection's ends, "local" and "remote" depend on which side this
process is (`Fd.is_server`). `fd.ip`, `fd.port`, `fd.net` and `fd.proto` stand for either end, as in Falco:
a comparison holds when it holds for the client or the server side. `fd.*ip.name` compare against domain
names through the daemon's DNS resolver (see fields.dns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..syscalls import FD_TYPECHARS
from .dns import dns_literal_matcher, dns_output
from .registry import (
    FieldSpec,
    FieldType,
    ResolversLike,
    ip_literal_matcher,
    register,
    simple,
)

if TYPE_CHECKING:
    from falconet.model.event import Event, Fd

S, P, N, B, IP, NET, PORT = (
    FieldType.STRING, FieldType.PATH, FieldType.INT, FieldType.BOOL, FieldType.IPADDR, FieldType.IPNET,
    FieldType.PORT,
)  # fmt: skip

SOCKET_TYPES = frozenset({"ipv4", "ipv6"})
_TYPECHAR = FD_TYPECHARS.get
FILE_TYPES = frozenset({"file", "directory"})


def _fd(get: Callable[[Fd], Any]) -> Callable[[Event], Any]:
    def extract(e: Event) -> Any:
        fd = e.fd
        return get(fd) if fd is not None else None

    return extract


def _ip_side(get: Callable[[Fd], Any]) -> Callable[[Event], Any]:
    def extract(e: Event) -> Any:
        fd = e.fd
        return get(fd) if fd is not None and fd.type in SOCKET_TYPES else None

    return extract


def _local_ip(fd: Fd) -> Any:
    return fd.sip if fd.is_server else fd.cip


def _remote_ip(fd: Fd) -> Any:
    return fd.cip if fd.is_server else fd.sip


def _local_port(fd: Fd) -> Any:
    return fd.sport if fd.is_server else fd.cport


def _remote_port(fd: Fd) -> Any:
    return fd.cport if fd.is_server else fd.sport


def _both(a: Callable[[Fd], Any], b: Callable[[Fd], Any]) -> Callable[[Event], Any]:
    def extract(e: Event) -> Any:
        fd = e.fd
        if fd is None or fd.type not in SOCKET_TYPES:
            return None
        return [v for v in (a(fd), b(fd)) if v is not None]

    return extract


def _directory(fd: Fd) -> str | None:
    name = fd.name
    if name is None:
        return None
    if fd.type == "directory":
        return name
    if fd.type == "file":
        # rpartition, not posixpath.dirname: same answer for the absolute paths the sensor gives, and cheaper.
        return name.rpartition("/")[0] or "/"
    return None


def _filename(fd: Fd) -> str | None:
    if fd.name is None or fd.type != "file":
        return None
    return fd.name.rpartition("/")[2]


def _ip_field(
    name: str, ftype: FieldType, get: Callable[[Event], Any], desc: str, *, any_of: bool = False
) -> None:
    register(
        FieldSpec(
            name,
            ftype,
            lambda _a: get,
            "none",
            desc=desc,
            any_of_without_arg=any_of,
            matcher=lambda _arg, _res: ip_literal_matcher(name),
        )
    )


def _dns_field(name: str, address_of: Callable[[Event], Any], desc: str) -> None:
    def out(_arg: str | None, resolvers: ResolversLike | None) -> Callable[[Event], Any]:
        return dns_output(resolvers, address_of)

    register(
        FieldSpec(
            name,
            S,
            lambda _a: address_of,
            "none",
            desc=desc,
            matcher=lambda _arg, resolvers: dns_literal_matcher(resolvers),
            output=out,
        )
    )


# The hottest fd fields are single closures (no wrapper call): most file rules read them first.
simple("fd.num", N, lambda e: None if (f := e.fd) is None else f.num, "the fd number")
simple(
    "fd.type", S, lambda e: None if (f := e.fd) is None else f.type, "file, directory, ipv4, ipv6, unix, ..."
)
simple(
    "fd.typechar",
    S,
    lambda e: None if (f := e.fd) is None else _TYPECHAR(f.type, "o"),
    "f, d, 4, 6, u, p, ...",
)
simple("fd.name", P, lambda e: None if (f := e.fd) is None else f.name, "the path, or the tuple for sockets")
simple(
    "fd.nameraw", P, _fd(lambda fd: fd.nameraw if fd.nameraw is not None else fd.name), "the path as passed"
)
simple("fd.directory", P, _fd(_directory), "the directory of a file")
simple("fd.filename", S, _fd(_filename), "the file name without its directory")
simple("fd.dev", N, _fd(lambda fd: fd.dev), "the device number of the file")
simple("fd.dev.major", N, _fd(lambda fd: fd.dev >> 20 if fd.dev is not None else None), "device major")
simple("fd.dev.minor", N, _fd(lambda fd: fd.dev & 0xFFFFF if fd.dev is not None else None), "device minor")
simple("fd.ino", N, _fd(lambda fd: fd.ino), "the inode number")
simple("fd.l4proto", S, _fd(lambda fd: fd.l4proto), "tcp, udp, icmp or raw")
simple("fd.sockfamily", S, _fd(lambda fd: fd.sockfamily), "ip or unix")
simple("fd.is_server", B, _fd(lambda fd: fd.is_server if fd.type in SOCKET_TYPES else None), "server side")
simple("fd.connected", B, _fd(lambda fd: fd.connected), "the socket is connected")
simple("fd.name_changed", B, _fd(lambda fd: fd.name_changed), "the name changed (e.g. after connect)")
simple("fd.uid", S, lambda e: f"{e.tid}{e.fd.num}" if e.fd is not None else None, "thread id and fd number")
simple(
    "fd.containername",
    S,
    lambda e: f"{e.container.id}:{e.fd.name}" if e.fd and e.fd.name else None,
    "container id:fd name",
)
simple("fd.containerdirectory", S, lambda e: f"{e.container.id}:{_directory(e.fd)}" if e.fd and
       _directory(e.fd) else None, "container id:fd directory")  # fmt: skip
simple("fd.types", S, lambda e: None, "not tracked (needs the whole fd table)", is_list=True)
for _proto in ("fd.cproto", "fd.sproto", "fd.lproto", "fd.rproto", "fd.proto"):
    simple(_proto, S, lambda e: None, "not tracked (needs /etc/services)")

_ip_field("fd.cip", IP, _ip_side(lambda fd: fd.cip), "the client's address")
_ip_field("fd.sip", IP, _ip_side(lambda fd: fd.sip), "the server's address")
_ip_field("fd.lip", IP, _ip_side(_local_ip), "the local address")
_ip_field("fd.rip", IP, _ip_side(_remote_ip), "the remote address")
_ip_field("fd.ip", IP, _both(lambda fd: fd.cip, lambda fd: fd.sip), "client or server address", any_of=True)
_ip_field("fd.cnet", NET, _ip_side(lambda fd: fd.cip), "the client's address, compared with networks")
_ip_field("fd.snet", NET, _ip_side(lambda fd: fd.sip), "the server's address, compared with networks")
_ip_field("fd.lnet", NET, _ip_side(_local_ip), "the local address, compared with networks")
_ip_field("fd.rnet", NET, _ip_side(_remote_ip), "the remote address, compared with networks")
_ip_field(
    "fd.net", NET, _both(lambda fd: fd.cip, lambda fd: fd.sip), "either address vs networks", any_of=True
)

register(FieldSpec("fd.cport", PORT, lambda _a: _ip_side(lambda fd: fd.cport), "none", desc="client port"))
register(FieldSpec("fd.sport", PORT, lambda _a: _ip_side(lambda fd: fd.sport), "none", desc="server port"))
register(FieldSpec("fd.lport", PORT, lambda _a: _ip_side(_local_port), "none", desc="local port"))
register(FieldSpec("fd.rport", PORT, lambda _a: _ip_side(_remote_port), "none", desc="remote port"))
register(
    FieldSpec(
        "fd.port",
        PORT,
        lambda _a: _both(lambda fd: fd.cport, lambda fd: fd.sport),
        "none",
        desc="client or server port",
        any_of_without_arg=True,
    )
)

_dns_field("fd.cip.name", _ip_side(lambda fd: fd.cip), "the client's domain name")
_dns_field("fd.sip.name", _ip_side(lambda fd: fd.sip), "the server's domain name")
_dns_field("fd.lip.name", _ip_side(_local_ip), "the local domain name")
_dns_field("fd.rip.name", _ip_side(_remote_ip), "the remote domain name")
