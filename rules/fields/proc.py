"""proc.*, thread.*, user.*, group.*, container.* and k8s.* fields: the process context the sensor attaches.

Ancestors come from the `Process.parent` chain the sensor fills at the event, so `proc.aname[N]` is N steps
up (0 is the process itself) and `proc.aname` without an index stands for every ancestor, parent first, as
Falco walks them. Fields the sensor cannot know (thread CPU times, cgroup names, probe status) are registered so
that rules using them load, and read as unknown (None).
"""

from __future__ import annotations

import fnmatch
from operator import attrgetter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .registry import PREFIX_FIELDS, FieldSpec, FieldType, parse_index, simple, with_arg

if TYPE_CHECKING:
    from falconet.model.event import Event, Process

S, P, N, B, A, R = (
    FieldType.STRING, FieldType.PATH, FieldType.INT, FieldType.BOOL, FieldType.ABSTIME, FieldType.RELTIME,
)  # fmt: skip

SHELLS = frozenset({"ash", "bash", "csh", "ksh", "sh", "tcsh", "zsh", "dash", "fish"})

CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip


def render_caps(mask: int) -> str:
    """Falco's text for a capability set: the names of the set bits, space separated."""
    return " ".join(name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1)


def ancestor(proc: Process | None, n: int) -> Process | None:
    while n > 0 and proc is not None:
        proc = proc.parent
        n -= 1
    return proc


def ancestors(proc: Process) -> Iterator[Process]:
    p = proc.parent
    while p is not None:
        yield p
        p = p.parent


def _nz(value: Any) -> Any:
    """Empty strings from the sensor mean "not known"."""
    return value if value != "" else None


# --- proc.* -----------------------------------------------------------------------------------------------

