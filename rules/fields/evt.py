"""evt.* fields: the syscall itself, its arguments (rendered as Falco renders them) and its result.

One event is one syscall as it returned (Falco >= 0.42 drops enter events), so `evt.dir` is always `<`:
`evt.dir = <` matches every event and `evt.dir = >` none, which is Falco's deprecated behaviour.
Times print in UTC, so a replayed capture prints the same text everywhere.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import syscalls
from ..errors import Msg
from .registry import (
    PREFIX_FIELDS,
    FieldSpec,
    FieldType,
    ResolversLike,
    parse_index,
    register,
    simple,
    with_arg,
)

if TYPE_CHECKING:
    from falconet.model.event import Event

S, N, B, A, R, BUF = (
    FieldType.STRING, FieldType.INT, FieldType.BOOL, FieldType.ABSTIME, FieldType.RELTIME, FieldType.BUFFER,
)  # fmt: skip

OPEN_TYPES = frozenset({"open", "openat", "openat2", "open_by_handle_at"})
CREATE_TYPES = OPEN_TYPES | {"creat"}
READ_TYPES = frozenset({"read", "readv", "pread", "pread64", "preadv", "recvfrom", "recvmsg", "recvmmsg"})
WRITE_TYPES = frozenset({"write", "writev", "pwrite", "pwrite64", "pwritev", "sendto", "sendmsg", "sendmmsg"})


def _utc(ts: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts // 1_000_000_000, tz=_dt.UTC)


def clock_time(ts: int) -> str:
    """evt.time's text: HH:MM:SS.nnnnnnnnn (UTC)."""
    return f"{_utc(ts):%H:%M:%S}.{ts % 1_000_000_000:09d}"


def _open_flags(e: Event) -> int | None:
    v = e.args.get("flags")
    if isinstance(v, int):
        return v
    if e.fd is not None and e.fd.flags is not None:
        return e.fd.flags
    return None


def _is_open_read(e: Event) -> bool:
    if e.type not in OPEN_TYPES:
        return False
    flags = _open_flags(e)
    return flags is not None and (flags & 3) in (0, 2)


def _is_open_write(e: Event) -> bool:
    if e.type == "creat":
        return True
    if e.type not in OPEN_TYPES:
        return False
    flags = _open_flags(e)
    return flags is not None and (flags & 3) in (1, 2)


def _is_open_exec(e: Event) -> bool:
    # A file created with an execute bit: open with O_CREAT (or creat) and a mode with any x bit.
    if e.type not in CREATE_TYPES:
        return False
    flags = _open_flags(e)
    if e.type != "creat" and (flags is None or not flags & syscalls.O_CREAT):
        return False
    mode = e.args.get("mode")
    return isinstance(mode, int) and bool(mode & 0o111)


def _buffer(e: Event) -> bytes | None:
    v = e.args.get("data")
    if v is None:
        return None
    if isinstance(v, bytes):
        return v
    # In the JSON-lines form a buffer is text; bytes that are not UTF-8 travel as surrogate escapes.
    return str(v).encode("utf-8", "surrogateescape")


def _abspath(e: Event) -> str | None:
    if e.fd is not None and e.fd.name and e.fd.type in ("file", "directory"):
        return e.fd.name
    for key in ("name", "path", "pathname", "filename"):
        if key in e.args:
            return syscalls.render_arg(e, key)
    return None


simple("evt.num", N, lambda e: e.num, "the event number")
simple("evt.type", S, lambda e: e.type, "the event name, e.g. openat")
simple("evt.name", S, lambda e: e.type, "the event name (older name of evt.type)")
simple("evt.source", S, lambda e: e.source, "the event source, syscall for the sensor's events")
simple("evt.dir", S, lambda e: "<", "always '<': Falconet events are syscall exits (deprecated in Falco)",
       deprecated=Msg.EVT_DIR_DEPRECATED)  # fmt: skip
