"""Field extraction over hand-built events: values, types, Falco's renderings, unknown values and errors."""

from __future__ import annotations

from typing import Any

import pytest

from falconet.rules.errors import CompileError, RuleError, UnknownFieldError
from falconet.model.event import Container, Event, Fd, Group, Process, User
from falconet.rules.sources import field_allowed
from falconet.rules.fields import INLINE, DnsCache, FieldType, catalog, resolve

NS = 1_000_000_000


def chain(*names: str) -> Process:
    """A process whose ancestors have the given names, the process first: chain("cat", "bash", "sshd")."""
    proc: Process | None = None
    for i, name in reversed(list(enumerate(names))):
        proc = Process(
            pid=100 + i, ppid=100 + i + 1, name=name, exe=name, exepath=f"/usr/bin/{name}", parent=proc
        )
    assert proc is not None
    return proc


def event(etype: str = "openat", *, proc: Process | None = None, res: int = 3, **kw: Any) -> Event:
    return Event(num=7, ts=1685022245 * NS + 478445995, type=etype, tid=100, res=res,
                 proc=proc or chain("cat", "bash", "sshd", "systemd"), **kw)  # fmt: skip


def x(name: str, evt: Event, arg: str | None = None) -> Any:
    return resolve(name, arg).extract(evt)


def test_process_and_ancestors() -> None:
    p = chain("cat", "bash", "sshd", "systemd")
    p.args = ["-n", "/etc/shadow"]
    p.cwd = "/root"
    e = event(proc=p)
    assert x("proc.name", e) == "cat"
    assert x("proc.cmdline", e) == "cat -n /etc/shadow"
    assert x("proc.args", e) == "-n /etc/shadow"
    assert x("proc.pname", e) == "bash"
    assert x("proc.pcmdline", e) == "bash"
    assert x("proc.pexepath", e) == "/usr/bin/bash"
    assert x("proc.aname", e, "0") == "cat"
    assert x("proc.aname", e, "2") == "sshd"
    assert x("proc.aname", e, "9") is None
    assert x("proc.apid", e, "1") == 101
    assert x("proc.aexepath", e, "3") == "/usr/bin/systemd"
    any_anc = resolve("proc.aname")
    assert any_anc.any_of and any_anc.extract(e) == ["bash", "sshd", "systemd"]  # parent first, not self
    assert not resolve("proc.aname", "1").any_of
    assert x("proc.cwd", e) == "/root"


def test_session_leader_and_durations() -> None:
    p = chain("cat", "bash", "sshd")
    p.sid = p.parent.sid = 101  # type: ignore[union-attr]
    p.parent.parent.sid = 1  # type: ignore[union-attr]
    p.start_ts = 1685022240 * NS
    p.exe_ino_ctime = 1685022000 * NS
    e = event(proc=p)
    assert x("proc.sname", e) == "bash"
    assert x("proc.duration", e) == 5 * NS + 478445995
    assert x("proc.exe_ino.ctime_duration_proc_start", e) == 240 * NS


def test_user_group_caps_env() -> None:
    p = chain("sudo", "bash")
    p.user = User(uid=1000, name="alice", loginuid=1000, loginname="alice")
    p.group = Group(gid=1000, name="alice")
    p.cap_effective = (1 << 21) | (1 << 0)
    p.env = ["HOME=/home/alice", "GLIBC_TUNABLES=x"]
    e = event(proc=p)
    assert (x("user.name", e), x("user.uid", e), x("user.loginuid", e)) == ("alice", 1000, 1000)
    assert (x("group.name", e), x("group.gid", e)) == ("alice", 1000)
    assert x("thread.cap_effective", e) == "CAP_CHOWN CAP_SYS_ADMIN"
    assert x("proc.env", e, "HOME") == "/home/alice"
    assert x("proc.env", e, "NOPE") is None
    assert "GLIBC_TUNABLES=x" in x("proc.env", e)