_PROC: dict[str, tuple[FieldType, Callable[[Process], Any], str]] = {
    "pid": (N, lambda p: p.pid, "the id of the process"),
    "ppid": (N, lambda p: p.ppid, "the id of the parent process"),
    "vpid": (N, lambda p: p.vpid, "the id of the process in its own pid namespace"),
    "name": (S, lambda p: _nz(p.name), "the name (comm) of the executable, at most 15 characters"),
    "exe": (S, lambda p: _nz(p.exe), "the first command-line argument (argv[0])"),
    "exepath": (P, lambda p: _nz(p.exepath), "the full path of the executable"),
    "args": (S, lambda p: " ".join(p.args) if p.args_known else None, "the command-line arguments, space separated"),
    "cmdline": (S, lambda p: p.cmdline if p.name and p.args_known else None, "name and arguments"),
    "cmdnargs": (N, lambda p: len(p.args) if p.args_known else None, "the number of command-line arguments"),
    "cmdlenargs": (
        N,
        lambda p: sum(len(a) for a in p.args) + max(len(p.args) - 1, 0) if p.args_known else None,
        "length of args",
    ),
    "exeline": (S, lambda p: " ".join([p.exe, *p.args]) if p.exe else None, "argv[0] and arguments"),
    "cwd": (P, lambda p: p.cwd, "the current working directory"),
    "tty": (N, lambda p: p.tty, "the controlling terminal's device number, 0 for none"),
    "sid": (N, lambda p: p.sid, "the session id"),
    "vpgid": (N, lambda p: p.vpgid, "the process group id in the process's pid namespace"),
    "pgid": (N, lambda p: p.pgid, "the process group id"),
    "is_vpgid_leader": (B, lambda p: p.vpid == p.vpgid if p.vpgid else None, "leader of its process group"),
    "is_sid_leader": (B, lambda p: p.pid == p.sid if p.sid else None, "leader of its session"),
    "is_exe_writable": (B, lambda p: p.exe_writable, "the executable is writable by the process's user"),
    "is_exe_upper_layer": (B, lambda p: p.exe_upper_layer, "the executable is in an overlayfs upper layer"),
    "is_exe_from_memfd": (B, lambda p: p.exe_from_memfd, "the executable is a memfd (fileless execution)"),
    "exe_ino": (N, lambda p: p.exe_ino, "the inode number of the executable"),
    "exe_ino.ctime": (A, lambda p: p.exe_ino_ctime, "the executable's inode change time"),
    "exe_ino.mtime": (A, lambda p: p.exe_ino_mtime, "the executable's modification time"),
    "exe_ino.ctime_duration_proc_start": (
        R,
        lambda p: p.start_ts - p.exe_ino_ctime if p.exe_ino_ctime is not None and p.start_ts else None,
        "ns between the executable's ctime and the process start",
    ),
    "pid.ts": (A, lambda p: p.start_ts or None, "the start time of the process"),
    "pname": (S, lambda p: _nz(p.parent.name) if p.parent else None, "the name of the parent"),
    "pexe": (S, lambda p: _nz(p.parent.exe) if p.parent else None, "argv[0] of the parent"),
    "pexepath": (P, lambda p: _nz(p.parent.exepath) if p.parent else None, "the parent's executable path"),
    "pcmdline": (
        S,
        lambda p: p.parent.cmdline if p.parent and p.parent.name and p.parent.args_known else None,
        "the parent's cmdline",
    ),
    "pvpid": (N, lambda p: p.parent.vpid if p.parent else None, "the parent's vpid"),
    "ppid.ts": (A, lambda p: (p.parent.start_ts or None) if p.parent else None, "the parent's start time"),
    "sname": (S, lambda p: _session_leader(p, "name"), "the name of the session leader"),
    "sid.exe": (S, lambda p: _session_leader(p, "exe"), "argv[0] of the session leader"),
    "sid.exepath": (P, lambda p: _session_leader(p, "exepath"), "the session leader's executable path"),
    "vpgid.name": (S, lambda p: _group_leader(p, "name"), "the name of the process group leader"),
    "vpgid.exe": (S, lambda p: _group_leader(p, "exe"), "argv[0] of the process group leader"),
    "vpgid.exepath": (P, lambda p: _group_leader(p, "exepath"), "the group leader's executable path"),
    "loginshellid": (N, lambda p: _login_shell(p), "the pid of the oldest shell among the ancestors"),
    "nthreads": (N, lambda p: None, "not tracked by Falconet's sensor"),
    "nchilds": (N, lambda p: None, "not tracked by Falconet's sensor"),
    "pidns_init_start_ts": (A, lambda p: None, "not tracked by Falconet's sensor"),
    "exe_ino.ctime_duration_pidns_start": (R, lambda p: None, "not tracked by Falconet's sensor"),
    "is_container_healthcheck": (B, lambda p: None, "not tracked by Falconet's sensor"),
    "is_container_liveness_probe": (B, lambda p: None, "not tracked by Falconet's sensor"),
    "is_container_readiness_probe": (B, lambda p: None, "not tracked by Falconet's sensor"),
    "fdopencount": (N, lambda p: None, "not tracked by Falconet's sensor"),
    "stdin.type": (S, lambda p: None, "not tracked by Falconet's sensor"),
    "stdout.type": (S, lambda p: None, "not tracked by Falconet's sensor"),
    "stderr.type": (S, lambda p: None, "not tracked by Falconet's sensor"),
}


def _session_leader(p: Process, attr: str) -> Any:
    # Falco walks up to the highest ancestor still in the same session: that is the session leader.
    if not p.sid:
        return None
    if p.pid == p.sid:
        return _nz(getattr(p, attr))
    best: Process | None = None
    for a in ancestors(p):
        if a.sid != p.sid:
            break
        best = a
    return _nz(getattr(best, attr)) if best is not None else None


def _group_leader(p: Process, attr: str) -> Any:
    if not p.vpgid:
        return None
    if p.vpid == p.vpgid:
        return _nz(getattr(p, attr))
    for a in ancestors(p):
        if a.vpid == p.vpgid:
            return _nz(getattr(a, attr))
    return None


