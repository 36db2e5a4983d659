"""The event model: what the sensor produces and the engine reads.

Events arrive enriched. The sensor owns process and fd state and fills in, at the moment of the syscall, the
process (with its ancestors), user, group, fd and container context; the engine only reads it. That split keeps
the engine pure and makes a captured event file replay deterministically: nothing is looked up at evaluation
time except through resolvers the daemon injects (DNS names, the host name).

The JSON-lines form (capture files, fixtures, replay input) is `Event.to_dict()` / `Event.from_dict()`, one
object per line; docs/events.md describes it. Unknown values are None (rendered `<NA>` by the engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

NO_LOGINUID = -1
"""user.loginuid of a process that never logged in (the kernel's (uid_t)-1), as Falco reports it."""


@dataclass(slots=True)
class User:
    """The credentials' user, resolved by the sensor (names from the host's or container's passwd)."""

    uid: int
    name: str | None = None
    homedir: str | None = None
    shell: str | None = None
    loginuid: int = NO_LOGINUID
    loginname: str | None = None


@dataclass(slots=True)
class Group:
    gid: int
    name: str | None = None


@dataclass(slots=True)
class Process:
    """A process (thread group) as the kernel saw it at the event; `parent` links the ancestor chain."""

    pid: int
    ppid: int = 0
    name: str = ""  # comm, at most 15 characters
    exe: str = ""  # argv[0]
    exepath: str = ""  # full path of the executable
    args: list[str] = field(default_factory=list)  # argv[1:]
    # False when the last exec's arguments never reached the sensor (the kernel dropped them): args, exe and env
    # are then unknown, not empty, and proc.args and proc.cmdline render as <NA>
    args_known: bool = True
    cwd: str | None = None
    env: list[str] = field(default_factory=list)  # "KEY=VALUE" entries
    tty: int = 0  # device number of the controlling terminal, 0 for none
    sid: int = 0
    vpid: int = 0  # pid in its own pid namespace
    pgid: int = 0
    vpgid: int = 0
    start_ts: int = 0  # ns since the epoch
    user: User = field(default_factory=lambda: User(0))
    group: Group = field(default_factory=lambda: Group(0))
    euid: int = 0
    egid: int = 0
    cap_permitted: int = 0
    cap_effective: int = 0
    cap_inheritable: int = 0
    exe_writable: bool = False
    exe_upper_layer: bool = False
    exe_from_memfd: bool = False
    exe_ino: int | None = None
    exe_ino_ctime: int | None = None  # ns
    exe_ino_mtime: int | None = None  # ns
    pidns_init_start_ts: int | None = None  # ns since the epoch: start of the init of the process's pid namespace
    container_id: str = "host"
    parent: Process | None = None

    @property
    def cmdline(self) -> str:
        """Falco's proc.cmdline: the name followed by the arguments."""
        return " ".join([self.name, *self.args]) if self.args else self.name


@dataclass(slots=True)
class Fd:
    """The file descriptor an event acts on, as the sensor's fd table knows it."""

    num: int
    type: str = "file"  # file, directory, ipv4, ipv6, unix, pipe, event, signalfd, eventpoll, inotify, timerfd,
    # netlink, memfd, bpf, userfaultfd, io_uring
    name: str | None = None  # absolute path, or "cip:cport->sip:sport" for sockets
    nameraw: str | None = None  # the path exactly as the syscall passed it
    ino: int | None = None
    dev: int | None = None
    flags: int | None = None  # open flags
    l4proto: str | None = None  # tcp, udp, icmp, raw
    sockfamily: str | None = None  # ip, unix
    cip: str | None = None
    cport: int | None = None
    sip: str | None = None
    sport: int | None = None
    is_server: bool = False  # this side is the server (accept/listen), so local = server
    connected: bool = False
    name_changed: bool = False


@dataclass(slots=True)
class Container:
    """Container context: `id`/`full_id`/`type` from the cgroup (all "host" for host processes), the rest from
    the container runtime's own records (None where the runtime did not say)."""

    id: str = "host"
    full_id: str = "host"
    name: str | None = None
    image: str | None = None
    image_repository: str | None = None
    image_tag: str | None = None
    image_digest: str | None = None
    image_id: str | None = None
    type: str | None = None
    privileged: bool | None = None
    mounts: list[dict[str, Any]] = field(default_factory=list)  # {source, dest, mode, rdwr, propagation}
    start_ts: int | None = None
    host_pid: bool | None = None
    host_network: bool | None = None
    host_ipc: bool | None = None
    ip: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    k8s_ns_name: str | None = None
    k8s_pod_name: str | None = None
    k8s_pod_uid: str | None = None
    k8s_pod_labels: dict[str, str] = field(default_factory=dict)
    k8s_pod_ip: str | None = None
    k8s_pod_sandbox_id: str | None = None


@dataclass(slots=True)
class Event:
    """One syscall: its arguments and its result, with context.

    `type` is Falco's event name (openat, execve, connect, ...). `args` holds raw argument values under
    Falco's parameter names (e.g. openat: fd, dirfd, name, flags, mode, dev, ino); the engine renders them.
    """

    num: int
    ts: int  # ns since the epoch
    type: str
    tid: int
    res: int
    proc: Process
    args: dict[str, Any] = field(default_factory=dict)
    fd: Fd | None = None
    container: Container = field(default_factory=Container)
    source: str = "syscall"
    # Text forms of arguments that need the sensor's tables to render, as Falco shows them: a uid or gid
    # argument as its user or group name (setuid's `uid` -> "nobody"). The engine renders every other
    # argument from `args` itself (flags, modes, errnos, fds).
    arg_text: dict[str, str] = field(default_factory=dict)
    vtid: int | None = None  # thread.vtid: the thread's id in its own pid namespace (None: not known)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines form; ancestors nest under proc.parent."""
        return {f.name: _to_dict(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Reads the JSON-lines form; raises ValueError naming the missing or malformed key."""
        try:
            return cls(
                num=int(data["num"]),
                ts=int(data["ts"]),
                type=str(data["type"]),
                tid=int(data["tid"]),
                res=int(data["res"]),
                proc=_process(data["proc"]),
                args=dict(data.get("args") or {}),
                fd=Fd(**data["fd"]) if data.get("fd") else None,
                container=Container(**(data.get("container") or {})),
                source=str(data.get("source", "syscall")),
                arg_text={str(k): str(v) for k, v in (data.get("arg_text") or {}).items()},
                vtid=int(data["vtid"]) if data.get("vtid") is not None else None,
            )
        except KeyError as exc:
            raise ValueError(f"event is missing key {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"malformed event: {exc}") from None


def _process(data: dict[str, Any]) -> Process:
    data = dict(data)
    parent = data.pop("parent", None)
    user = data.pop("user", None)
    group = data.pop("group", None)
    proc = Process(**data)
    if user is not None:
        proc.user = User(**user)
    if group is not None:
        proc.group = Group(**group)
    if parent:
        proc.parent = _process(parent)
    return proc


def _to_dict(obj: Any) -> Any:
    if isinstance(obj, bytes):  # a data buffer (evt.buffer): text, non-UTF-8 bytes as surrogate escapes
        return obj.decode("utf-8", "surrogateescape")
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_dict(v) for k, v in obj.items()}
    return obj