def test_open_flags_and_results() -> None:
    e = event(args={"dirfd": -100, "name": "/etc/shadow", "flags": 0o2000000 | 0o1000 | 0o1, "mode": 0},
              fd=Fd(num=3, name="/etc/shadow"))  # fmt: skip
    assert x("evt.arg.flags", e) == "O_WRONLY|O_TRUNC|O_CLOEXEC"
    assert x("evt.arg", e, "3") == "O_WRONLY|O_TRUNC|O_CLOEXEC"  # openat: fd, dirfd, name, flags, ...
    assert x("evt.arg.dirfd", e) == "AT_FDCWD"
    assert x("evt.arg.fd", e) == "<f>/etc/shadow"
    assert x("evt.rawarg.flags", e) == 0o2001001
    assert resolve("evt.rawarg.flags").type is FieldType.INT
    assert resolve("evt.rawarg.name").type is FieldType.STRING
    assert x("evt.is_open_write", e) is True and x("evt.is_open_read", e) is False
    assert (x("evt.res", e), x("evt.rawres", e), x("evt.failed", e)) == ("SUCCESS", 3, False)
    failed = event(res=-2, args={"flags": 0})
    assert (x("evt.res", failed), x("evt.rawres", failed), x("evt.failed", failed)) == ("ENOENT", -2, True)
    assert x("evt.is_open_read", failed) is True
    assert x("evt.res", event("connect", res=-115)) == "EINPROGRESS"
    assert x("evt.args", e) == (
        "fd=3(<f>/etc/shadow) dirfd=-100(AT_FDCWD) name=/etc/shadow flags=524801(O_WRONLY|O_TRUNC|O_CLOEXEC) mode=0"
    )


def test_enum_and_bit_arguments() -> None:
    assert x("evt.arg.request", event("ptrace", res=0, args={"request": 16, "pid": 42})) == "PTRACE_ATTACH"
    assert x("evt.arg.domain", event("socket", args={"domain": 17, "type": 3, "proto": 0})) == "AF_PACKET"
    assert x("evt.arg.flags", event("unshare", res=0, args={"flags": 0x10000000 | 0x20000})) == (
        "CLONE_NEWNS|CLONE_NEWUSER"
    )
    assert "S_ISUID" in x("evt.arg.mode", event("chmod", res=0, args={"filename": "/tmp/x", "mode": 0o4755}))
    assert x("evt.arg.cmd", event("bpf", args={"cmd": 5})) == "BPF_PROG_LOAD"
    setuid = event("setuid", res=0, args={"uid": 65534}, arg_text={"uid": "nobody"})
    assert x("evt.arg.uid", setuid) == "nobody"
    assert x("evt.rawarg.uid", setuid) == 65534
    assert x("evt.arg.uid", event("setuid", res=0, args={"uid": 0})) == "0"


def test_execve_arguments_come_from_the_process() -> None:
    p = chain("bash", "nginx")
    p.exe_writable, p.exe_upper_layer = True, True
    e = event("execve", proc=p, res=0, container=Container(id="ee97d9c4186f"))
    assert x("evt.arg.flags", e) == "EXE_WRITABLE|EXE_UPPER_LAYER"
    p.exe_upper_layer = False
    assert x("evt.arg.flags", e) == "EXE_WRITABLE|EXE_LOWER_LAYER"
    assert x("evt.arg.flags", event("execve", proc=p, res=0)) == "EXE_WRITABLE"  # no layers on the host
    assert x("evt.arg.res", e) == "0"
    assert x("evt.arg.pathname", e) is None  # execveat's parameter: absent on execve


def test_relative_paths_resolve_against_cwd() -> None:
    p = chain("rm", "bash")
    p.cwd = "/root"
    assert x("evt.arg.name", event("unlinkat", proc=p, res=0, args={"name": ".bash_history"})) == (
        "/root/.bash_history"
    )


def test_files() -> None:
    e = event(fd=Fd(num=3, type="file", name="/etc/ssh/sshd_config", nameraw="../ssh/sshd_config"))
    assert (x("fd.name", e), x("fd.directory", e), x("fd.filename", e)) == (
        "/etc/ssh/sshd_config", "/etc/ssh", "sshd_config",
    )  # fmt: skip
    assert x("fd.nameraw", e) == "../ssh/sshd_config"
    assert (x("fd.typechar", e), x("fd.num", e)) == ("f", 3)
    assert x("fd.sip", e) is None and x("fd.ip", e) is None
    assert x("fd.name", event(fd=None)) is None


def test_sockets_local_remote_and_networks() -> None:
    fd = Fd(num=4, type="ipv4", name="10.0.0.5:40000->1.2.3.4:3333", l4proto="tcp", sockfamily="ip",
            cip="10.0.0.5", cport=40000, sip="1.2.3.4", sport=3333, connected=True)  # fmt: skip
    e = event("connect", res=0, fd=fd)
    assert (x("fd.lip", e), x("fd.rip", e), x("fd.lport", e), x("fd.rport", e)) == (
        "10.0.0.5",
        "1.2.3.4",
        40000,
        3333,
    )
    assert resolve("fd.ip").any_of and x("fd.ip", e) == ["10.0.0.5", "1.2.3.4"]
    assert x("fd.port", e) == [40000, 3333]
    snet = resolve("fd.snet")
    assert snet.type is FieldType.IPNET and snet.literal_matcher is not None
    assert snet.literal_matcher("1.2.0.0/16")(snet.extract(e))
    assert not snet.literal_matcher("10.0.0.0/8")(snet.extract(e))
    assert resolve("fd.cnet").literal_matcher("10.0.0.0/8")(x("fd.cnet", e))  # type: ignore[misc]
    assert resolve("fd.sip").literal_matcher("1.2.3.4")("1.2.3.4")  # type: ignore[misc]
    with pytest.raises(CompileError, match="not a valid IP"):
        snet.literal_matcher("10.0.0.0/99")
    server = Fd(num=5, type="ipv6", cip="2001:db8::1", cport=5555, sip="::1", sport=22, is_server=True)
    s = event("accept4", fd=server)
    assert (x("fd.lip", s), x("fd.rip", s), x("fd.lport", s)) == ("::1", "2001:db8::1", 22)


