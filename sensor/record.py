"""The kernel/user record: `struct record_hdr` of sensor/probe.c, and its pure decoder.

Defined once: HDR_FIELDS below is the Python side of the C struct (same names, same order); a test parses the
struct out of probe.c and checks they agree, so the two cannot drift. Decoding is a pure function of bytes, so
it is tested without a kernel.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

# (name, struct format) in the order of `struct record_hdr`; the C types follow from the format.
HDR_FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "Q"),
    ("kind", "I"),
    ("size", "I"),
    ("tgid", "I"),
    ("tid", "I"),
    ("ppid", "I"),
    ("loginuid", "I"),
    ("uid", "I"),
    ("gid", "I"),
    ("euid", "I"),
    ("egid", "I"),
    ("cap_inheritable", "Q"),
    ("cap_permitted", "Q"),
    ("cap_effective", "Q"),
    ("tty", "I"),
    ("sid", "I"),
    ("pgid", "I"),
    ("cpu", "I"),
    ("vtid", "I"),
    ("vpid", "I"),
    ("vpgid", "I"),
    ("pidns_level", "I"),
    ("pidns_init_ts", "Q"),
    ("nr", "q"),
    ("res", "q"),
    ("args", "6Q"),
    ("comm", "16s"),
    ("len", "6H"),
    ("pad", "I"),
)
C_TYPES = {"Q": "u64", "I": "u32", "q": "s64", "6Q": "u64[6]", "16s": "char[16]", "6H": "u16[6]"}
HDR = struct.Struct("<" + "".join(fmt for _, fmt in HDR_FIELDS))
HDR_SIZE = HDR.size

REC_SYSCALL, REC_EXECARGS, REC_FORK, REC_EXIT, REC_EXECENV = 1, 2, 3, 4, 5
# REC_EXECARGS args[0] (probe.c): the kernel could not write the arguments (ring buffer full); the record stands
# in for them, headers only, so the exec is not taken for one without arguments
EXECARGS_LOST = 1
SEG_STR0, SEG_STR1, SEG_SOCK, SEG_BLOB, SEG_EXTRA, SEG_EXTRA2 = range(6)
NO_LOGINUID_U32 = 0xFFFFFFFF


class RecordError(ValueError):
    """Bytes that are not a well-formed record (too short, or lengths past the end)."""


class Record(NamedTuple):
    """One decoded record. A tuple (not a dataclass) so decode builds it in one C call from the unpacked header:
    the per-record cost of the sensor's hot path, paid for every record including state-only ones."""

    kind: int
    ts: int  # CLOCK_MONOTONIC ns
    tgid: int
    tid: int
    ppid: int
    loginuid: int  # -1 when never logged in
    uid: int
    gid: int
    euid: int
    egid: int
    cap_inheritable: int
    cap_permitted: int
    cap_effective: int
    tty: int
    sid: int
    pgid: int
    cpu: int
    vtid: int  # tid, tgid and pgid in the task's own pid namespace (vpgid 0: the group is outside it)
    vpid: int
    vpgid: int
    pidns_level: int  # 0: the initial pid namespace
    pidns_init_ts: int  # CLOCK_MONOTONIC start of the namespace's init; 0 when the kernel did not read it
    nr: int
    res: int
    args: tuple[int, ...]
    comm: str
    segments: tuple[bytes, ...]  # payload segments in enum segment order (empty when absent)

    def text(self, seg: int) -> str | None:
        """A NUL-terminated string segment, or None when the kernel read nothing."""
        raw = self.segments[seg]
        if not raw:
            return None
        return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    def strings(self, seg: int) -> list[str]:
        """A NUL-separated list segment (argv, env)."""
        raw = self.segments[seg]
        if not raw:
            return []
        parts = raw.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        return [p.decode("utf-8", "surrogateescape") for p in parts]


