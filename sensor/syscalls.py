"""The syscalls the sensor understands: x86_64 numbers, how the kernel reads their arguments, Falco's names.

Two tables meet here. `Spec.params` says how user space turns the kernel record into `Event.args` under
Falco's parameter names; it is read from falconet.model.syscalls, the one parameter table the engine renders
from too (its docstring lists the sources: "res", "iN", "p0@N", "sock", "tuple", "blob.FIELD", ...). The rest of
`Spec` is the sensor's own: the `sysconf` map entry that tells probe.c which arguments are user strings,
sockaddrs or small structs, and the syscall number from `X86_64_NR`. The architecture-specific parts are
`X86_64_NR` and `X86_64_REGS` (which saved registers hold the syscall id and arguments) and nothing else.
Event names are Falco's event names, which for syscalls are the syscall names (accept4 stays "accept4":
upstream rules list accept and accept4 apart).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from falconet.model.syscalls import EVENT_PARAMS

NO_ARG = 0xFF
LEN_IS_PTR = 0x80
SOCKFD_RES = 0xFE  # Spec.sockfd: the socket is the syscall's result (accept)


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    nr: int
    params: tuple[tuple[str, str], ...]
    str0: int = NO_ARG
    str1: int = NO_ARG
    sock: int = NO_ARG
    socklen: int = NO_ARG
    blob: int = NO_ARG
    bloblen: int = 0
    exec: int = 0  # 1 execve, 2 execveat
    sockfd: int = NO_ARG  # argument holding a socket fd whose kernel socket to read (tuple)
    credsbefore: int = 0  # 1: the event carries the credentials from before the syscall (probe.c)
    data: int = NO_ARG  # argument holding the data buffer (evt.buffer), copied up to the snaplen when asked

    @property
    def forks(self) -> int:
        """1 for the fork family: the kernel leaves out their exit in the child (result 0), as before."""
        return 1 if self.name in ("fork", "vfork", "clone", "clone3") else 0

    @property
    def fdeffect(self) -> int:
        """What the syscall does to the fd table, for the kernel's hidden-fd bookkeeping (probe.c FD_*)."""
        if self.name == "close":
            return 3
        if self.name in ("pipe", "pipe2", "socketpair"):
            return 2
        return 1 if self.name in FD_CREATING else 0

    @property
    def pathfilter(self) -> int:
        """For the open family (the optional open-path prefix filter applies): where its open flags are."""
        return OPEN_FAMILY.get(self.name, 0)


# The one architecture-specific table: x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
X86_64_NR: dict[str, int] = {
    "read": 0, "write": 1, "open": 2, "close": 3, "pipe": 22,
    "dup": 32, "dup2": 33, "socket": 41, "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45,
    "sendmsg": 46, "recvmsg": 47, "bind": 49, "listen": 50, "socketpair": 53, "clone": 56, "fork": 57,
    "vfork": 58, "execve": 59, "kill": 62, "fcntl": 72, "truncate": 76, "ftruncate": 77, "chdir": 80,
    "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86, "unlink": 87,
    "symlink": 88, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "ptrace": 101,
    "setuid": 105, "setgid": 106, "setpgid": 109, "setsid": 112, "setreuid": 113, "setregid": 114,
    "setresuid": 117, "setresgid": 119, "capset": 126, "prctl": 157, "chroot": 161,
    "mount": 165, "umount2": 166, "init_module": 175, "delete_module": 176, "tkill": 200,
    "tgkill": 234, "openat": 257, "mkdirat": 258, "fchownat": 260, "unlinkat": 263, "renameat": 264,
    "linkat": 265, "symlinkat": 266, "fchmodat": 268, "unshare": 272, "accept4": 288, "dup3": 292,
    "pipe2": 293, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "finit_module": 313, "renameat2": 316, "memfd_create": 319, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "io_uring_setup": 425, "clone3": 435, "openat2": 437,
}  # fmt: skip

# The x86_64 syscall calling convention, as struct pt_regs names the saved registers: the syscall id (orig_ax;
# ax holds the result by the exit) and arguments 0-5. probe.c reads them at sys_exit through offsets btf.py
# takes from the running kernel's BTF.
X86_64_REGS: tuple[str, tuple[str, ...]] = ("orig_ax", ("di", "si", "dx", "r10", "r8", "r9"))


def _s(name: str, **kw: int) -> Spec:
    """A traced syscall: its number from X86_64_NR, its parameters' sources from the shared event table."""
    params = tuple((p.name, p.source) for p in EVENT_PARAMS[name] if p.source)
    return Spec(name, X86_64_NR[name], params, **kw)


