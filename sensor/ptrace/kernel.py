"""The kernel calls the tracer makes, through ctypes: ptrace(2), waitpid flags, process_vm_readv(2),
pidfd_open/pidfd_getfd, and the x86-64 register layout (struct user_regs_struct).

Only what the tracer needs, typed; no policy. Everything here fails with OSError carrying the errno, so the
tracer can tell a tracee that vanished (ESRCH) from a real fault.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

PTRACE_CONT, PTRACE_KILL, PTRACE_GETREGS, PTRACE_DETACH, PTRACE_SYSCALL = 7, 8, 12, 17, 24
PTRACE_SETOPTIONS, PTRACE_GETEVENTMSG, PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4200, 0x4201, 0x4206, 0x4207
PTRACE_GET_SYSCALL_INFO = 0x420E

O_TRACESYSGOOD, O_TRACEFORK, O_TRACEVFORK, O_TRACECLONE = 0x1, 0x2, 0x4, 0x8
O_TRACEEXEC, O_TRACEEXIT, O_TRACESECCOMP, O_EXITKILL = 0x10, 0x40, 0x80, 0x100000
OPTIONS = (O_TRACESYSGOOD | O_TRACEFORK | O_TRACEVFORK | O_TRACECLONE | O_TRACEEXEC | O_TRACEEXIT
           | O_TRACESECCOMP | O_EXITKILL)
"""Every descendant followed, results at exit, seccomp stops, and the workload killed with its tracer."""

EV_FORK, EV_VFORK, EV_CLONE, EV_EXEC, EV_VFORK_DONE, EV_EXIT, EV_SECCOMP, EV_STOP = 1, 2, 3, 4, 5, 6, 7, 128
SYSCALL_INFO_ENTRY, SYSCALL_INFO_EXIT, SYSCALL_INFO_SECCOMP = 1, 2, 3

WALL, WNOTHREAD = 0x40000000, 0x20000000
WAIT_FLAGS = WALL | WNOTHREAD
"""Every tracee (threads included), and only this thread's children and tracees: the daemon's other threads
own other children (program outputs) whose exit statuses are not ours to reap."""

SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438


class UserRegs(ctypes.Structure):
    """struct user_regs_struct of x86-64 (asm/user_64.h), what PTRACE_GETREGS fills."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]

    def syscall_args(self) -> tuple[int, int, int, int, int, int]:
        """The six arguments in the x86-64 syscall convention (the registers sensor/syscalls.py names)."""
        return (self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_readv = _libc.process_vm_readv
_readv.restype = ctypes.c_ssize_t
_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                   ctypes.c_ulong]
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def check_arch() -> None:
    """The register layout and syscall numbers here are x86-64's."""
    if platform.machine() != "x86_64":
        raise OSError(f"the ptrace driver decodes x86-64 registers; this machine is {platform.machine()}")


def _check(ret: int) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    return _check(_ptrace(request, pid, addr, data))


def seize(pid: int, options: int = OPTIONS) -> None:
    ptrace(PTRACE_SEIZE, pid, 0, options)


def resume(pid: int, request: int = PTRACE_CONT, sig: int = 0) -> bool:
    """PTRACE_CONT or PTRACE_SYSCALL; False when the tracee is gone (killed meanwhile)."""
    try:
        ptrace(request, pid, 0, sig)
    except OSError:
        return False
    return True


def get_regs(pid: int, regs: UserRegs) -> None:
    ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))


def event_msg(pid: int) -> int:
    out = ctypes.c_ulong(0)
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(out))
    return out.value


_INFO = (ctypes.c_uint8 * 88)()


def syscall_stop_op(pid: int) -> int:
    """PTRACE_GET_SYSCALL_INFO's op at a syscall stop: entry, exit or seccomp (0 when not in one)."""
    ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(_INFO), ctypes.addressof(_INFO))
    return int(_INFO[0])


def read_mem(pid: int, addr: int, size: int) -> bytes:
    """Up to `size` bytes of the tracee's memory at addr; fewer (possibly none) where its mapping ends."""
    if not addr or size <= 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = _IoVec(ctypes.c_void_p(addr), size)
    n = _readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return buf.raw[:n] if n > 0 else b""


def read_str(pid: int, addr: int, limit: int = 4096) -> bytes | None:
    """A NUL-terminated string of the tracee (without the NUL), read page by page so that a string ending
    just before an unmapped page is still read; None when nothing is readable; cut at `limit` bytes."""
    if not addr:
        return None
    out = b""
    while len(out) < limit:
        chunk = min(4096 - (addr % 4096), limit - len(out))
        got = read_mem(pid, addr, chunk)
        if not got:
            return out if out else None
        nul = got.find(b"\0")
        if nul >= 0:
            return out + got[:nul]
        out += got
        addr += len(got)
    return out[:limit]


def read_u64(pid: int, addr: int) -> int | None:
    raw = read_mem(pid, addr, 8)
    return int.from_bytes(raw, "little") if len(raw) == 8 else None


def pidfd_getfd(pid: int, fd: int) -> int:
    """A copy of the tracee's fd `fd` in this process (the tracer may: it is ptrace-attached); close it."""
    pidfd = _check(_syscall(ctypes.c_long(SYS_PIDFD_OPEN), ctypes.c_long(pid), ctypes.c_long(0)))
    try:
        return _check(_syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_long(pidfd), ctypes.c_long(fd),
                               ctypes.c_long(0)))
    finally:
        os.close(pidfd)
