"""Syscall parameters as Falco names and renders them: what `evt.arg.*`, `evt.arg[N]`, `evt.args`, `evt.res`
and `evt.rawarg.*` read.

The sensor puts raw values in `Event.args` under Falco's parameter names (Linux's own numbers: open flags as
the kernel sees them, errno as a negative result). Falco's rules compare the *rendered* text (`evt.arg.flags
contains O_TRUNC`, `evt.arg.request in (PTRACE_ATTACH)`, `evt.arg.uid=nobody`), so the renderings here follow
libsinsp's: flag sets as `NAME|NAME`, enums as their constant name, fds as `<f>/path`, results as `SUCCESS`
or the errno name. Which parameters each event type has, in Falco's order for `evt.arg[N]`, and their kinds
come from falconet.model.syscalls, the table the sensor fills `Event.args` from.

Where the event already carries an argument in its context (execve's exe, args, cwd, tty, ... live in
`Event.proc`), the argument is derived from there, so the sensor does not have to send it twice.
"""

from __future__ import annotations

import errno as _errno
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from falconet.model.syscalls import EVENT_PARAMS

if TYPE_CHECKING:
    from .event import Event

# --- errno --------------------------------------------------------------------------------------------------

# Python's table prefers some aliases (EWOULDBLOCK, EDEADLOCK, ENOTSUP); libsinsp prints the primary names.
_ERRNO_PREFERRED = {"EWOULDBLOCK": "EAGAIN", "EDEADLOCK": "EDEADLK", "ENOTSUP": "EOPNOTSUPP"}
ERRNO_NAMES: dict[int, str] = {
    num: _ERRNO_PREFERRED.get(name, name) for num, name in _errno.errorcode.items()
}
ERRNO_NAMES[512] = "ERESTARTSYS"
ERRNO_NAMES[513] = "ERESTARTNOINTR"
ERRNO_NAMES[514] = "ERESTARTNOHAND"
ERRNO_NAMES[515] = "ENOIOCTLCMD"
ERRNO_NAMES[516] = "ERESTART_RESTARTBLOCK"
ERRNO_VALUES: dict[str, int] = {name: num for num, name in ERRNO_NAMES.items()}
ERRNO_VALUES.update({alias: getattr(_errno, alias) for alias in _ERRNO_PREFERRED if hasattr(_errno, alias)})


def render_res(res: int) -> str:
    """evt.res: "SUCCESS" for a non-negative result, else the errno name (e.g. ENOENT)."""
    if res >= 0:
        return "SUCCESS"
    return ERRNO_NAMES.get(-res, str(res))


# --- flag and enum tables (Linux x86_64 values) --------------------------------------------------------------

Table = tuple[tuple[str, int], ...]

# Open flags. The access mode (low two bits) is a value, not a bit: 0 renders as O_RDONLY.
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND = 0o1, 0o2, 0o100, 0o1000, 0o2000
OPEN_FLAGS: Table = (
    ("O_CREAT", 0o100), ("O_EXCL", 0o200), ("O_NOCTTY", 0o400), ("O_TRUNC", 0o1000), ("O_APPEND", 0o2000),
    ("O_NONBLOCK", 0o4000), ("O_DSYNC", 0o10000), ("O_ASYNC", 0o20000), ("O_DIRECT", 0o40000),
    ("O_LARGEFILE", 0o100000), ("O_DIRECTORY", 0o200000), ("O_NOFOLLOW", 0o400000), ("O_NOATIME", 0o1000000),
    ("O_CLOEXEC", 0o2000000), ("O_SYNC", 0o4000000), ("O_PATH", 0o10000000), ("O_TMPFILE", 0o20000000),
)  # fmt: skip


@functools.lru_cache(maxsize=1024)
def render_open_flags(value: int) -> str:
    acc = value & 3
    names = ["O_RDONLY" if acc == 0 else "O_WRONLY" if acc == 1 else "O_RDWR" if acc == 2 else "O_ACCMODE"]
    names += [name for name, bit in OPEN_FLAGS if value & bit == bit]
    return "|".join(names)