class FixedResolvers:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []
        self.dns_cache = DnsCache(self.dns)  # resolvers own the engine's DNS cache (fields.dns)

    def hostname(self) -> str:
        return "node-1"

    def dns(self, name: str) -> list[str]:
        self.calls.append(name)
        return self.table.get(name, [])


def test_dns_names_through_the_injected_resolver() -> None:
    res = FixedResolvers({"pool.minexmr.com": ["1.2.3.4", "5.6.7.8"]})
    fd = Fd(num=4, type="ipv4", cip="10.0.0.5", cport=40000, sip="5.6.7.8", sport=4444)
    e = event("connect", res=0, fd=fd)
    bound = resolve("fd.sip.name", None, res)
    assert bound.literal_matcher is not None
    assert bound.literal_matcher("pool.minexmr.com")(bound.extract(e))
    assert not bound.literal_matcher("example.org")(bound.extract(e))
    assert res.calls[:2] == ["pool.minexmr.com", "example.org"]  # resolved when the rule compiles
    assert bound.output_value(e) == "pool.minexmr.com"
    assert resolve("evt.hostname", None, res).extract(e) == "node-1"
    assert resolve("evt.hostname").extract(e) is None  # no resolver: unknown, not a guess
    unresolved = resolve("fd.sip.name")
    assert not unresolved.literal_matcher("pool.minexmr.com")("5.6.7.8")  # type: ignore[misc]


def test_containers_and_k8s() -> None:
    host = event()
    assert (x("container.id", host), x("container.name", host), x("container.image", host)) == (
        "host",
        "host",
        None,
    )
    c = Container(id="ee97d9c4186f", name="web", image="nginx:1.27", image_repository="nginx", image_tag="1.27",
                  privileged=True, mounts=[{"source": "/var/run/docker.sock", "dest": "/sock", "mode": "",
                                            "rdwr": True, "propagation": "rprivate"}],
                  k8s_ns_name="prod", k8s_pod_name="web-0", k8s_pod_labels={"app": "web"})  # fmt: skip
    e = event(container=c)
    assert x("container.image.repository", e) == "nginx" and x("container.privileged", e) is True
    assert x("container.mount.dest", e, "/var/run/docker.sock") == "/sock"
    assert x("container.mount.dest", e, "/proc*") == "N/A"
    assert x("container.mount.source", e, "/sock") == "/var/run/docker.sock"
    assert x("container.mounts", e) == "/var/run/docker.sock:/sock::true:rprivate"
    assert (x("k8s.ns.name", e), x("k8s.pod.name", e), x("k8s.pod.label", e, "app")) == (
        "prod",
        "web-0",
        "web",
    )
    assert resolve("k8s.pod.label.app").extract(e) == "web"


def test_times() -> None:
    e = event()
    assert x("evt.time", e) == 1685022245478445995
    assert x("evt.time.iso8601", e) == "2023-05-25T13:44:05.478445995Z"
    assert x("evt.datetime", e) == "2023-05-25 13:44:05.478445995"
    assert x("evt.num", e) == 7
    assert x("evt.dir", e) == "<"
    assert resolve("evt.dir").deprecated


@pytest.mark.parametrize(
    ("name", "arg", "error"),
    [
        ("proc.nam", None, UnknownFieldError),
        ("evt.arg.nosuchparameter", None, UnknownFieldError),
        ("proc.name", "1", UnknownFieldError),
        ("proc.aname", "x", CompileError),
        ("proc.aname", "-1", CompileError),
        ("k8s.pod.label", None, CompileError),
        ("evt.arg", None, CompileError),
        ("nothing", None, UnknownFieldError),
    ],
)
def test_bad_references_raise_our_errors(name: str, arg: str | None, error: type[RuleError]) -> None:
    with pytest.raises(error) as info:
        resolve(name, arg)
    assert name.split(".")[0] in str(info.value)


