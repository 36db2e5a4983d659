"""What an exec's kernel facts (struct execinfo of probe.c) mean for the process: proc.exe_ino and its times,
proc.is_exe_upper_layer, proc.is_exe_writable.

The kernel reads the inode, its superblock and the new image's credentials at the exec; the judgement is made
here because it is plain arithmetic on those facts, and a test can feed it any combination.
"""

from __future__ import annotations

from falconet.sensor.record import ExecInfo
from falconet.sensor.state import ProcInfo

SB_RDONLY = 1  # super_block.s_flags: mounted read-only
S_IMMUTABLE = 8  # inode.i_flags
S_IFMT, S_IFREG, S_IFDIR, S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000
CAP_DAC_OVERRIDE = 1


def is_exe_writable(info: ExecInfo, cap_effective: int) -> bool:
    """Falco's proc.is_exe_writable: could the process's own user write its executable?

    The kernel's write-permission check, on the facts it had at the exec: a read-only mount or an immutable
    file refuses everyone; otherwise the owner's, the group's or the others' write bit (only the first class
    that applies counts, as in generic_permission), and CAP_DAC_OVERRIDE grants what the bits refuse. (The
    supplementary groups are not read; a file writable only through one of them reads as not writable.)"""
    ftype = info.mode & S_IFMT
    if info.sb_flags & SB_RDONLY and ftype in (S_IFREG, S_IFDIR, S_IFLNK):
        return False
    if info.iflags & S_IMMUTABLE:
        return False
    if info.fsuid == info.uid:
        allowed = bool(info.mode & 0o200)
    elif info.fsgid == info.gid:
        allowed = bool(info.mode & 0o020)
    else:
        allowed = bool(info.mode & 0o002)
    return allowed or bool(cap_effective >> CAP_DAC_OVERRIDE & 1)


def apply_exec(p: ProcInfo, info: ExecInfo | None, cap_effective: int) -> None:
    """The new image's executable facts onto the process (cleared when the kernel found no file)."""
    p.exe_file = info
    p.exe_writable = info is not None and is_exe_writable(info, cap_effective)