@functools.lru_cache(maxsize=4096)
def render_bits(table: Table, value: int) -> str:
    """Set bits by name joined with '|'; unknown leftover bits are kept as a number; 0 renders as "0"."""
    names = [name for name, bit in table if bit and value & bit == bit]
    left = value
    for name, bit in table:
        if bit and value & bit == bit:
            left &= ~bit
    if left:
        names.append(str(left))
    return "|".join(names) if names else "0"


def render_enum(table: Table, value: int) -> str:
    for name, num in table:
        if num == value:
            return name
    return str(value)


# execve's flags: what Falco reports about the executable (proc.is_exe_* come from the same facts).
EXE_FLAGS: Table = (
    ("EXE_WRITABLE", 1),
    ("EXE_UPPER_LAYER", 2),
    ("EXE_FROM_MEMFD", 4),
    ("EXE_LOWER_LAYER", 8),
)
CLONE_FLAGS: Table = (
    ("CLONE_VM", 0x100), ("CLONE_FS", 0x200), ("CLONE_FILES", 0x400), ("CLONE_SIGHAND", 0x800),
    ("CLONE_PIDFD", 0x1000), ("CLONE_PTRACE", 0x2000), ("CLONE_VFORK", 0x4000), ("CLONE_PARENT", 0x8000),
    ("CLONE_THREAD", 0x10000), ("CLONE_NEWNS", 0x20000), ("CLONE_SYSVSEM", 0x40000),
    ("CLONE_SETTLS", 0x80000), ("CLONE_PARENT_SETTID", 0x100000), ("CLONE_CHILD_CLEARTID", 0x200000),
    ("CLONE_DETACHED", 0x400000), ("CLONE_UNTRACED", 0x800000), ("CLONE_CHILD_SETTID", 0x1000000),
    ("CLONE_NEWCGROUP", 0x2000000), ("CLONE_NEWUTS", 0x4000000), ("CLONE_NEWIPC", 0x8000000),
    ("CLONE_NEWUSER", 0x10000000), ("CLONE_NEWPID", 0x20000000), ("CLONE_NEWNET", 0x40000000),
    ("CLONE_IO", 0x80000000), ("CLONE_NEWTIME", 0x80),
)  # fmt: skip
MOUNT_FLAGS: Table = (
    ("RDONLY", 1), ("NOSUID", 2), ("NODEV", 4), ("NOEXEC", 8), ("SYNCHRONOUS", 16), ("REMOUNT", 32),
    ("MANDLOCK", 64), ("DIRSYNC", 128), ("NOSYMFOLLOW", 256), ("NOATIME", 1024), ("NODIRATIME", 2048),
    ("BIND", 4096), ("MOVE", 8192), ("REC", 16384), ("SILENT", 32768), ("POSIXACL", 1 << 16),
    ("UNBINDABLE", 1 << 17), ("PRIVATE", 1 << 18), ("SLAVE", 1 << 19), ("SHARED", 1 << 20),
    ("RELATIME", 1 << 21), ("KERNMOUNT", 1 << 22), ("I_VERSION", 1 << 23), ("STRICTATIME", 1 << 24),
    ("LAZYTIME", 1 << 25),
)  # fmt: skip
UMOUNT_FLAGS: Table = (("FORCE", 1), ("DETACH", 2), ("EXPIRE", 4), ("NOFOLLOW", 8))
AT_FLAGS: Table = (
    ("AT_SYMLINK_NOFOLLOW", 0x100), ("AT_REMOVEDIR", 0x200), ("AT_SYMLINK_FOLLOW", 0x400),
    ("AT_NO_AUTOMOUNT", 0x800), ("AT_EMPTY_PATH", 0x1000),
)  # fmt: skip
RENAME_FLAGS: Table = (("RENAME_NOREPLACE", 1), ("RENAME_EXCHANGE", 2), ("RENAME_WHITEOUT", 4))
MEMFD_FLAGS: Table = (
    ("MFD_CLOEXEC", 1), ("MFD_ALLOW_SEALING", 2), ("MFD_HUGETLB", 4), ("MFD_NOEXEC_SEAL", 8), ("MFD_EXEC", 16),
)  # fmt: skip
RESOLVE_FLAGS: Table = (
    ("RESOLVE_NO_XDEV", 1), ("RESOLVE_NO_MAGICLINKS", 2), ("RESOLVE_NO_SYMLINKS", 4),
    ("RESOLVE_BENEATH", 8), ("RESOLVE_IN_ROOT", 16), ("RESOLVE_CACHED", 32),
)  # fmt: skip
# chmod modes render as their permission bits by name (so `evt.arg.mode contains S_ISUID` works).
MODE_BITS: Table = (
    ("S_IXOTH", 0o1), ("S_IWOTH", 0o2), ("S_IROTH", 0o4), ("S_IXGRP", 0o10), ("S_IWGRP", 0o20),
    ("S_IRGRP", 0o40), ("S_IXUSR", 0o100), ("S_IWUSR", 0o200), ("S_IRUSR", 0o400), ("S_ISVTX", 0o1000),
    ("S_ISGID", 0o2000), ("S_ISUID", 0o4000),
)  # fmt: skip
SOCK_FLAGS: Table = (("SOCK_NONBLOCK", 0o4000), ("SOCK_CLOEXEC", 0o2000000))
SOCK_TYPES: Table = (
    ("SOCK_STREAM", 1), ("SOCK_DGRAM", 2), ("SOCK_RAW", 3), ("SOCK_RDM", 4), ("SOCK_SEQPACKET", 5),
    ("SOCK_DCCP", 6), ("SOCK_PACKET", 10),
)  # fmt: skip
SOCKET_FAMILIES: Table = (
    ("AF_UNSPEC", 0), ("AF_UNIX", 1), ("AF_INET", 2), ("AF_AX25", 3), ("AF_IPX", 4), ("AF_APPLETALK", 5),
    ("AF_NETROM", 6), ("AF_BRIDGE", 7), ("AF_ATMPVC", 8), ("AF_X25", 9), ("AF_INET6", 10), ("AF_ROSE", 11),
    ("AF_DECnet", 12), ("AF_NETBEUI", 13), ("AF_SECURITY", 14), ("AF_KEY", 15), ("AF_NETLINK", 16),
    ("AF_PACKET", 17), ("AF_ASH", 18), ("AF_ECONET", 19), ("AF_ATMSVC", 20), ("AF_RDS", 21), ("AF_SNA", 22),
    ("AF_IRDA", 23), ("AF_PPPOX", 24), ("AF_WANPIPE", 25), ("AF_LLC", 26), ("AF_IB", 27), ("AF_MPLS", 28),
    ("AF_CAN", 29), ("AF_TIPC", 30), ("AF_BLUETOOTH", 31), ("AF_IUCV", 32), ("AF_RXRPC", 33),
    ("AF_ISDN", 34), ("AF_PHONET", 35), ("AF_IEEE802154", 36), ("AF_CAIF", 37), ("AF_ALG", 38),
    ("AF_NFC", 39), ("AF_VSOCK", 40), ("AF_KCM", 41), ("AF_QIPCRTR", 42), ("AF_SMC", 43), ("AF_XDP", 44),
)  # fmt: skip
PTRACE_REQUESTS: Table = (
    ("PTRACE_TRACEME", 0), ("PTRACE_PEEKTEXT", 1), ("PTRACE_PEEKDATA", 2), ("PTRACE_PEEKUSR", 3),
    ("PTRACE_POKETEXT", 4), ("PTRACE_POKEDATA", 5), ("PTRACE_POKEUSR", 6), ("PTRACE_CONT", 7),
    ("PTRACE_KILL", 8), ("PTRACE_SINGLESTEP", 9), ("PTRACE_GETREGS", 12), ("PTRACE_SETREGS", 13),
    ("PTRACE_GETFPREGS", 14), ("PTRACE_SETFPREGS", 15), ("PTRACE_ATTACH", 16), ("PTRACE_DETACH", 17),
    ("PTRACE_GETFPXREGS", 18), ("PTRACE_SETFPXREGS", 19), ("PTRACE_SYSCALL", 24),
    ("PTRACE_SETOPTIONS", 0x4200), ("PTRACE_GETEVENTMSG", 0x4201), ("PTRACE_GETSIGINFO", 0x4202),
    ("PTRACE_SETSIGINFO", 0x4203), ("PTRACE_GETREGSET", 0x4204), ("PTRACE_SETREGSET", 0x4205),
    ("PTRACE_SEIZE", 0x4206), ("PTRACE_INTERRUPT", 0x4207), ("PTRACE_LISTEN", 0x4208),
    ("PTRACE_PEEKSIGINFO", 0x4209),
)  # fmt: skip
BPF_COMMANDS: Table = (
    ("BPF_MAP_CREATE", 0), ("BPF_MAP_LOOKUP_ELEM", 1), ("BPF_MAP_UPDATE_ELEM", 2), ("BPF_MAP_DELETE_ELEM", 3),
    ("BPF_MAP_GET_NEXT_KEY", 4), ("BPF_PROG_LOAD", 5), ("BPF_OBJ_PIN", 6), ("BPF_OBJ_GET", 7),
    ("BPF_PROG_ATTACH", 8), ("BPF_PROG_DETACH", 9), ("BPF_PROG_TEST_RUN", 10), ("BPF_LINK_CREATE", 28),
)  # fmt: skip
SIGNALS: Table = tuple((f"SIG{n}", int(getattr(__import__("signal"), f"SIG{n}"))) for n in (
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
    "TERM", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH",
    "IO", "PWR", "SYS",
))  # fmt: skip
PRCTL_OPTIONS: Table = (
    ("PR_SET_PDEATHSIG", 1), ("PR_GET_PDEATHSIG", 2), ("PR_GET_DUMPABLE", 3), ("PR_SET_DUMPABLE", 4),
    ("PR_SET_KEEPCAPS", 8), ("PR_SET_NAME", 15), ("PR_GET_NAME", 16), ("PR_CAPBSET_DROP", 24),
    ("PR_SET_SECCOMP", 22), ("PR_SET_NO_NEW_PRIVS", 38), ("PR_SET_CHILD_SUBREAPER", 36),
    ("PR_SET_PTRACER", 0x59616D61),
)  # fmt: skip

