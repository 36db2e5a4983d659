"""The kernel/user record: C struct and Python decoder agree, and decoding is a pure function of bytes."""

from __future__ import annotations

import re
import socket
import struct

import pytest
from falconet.sensor import record as r
from falconet.sensor.sensor import probe_source


def _c_struct(name: str) -> list[tuple[str, str]]:
    text = probe_source()
    body = re.search(r"struct %s \{(.*?)\n\};" % name, text, re.S)
    assert body, f"struct {name} not found in probe.c"
    out = []
    for line in body.group(1).splitlines():
        line = line.split("//")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(\w+) (\w+)(\[\d+\])?;", line)
        assert m, f"unparsed line in struct {name}: {line!r}"
        out.append((m.group(2), m.group(1) + (m.group(3) or "")))
    return out


def test_c_struct_and_python_fields_agree() -> None:
    c_fields = _c_struct("record_hdr")
    py_fields = [(name, r.C_TYPES[fmt]) for name, fmt in r.HDR_FIELDS]
    assert c_fields == py_fields


def test_sockinfo_layout_agrees() -> None:
    c_fields = _c_struct("sockinfo")
    assert [t for _, t in c_fields] == ["u16", "u16", "u16", "u16", "u16", "u16[3]", "u8[16]", "u8[16]"]
    assert r.SOCKINFO.size == 48


def _rec(**kw: object) -> r.Record:
    base: dict[str, object] = dict(
        kind=r.REC_SYSCALL, ts=123, tgid=10, tid=11, ppid=1, loginuid=-1, uid=1000, gid=1000, euid=0, egid=0,
        cap_inheritable=0, cap_permitted=(1 << 41) - 1, cap_effective=1 << 21, tty=34816, sid=5, pgid=6, cpu=1,
        vtid=1, vpid=1, vpgid=0, pidns_level=1, pidns_init_ts=99,
        nr=257, res=3, args=(0xFFFFFF9C, 0x7FFF0000, 0, 0, 0, 0), comm="cat",
        segments=(b"/etc/shadow\0", b"", b"", b"", b"", b""),
    )
    base.update(kw)
    return r.Record(**base)  # type: ignore[arg-type]


def test_decode_inverts_encode() -> None:
    rec = _rec()
    data = r.encode(rec)
    assert len(data) == r.HDR_SIZE + len(b"/etc/shadow\0")
    back = r.decode(data)
    assert back == rec
    assert back.text(r.SEG_STR0) == "/etc/shadow"
    assert back.text(r.SEG_STR1) is None
    assert back.loginuid == -1


def test_decode_reads_lists_and_comm() -> None:
    rec = _rec(kind=r.REC_EXECARGS, segments=(b"/bin/ls\0", b"", b"", b"", b"ls\0-l\0/tmp\0", b"A=1\0B=2\0"))
    back = r.decode(r.encode(rec))
    assert back.strings(r.SEG_EXTRA) == ["ls", "-l", "/tmp"]
    assert back.strings(r.SEG_EXTRA2) == ["A=1", "B=2"]
    assert back.comm == "cat"


def test_decode_rejects_short_and_overlong() -> None:
    with pytest.raises(r.RecordError, match="shorter than"):
        r.decode(b"\0" * 10)
    data = bytearray(r.encode(_rec()))
    del data[-3:]  # the string segment now runs past the end
    with pytest.raises(r.RecordError, match="runs past"):
        r.decode(bytes(data))


def test_parse_sockaddr_families() -> None:
    v4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 4444) + socket.inet_aton("203.0.113.5") + b"\0" * 8
    assert r.parse_sockaddr(v4) == r.SockAddr("ipv4", "203.0.113.5", 4444)
    v6 = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 443) + b"\0" * 4
          + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + b"\0" * 4)
    assert r.parse_sockaddr(v6) == r.SockAddr("ipv6", "2001:db8::1", 443)
    mapped = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 80) + b"\0" * 4
              + socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.1") + b"\0" * 4)
    assert r.parse_sockaddr(mapped) == r.SockAddr("ipv6", "10.0.0.1", 80)
    unix = struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0"
    assert r.parse_sockaddr(unix) == r.SockAddr("unix", "/run/x.sock")
    abstract = struct.pack("<H", socket.AF_UNIX) + b"\0hidden"
    assert r.parse_sockaddr(abstract) == r.SockAddr("unix", "@hidden")
    assert r.parse_sockaddr(b"\x02") is None


def test_parse_sockinfo() -> None:
    raw = r.SOCKINFO.pack(socket.AF_INET, socket.SOCK_STREAM, 6, 5555, 80,
                          socket.inet_aton("10.1.2.3") + b"\0" * 12, socket.inet_aton("203.0.113.9") + b"\0" * 12)
    si = r.parse_sockinfo(raw)
    assert si == r.SockInfo(socket.AF_INET, socket.SOCK_STREAM, 6, "10.1.2.3", 5555, "203.0.113.9", 80)
    assert r.parse_sockinfo(raw[:10]) is None


def test_execinfo_layout_agrees() -> None:
    c_fields = _c_struct("execinfo")
    fmt = {"u64": "Q", "s64": "q", "u32": "I"}
    assert "<" + "".join(fmt[t] for _, t in c_fields) == r.EXECINFO.format