def _login_shell(p: Process) -> int | None:
    found = p.pid if p.name in SHELLS else None
    for a in ancestors(p):
        if a.name in SHELLS:
            found = a.pid
    return found


def _proc_field(getter: Callable[[Process], Any]) -> Callable[[Event], Any]:
    return lambda e: getter(e.proc)


for _key, (_type, _get, _desc) in _PROC.items():
    simple(f"proc.{_key}", _type, _proc_field(_get), _desc)

# The fields nearly every rule reads, as single closures over the event (one call instead of two): these are
# evaluated millions of times, the generic wrapper above is for the rest.
_FAST: dict[str, Callable[[Event], Any]] = {
    "pid": attrgetter("proc.pid"),
    "ppid": attrgetter("proc.ppid"),
    "vpid": attrgetter("proc.vpid"),
    "tty": attrgetter("proc.tty"),
    "sid": attrgetter("proc.sid"),
    "cwd": attrgetter("proc.cwd"),
    "name": lambda e: e.proc.name or None,
    "exe": lambda e: e.proc.exe or None,
    "exepath": lambda e: e.proc.exepath or None,
    "args": lambda e: " ".join(p.args) if (p := e.proc).args_known else None,
    "cmdline": lambda e: ((" ".join([p.name, *p.args]) if p.args else p.name) if (p := e.proc).name and p.args_known
                          else None),
    "pname": lambda e: (p.name or None) if (p := e.proc.parent) is not None else None,
    "pexe": lambda e: (p.exe or None) if (p := e.proc.parent) is not None else None,
    "pexepath": lambda e: (p.exepath or None) if (p := e.proc.parent) is not None else None,
    "is_exe_upper_layer": attrgetter("proc.exe_upper_layer"),
    "is_exe_from_memfd": attrgetter("proc.exe_from_memfd"),
    "is_exe_writable": attrgetter("proc.exe_writable"),
}
for _key, _fn in _FAST.items():
    _type, _get, _desc = _PROC[_key]
    simple(f"proc.{_key}", _type, _fn, _desc)


simple(
    "proc.duration", R, lambda e: e.ts - e.proc.start_ts if e.proc.start_ts else None, "ns since the start"
)
simple(
    "proc.ppid.duration",
    R,
    lambda e: e.ts - e.proc.parent.start_ts if e.proc.parent and e.proc.parent.start_ts else None,
    "ns since the parent started",
)
simple(
    "proc.is_exe_lower_layer",
    B,
    lambda e: (not e.proc.exe_upper_layer) if e.container.id != "host" else None,
    "in a container, the executable comes from the image (not the upper layer)",
)


def _ancestor_field(name: str, ftype: FieldType, getter: Callable[[Process], Any]) -> None:
    """proc.aXXX[N]: N levels up (0 = the process); without N, any ancestor (parent first)."""

    def build(arg: str | None) -> Callable[[Event], Any]:
        if arg is None:
            return lambda e: [v for v in (getter(a) for a in ancestors(e.proc)) if v is not None]
        n = parse_index(arg, name)

        def one(e: Event) -> Any:
            a = ancestor(e.proc, n)
            return getter(a) if a is not None else None

        return one

    with_arg(name, ftype, build, "optional", f"ancestor's {name[6:]}", any_of_without_arg=True)


_ancestor_field("proc.aname", S, lambda p: _nz(p.name))
_ancestor_field("proc.apid", N, lambda p: p.pid)
_ancestor_field("proc.aexe", S, lambda p: _nz(p.exe))
_ancestor_field("proc.aexepath", P, lambda p: _nz(p.exepath))
_ancestor_field("proc.acmdline", S, lambda p: p.cmdline if p.name and p.args_known else None)
_ancestor_field("proc.aargs", S, lambda p: " ".join(p.args) if p.args_known else None)
_ancestor_field("proc.avpid", N, lambda p: p.vpid)


def _env_value(env: list[str], key: str) -> str | None:
    prefix = key + "="
    for item in env:
        if item.startswith(prefix):
            return item[len(prefix) :]
    return None