# How probe.c reads each traced syscall's arguments (which are user strings, sockaddrs, small structs).
_ALL: tuple[Spec, ...] = (
    # files
    _s("open", str0=0),
    _s("openat", str0=1),
    _s("openat2", str0=1, blob=2, bloblen=24),
    _s("creat", str0=0),
    _s("close"),
    _s("dup"),
    _s("dup2"),
    _s("dup3"),
    _s("fcntl"),
    _s("chdir", str0=0),
    _s("fchdir"),
    _s("chroot", str0=0),
    _s("symlink", str0=0, str1=1),
    _s("symlinkat", str0=0, str1=2),
    _s("link", str0=0, str1=1),
    _s("linkat", str0=1, str1=3),
    _s("unlink", str0=0),
    _s("unlinkat", str0=1),
    _s("rename", str0=0, str1=1),
    _s("renameat", str0=1, str1=3),
    _s("renameat2", str0=1, str1=3),
    _s("mkdir", str0=0),
    _s("mkdirat", str0=1),
    _s("rmdir", str0=0),
    _s("chmod", str0=0),
    _s("fchmod"),
    _s("fchmodat", str0=1),
    _s("chown", str0=0),
    _s("lchown", str0=0),
    _s("fchown"),
    _s("fchownat", str0=1),
    _s("truncate", str0=0),
    _s("ftruncate"),
    _s("memfd_create", str0=0),
    _s("pipe", blob=0, bloblen=8),
    _s("pipe2", blob=0, bloblen=8),
    _s("mount", str0=0, str1=1),
    _s("umount2", str0=0),
    # network
    _s("socket"),
    _s("socketpair", blob=3, bloblen=8),
    _s("connect", sock=1, socklen=2, sockfd=0),
    _s("accept", sock=1, socklen=2 | LEN_IS_PTR, sockfd=SOCKFD_RES),
    _s("accept4", sock=1, socklen=2 | LEN_IS_PTR, sockfd=SOCKFD_RES),
    _s("bind", sock=1, socklen=2, sockfd=0),
    _s("listen", sockfd=0),
    _s("read", data=1),
    _s("write", data=1),
    _s("sendto", sock=4, socklen=5, sockfd=0, data=1),
    _s("sendmsg", sockfd=0),
    _s("recvfrom", sock=4, socklen=5 | LEN_IS_PTR, sockfd=0, data=1),
    _s("recvmsg", sockfd=0),
    # processes
    _s("execve", exec=1),  # params built by the sensor from the EXECARGS record
    _s("execveat", exec=2),  # params built by the sensor (exe image + dirfd, pathname, exec_flags)
    _s("clone"),
    _s("clone3"),
    _s("fork"),
    _s("vfork"),
    _s("ptrace"),
    _s("prctl"),
    _s("kill"),
    _s("tkill"),
    _s("tgkill"),
    _s("setuid"),
    _s("setgid"),
    _s("setreuid"),
    _s("setregid"),
    _s("setresuid"),
    _s("setresgid"),
    _s("setsid"),
    _s("setpgid"),
    _s("capset"),
    _s("setns", credsbefore=1),  # joining a user namespace likewise
    _s("unshare", credsbefore=1),  # a new user namespace's full capabilities are not what the caller had
    _s("init_module", str0=2),
    _s("finit_module", str0=1),
    _s("delete_module", str0=0),
    _s("bpf"),
    _s("userfaultfd"),
    _s("process_vm_writev"),
    _s("process_vm_readv"),
    _s("io_uring_setup"),
)

BY_NAME: dict[str, Spec] = {s.name: s for s in _ALL}
BY_NR: dict[int, Spec] = {s.nr: s for s in _ALL}
CLONE_NR, CLONE3_NR, VFORK_NR = BY_NAME["clone"].nr, BY_NAME["clone3"].nr, BY_NAME["vfork"].nr
FORK_NR, EXECVEAT_NR = BY_NAME["fork"].nr, BY_NAME["execveat"].nr
# The syscalls probe.c's sys_enter does anything for (the credentials before unshare/setns, execveat's
# arguments a successful exec erases): every other syscall is recorded at its exit alone.
SAVED_AT_ENTER = tuple(sorted(s.nr for s in _ALL if s.credsbefore or s.exec == 2))

# open family -> where probe.c finds the flags (1 argument 1, 2 argument 2, 3 unknown, 4 creat: always a write)
OPEN_FAMILY = {"open": 1, "openat": 2, "openat2": 3, "creat": 4}

# Syscalls whose result is a new fd number (dup2/dup3: the target number).
FD_CREATING = frozenset({"open", "openat", "openat2", "creat", "dup", "dup2", "dup3", "fcntl", "socket", "accept",
                         "accept4", "memfd_create", "userfaultfd", "bpf", "io_uring_setup"})

# Traced only when asked for by name: as in Falco (without -A), a rule that can match any event type does
# not turn on the read/write firehose.
NAMED_ONLY = frozenset({"read", "write"})
# Syscalls with a data buffer (Spec.data): evt.buffer / evt.rawarg.data.
DATA_SYSCALLS = frozenset(s.name for s in _ALL if s.data != NO_ARG)

# Always traced, whatever the rules need, because user space's tables depend on them.
PROCESS_STATE = frozenset({"execve", "execveat", "clone", "clone3", "fork", "vfork", "chdir", "fchdir"})
# Keep the fd table right (fd.name of later events on an fd, `dup` of a sensitive file, cwd via fchdir).
FD_STATE = frozenset({
    "open", "openat", "openat2", "creat", "close", "dup", "dup2", "dup3", "fcntl", "socket", "connect",
    "accept", "accept4", "bind", "pipe", "pipe2", "memfd_create", "socketpair", "userfaultfd", "bpf",
})


class UnknownSyscall(ValueError):
    """A syscall/event name the sensor does not trace (the message lists how to see the known ones)."""


def check_arch() -> None:
    machine = platform.machine()
    if machine != "x86_64":
        raise UnknownSyscall(f"the syscall table is for x86_64; this machine is {machine}")


def resolve_names(names: set[str] | frozenset[str]) -> set[int]:
    """Event names -> syscall numbers; raises UnknownSyscall naming the unknown ones."""
    unknown = sorted(n for n in names if n not in BY_NAME)
    if unknown:
        raise UnknownSyscall(f"the sensor does not trace {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(BY_NAME))})")
    return {BY_NAME[n].nr for n in names}
