"""Falco's parameter list for every event type: the one table the sensor fills `Event.args` from and the engine
renders `evt.arg.*` / `evt.arg[N]` / `evt.args` from.

It is part of the contract between the stages (like the event itself), so it lives here where both can import
it: two tables, one per stage, had already drifted apart (the sensor sent userfaultfd's result as `fd`, the
engine named it `res`). Architecture-specific facts are not here: syscall numbers live in sensor/syscalls.py.

Each event type maps to its parameters in Falco's order (libs' event table), written `name:kind=source`:

- *name* is Falco's parameter name (`evt.arg.NAME`);
- *kind* says how the engine renders the raw value as text (rules/syscalls.py `KINDS`: `errno`, `fd`,
  `open_flags`, `path`, ...);
- *source*, when present, says where the sensor takes the value from the syscall's kernel record: `res` the
  return value; `iN` argument N as a signed 32-bit int (fds, dirfds, pids); `uN` / `lN` argument N as an
  unsigned / signed 64-bit int; `s0`/`s1` the strings read in the kernel, as passed; `p0`/`p1` the same strings
  as absolute paths (against the cwd, or `pK@N`: against the dirfd in argument N) with `.`/`..` folded, the way
  Falco renders FSPATH/FSRELPATH parameters; `sock` the sockaddr as text; `tuple` the connection tuple; `data`
  the first bytes of the data buffer (up to the snaplen; absent when the sensor was not asked to copy it);
  `blob.FIELD` a field of the small struct read in the kernel. A parameter without a source is one the sensor
  does not read from the record: the exec family's are built from the process state (docs/events.md), and
  some (`dev`, `ino`, sendmsg's `data`, ...) are not captured at all, so the engine renders them as absent.
"""

from __future__ import annotations

from typing import NamedTuple


class Param(NamedTuple):
    name: str
    kind: str
    source: str  # "" when the sensor does not fill it from the syscall's record


def _parse(spec: str) -> tuple[Param, ...]:
    out: list[Param] = []
    for item in spec.split():
        name_kind, _, source = item.partition("=")
        name, _, kind = name_kind.partition(":")
        out.append(Param(name, kind, source))
    return tuple(out)


# execve's exit parameters; the sensor builds them from the EXECARGS record and the process table.
_EXEC = (
    "exe:str args:str tid:int pid:int ptid:int cwd:path fdlimit:int pgft_maj:int pgft_min:int vm_size:int"
    " vm_rss:int vm_swap:int comm:str cgroups:str env:str tty:int vpgid:int loginuid:uid flags:exe_flags"
    " cap_inheritable:hex cap_permitted:hex cap_effective:hex"
)
_EXEC += " exe_ino:int exe_ino_ctime:int"  # the clone family's list ends here (as the engine always had it)
_EXEC_IDS = " exe_ino_mtime:int uid:uid trusted_exepath:str pgid:int gid:gid"
_SEND = "res:errno=res data:bytes=data fd:fd=i0 size:int=u2 tuple:tuple=tuple"
_RECV = "res:errno=res data:bytes=data tuple:tuple=tuple fd:fd=i0 size:int=u2"
_ACCEPT = "fd:fd=res tuple:tuple=tuple queuepct:int queuelen:int queuemax:int"

