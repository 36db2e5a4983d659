"""BTF parsing: synthetic type graphs (anonymous members, typedefs, bitfields) and the running kernel."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from falconet.sensor import btf as b
from falconet.sensor.syscalls import X86_64_REGS


class _Builder:
    """Writes minimal little-endian BTF: enough kinds to exercise the parser."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, tail: bytes = b"", kflag: int = 0) -> int:
        self.types += struct.pack("<III", self.s(name), (kflag << 31) | (kind << 24) | vlen, size_or_type) + tail
        self.count += 1
        return self.count

    def int_(self, name: str, size: int) -> int:
        return self.add(name, 1, 0, size, struct.pack("<I", size * 8))

    def struct_(self, name: str, size: int, members: list[tuple[str, int, int]], kflag: int = 0, union: bool = False) -> int:
        tail = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(name, 5 if union else 4, len(members), size, tail, kflag)

    def bytes(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def _sample() -> bytes:
    w = _Builder()
    u32 = w.int_("unsigned int", 4)  # 1
    kuid = w.struct_("", 4, [("val", u32, 0)])  # 2: anonymous struct { uid_t val; }
    kuid_t = w.add("kuid_t", 8, 0, kuid)  # 3: typedef
    ptr = w.add("", 2, 0, 0)  # 4: void *
    inner = w.struct_("", 8, [("a", u32, 0), ("b", u32, 32)])  # 5: anonymous struct
    union = w.struct_("", 8, [("", inner, 0), ("c", ptr, 0)], union=True)  # 6: anonymous union
    const_kuid = w.add("", 10, 0, kuid_t)  # 7: const kuid_t
    w.struct_("task", 40, [("pid", u32, 0), ("", union, 64), ("loginuid", const_kuid, 192),
                           ("parent", ptr, 256)])  # 8
    w.struct_("bits", 4, [("x", u32, (3 << 24) | 0), ("y", u32, (5 << 24) | 3)], kflag=1)  # 9
    w.add("", 3, 0, 0, struct.pack("<III", u32, u32, 4))  # 10: array, skipped correctly
    w.add("fn", 13, 2, 0, b"\0" * 16)  # 11: func proto with 2 params
    w.struct_("after", 4, [("z", u32, 0)])  # 12: found only if the skips above were right
    return w.bytes()


def test_offsets_through_anonymous_members_and_typedefs() -> None:
    t = b.BTF(_sample())
    assert t.offset("task", "pid") == 0
    assert t.offset("task", "a") == 8
    assert t.offset("task", "b") == 12
    assert t.offset("task", "c") == 8
    assert t.offset("task", "loginuid.val") == 24
    assert t.offset("task", "parent") == 32
    assert t.offset("after", "z") == 0
    assert t.sizeof("task") == 40


def test_errors_name_what_is_missing() -> None:
    t = b.BTF(_sample())
    with pytest.raises(b.BTFError, match="no member 'loginuid.nope'"):
        t.offset("task", "loginuid.nope")
    with pytest.raises(b.BTFError, match="no struct 'cred'"):
        t.offset("cred", "uid")
    with pytest.raises(b.BTFError, match="bitfield"):
        t.offset("bits", "y")
    with pytest.raises(b.BTFError, match="not BTF"):
        b.BTF(b"\0" * 64)
    with pytest.raises(b.BTFError, match="too short"):
        b.BTF(b"\x9f\xeb")


def test_missing_optional_field_becomes_minus_one() -> None:
    # A kernel without CONFIG_AUDIT has no task_struct.loginuid: the program then skips that read.
    t = b.BTF(_sample())
    with pytest.raises(b.BTFError):
        b.kernel_offsets(t)  # required fields (task_struct.tgid, ...) are missing from the sample


def test_running_kernel_offsets_agree_with_bpftool() -> None:
    offsets = b.kernel_offsets(b.BTF.load())
    assert all(v >= 0 for k, v in offsets.items() if k.startswith(("OFF_TASK_TGID", "OFF_CRED_")))
    bpftool = shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else None)
    if bpftool is None:
        pytest.fail("bpftool is missing; make setup installs it")
    dump = json.loads(subprocess.run([bpftool, "-j", "btf", "dump", "file", str(b.VMLINUX_BTF)],
                                     check=True, capture_output=True).stdout)
    structs = {t["name"]: t for t in dump["types"] if t["kind"] == "STRUCT" and t.get("name") != "(anon)"}

    def direct(struct_name: str, member: str) -> int:
        for m in structs[struct_name]["members"]:
            if m["name"] == member:
                return int(m["bits_offset"]) // 8
        raise KeyError(member)

    assert offsets["OFF_TASK_TGID"] == direct("task_struct", "tgid")
    assert offsets["OFF_TASK_REAL_PARENT"] == direct("task_struct", "real_parent")
    assert offsets["OFF_TASK_CRED"] == direct("task_struct", "cred")
    assert offsets["OFF_TASK_LOGINUID"] == direct("task_struct", "loginuid")
    assert offsets["OFF_CRED_EUID"] == direct("cred", "euid")
    assert offsets["OFF_CRED_CAP_EFFECTIVE"] == direct("cred", "cap_effective")
    assert offsets["OFF_SIGNAL_TTY"] == direct("signal_struct", "tty")
    # the saved user registers sys_exit reads the syscall from (sensor/syscalls.py names them)
    regs = b.register_offsets(b.BTF.load(), *X86_64_REGS)
    nr_reg, arg_regs = X86_64_REGS
    assert regs["REG_NR"] == direct("pt_regs", nr_reg)
    assert [regs[f"REG_ARG{i}"] for i in range(6)] == [direct("pt_regs", r) for r in arg_regs]
    assert regs["REGS_LO"] == min(v for k, v in regs.items() if k.startswith("REG_"))
    assert regs["REGS_HI"] == max(v for k, v in regs.items() if k.startswith("REG_")) + 8