# --- parameter kinds --------------------------------------------------------------------------------------

# Kind = how a raw value renders as text. Each returns the string Falco's evt.arg gives (the "resolved" form).
Render = Callable[[Any, "Event"], str]


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def _text(value: Any, _evt: Event) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bits(table: Table) -> Render:
    def render(value: Any, _evt: Event) -> str:
        n = _as_int(value)
        return _text(value, _evt) if n is None else render_bits(table, n)

    return render


def _enum(table: Table) -> Render:
    def render(value: Any, _evt: Event) -> str:
        n = _as_int(value)
        return _text(value, _evt) if n is None else render_enum(table, n)

    return render


def _open_flags(value: Any, evt: Event) -> str:
    n = _as_int(value)
    return _text(value, evt) if n is None else render_open_flags(n)


def _sock_type(value: Any, evt: Event) -> str:
    n = _as_int(value)
    if n is None:
        return _text(value, evt)
    names = [render_enum(SOCK_TYPES, n & 0xF)] + [name for name, bit in SOCK_FLAGS if n & bit]
    return "|".join(names)


def _errno_res(value: Any, evt: Event) -> str:
    n = _as_int(value)
    if n is None:
        return _text(value, evt)
    return ERRNO_NAMES.get(-n, str(n)) if n < 0 else str(n)