_SPECS: dict[str, str] = {
    # files
    "open": "fd:fd=res name:path=p0 flags:open_flags=u1 mode:oct=u2 dev:hex ino:int",
    "openat": "fd:fd=res dirfd:dirfd=i0 name:path=p0@0 flags:open_flags=u2 mode:oct=u3 dev:hex ino:int",
    "openat2": "fd:fd=res dirfd:dirfd=i0 name:path=p0@0 flags:open_flags=blob.flags mode:oct=blob.mode"
               " resolve:resolve_flags=blob.resolve dev:hex ino:int",
    "open_by_handle_at": "fd:fd mountfd:fd flags:open_flags path:path dev:hex ino:int",
    "creat": "fd:fd=res name:path=p0 mode:oct=u1 dev:hex ino:int",
    "close": "res:errno=res fd:fd=i0",
    "dup": "res:errno=res oldfd:fd=i0",
    "dup2": "res:errno=res oldfd:fd=i0 newfd:fd=i1",
    "dup3": "res:errno=res oldfd:fd=i0 newfd:fd=i1 flags:open_flags=u2",
    "fcntl": "res:errno=res fd:fd=i0 cmd:int=i1",
    "chdir": "res:errno=res path:path=p0",
    "fchdir": "res:errno=res fd:fd=i0",
    "chroot": "res:errno=res path:path=p0",
    "pivot_root": "res:errno new_root:path put_old:path",
    "symlink": "res:errno=res target:str=s0 linkpath:path=p1",
    "symlinkat": "res:errno=res target:str=s0 linkdirfd:dirfd=i1 linkpath:path=p1@1",
    "link": "res:errno=res oldpath:path=p0 newpath:path=p1",
    "linkat": "res:errno=res olddir:dirfd=i0 oldpath:path=p0@0 newdir:dirfd=i2 newpath:path=p1@2"
              " flags:at_flags=u4",
    "unlink": "res:errno=res path:path=p0",
    "unlinkat": "res:errno=res dirfd:dirfd=i0 name:path=p0@0 flags:at_flags=u2",
    "rename": "res:errno=res oldpath:path=p0 newpath:path=p1",
    "renameat": "res:errno=res olddirfd:dirfd=i0 oldpath:path=p0@0 newdirfd:dirfd=i2 newpath:path=p1@2",
    "renameat2": "res:errno=res olddirfd:dirfd=i0 oldpath:path=p0@0 newdirfd:dirfd=i2 newpath:path=p1@2"
                 " flags:rename_flags=u4",
    "rmdir": "res:errno=res path:path=p0",
    "mkdir": "res:errno=res path:path=p0 mode:oct=u1",
    "mkdirat": "res:errno=res dirfd:dirfd=i0 path:path=p0@0 mode:oct=u2",
    "chmod": "res:errno=res filename:path=p0 mode:mode=u1",
    "fchmod": "res:errno=res fd:fd=i0 mode:mode=u1",
    "fchmodat": "res:errno=res dirfd:dirfd=i0 filename:path=p0@0 mode:mode=u2",
    "chown": "res:errno=res path:path=p0 uid:uid=i1 gid:gid=i2",
    "lchown": "res:errno=res path:path=p0 uid:uid=i1 gid:gid=i2",
    "fchown": "res:errno=res fd:fd=i0 uid:uid=i1 gid:gid=i2",
    "fchownat": "res:errno=res dirfd:dirfd=i0 pathname:path=p0@0 uid:uid=i2 gid:gid=i3 flags:at_flags=u4",
    "truncate": "res:errno=res path:path=p0 length:int=l1",
    "ftruncate": "res:errno=res fd:fd=i0 length:int=l1",
    "memfd_create": "fd:fd=res name:str=s0 flags:memfd_flags=u1",
    "pipe": "res:errno=res fd1:fd=blob.fd1 fd2:fd=blob.fd2",
    "pipe2": "res:errno=res fd1:fd=blob.fd1 fd2:fd=blob.fd2 flags:open_flags=u1",
    "mount": "res:errno=res dev:str=s0 dir:path=p1 type:str flags:mount_flags=u3 data:str",
    "umount2": "res:errno=res name:path=p0 flags:umount_flags=u1",
    "umount": "res:errno name:path",
    "read": "res:errno=res data:bytes=data fd:fd=i0 size:int=u2",
    "write": "res:errno=res data:bytes=data fd:fd=i0 size:int=u2",
    "ioctl": "res:errno fd:fd request:hex argument:hex",
    "mmap": "res:hex addr:hex length:int prot:int flags:int fd:fd offset:int",
    "mprotect": "res:errno addr:hex length:int prot:int",
    "quotactl": "res:errno cmd:int special:path id:int",
    # network
    "socket": "fd:fd=res domain:family=i0 type:socktype=i1 proto:int=i2",
    "socketpair": "res:errno=res domain:family=i0 type:socktype=i1 proto:int=i2 fd1:fd=blob.fd1"
                  " fd2:fd=blob.fd2",
    "connect": "res:errno=res tuple:tuple=tuple fd:fd=i0 addr:sockaddr=sock",
    "accept": _ACCEPT,
    "accept4": _ACCEPT + " flags:socktype=u3",
    "bind": "res:errno=res addr:sockaddr=sock fd:fd=i0",
    "listen": "res:errno=res fd:fd=i0 backlog:int=i1",
    "sendto": _SEND,
    "sendmsg": "res:errno=res data:bytes fd:fd=i0 size:int tuple:tuple=tuple",
    "recvfrom": _RECV,
    "recvmsg": "res:errno=res data:bytes tuple:tuple=tuple fd:fd=i0 size:int msgcontrol:bytes",
    # processes
    "execve": "res:errno " + _EXEC + _EXEC_IDS,
    "execveat": "res:errno " + _EXEC + _EXEC_IDS + " dirfd:dirfd pathname:path exec_flags:at_flags",
    "clone": "res:errno=res " + _EXEC + " flags_clone:clone_flags=u0",
    "clone3": "res:errno=res " + _EXEC + " flags_clone:clone_flags",
    "fork": "res:errno=res " + _EXEC,
    "vfork": "res:errno=res " + _EXEC,
    "procexit": "status:int ret:int sig:signal core:int",
    "ptrace": "res:errno=res addr:hex=u2 data:hex=u3 request:ptrace_req=l0 pid:int=i1",
    "prctl": "res:errno=res option:prctl_opt=i0 arg2_str:str arg2_int:int=l1",
    "kill": "res:errno=res pid:int=i0 sig:signal=i1",
    "tkill": "res:errno=res tid:int=i0 sig:signal=i1",
    "tgkill": "res:errno=res pid:int=i0 tid:int=i1 sig:signal=i2",
    "setuid": "res:errno=res uid:uid=i0",
    "setgid": "res:errno=res gid:gid=i0",
    "setreuid": "res:errno=res ruid:uid=i0 euid:uid=i1",
    "setregid": "res:errno=res rgid:gid=i0 egid:gid=i1",
    "setresuid": "res:errno=res ruid:uid=i0 euid:uid=i1 suid:uid=i2",
    "setresgid": "res:errno=res rgid:gid=i0 egid:gid=i1 sgid:gid=i2",
    "setsid": "res:errno=res",
    "setpgid": "res:errno=res pid:int=i0 pgid:int=i1",
    "capset": "res:errno=res cap_inheritable:hex cap_permitted:hex cap_effective:hex",
    "setns": "res:errno=res fd:fd=i0 nstype:clone_flags=u1",
    "unshare": "res:errno=res flags:clone_flags=u0",
    "init_module": "res:errno=res img:bytes length:int=u1 uargs:str=s0",
    "finit_module": "res:errno=res fd:fd=i0 uargs:str=s0 flags:int=u2",
    "delete_module": "res:errno=res name:str=s0 flags:int=u1",
    "bpf": "fd:fd=res cmd:bpf_cmd=i0",
    "userfaultfd": "res:errno=res flags:open_flags=u0",
    "process_vm_writev": "res:errno=res pid:int=i0",
    "process_vm_readv": "res:errno=res pid:int=i0",
    "io_uring_setup": "res:errno=res entries:int=u0",
}

EVENT_PARAMS: dict[str, tuple[Param, ...]] = {etype: _parse(spec) for etype, spec in _SPECS.items()}
"""Event type -> its parameters in Falco's order, each with its rendering kind and the sensor's source."""