def test_catalog_lists_every_field_with_a_description() -> None:
    entries = catalog()
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) > 200
    assert {"proc.aname", "evt.arg.", "fd.sip.name", "container.mount.dest"} <= set(names)
    for entry in entries:
        bound_name = entry.name.rstrip(".")
        assert entry.desc, entry.name
        if entry.arg == "none":
            assert resolve(bound_name).type is entry.type


def test_fs_path_fields_name_the_path_whatever_the_parameter() -> None:
    p = chain("rm", "bash")
    p.cwd = "/home/alice"
    assert x("fs.path.name", event("unlinkat", proc=p, res=0, args={"dirfd": -100, "name": "notes.txt"})) == (
        "/home/alice/notes.txt"
    )
    assert x(
        "fs.path.nameraw", event("unlinkat", proc=p, res=0, args={"dirfd": -100, "name": "notes.txt"})
    ) == ("notes.txt")
    assert (
        x("fs.path.name", event("mkdir", proc=p, res=0, args={"path": "/tmp/d", "mode": 0o755})) == "/tmp/d"
    )
    opened = event(fd=Fd(num=3, name="/etc/hosts", nameraw="../etc/hosts"), args={"name": "/etc/hosts"})
    assert (x("fs.path.name", opened), x("fs.path.nameraw", opened)) == ("/etc/hosts", "../etc/hosts")
    ren = event("renameat2", res=0, args={"oldpath": "/tmp/a", "newpath": "/tmp/b", "flags": 0})
    assert (x("fs.path.source", ren), x("fs.path.target", ren)) == ("/tmp/a", "/tmp/b")
    link = event("symlinkat", res=0, args={"target": "../etc/shadow", "linkpath": "/tmp/s"})
    assert (x("fs.path.source", link), x("fs.path.target", link)) == ("../etc/shadow", "/tmp/s")
    assert x("fs.path.name", ren) is None and x("fs.path.source", opened) is None


def _sample_arg(name: str) -> str:
    if name in ("proc.aname", "proc.apid", "proc.aexe", "proc.aexepath", "proc.acmdline", "proc.aargs",
                "proc.avpid", "evt.arg"):  # fmt: skip
        return "1"
    if name == "evt.arg.":
        return "flags"
    if name == "evt.rawarg.":
        return "flags"
    if name.startswith("container.mount"):
        return "/var/run/docker.sock"
    return "HOME"


@pytest.mark.parametrize("etype", ["openat", "execve", "connect", "setuid", "nosuchsyscall"])
def test_every_field_extracts_from_bare_and_full_events_without_raising(etype: str) -> None:
    # A bare event (no fd, no parent, nothing optional) and a full one: extraction must never raise,
    # whatever the event type; unknown is None.
    bare = Event(num=1, ts=0, type=etype, tid=1, res=-1, proc=Process(pid=1))
    full = event(etype, proc=chain("cat", "bash", "sshd"),
                 args={"flags": 1, "name": "x", "uid": 0, "data": "AAAA", "fd": 3},
                 fd=Fd(num=3, type="ipv4", name="1.1.1.1:1->2.2.2.2:2", cip="1.1.1.1", cport=1, sip="2.2.2.2",
                       sport=2, dev=0x800001),
                 container=Container(id="abc", mounts=[{"source": "/var/run/docker.sock", "dest": "/s"}]))  # fmt: skip
    for entry in catalog():
        name = entry.name
        if not field_allowed("syscall", name):
            continue  # k8s_audit fields read audit events (tests/k8saudit)
        if name.endswith("."):
            bound = resolve(name + _sample_arg(name))
        else:
            bound = resolve(name, _sample_arg(name) if entry.arg == "required" else None)
        for e in (bare, full):
            bound.extract(e)
            bound.output_value(e)


@pytest.mark.parametrize("name", sorted(INLINE))
def test_inline_forms_compute_what_the_extractors_do(name: str) -> None:
    bound = resolve(name)
    assert bound.inline == INLINE[name]
    code = compile(f"def f(e):\n    return {bound.inline}\n", "<inline>", "exec")
    scope: dict[str, Any] = {}
    exec(code, scope)
    proc = chain("cat", "bash")
    proc.exe_upper_layer, proc.tty, proc.cwd = True, 34816, "/root"
    samples = [
        Event(num=1, ts=0, type="openat", tid=1, res=-2, proc=Process(pid=1)),
        event(proc=proc, fd=Fd(num=3, type="file", name="/etc/passwd"), container=Container(id="abc")),
        event(proc=Process(pid=5, name="", exe="", exepath="", parent=Process(pid=1, name="")), res=0),
    ]
    for e in samples:
        assert scope["f"](e) == bound.extract(e), e
    assert resolve("proc.aname", "1").inline is None  # fields with arguments have no inline form