_NSCALAR = 25  # header fields before `args`, each one value
assert HDR_FIELDS[_NSCALAR - 1][0] == "res" and HDR_FIELDS[_NSCALAR][0] == "args"
assert HDR_FIELDS[_NSCALAR + 1][0] == "comm" and HDR_FIELDS[_NSCALAR + 2][0] == "len"
# from tgid on, the header and Record agree in order (decode builds the Record from the header by slices)
assert [n for n, _ in HDR_FIELDS[3:_NSCALAR]] == list(Record._fields[2:24])
_ARGS = slice(_NSCALAR, _NSCALAR + 6)
_COMM = _NSCALAR + 6
_LENS = slice(_COMM + 1, _COMM + 7)
_NO_SEGMENTS: tuple[bytes, ...] = (b"",) * 6
_COMMS: dict[bytes, str] = {}  # comm bytes -> text: a host runs few distinct names, each decoded once


def _comm(raw: bytes) -> str:
    text = _COMMS.get(raw)
    if text is None:
        if len(_COMMS) >= 4096:
            _COMMS.clear()
        text = _COMMS[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return text


def decode(data: bytes | bytearray | memoryview, off: int = 0, length: int = -1) -> Record:
    """One ring-buffer record -> Record: the record at data[off : off + length] (length -1: to the end).
    Pure: no kernel, no state. (Hot path: unpacks by position, decodes the comm once per distinct name.)"""
    end = len(data) if length < 0 else off + length
    if end - off < HDR_SIZE or end > len(data):
        raise RecordError(f"record of {end - off} bytes is shorter than its {HDR_SIZE}-byte header")
    v = HDR.unpack_from(data, off)
    lens = v[_LENS]
    if lens == (0, 0, 0, 0, 0, 0):
        segments = _NO_SEGMENTS
    elif lens[1:] == (0, 0, 0, 0, 0):  # one path, the most common payload
        pos = off + HDR_SIZE
        n0 = lens[0]
        if pos + n0 > end:
            raise RecordError(f"payload segment of {n0} bytes at {HDR_SIZE} runs past the {end - off}-byte record")
        chunk = data if isinstance(data, bytes) else bytes(data)
        segments = (chunk[pos : pos + n0], b"", b"", b"", b"", b"")
    else:
        segs = []
        pos = off + HDR_SIZE
        chunk = data if isinstance(data, bytes) else bytes(data)
        for n in lens:
            if n:
                if pos + n > end:
                    raise RecordError(f"payload segment of {n} bytes at {pos - off} runs past the "
                                      f"{end - off}-byte record")
                segs.append(chunk[pos : pos + n])
                pos += n
            else:
                segs.append(b"")
        segments = tuple(segs)
    loginuid = v[6]
    return tuple.__new__(Record, (v[1], v[0], v[3], v[4], v[5], -1 if loginuid == NO_LOGINUID_U32 else loginuid,
                                  *v[7:25], v[_ARGS], _comm(v[_COMM]), segments))


def encode(rec: Record) -> bytes:
    """The inverse of decode (for tests and fixtures)."""
    vals: list[object] = []
    lens = tuple(len(s) for s in rec.segments) + (0,) * (6 - len(rec.segments))
    payload = b"".join(rec.segments)
    for name, _fmt in HDR_FIELDS:
        if name == "size":
            vals.append(HDR_SIZE + len(payload))
        elif name == "loginuid":
            vals.append(NO_LOGINUID_U32 if rec.loginuid == -1 else rec.loginuid)
        elif name == "args":
            vals.extend(rec.args)
        elif name == "len":
            vals.extend(lens)
        elif name == "comm":
            vals.append(rec.comm.encode()[:15])
        elif name == "pad":
            vals.append(0)
        else:
            vals.append(getattr(rec, name))
    return HDR.pack(*vals) + payload


@dataclass(frozen=True, slots=True)
class SockAddr:
    family: str  # "ipv4", "ipv6", "unix", or "other"
    addr: str  # textual IP, or the unix path ("@name" for the abstract namespace)
    port: int = 0


def parse_sockaddr(raw: bytes) -> SockAddr | None:
    """A struct sockaddr as the kernel copied it from user memory; None when too short to mean anything."""
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], "little")
    if family == socket.AF_INET and len(raw) >= 8:
        return SockAddr("ipv4", str(ipaddress.IPv4Address(raw[4:8])), int.from_bytes(raw[2:4], "big"))
    if family == socket.AF_INET6 and len(raw) >= 24:
        addr = ipaddress.IPv6Address(raw[8:24])
        mapped = addr.ipv4_mapped
        return SockAddr("ipv6", str(mapped or addr), int.from_bytes(raw[2:4], "big"))
    if family == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return SockAddr("unix", "@" + path[1:].split(b"\0", 1)[0].decode("utf-8", "replace"))
        return SockAddr("unix", path.split(b"\0", 1)[0].decode("utf-8", "replace"))
    return SockAddr("other", "")