def _fd(value: Any, evt: Event) -> str:
    """An fd argument renders as `<typechar>name` when it is the event's fd, as Falco's resolved form does."""
    n = _as_int(value)
    if n is None:
        return _text(value, evt)
    if n < 0:
        if n == -100:
            return "AT_FDCWD"
        return ERRNO_NAMES.get(-n, str(n))
    fd = evt.fd
    if fd is not None and fd.num == n and fd.name is not None:
        return f"<{FD_TYPECHARS.get(fd.type, '?')}>{fd.name}"
    return str(n)


def _dirfd(value: Any, evt: Event) -> str:
    n = _as_int(value)
    if n == -100:
        return "AT_FDCWD"
    return str(value) if n is None else str(n)


def _oct(value: Any, evt: Event) -> str:
    n = _as_int(value)
    if n is None:
        return _text(value, evt)
    return f"0{n:o}" if n else "0"


def _hex(value: Any, evt: Event) -> str:
    n = _as_int(value)
    return _text(value, evt) if n is None else hex(n)


def _path(value: Any, evt: Event) -> str:
    """Relative paths resolve against the process's cwd, as libsinsp does for path arguments."""
    text = _text(value, evt)
    cwd = evt.proc.cwd
    if text and not text.startswith("/") and cwd and not text.startswith("<"):
        return os.path.normpath(os.path.join(cwd, text))
    return text


