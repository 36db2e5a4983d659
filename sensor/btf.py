"""Kernel struct field offsets from the running kernel's BTF, as -D cflags for the BPF program.

The kernel headers on the machine belong to another kernel, so the BPF program never dereferences a struct
layout it was compiled against. Instead it reads fields with bpf_probe_read_kernel at byte offsets that this
module takes from /sys/kernel/btf/vmlinux: the running kernel's own description of its types. Parsing BTF
directly (rather than shelling out to bpftool) keeps the sensor free of a tool dependency and makes the parser a
pure function over bytes that a test can feed.

BTF layout (Documentation/bpf/btf.rst): a header (magic 0xEB9F, hdr_len, type_off/len, str_off/len, offsets
relative to the end of the header), then `struct btf_type` records (name_off, info, size_or_type) each followed
by a kind-specific tail, type ids starting at 1, and a string section.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(12, 20)
# Kinds whose record is followed by vlen entries of this many bytes.
_VLEN_ENTRY = {_STRUCT: 12, _UNION: 12, _ENUM: 8, _FUNC_PROTO: 8, _DATASEC: 12, _ENUM64: 12}
# Kinds followed by one fixed-size tail.
_FIXED_TAIL = {_INT: 4, _ARRAY: 12, _VAR: 4, _DECL_TAG: 4}
# Modifiers that do not change layout: looked through when following a member's type.
_TRANSPARENT = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}


class BTFError(Exception):
    """BTF is missing, malformed, or lacks a type or field the sensor needs (the message names it)."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    type_id: int
    bit_offset: int


@dataclass(frozen=True, slots=True)
class BType:
    kind: int
    name: str
    size_or_type: int  # size for STRUCT/UNION/INT/ENUM, referenced type id for PTR/TYPEDEF/...
    members: tuple[Member, ...] = ()
    array: tuple[int, int] | None = None  # (element type id, nelems) for ARRAY


class BTF:
    """The parsed type graph, with lookups by struct name and member path."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF data is too short to hold a header")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != _MAGIC:
            raise BTFError(f"not BTF data (magic {magic:#x}, expected {_MAGIC:#x}; big-endian BTF unsupported)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        types_start = hdr_len + type_off
        strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        if len(strings) != str_len or types_start + type_len > len(data):
            raise BTFError("BTF sections run past the end of the data")
        self._strings = strings
        self.types: list[BType | None] = [None]  # id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self.enumerators: dict[str, int] = {}  # every enumerator of every enum: name -> value
        pos, end = types_start, types_start + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kind_flag = info >> 31
            name = self._str(name_off)
            members: tuple[Member, ...] = ()
            array = None
            if kind in (_STRUCT, _UNION):
                mem = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                    # With kind_flag set the top 8 bits hold a bitfield size; the offset is the low 24 bits.
                    mem.append(Member(self._str(m_name), m_type, m_off & 0xFFFFFF if kind_flag else m_off))
                members = tuple(mem)
            elif kind == _ARRAY:
                elem, _index, nelems = struct.unpack_from("<III", data, pos)
                array = (elem, nelems)
            elif kind == _ENUM:
                for i in range(vlen):
                    e_name, e_val = struct.unpack_from("<Ii", data, pos + 8 * i)
                    self.enumerators.setdefault(self._str(e_name), e_val)
            if kind in _VLEN_ENTRY:
                pos += vlen * _VLEN_ENTRY[kind]
            else:
                pos += _FIXED_TAIL.get(kind, 0)
            if kind == 0 or kind > _ENUM64:
                raise BTFError(f"unknown BTF kind {kind} at type id {len(self.types)}")
            tid = len(self.types)
            self.types.append(BType(kind, name, size_or_type, members, array))
            if name and kind in (_STRUCT, _UNION, _TYPEDEF):
                self._by_name.setdefault(name, []).append(tid)

    @classmethod
    def load(cls, path: Path = VMLINUX_BTF) -> BTF:
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise BTFError(f"cannot read kernel BTF at {path}: {exc.strerror} (the kernel needs "
                           "CONFIG_DEBUG_INFO_BTF=y)") from None

    def _str(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        return self._strings[off:end if end >= 0 else None].decode("utf-8", "replace")

    def _resolve(self, tid: int) -> tuple[int, BType]:
        """Follows typedefs and qualifiers to the type that has a layout."""
        for _ in range(64):
            t = self.types[tid]
            if t is None or t.kind not in _TRANSPARENT:
                break
            tid = t.size_or_type
        t = self.types[tid]
        if t is None:
            raise BTFError("member type resolves to void")
        return tid, t

    def struct_id(self, name: str) -> int:
        for tid in self._by_name.get(name, []):
            t = self.types[tid]
            assert t is not None
            if t.kind in (_STRUCT, _UNION) and t.members:
                return tid
            if t.kind == _TYPEDEF:
                rid, rt = self._resolve(tid)
                if rt.kind in (_STRUCT, _UNION):
                    return rid
        raise BTFError(f"kernel BTF has no struct {name!r}")

    def sizeof(self, name: str) -> int:
        t = self.types[self.struct_id(name)]
        assert t is not None
        return t.size_or_type

    def _find(self, tid: int, field: str) -> tuple[int, int] | None:
        """(bit offset, member type id) of `field` in struct `tid`, looking into anonymous members."""
        t = self.types[tid]
        assert t is not None
        for m in t.members:
            if m.name == field:
                return m.bit_offset, m.type_id
            if not m.name:
                rid, rt = self._resolve(m.type_id)
                if rt.kind in (_STRUCT, _UNION):
                    found = self._find(rid, field)
                    if found is not None:
                        return m.bit_offset + found[0], found[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted member path, e.g. offset("task_struct", "loginuid.val").

        `a|b` tries each spelling in turn: kernels rename members (kernfs_node.parent became __parent in 6.15,
        inode.i_ctime became i_ctime_sec in 6.11), and the first one this kernel has wins."""
        if "|" in path:
            for alt in path.split("|"):
                try:
                    return self.offset(struct_name, alt)
                except BTFError:
                    continue
            raise BTFError(f"kernel BTF: struct {struct_name} has none of {path!r}")
        tid = self.struct_id(struct_name)
        bits = 0
        for part in path.split("."):
            rid, rt = self._resolve(tid)
            if rt.kind not in (_STRUCT, _UNION):
                raise BTFError(f"{struct_name}.{path}: {part!r} is not inside a struct")
            found = self._find(rid, part)
            if found is None:
                raise BTFError(f"kernel BTF: struct {struct_name} has no member {path!r} (missing {part!r})")
            bits += found[0]
            tid = found[1]
        if bits % 8:
            raise BTFError(f"{struct_name}.{path} is a bitfield; the sensor cannot read it by byte offset")
        return bits // 8