SOCKINFO = struct.Struct("<HHHHH6x16s16s")  # struct sockinfo of probe.c


@dataclass(frozen=True, slots=True)
class SockInfo:
    """A socket as the kernel holds it at the syscall's exit (struct sockinfo of probe.c)."""

    family: int
    type: int
    protocol: int
    laddr: str
    lport: int
    raddr: str
    rport: int


def parse_sockinfo(raw: bytes) -> SockInfo | None:
    if len(raw) < SOCKINFO.size:
        return None
    family, stype, proto, lport, rport, laddr, raddr = SOCKINFO.unpack_from(raw)
    if family == socket.AF_INET:
        la, ra = str(ipaddress.IPv4Address(laddr[:4])), str(ipaddress.IPv4Address(raddr[:4]))
    elif family == socket.AF_INET6:
        l6, r6 = ipaddress.IPv6Address(laddr), ipaddress.IPv6Address(raddr)
        la, ra = str(l6.ipv4_mapped or l6), str(r6.ipv4_mapped or r6)
    else:
        la = ra = ""
    return SockInfo(family, stype, proto, la, lport, ra, rport)


EXECINFO = struct.Struct("<QqqQQIIIIIIIIII")  # struct execinfo of probe.c
EXE_KNOWN, EXE_UPPER, EXE_PATH_KNOWN, EXE_PATH_DELETED, EXE_PATH_PSEUDO = 1, 2, 4, 8, 16
OVERLAYFS_SUPER_MAGIC = 0x794C7630


@dataclass(frozen=True, slots=True)
class ExecInfo:
    """The executable of a successful exec as the kernel held it then (struct execinfo of probe.c)."""

    ino: int
    ctime_ns: int  # ns since the epoch
    mtime_ns: int
    sb_magic: int
    sb_flags: int
    mode: int
    uid: int  # owner of the file
    gid: int
    iflags: int
    fsuid: int  # the new image's filesystem credentials
    fsgid: int
    upper_layer: bool  # overlayfs, and the file is in the upper (writable) layer


def parse_execinfo(raw: bytes) -> ExecInfo | None:
    """None when the kernel found no executable file (or the segment is short)."""
    if len(raw) < EXECINFO.size:
        return None
    (ino, csec, msec, magic, sflags, cnsec, mnsec, mode, uid, gid, iflags, fsuid, fsgid, flags,
     _pad) = EXECINFO.unpack_from(raw)
    if not flags & EXE_KNOWN:
        return None
    return ExecInfo(ino, csec * 1_000_000_000 + cnsec, msec * 1_000_000_000 + mnsec, magic, sflags, mode, uid, gid,
                    iflags, fsuid, fsgid, bool(flags & EXE_UPPER))


def parse_exe_path(components: bytes, execinfo: bytes) -> str | None:
    """The executable's path as the kernel walked it at the exec (SEG_STR0 of a successful exec: names leaf
    first, NUL-separated), spelled as d_path (and /proc/PID/exe) spells it: a memfd reads "/memfd:NAME
    (deleted)", an unlinked file "<path> (deleted)". None when the kernel could not walk the whole path."""
    if len(execinfo) < EXECINFO.size:
        return None
    flags = EXECINFO.unpack_from(execinfo)[13]
    if not flags & EXE_PATH_KNOWN:
        return None
    parts = components.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    path = "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in reversed(parts))
    return path + " (deleted)" if flags & EXE_PATH_DELETED else path