def _uid(value: Any, evt: Event) -> str:
    """uid arguments render as the user's name when the sensor resolved it (Event.arg_text), else the number."""
    return _text(value, evt)


def _sockaddr(value: Any, evt: Event) -> str:
    return _text(value, evt)


FD_TYPECHARS: dict[str, str] = {
    "file": "f", "directory": "d", "ipv4": "4", "ipv6": "6", "unix": "u", "pipe": "p", "event": "e",
    "signalfd": "s", "eventpoll": "l", "inotify": "i", "timerfd": "t", "netlink": "n", "bpf": "b",
    "userfaultfd": "u", "io_uring": "r", "memfd": "m", "pidfd": "P",
}  # fmt: skip

# Parameter kinds: the renderer and whether evt.rawarg of it is numeric.
KINDS: dict[str, tuple[Render, bool]] = {
    "str": (_text, False),
    "path": (_path, False),
    "int": (_text, True),
    "hex": (_hex, True),
    "oct": (_oct, True),
    "fd": (_fd, True),
    "dirfd": (_dirfd, True),
    "errno": (_errno_res, True),
    "uid": (_uid, True),
    "gid": (_uid, True),
    "open_flags": (_open_flags, True),
    "exe_flags": (_bits(EXE_FLAGS), True),
    "clone_flags": (_bits(CLONE_FLAGS), True),
    "mount_flags": (_bits(MOUNT_FLAGS), True),
    "umount_flags": (_bits(UMOUNT_FLAGS), True),
    "at_flags": (_bits(AT_FLAGS), True),
    "rename_flags": (_bits(RENAME_FLAGS), True),
    "memfd_flags": (_bits(MEMFD_FLAGS), True),
    "resolve_flags": (_bits(RESOLVE_FLAGS), True),
    "mode": (_bits(MODE_BITS), True),
    "family": (_enum(SOCKET_FAMILIES), True),
    "socktype": (_sock_type, True),
    "ptrace_req": (_enum(PTRACE_REQUESTS), True),
    "bpf_cmd": (_enum(BPF_COMMANDS), True),
    "signal": (_enum(SIGNALS), True),
    "prctl_opt": (_enum(PRCTL_OPTIONS), True),
    "sockaddr": (_sockaddr, False),
    "tuple": (_sockaddr, False),
    "bytes": (_text, False),
}

PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    etype: tuple((p.name, p.kind) for p in params) for etype, params in EVENT_PARAMS.items()
}
"""Event type -> (name, kind) in Falco's order: the shared table (falconet.model.syscalls), as the engine
reads it."""

ARG_NAMES: frozenset[str] = frozenset(name for params in PARAMS.values() for name, _ in params)
"""Every parameter name some event type has: `evt.arg.NAME` with another NAME is an unknown field."""

_KIND_BY_NAME: dict[str, str] = {}
for _params in PARAMS.values():
    for _name, _kind in _params:
        _KIND_BY_NAME.setdefault(_name, _kind)


def kind_of(etype: str, name: str) -> str:
    for pname, kind in PARAMS.get(etype, ()):
        if pname == name:
            return kind
    return _KIND_BY_NAME.get(name, "str")


def is_numeric_arg(name: str) -> bool:
    """Whether `evt.rawarg.NAME` is numeric (the type is fixed at compile time from the name, as in Falco)."""
    kind = _KIND_BY_NAME.get(name)
    return kind is not None and KINDS[kind][1]


# --- values derived from the event's context --------------------------------------------------------------

_EXEC_TYPES = frozenset({"execve", "execveat", "clone", "clone3", "fork", "vfork"})