# (macro name, struct, member path): every kernel field the BPF program reads. Missing optional ones (loginuid
# needs CONFIG_AUDIT) become -1 and the program skips the read.
FIELDS: tuple[tuple[str, str, str, bool], ...] = (
    ("OFF_TASK_PID", "task_struct", "pid", True),
    ("OFF_TASK_TGID", "task_struct", "tgid", True),
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent", True),
    ("OFF_TASK_CRED", "task_struct", "cred", True),
    ("OFF_TASK_SIGNAL", "task_struct", "signal", True),
    ("OFF_TASK_LOGINUID", "task_struct", "loginuid.val", False),
    ("OFF_TASK_CGROUPS", "task_struct", "cgroups", False),
    ("OFF_TASK_START_BOOTTIME", "task_struct", "start_boottime", True),
    ("OFF_TASK_THREAD_PID", "task_struct", "thread_pid", True),
    ("OFF_TASK_GROUP_LEADER", "task_struct", "group_leader", True),
    ("OFF_CRED_UID", "cred", "uid.val", True),
    ("OFF_CRED_GID", "cred", "gid.val", True),
    ("OFF_CRED_EUID", "cred", "euid.val", True),
    ("OFF_CRED_EGID", "cred", "egid.val", True),
    ("OFF_CRED_CAP_INHERITABLE", "cred", "cap_inheritable", True),
    ("OFF_CRED_CAP_PERMITTED", "cred", "cap_permitted", True),
    ("OFF_CRED_CAP_EFFECTIVE", "cred", "cap_effective", True),
    ("OFF_SIGNAL_TTY", "signal_struct", "tty", True),
    ("OFF_SIGNAL_PIDS", "signal_struct", "pids", True),
    ("OFF_TTY_INDEX", "tty_struct", "index", True),
    ("OFF_TTY_DRIVER", "tty_struct", "driver", True),
    ("OFF_TTY_DRIVER_MAJOR", "tty_driver", "major", True),
    ("OFF_TTY_DRIVER_MINOR_START", "tty_driver", "minor_start", True),
    ("OFF_PID_LEVEL", "pid", "level", True),
    ("OFF_PID_NUMBERS", "pid", "numbers", True),
    ("OFF_UPID_NR", "upid", "nr", True),
    ("OFF_CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp", False),
    ("OFF_CGROUP_KN", "cgroup", "kn", False),
    ("OFF_KERNFS_NODE_NAME", "kernfs_node", "name", False),
    # fd -> socket, for connection tuples as the kernel sees them (local side included)
    ("OFF_TASK_FILES", "task_struct", "files", False),
    ("OFF_FILES_FDT", "files_struct", "fdt", False),
    ("OFF_FDTABLE_FD", "fdtable", "fd", False),
    ("OFF_FDTABLE_MAX_FDS", "fdtable", "max_fds", False),
    # the small fd table inside files_struct (fds below NR_OPEN_DEFAULT until the table grows): typed loads
    ("OFF_FILES_FDTAB", "files_struct", "fdtab", False),
    ("OFF_FILES_FD_ARRAY", "files_struct", "fd_array", False),
    ("OFF_FILE_PRIVATE_DATA", "file", "private_data", False),
    ("OFF_SOCKET_SK", "socket", "sk", False),
    ("OFF_SK_DADDR", "sock", "__sk_common.skc_daddr", False),
    ("OFF_SK_RCV_SADDR", "sock", "__sk_common.skc_rcv_saddr", False),
    ("OFF_SK_DPORT", "sock", "__sk_common.skc_dport", False),
    ("OFF_SK_NUM", "sock", "__sk_common.skc_num", False),
    ("OFF_SK_FAMILY", "sock", "__sk_common.skc_family", False),
    ("OFF_SK_V6_DADDR", "sock", "__sk_common.skc_v6_daddr", False),
    ("OFF_SK_V6_RCV_SADDR", "sock", "__sk_common.skc_v6_rcv_saddr", False),
    ("OFF_SK_PROTOCOL", "sock", "sk_protocol", False),
    ("OFF_SK_TYPE", "sock", "sk_type", False),
    # fd -> file -> inode mode: the open-path filter never keeps back a directory (a later dirfd/fchdir base)
    ("OFF_FILE_INODE", "file", "f_inode", False),
    ("OFF_INODE_MODE", "inode", "i_mode", False),
    # container identity: the cgroup path (kernfs names up to the root) of the default hierarchy and of one v1
    # controller's hierarchy (css_set.subsys[CGROUP_V1_SUBSYS])
    ("OFF_KERNFS_NODE_PARENT", "kernfs_node", "__parent|parent", False),
    ("OFF_CSS_SET_SUBSYS", "css_set", "subsys", False),
    ("OFF_CSS_CGROUP", "cgroup_subsys_state", "cgroup", False),
    # pid namespace facts: the init (child reaper) of the task's own pid namespace
    ("OFF_UPID_NS", "upid", "ns", False),
    ("OFF_PIDNS_CHILD_REAPER", "pid_namespace", "child_reaper", False),
    ("OFF_TASK_START_TIME", "task_struct", "start_time", False),
    # the executable at exec: task->mm->exe_file->f_inode and its superblock
    ("OFF_TASK_MM", "task_struct", "mm", False),
    ("OFF_MM_EXE_FILE", "mm_struct", "exe_file", False),
    ("OFF_INODE_INO", "inode", "i_ino", False),
    ("OFF_INODE_UID", "inode", "i_uid.val", False),
    ("OFF_INODE_GID", "inode", "i_gid.val", False),
    ("OFF_INODE_FLAGS", "inode", "i_flags", False),
    ("OFF_INODE_SB", "inode", "i_sb", False),
    ("OFF_INODE_CTIME_SEC", "inode", "i_ctime_sec|__i_ctime.tv_sec|i_ctime.tv_sec", False),
    ("OFF_INODE_CTIME_NSEC", "inode", "i_ctime_nsec|__i_ctime.tv_nsec|i_ctime.tv_nsec", False),
    ("OFF_INODE_MTIME_SEC", "inode", "i_mtime_sec|__i_mtime.tv_sec|i_mtime.tv_sec", False),
    ("OFF_INODE_MTIME_NSEC", "inode", "i_mtime_nsec|__i_mtime.tv_nsec|i_mtime.tv_nsec", False),
    ("OFF_SB_MAGIC", "super_block", "s_magic", False),
    ("OFF_SB_FLAGS", "super_block", "s_flags", False),
    ("OFF_CRED_FSUID", "cred", "fsuid.val", True),
    ("OFF_CRED_FSGID", "cred", "fsgid.val", True),
    # the executable's path (proc.exepath): exe_file->f_path walked up dentries and mounts to the task's root
    ("OFF_FILE_PATH_MNT", "file", "f_path.mnt", False),
    ("OFF_FILE_PATH_DENTRY", "file", "f_path.dentry", False),
    ("OFF_DENTRY_PARENT", "dentry", "d_parent", False),
    ("OFF_DENTRY_NAME", "dentry", "d_name.name", False),
    ("OFF_DENTRY_HASH_PPREV", "dentry", "d_hash.pprev", False),
    ("OFF_VFSMOUNT_ROOT", "vfsmount", "mnt_root", False),
    ("OFF_MOUNT_MNT", "mount", "mnt", False),
    ("OFF_MOUNT_PARENT", "mount", "mnt_parent", False),
    ("OFF_MOUNT_MOUNTPOINT", "mount", "mnt_mountpoint", False),
    ("OFF_TASK_FS", "task_struct", "fs", False),
    ("OFF_FS_ROOT_MNT", "fs_struct", "root.mnt", False),
    ("OFF_FS_ROOT_DENTRY", "fs_struct", "root.dentry", False),
    # a successful exec's arguments and environment, from the new image's stack (its argument registers are gone)
    ("OFF_MM_ARG_START", "mm_struct", "arg_start", False),
    ("OFF_MM_ARG_END", "mm_struct", "arg_end", False),
    ("OFF_MM_ENV_START", "mm_struct", "env_start", False),
    ("OFF_MM_ENV_END", "mm_struct", "env_end", False),
)
SIZES: tuple[tuple[str, str], ...] = (("SIZEOF_UPID", "upid"),)