simple("evt.cpu", N, lambda e: None, "not tracked by Falconet's sensor")
simple("evt.rawtime", A, lambda e: e.ts, "ns since the epoch")
simple("evt.rawtime.s", N, lambda e: e.ts // 1_000_000_000, "seconds since the epoch")
simple("evt.rawtime.ns", N, lambda e: e.ts % 1_000_000_000, "fractional ns of the timestamp")
simple("evt.time.s", S, lambda e: f"{_utc(e.ts):%H:%M:%S}", "HH:MM:SS (UTC)")
simple(
    "evt.time.iso8601", S, lambda e: f"{_utc(e.ts):%Y-%m-%dT%H:%M:%S}.{e.ts % 1_000_000_000:09d}Z", "ISO 8601"
)
simple(
    "evt.datetime", S, lambda e: f"{_utc(e.ts):%Y-%m-%d %H:%M:%S}.{e.ts % 1_000_000_000:09d}", "date and time"
)
simple("evt.datetime.s", S, lambda e: f"{_utc(e.ts):%Y-%m-%d %H:%M:%S}", "date and time to the second")
simple("evt.reltime", R, lambda e: None, "not tracked (needs the capture's start)")
simple("evt.deltatime", R, lambda e: None, "not tracked (needs the previous event)")
simple("evt.args", S, syscalls.render_args, "every argument as name=value")
simple("evt.info", S, syscalls.render_args, "every argument as name=value")
simple("evt.res", S, lambda e: syscalls.render_res(e.res), "SUCCESS or the errno name, e.g. ENOENT")
simple("evt.rawres", N, lambda e: e.res, "the return value as a number")
simple("evt.failed", B, lambda e: e.res < 0, "the syscall returned an error")
simple("evt.is_open_read", B, _is_open_read, "an open for reading")
simple("evt.is_open_write", B, _is_open_write, "an open for writing")
simple("evt.is_open_exec", B, _is_open_exec, "an open that created a file with execute permission")
simple("evt.is_open_create", B, lambda e: e.type == "creat" or (e.type in OPEN_TYPES and bool(
    (_open_flags(e) or 0) & syscalls.O_CREAT)), "an open with O_CREAT")  # fmt: skip
simple("evt.is_io", B, lambda e: e.type in READ_TYPES or e.type in WRITE_TYPES, "a read or write")
simple("evt.is_io_read", B, lambda e: e.type in READ_TYPES, "a read")
simple("evt.is_io_write", B, lambda e: e.type in WRITE_TYPES, "a write")
simple(
    "evt.io_dir", S, lambda e: "r" if e.type in READ_TYPES else "w" if e.type in WRITE_TYPES else None, "r/w"
)
simple("evt.is_wait", B, lambda e: False, "Falconet has no wait events")
simple("evt.is_syslog", B, lambda e: False, "not tracked by Falconet's sensor")
simple("evt.count", N, lambda e: 1, "1 for every event (for aggregations)")
simple("evt.buffer", BUF, _buffer, "the data buffer of read/write/send/recv events")
simple("evt.buflen", N, lambda e: len(b) if (b := _buffer(e)) is not None else None, "the buffer's length")
simple("evt.abspath", FieldType.PATH, _abspath, "the absolute path the event acts on")
for _lat in ("evt.latency", "evt.latency.s", "evt.latency.ns", "evt.latency.human", "evt.wait_latency"):
    simple(_lat, R, lambda e: None, "deprecated: Falco drops enter events, so latencies are unknown",
           deprecated=f"{_lat} is deprecated: without enter events it is unknown")  # fmt: skip
simple("evt.plugininfo", S, lambda e: None, "not used by the syscall source")
simple("evt.pluginname", S, lambda e: None, "not used by the syscall source")


def _time_build(_arg: str | None) -> Callable[[Event], Any]:
    return lambda e: e.ts


# evt.time compares as a number (ns) and prints as a clock time; in output_fields Falco gives the number.
register(FieldSpec("evt.time", A, _time_build, "none", desc="the event time"))


def _hostname_output(_arg: str | None, resolvers: ResolversLike | None) -> Callable[[Event], Any]:
    if resolvers is None:
        return lambda e: None
    return lambda e: resolvers.hostname()


register(
    FieldSpec(
        "evt.hostname",
        S,
        lambda _a: lambda e: None,
        "none",
        desc="the host name (from the daemon's resolver)",
        build_with_resolvers=_hostname_output,
    )
)


def _check_arg_name(name: str) -> str | None:
    if name in syscalls.ARG_NAMES:
        return None
    return Msg.UNKNOWN_FIELD.format(name=f"evt.arg.{name}") + " (no event has an argument of that name)"


def _arg_build(arg: str | None) -> Callable[[Event], Any]:
    assert arg is not None
    if arg.isdigit():
        index = parse_index(arg, "evt.arg")

        def by_index(e: Event) -> str | None:
            name = syscalls.param_name(e, index)
            return syscalls.render_arg(e, name) if name is not None else None

        return by_index
    name = arg
    return lambda e: syscalls.render_arg(e, name)


def _check_arg(arg: str) -> str | None:
    return None if arg.isdigit() else _check_arg_name(arg)


with_arg("evt.arg", S, _arg_build, "required", "an argument by name or number, as Falco renders it",
         check_arg=_check_arg)  # fmt: skip
PREFIX_FIELDS["evt.arg."] = FieldSpec(
    "evt.arg", S, _arg_build, "required", desc="evt.arg.NAME", check_arg=_check_arg_name
)


def _rawarg_build(arg: str | None) -> Callable[[Event], Any]:
    assert arg is not None
    name = arg
    numeric = syscalls.is_numeric_arg(name)

    def get(e: Event) -> Any:
        v = syscalls.raw_arg(e, name)
        if v is None:
            return None
        if numeric:
            if isinstance(v, bool):
                return int(v)
            if isinstance(v, int):
                return v
            try:
                return int(str(v), 0)
            except ValueError:
                return None
        if isinstance(v, list):
            return " ".join(str(x) for x in v)
        if isinstance(v, bytes):  # a data buffer: its bytes as text (non-UTF-8 bytes as surrogate escapes)
            return v.decode("utf-8", "surrogateescape")
        return v if isinstance(v, str) else str(v)

    return get


PREFIX_FIELDS["evt.rawarg."] = FieldSpec(
    "evt.rawarg",
    N,
    _rawarg_build,
    "required",
    desc="the raw argument: a number for numeric arguments (flags, fds, ids), else text",
    check_arg=_check_arg_name,
    type_for_arg=lambda arg: N if arg is not None and syscalls.is_numeric_arg(arg) else S,
)

# --- fs.path.*: the path a file syscall acts on, whatever the syscall calls its parameter (Falco >= 0.37) ----

# event type -> (parameter holding "the" path), or (source parameter, target parameter) for two-path syscalls.
_FS_NAME_PARAM: dict[str, str] = {
    "open": "name", "openat": "name", "openat2": "name", "creat": "name", "open_by_handle_at": "path",
    "mkdir": "path", "mkdirat": "path", "rmdir": "path", "unlink": "path", "unlinkat": "name",
    "chmod": "filename", "fchmodat": "filename", "chown": "path", "lchown": "path", "fchownat": "pathname",
    "truncate": "path", "chdir": "path", "chroot": "path", "execve": "filename", "execveat": "pathname",
    "umount": "name", "umount2": "name", "mount": "dir",
}  # fmt: skip
_FS_PAIR_PARAMS: dict[str, tuple[str, str]] = {
    "rename": ("oldpath", "newpath"), "renameat": ("oldpath", "newpath"), "renameat2": ("oldpath", "newpath"),
    "link": ("oldpath", "newpath"), "linkat": ("oldpath", "newpath"),
    "symlink": ("target", "linkpath"), "symlinkat": ("target", "linkpath"),
}  # fmt: skip
_FD_PATH_TYPES = frozenset({"fchmod", "fchown", "ftruncate", "fchdir"})


def _fs_name(raw: bool) -> Callable[[Event], Any]:
    def get(e: Event) -> Any:
        param = _FS_NAME_PARAM.get(e.type)
        if param is not None:
            if raw and e.fd is not None and e.fd.nameraw is not None and e.type in CREATE_TYPES:
                return e.fd.nameraw
            if param in e.args:
                value = e.args[param]
                return (value if isinstance(value, str) else None) if raw else syscalls.render_arg(e, param)
            if e.fd is not None and e.type in CREATE_TYPES:
                return e.fd.nameraw if raw else e.fd.name
            return None
        if e.type in _FD_PATH_TYPES and e.fd is not None:
            return e.fd.name
        return None

    return get


def _fs_pair(index: int, raw: bool) -> Callable[[Event], Any]:
    def get(e: Event) -> Any:
        params = _FS_PAIR_PARAMS.get(e.type)
        if params is None:
            return None
        param = params[index]
        if param not in e.args:
            return None
        if raw or (e.type in ("symlink", "symlinkat") and index == 0):
            value = e.args[param]  # a symlink's target is stored as written, never resolved
            return value if isinstance(value, str) else None
        return syscalls.render_arg(e, param)

    return get


P = FieldType.PATH
simple("fs.path.name", P, _fs_name(False), "the absolute path a file syscall acts on")
simple("fs.path.nameraw", P, _fs_name(True), "the path as the file syscall received it")
simple("fs.path.source", P, _fs_pair(0, False), "the source path of rename, link and symlink (absolute)")
simple("fs.path.sourceraw", P, _fs_pair(0, True), "the source path as the syscall received it")
simple("fs.path.target", P, _fs_pair(1, False), "the target path of rename, link and symlink (absolute)")
simple("fs.path.targetraw", P, _fs_pair(1, True), "the target path as the syscall received it")