def _exe_flags(evt: Event) -> int:
    # Layer flags only mean something on a container's overlay file system: on the host neither is set.
    p = evt.proc
    layer = 0 if evt.container.id == "host" else (2 if p.exe_upper_layer else 8)
    return (1 if p.exe_writable else 0) | layer | (4 if p.exe_from_memfd else 0)


_DERIVED: dict[str, Callable[[Event], Any]] = {
    "exe": lambda e: e.proc.exe,
    "args": lambda e: e.proc.args if e.proc.args_known else None,
    "tid": lambda e: e.tid,
    "pid": lambda e: e.proc.pid,
    "ptid": lambda e: e.proc.ppid,
    "cwd": lambda e: e.proc.cwd,
    "comm": lambda e: e.proc.name,
    "env": lambda e: e.proc.env if e.proc.args_known else None,
    "tty": lambda e: e.proc.tty,
    "vpgid": lambda e: e.proc.vpgid,
    "pgid": lambda e: e.proc.pgid,
    "loginuid": lambda e: e.proc.user.loginuid,
    "flags": _exe_flags,
    "cap_inheritable": lambda e: e.proc.cap_inheritable,
    "cap_permitted": lambda e: e.proc.cap_permitted,
    "cap_effective": lambda e: e.proc.cap_effective,
    "exe_ino": lambda e: e.proc.exe_ino,
    "exe_ino_ctime": lambda e: e.proc.exe_ino_ctime,
    "exe_ino_mtime": lambda e: e.proc.exe_ino_mtime,
    "uid": lambda e: e.proc.user.uid,
    "gid": lambda e: e.proc.group.gid,
    "trusted_exepath": lambda e: e.proc.exepath,
}
_RES_NAMES = frozenset({"res", "fd"})


def raw_arg(evt: Event, name: str) -> Any:
    """The raw value of parameter NAME, or None when the event has no such parameter."""
    args = evt.args
    etype = evt.type
    if name == "flags" and etype in _EXEC_TYPES:
        # Falco's execve `flags` describe the executable (EXE_WRITABLE|...); execveat's own AT_* flags, which
        # a sensor may send under the same name, are not what rules mean by evt.arg.flags on an exec.
        return _exe_flags(evt)
    if name in args:
        return args[name]
    if etype in _EXEC_TYPES and name in _DERIVED:
        return _DERIVED[name](evt)
    params = PARAMS.get(etype)
    if params and name in _RES_NAMES and params[0][0] == name:
        return evt.res  # the first parameter of an exit event is its result
    if name == "fd" and evt.fd is not None and params and any(p == "fd" for p, _ in params):
        return evt.fd.num
    return None


def render_arg(evt: Event, name: str) -> str | None:
    """`evt.arg.NAME`: Falco's text of the parameter, or None when the event lacks it."""
    text = evt.arg_text.get(name) if evt.arg_text else None
    if text is not None:
        return text
    value = raw_arg(evt, name)
    if value is None:
        return None
    return KINDS[kind_of(evt.type, name)][0](value, evt)


def param_name(evt: Event, index: int) -> str | None:
    params = PARAMS.get(evt.type)
    if params is not None:
        return params[index][0] if 0 <= index < len(params) else None
    keys = list(evt.args)
    return keys[index] if 0 <= index < len(keys) else None


def render_args(evt: Event) -> str:
    """`evt.args`: every parameter as `name=raw(text)` (just `name=text` when the two agree), space separated,
    in Falco's order: `fd=3(<f>/etc/shadow) dirfd=-100(AT_FDCWD) name=/etc/shadow flags=524288(O_RDONLY|...)`.
    """
    params = PARAMS.get(evt.type)
    names = [p for p, _ in params] if params is not None else list(evt.args)
    names += [k for k in evt.args if k not in names]
    out = []
    for name in names:
        text = render_arg(evt, name)
        if text is None:
            continue
        raw = raw_arg(evt, name)
        raw_text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else None
        if (
            raw_text is not None
            and raw_text != text
            and not text.startswith("0x")
            and kind_of(evt.type, name) != "oct"
        ):
            out.append(f"{name}={raw_text}({text})")
        else:
            out.append(f"{name}={text}")
    return " ".join(out)