def _env_build(arg: str | None) -> Callable[[Event], Any]:
    if arg is None:
        return lambda e: " ".join(p.env) if (p := e.proc).args_known else None
    key = arg
    return lambda e: _env_value(e.proc.env, key)


def _aenv_build(arg: str | None) -> Callable[[Event], Any]:
    if arg is None:
        return lambda e: " ".join(p.env) if (p := e.proc.parent) and p.args_known else None
    key = arg

    def find(e: Event) -> str | None:
        p: Process | None = e.proc
        while p is not None:
            v = _env_value(p.env, key)
            if v is not None:
                return v
            p = p.parent
        return None

    return find


with_arg("proc.env", S, _env_build, "optional", "the environment, or one variable: proc.env[HOME]")
with_arg("proc.aenv", S, _aenv_build, "optional", "a variable from the process or its nearest ancestor")

# --- thread.* ----------------------------------------------------------------------------------------------

simple("thread.tid", N, lambda e: e.tid, "the thread id")
simple(
    "thread.vtid", N, lambda e: e.proc.vpid if e.tid == e.proc.pid else None, "the thread id in its pid ns"
)
simple("thread.ismain", B, lambda e: e.tid == e.proc.pid, "the thread is the process's main thread")
simple("thread.nametid", S, lambda e: f"{e.proc.name}{e.tid}", "name and thread id")
simple("thread.cap_permitted", S, lambda e: render_caps(e.proc.cap_permitted), "permitted capabilities")
simple("thread.cap_effective", S, lambda e: render_caps(e.proc.cap_effective), "effective capabilities")
simple("thread.cap_inheritable", S, lambda e: render_caps(e.proc.cap_inheritable), "inheritable capabilities")
simple("thread.exectime", R, lambda e: None, "not tracked by Falconet's sensor")
simple("thread.totexectime", R, lambda e: None, "not tracked by Falconet's sensor")
simple("thread.cgroups", S, lambda e: None, "not tracked by Falconet's sensor")
with_arg("thread.cgroup", S, lambda _a: lambda e: None, "required", "not tracked by Falconet's sensor")

# --- user.* / group.* -----------------------------------------------------------------------------------------

simple("user.uid", N, attrgetter("proc.user.uid"), "the user id")
simple("user.name", S, attrgetter("proc.user.name"), "the user name")
simple("user.homedir", P, lambda e: e.proc.user.homedir, "the user's home directory")
simple("user.shell", P, lambda e: e.proc.user.shell, "the user's shell")
simple("user.loginuid", N, attrgetter("proc.user.loginuid"), "the audit login uid, -1 when never logged in")
simple("user.loginname", S, lambda e: e.proc.user.loginname, "the name of the login uid")
simple("group.gid", N, lambda e: e.proc.group.gid, "the group id")
simple("group.name", S, lambda e: e.proc.group.name, "the group name")

# --- container.* ------------------------------------------------------------------------------------------


def _in_container(get: Callable[[Event], Any]) -> Callable[[Event], Any]:
    return lambda e: get(e) if e.container.id != "host" else None


simple("container.id", S, attrgetter("container.id"), 'the container id (12 characters), "host" on the host')
simple("container.full_id", S, lambda e: e.container.full_id if e.container.full_id != "host" else e.container.id,
       'the full container id, "host" on the host')