def kernel_offsets(btf: BTF) -> dict[str, int]:
    """Every macro the BPF program needs, from this BTF; raises BTFError naming a missing required field."""
    out: dict[str, int] = {}
    for macro, struct_name, path, required in FIELDS:
        try:
            out[macro] = btf.offset(struct_name, path)
        except BTFError:
            if required:
                raise
            out[macro] = -1
    for macro, struct_name in SIZES:
        out[macro] = btf.sizeof(struct_name)
    out["OFF_OVL_UPPERDENTRY"] = _ovl_upper_offset(btf)
    return out


def register_offsets(btf: BTF, nr: str, args: tuple[str, ...]) -> dict[str, int]:
    """Where the saved user registers (struct pt_regs) hold the syscall id and its arguments: REG_NR,
    REG_ARG0.., and the span of them all (REGS_LO, REGS_HI). Which registers those are is the architecture's calling convention, named by
    the caller (sensor/syscalls.py); the offsets are this kernel's."""
    out = {"REG_NR": btf.offset("pt_regs", nr)}
    for i, reg in enumerate(args):
        out[f"REG_ARG{i}"] = btf.offset("pt_regs", reg)
    if any(v % 8 for v in out.values()):
        raise BTFError(f"struct pt_regs: the syscall registers are not 8-byte words ({out})")
    # the span probe.c reads at once (REGS_LO..REGS_HI)
    out["REGS_LO"] = min(out.values())
    out["REGS_HI"] = max(out.values()) + 8
    return out


def _ovl_upper_offset(btf: BTF) -> int:
    """Where an overlayfs inode's upper dentry pointer lies, relative to its VFS inode (what f_inode points at).

    struct ovl_inode is in vmlinux BTF when overlayfs is built in; as a module its BTF is split (not parsed
    here), and then the layout overlayfs has kept since 4.19 applies: __upperdentry right after vfs_inode."""
    try:
        return btf.offset("ovl_inode", "__upperdentry") - btf.offset("ovl_inode", "vfs_inode")
    except BTFError:
        try:
            return btf.sizeof("inode")
        except BTFError:
            return -1


def subsys_id(btf: BTF, controller: str) -> int:
    """The index of a cgroup v1 controller in css_set.subsys (enum cgroup_subsys_id), -1 when not built in."""
    return btf.enumerators.get(f"{controller}_cgrp_id", -1)


def cflags(offsets: dict[str, int]) -> list[str]:
    return [f"-D{name}={value}" for name, value in sorted(offsets.items())]
