"""The syscalls the sensor understands: x86_64 numbers, how the kernel reads their arguments, Falco's names.

One table drives both sides: `kernel_conf()` gives the `sysconf` map entry that tells probe.c which arguments
are user strings, sockaddrs or small structs, and `Spec.params` says how user space turns the record into
`Event.args` under Falco's parameter names (libs' event table). Event names are Falco's event names, which for
syscalls are the syscall names (accept4 stays "accept4": upstream rules list accept and accept4 apart).

Param sources: "res" the return value; "iN" argument N as a signed 32-bit int (fds, dirfds, pids); "uN" / "lN"
argument N unsigned / signed 64-bit; "s0"/"s1" the strings read in the kernel, as passed; "p0"/"p1" the same
strings as paths made absolute (against the cwd, or "pK@N": against the dirfd in argument N, AT_FDCWD meaning the
cwd) with `.`/`..` folded, the way Falco renders its FSPATH/FSRELPATH parameters; "sock" the sockaddr as text;
"tuple" the connection tuple; "blob.<field>" a field of the small struct read in the kernel.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

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


def _s(name: str, nr: int, params: str, **kw: int) -> Spec:
    pairs = tuple(tuple(p.split("=", 1)) for p in params.split()) if params else ()
    return Spec(name, nr, pairs, **kw)  # type: ignore[arg-type]


_ALL: tuple[Spec, ...] = (
    # files
    _s("open", 2, "fd=res name=p0 flags=u1 mode=u2", str0=0),
    _s("openat", 257, "fd=res dirfd=i0 name=p0@0 flags=u2 mode=u3", str0=1),
    _s("openat2", 437, "fd=res dirfd=i0 name=p0@0 flags=blob.flags mode=blob.mode resolve=blob.resolve",
       str0=1, blob=2, bloblen=24),
    _s("creat", 85, "fd=res name=p0 mode=u1", str0=0),
    _s("close", 3, "res=res fd=i0"),
    _s("dup", 32, "res=res oldfd=i0"),
    _s("dup2", 33, "res=res oldfd=i0 newfd=i1"),
    _s("dup3", 292, "res=res oldfd=i0 newfd=i1 flags=u2"),
    _s("fcntl", 72, "res=res fd=i0 cmd=i1"),
    _s("chdir", 80, "res=res path=p0", str0=0),
    _s("fchdir", 81, "res=res fd=i0"),
    _s("chroot", 161, "res=res path=p0", str0=0),
    _s("symlink", 88, "res=res target=s0 linkpath=p1", str0=0, str1=1),
    _s("symlinkat", 266, "res=res target=s0 linkdirfd=i1 linkpath=p1@1", str0=0, str1=2),
    _s("link", 86, "res=res oldpath=p0 newpath=p1", str0=0, str1=1),
    _s("linkat", 265, "res=res olddir=i0 oldpath=p0@0 newdir=i2 newpath=p1@2 flags=u4", str0=1, str1=3),
    _s("unlink", 87, "res=res path=p0", str0=0),
    _s("unlinkat", 263, "res=res dirfd=i0 name=p0@0 flags=u2", str0=1),
    _s("rename", 82, "res=res oldpath=p0 newpath=p1", str0=0, str1=1),
    _s("renameat", 264, "res=res olddirfd=i0 oldpath=p0@0 newdirfd=i2 newpath=p1@2", str0=1, str1=3),
    _s("renameat2", 316, "res=res olddirfd=i0 oldpath=p0@0 newdirfd=i2 newpath=p1@2 flags=u4", str0=1, str1=3),
    _s("mkdir", 83, "res=res path=p0 mode=u1", str0=0),
    _s("mkdirat", 258, "res=res dirfd=i0 path=p0@0 mode=u2", str0=1),
    _s("rmdir", 84, "res=res path=p0", str0=0),
    _s("chmod", 90, "res=res filename=p0 mode=u1", str0=0),
    _s("fchmod", 91, "res=res fd=i0 mode=u1"),
    _s("fchmodat", 268, "res=res dirfd=i0 filename=p0@0 mode=u2", str0=1),
    _s("chown", 92, "res=res path=p0 uid=i1 gid=i2", str0=0),
    _s("lchown", 94, "res=res path=p0 uid=i1 gid=i2", str0=0),
    _s("fchown", 93, "res=res fd=i0 uid=i1 gid=i2"),
    _s("fchownat", 260, "res=res dirfd=i0 pathname=p0@0 uid=i2 gid=i3 flags=u4", str0=1),
    _s("truncate", 76, "res=res path=p0 length=l1", str0=0),
    _s("ftruncate", 77, "res=res fd=i0 length=l1"),
    _s("memfd_create", 319, "fd=res name=s0 flags=u1", str0=0),
    _s("pipe", 22, "res=res fd1=blob.fd1 fd2=blob.fd2", blob=0, bloblen=8),
    _s("pipe2", 293, "res=res fd1=blob.fd1 fd2=blob.fd2 flags=u1", blob=0, bloblen=8),
    _s("mount", 165, "res=res dev=s0 dir=p1 flags=u3", str0=0, str1=1),
    _s("umount2", 166, "res=res name=p0 flags=u1", str0=0),
    # network
    _s("socket", 41, "fd=res domain=i0 type=i1 proto=i2"),
    _s("socketpair", 53, "res=res domain=i0 type=i1 proto=i2 fd1=blob.fd1 fd2=blob.fd2", blob=3, bloblen=8),
    _s("connect", 42, "res=res tuple=tuple fd=i0 addr=sock", sock=1, socklen=2, sockfd=0),
    _s("accept", 43, "fd=res tuple=tuple", sock=1, socklen=2 | LEN_IS_PTR, sockfd=SOCKFD_RES),
    _s("accept4", 288, "fd=res tuple=tuple flags=u3", sock=1, socklen=2 | LEN_IS_PTR, sockfd=SOCKFD_RES),
    _s("bind", 49, "res=res addr=sock fd=i0", sock=1, socklen=2, sockfd=0),
    _s("listen", 50, "res=res fd=i0 backlog=i1", sockfd=0),
    _s("sendto", 44, "res=res fd=i0 size=u2 tuple=tuple", sock=4, socklen=5, sockfd=0),
    _s("sendmsg", 46, "res=res fd=i0 tuple=tuple", sockfd=0),
    _s("recvfrom", 45, "res=res fd=i0 size=u2 tuple=tuple", sock=4, socklen=5 | LEN_IS_PTR, sockfd=0),
    _s("recvmsg", 47, "res=res fd=i0 tuple=tuple", sockfd=0),
    # processes
    _s("execve", 59, "", exec=1),  # params built by the sensor from the EXECARGS record
    _s("execveat", 322, "", exec=2),  # params built by the sensor (exe image + dirfd, pathname, exec_flags)
    _s("clone", 56, "res=res flags=u0"),
    _s("clone3", 435, "res=res"),
    _s("fork", 57, "res=res"),
    _s("vfork", 58, "res=res"),
    _s("ptrace", 101, "res=res request=l0 pid=i1 addr=u2 data=u3"),
    _s("prctl", 157, "res=res option=i0 arg2_int=l1"),
    _s("kill", 62, "res=res pid=i0 sig=i1"),
    _s("tkill", 200, "res=res tid=i0 sig=i1"),
    _s("tgkill", 234, "res=res pid=i0 tid=i1 sig=i2"),
    _s("setuid", 105, "res=res uid=i0"),
    _s("setgid", 106, "res=res gid=i0"),
    _s("setreuid", 113, "res=res ruid=i0 euid=i1"),
    _s("setregid", 114, "res=res rgid=i0 egid=i1"),
    _s("setresuid", 117, "res=res ruid=i0 euid=i1 suid=i2"),
    _s("setresgid", 119, "res=res rgid=i0 egid=i1 sgid=i2"),
    _s("setsid", 112, "res=res"),
    _s("setpgid", 109, "res=res pid=i0 pgid=i1"),
    _s("capset", 126, "res=res"),
    _s("setns", 308, "res=res fd=i0 nstype=u1"),
    _s("unshare", 272, "res=res flags=u0"),
    _s("init_module", 175, "res=res length=u1 uargs=s0", str0=2),
    _s("finit_module", 313, "res=res fd=i0 uargs=s0 flags=u2", str0=1),
    _s("delete_module", 176, "res=res name=s0 flags=u1", str0=0),
    _s("bpf", 321, "fd=res cmd=i0"),
    _s("userfaultfd", 323, "fd=res flags=u0"),
    _s("process_vm_writev", 311, "res=res pid=i0"),
    _s("process_vm_readv", 310, "res=res pid=i0"),
    _s("io_uring_setup", 425, "res=res entries=u0"),
)

BY_NAME: dict[str, Spec] = {s.name: s for s in _ALL}
BY_NR: dict[int, Spec] = {s.nr: s for s in _ALL}
CLONE_NR, CLONE3_NR, VFORK_NR = BY_NAME["clone"].nr, BY_NAME["clone3"].nr, BY_NAME["vfork"].nr

# open family -> where probe.c finds the flags (1 argument 1, 2 argument 2, 3 unknown, 4 creat: always a write)
OPEN_FAMILY = {"open": 1, "openat": 2, "openat2": 3, "creat": 4}

# Syscalls whose result is a new fd number (dup2/dup3: the target number).
FD_CREATING = frozenset({"open", "openat", "openat2", "creat", "dup", "dup2", "dup3", "fcntl", "socket", "accept",
                         "accept4", "memfd_create", "userfaultfd", "bpf", "io_uring_setup"})

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