simple("container.name", S, lambda e: e.container.name if e.container.id != "host" else "host", "the name")
simple("container.image", S, _in_container(lambda e: e.container.image), "the image, e.g. nginx:1.27")
simple("container.image.id", S, _in_container(lambda e: e.container.image_id), "the image id")
simple("container.image.repository", S, _in_container(lambda e: e.container.image_repository), "repository")
simple("container.image.tag", S, _in_container(lambda e: e.container.image_tag), "the image tag")
simple("container.image.digest", S, _in_container(lambda e: e.container.image_digest), "the image digest")
simple("container.type", S, lambda e: e.container.type if e.container.id != "host" else "host", "runtime")
simple("container.privileged", B, _in_container(lambda e: e.container.privileged), "privileged container")
simple("container.start_ts", A, _in_container(lambda e: e.container.start_ts), "the container's start time")
simple(
    "container.duration",
    R,
    _in_container(lambda e: e.ts - e.container.start_ts if e.container.start_ts else None),
    "ns since the container started",
)
simple("container.host_pid", B, _in_container(lambda e: e.container.host_pid), "shares the host's pid ns")
simple("container.host_network", B, _in_container(lambda e: e.container.host_network), "host network ns")
simple("container.host_ipc", B, _in_container(lambda e: e.container.host_ipc), "shares the host's ipc ns")
simple("container.ip", S, _in_container(lambda e: e.container.ip), "the container's main IP address")
for _probe in ("healthcheck", "liveness_probe", "readiness_probe", "cni.json"):
    simple(f"container.{_probe}", S, lambda e: None, "not tracked by Falconet's sensor")
simple(
    "container.info",
    S,
    lambda e: "",
    "deprecated: outputs replace %container.info with the container fields",
    deprecated="%container.info is deprecated and replaced by an empty string",
)


def _mount_text(m: dict[str, Any]) -> str:
    rdwr = "true" if m.get("rdwr", True) else "false"
    return f"{m.get('source', '')}:{m.get('dest', '')}:{m.get('mode', '')}:{rdwr}:{m.get('propagation', '')}"


simple(
    "container.mounts",
    S,
    _in_container(lambda e: ",".join(_mount_text(m) for m in e.container.mounts)),
    "source:dest:mode:rdwr:propagation of each mount, comma separated",
)

NO_MOUNT = "N/A"
"""What container.mount.*[X] gives for a container without such a mount (Falco prints N/A, rules test it)."""


def _mount_build(key: str, by: str) -> Callable[[str | None], Callable[[Event], Any]]:
    """container.mount.KEY[ARG]: ARG is a mount number or a glob over the mount's `by` side."""

    def build(arg: str | None) -> Callable[[Event], Any]:
        assert arg is not None
        index = int(arg) if arg.isdigit() else None

        def get(e: Event) -> Any:
            if e.container.id == "host":
                return None
            mounts = e.container.mounts
            if index is not None:
                m = mounts[index] if index < len(mounts) else None
            else:
                m = next((x for x in mounts if fnmatch.fnmatchcase(str(x.get(by, "")), arg)), None)
            if m is None:
                return NO_MOUNT
            if key == "":
                return _mount_text(m)
            value = m.get(key)
            if key == "rdwr":
                return "true" if value is None or value else "false"
            return NO_MOUNT if value is None else str(value)

        return get

    return build


with_arg("container.mount", S, _mount_build("", "source"), "required", "a mount by number or source glob")
with_arg(
    "container.mount.source", S, _mount_build("source", "dest"), "required", "source of a mount, by dest"
)
with_arg("container.mount.dest", S, _mount_build("dest", "source"), "required", "dest of a mount, by source")
with_arg("container.mount.mode", S, _mount_build("mode", "source"), "required", "mode of a mount")
with_arg("container.mount.rdwr", S, _mount_build("rdwr", "source"), "required", "read-write mount")
with_arg("container.mount.propagation", S, _mount_build("propagation", "source"), "required", "propagation")
simple(
    "container.labels",
    S,
    _in_container(lambda e: ", ".join(f"{k}:{v}" for k, v in e.container.labels.items()) or None),
    "the container's labels as key:value, comma separated",
)


def _container_label_build(arg: str | None) -> Callable[[Event], Any]:
    key = arg or ""
    return lambda e: e.container.labels.get(key) if e.container.id != "host" else None


with_arg("container.label", S, _container_label_build, "required", "one container label: container.label[app]")

# --- k8s.* (from the container runtime's pod labels) ---------------------------------------------------------

simple("k8s.ns.name", S, lambda e: e.container.k8s_ns_name, "the pod's namespace")
simple("k8s.pod.name", S, lambda e: e.container.k8s_pod_name, "the pod's name")
simple("k8s.pod.uid", S, lambda e: e.container.k8s_pod_uid, "the pod's uid")
simple("k8s.pod.id", S, lambda e: e.container.k8s_pod_uid, "the pod's uid (older name)")
simple(
    "k8s.pod.sandbox_id",
    S,
    lambda e: e.container.k8s_pod_sandbox_id[:12] if e.container.k8s_pod_sandbox_id else None,
    "the pod sandbox's id (12 characters)",
)
simple("k8s.pod.full_sandbox_id", S, lambda e: e.container.k8s_pod_sandbox_id, "the pod sandbox's full id")
simple("k8s.pod.ip", S, lambda e: e.container.k8s_pod_ip, "the pod's IP (none for a host-network pod)")
simple("k8s.pod.cni.json", S, lambda e: None, "not tracked by Falconet's sensor")
simple(
    "k8s.pod.labels",
    S,
    lambda e: ", ".join(f"{k}:{v}" for k, v in e.container.k8s_pod_labels.items())
    if e.container.k8s_pod_labels
    else None,
    "the pod's labels as key:value, comma separated",
)


def _label_build(arg: str | None) -> Callable[[Event], Any]:
    key = arg or ""
    return lambda e: e.container.k8s_pod_labels.get(key)


with_arg("k8s.pod.label", S, _label_build, "required", "one pod label: k8s.pod.label[app]")

# Kubernetes metadata beyond the pod came from Falco's k8s client, now the k8smeta plugin: the names load
# (old rules use them) and read as unknown.
_K8S_DEPRECATED = "deprecated in Falco (use the k8smeta plugin); unknown in Falconet"
for _obj in ("ns", "rc", "svc", "rs", "deployment"):
    for _attr in ("name", "id", "uid", "labels"):
        if f"k8s.{_obj}.{_attr}" not in ("k8s.ns.name",):
            simple(f"k8s.{_obj}.{_attr}", S, lambda e: None, _K8S_DEPRECATED)
    with_arg(f"k8s.{_obj}.label", S, lambda _a: lambda e: None, "required", _K8S_DEPRECATED)

# The dotted spellings of keyed fields (k8s.pod.label.app = k8s.pod.label[app]), which Falco accepts too.
PREFIX_FIELDS["k8s.pod.label."] = FieldSpec("k8s.pod.label", S, _label_build, "required", desc="a pod label")
PREFIX_FIELDS["container.label."] = FieldSpec(
    "container.label", S, _container_label_build, "required", desc="a container label"
)

# --- kernel facts for container rules (issue 9): read by the sensor at the syscall, see docs/containers.md ----
# Registered after the generic blocks above, which they supersede for these names.

simple(
    "thread.vtid",
    N,
    lambda e: e.vtid if e.vtid is not None else (e.proc.vpid if e.tid == e.proc.pid else None),
    "the thread id in its own pid namespace",
)
simple(
    "proc.pidns_init_start_ts",
    A,
    lambda e: e.proc.pidns_init_start_ts,
    "the start time of the init process of the process's pid namespace",
)


def _ctime_after_pidns(p: Process) -> int | None:
    """ns from the pid namespace's start to the executable's ctime; 0 when the file is older than the
    namespace (a binary changed after the container started is what this field exists to show)."""
    if p.exe_ino_ctime is None or p.pidns_init_start_ts is None:
        return None
    return max(p.exe_ino_ctime - p.pidns_init_start_ts, 0)


simple(
    "proc.exe_ino.ctime_duration_pidns_start",
    R,
    lambda e: _ctime_after_pidns(e.proc),
    "ns between the pid namespace's start and the executable's ctime, when the ctime is later",
)
simple(
    "container.full_id",
    S,
    attrgetter("container.full_id"),
    'the container id as the runtime has it (64 characters), "host" on the host',
)
