"""Process and fd tables alone: path resolution, fork/exec/exit, fd lifecycle, names, container ids."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from falconet.model.event import Fd
from falconet.sensor import state as s
from falconet.sensor.cgroups import ContainerRef
from falconet.sensor.record import ExecInfo


@pytest.mark.parametrize(("base", "path", "want"), [
    ("/etc", "shadow", "/etc/shadow"),
    ("/etc", "./shadow", "/etc/shadow"),
    ("/tmp/a", "../../etc/shadow", "/etc/shadow"),
    ("/tmp/a/b", "../../etc/shadow", "/tmp/etc/shadow"),
    ("/", "../../../etc//shadow", "/etc/shadow"),
    ("/home/u", "/etc/../etc/./shadow", "/etc/shadow"),
    ("/x/", "y/", "/x/y"),
    (None, "rel", "rel"),
    (None, "//etc/passwd", "/etc/passwd"),
])
def test_resolve_path(base: str | None, path: str, want: str) -> None:
    assert s.resolve_path(base, path) == want


@pytest.mark.parametrize(("cgroup", "want"), [
    ("0::/system.slice/docker-" + "a" * 64 + ".scope", "a" * 12),
    ("0::/kubepods/besteffort/pod1234/" + "b" * 64, "b" * 12),
    ("cri-containerd-" + "c" * 64 + ".scope", "c" * 12),
    ("/machine.slice/libpod-" + "d" * 64 + ".scope", "d" * 12),
    ("crio-" + "e" * 64 + ".scope", "e" * 12),
    ("0::/user.slice/user-0.slice/session-3.scope", "host"),
    ("0::/init.scope", "host"),
    (None, "host"),
    ("docker-" + "f" * 63 + ".scope", "host"),
])
def test_container_id(cgroup: str | None, want: str) -> None:
    assert s.container_id_from_cgroup(cgroup) == want


def test_fork_copies_process_and_threads_do_not() -> None:
    t = s.ProcessTable()
    parent = t.ensure(100)
    parent.cwd, parent.exepath, parent.args = "/srv", "/usr/bin/nginx", ["-g", "daemon off;"]
    t.add_fd(100, Fd(3, name="/var/log/x", flags=0))
    assert t.fork(100, 200, s.CLONE_THREAD | 0x100, ts=5) is None
    assert t.get(200) is None
    child = t.fork(100, 201, 17, ts=5)
    assert child is not None and child.ppid == 100 and child.cwd == "/srv" and child.start_ts == 5
    assert child.fds[3].name == "/var/log/x"
    t.close(201, 3)  # the child's table is its own copy
    assert t.fd(100, 3) is not None


def test_a_forked_child_copies_every_field_but_its_own() -> None:
    """ProcInfo.forked spells dataclasses.replace out for speed: it must copy every field (a field added later,
    or one left out, gives the child a default instead of the parent's value, which this catches) except the
    child's own pid, parent, start time, fd table and generation; its lists are its own."""
    parent = s.ProcInfo(100)
    for n, f in enumerate(dataclasses.fields(s.ProcInfo)):  # a distinct, non-default value in every field
        value = getattr(parent, f.name)
        if isinstance(value, bool):
            setattr(parent, f.name, True)
        elif isinstance(value, int) or f.name == "pidns_init_ts":
            setattr(parent, f.name, 1000 + n)
        elif isinstance(value, list):
            setattr(parent, f.name, [f"{f.name}-{n}"])
        elif f.name == "fds":
            parent.fds = {3: Fd(3, name="/x")}
        elif f.name == "container":
            parent.container = ContainerRef("docker", "c" * 64)
        elif f.name == "exe_file":
            parent.exe_file = ExecInfo(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, True)
        else:
            setattr(parent, f.name, f"{f.name}-{n}")
    fds = {4: Fd(4)}
    child = parent.forked(201, 5, fds)
    want = dataclasses.replace(parent, pid=201, ppid=parent.pid, start_ts=5, fds=fds, gen=0)
    assert dataclasses.asdict(child) == dataclasses.asdict(want)
    assert child.fds is fds and child.args is not parent.args and child.env is not parent.env


def test_fork_shares_the_parents_fds_but_not_its_table() -> None:
    """The table's Fds are never changed in place, so a child shares them; what it closes or opens is its own,
    and with CLONE_FILES the table itself is shared."""
    t = s.ProcessTable()
    t.add_fd(100, Fd(3, name="/var/log/x", flags=0))
    child = t.fork(100, 201, 17, ts=5)
    assert child is not None and child.fds[3] is t.fd(100, 3) and child.fds is not t.procs[100].fds
    t.add_fd(201, Fd(4, name="/y"))
    assert t.fd(100, 4) is None
    shared = t.fork(100, 202, s.CLONE_FILES, ts=6)
    assert shared is not None and shared.fds is t.procs[100].fds


def test_exec_replaces_image_and_drops_cloexec_fds() -> None:
    t = s.ProcessTable()
    p = t.ensure(7)
    p.cwd = "/home/u"
    t.add_fd(7, Fd(3, name="/a", flags=s.O_CLOEXEC))
    t.add_fd(7, Fd(4, name="/b", flags=0))
    p = t.exec(7, "./bin/tool", ["tool", "-x"], ["A=1"], "host")
    assert p.exepath == "/home/u/bin/tool" and p.exe == "tool" and p.args == ["-x"] and p.env == ["A=1"]
    assert set(p.fds) == {4}
    t.exit(7)
    assert t.get(7) is None


def test_paths_against_cwd_and_dirfd() -> None:
    t = s.ProcessTable()
    t.ensure(9).cwd = "/var/tmp"
    t.add_fd(9, Fd(5, type="directory", name="/etc"))
    assert t.abspath(9, "x") == "/var/tmp/x"
    assert t.abspath(9, "shadow", 5) == "/etc/shadow"
    assert t.abspath(9, "../etc/shadow", 5) == "/etc/shadow"
    assert t.abspath(9, "/etc/./passwd", 5) == "/etc/passwd"
    t.chdir(9, "../../etc")
    assert t.get(9).cwd == "/etc"  # type: ignore[union-attr]
    t.fchdir(9, 5)
    assert t.get(9).cwd == "/etc"  # type: ignore[union-attr]


def test_dup_and_close() -> None:
    t = s.ProcessTable()
    t.add_fd(1, Fd(3, name="/etc/shadow", flags=s.O_CLOEXEC))
    t.dup(1, 3, 10)
    fd10 = t.fd(1, 10)
    assert fd10 is not None and fd10.name == "/etc/shadow" and fd10.flags is not None
    assert not fd10.flags & s.O_CLOEXEC
    t.dup(1, 3, 11, cloexec=True)
    fd11 = t.fd(1, 11)
    assert fd11 is not None and fd11.flags is not None and fd11.flags & s.O_CLOEXEC
    t.dup(1, 99, 10)  # dup of an unknown fd: what 10 was is gone
    assert t.fd(1, 10) is None
    assert t.close(1, 3).name == "/etc/shadow"  # type: ignore[union-attr]
    assert t.fd(1, 3) is None


def test_seed_reads_this_process() -> None:
    t = s.ProcessTable()
    assert t.seed_from_proc() > 1
    me = t.get(os.getpid())
    assert me is not None
    assert me.cwd == os.getcwd()
    assert me.ppid == os.getppid()
    assert me.exepath == os.path.realpath("/proc/self/exe")
    assert me.comm == Path("/proc/self/comm").read_text().strip()
    assert me.fds  # at least stdin/stdout/stderr-like fds


def test_seeded_close_on_exec_fds_go_at_exec(tmp_path: Path) -> None:
    """An fd open before the sensor started keeps its close-on-exec bit from /proc (fdinfo), so the process's
    next exec drops it from the table, as the kernel closes it; an inheritable fd stays."""
    keep = os.open(tmp_path / "kept", os.O_WRONLY | os.O_CREAT, 0o600)  # Python makes fds non-inheritable:
    os.set_inheritable(keep, True)  # this one is inheritable, O_CLOEXEC off
    gone = os.open(tmp_path / "gone", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        t = s.ProcessTable()
        t.seed_from_proc()
        me = t.get(os.getpid())
        assert me is not None
        assert me.fds[keep].flags is not None and not me.fds[keep].flags & s.O_CLOEXEC
        assert me.fds[keep].flags & os.O_ACCMODE == os.O_WRONLY
        assert me.fds[gone].flags is not None and me.fds[gone].flags & s.O_CLOEXEC
        after = t.exec(os.getpid(), "/bin/true", ["true"], [], None)
        assert after.fds[keep].name == str(tmp_path / "kept")
        assert gone not in after.fds
    finally:
        os.close(keep)
        os.close(gone)


def test_seed_spells_a_memfd_exe_as_the_kernel_does() -> None:
    """A process running from a memfd, seeded from /proc: the same exepath an exec seen live gives."""
    import subprocess
    import sys
    import textwrap
    import time

    code = textwrap.dedent("""
        import os, shutil
        fd = os.memfd_create("seeded", 0)
        with open(shutil.which("sleep"), "rb") as src:
            os.write(fd, src.read())
        os.execv(f"/proc/self/fd/{fd}", ["sleep", "30"])
    """)
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not os.readlink(f"/proc/{child.pid}/exe").startswith("/memfd:"):  # the exec has happened
            assert time.monotonic() < deadline and child.poll() is None, "the child never ran from its memfd"
            time.sleep(0.01)
        info = s.read_proc(Path(f"/proc/{child.pid}"))
    finally:
        child.kill()
        child.wait(10)
    assert info is not None
    assert info.exepath == "/memfd:seeded (deleted)" and info.exe_from_memfd


def test_socket_table_from_proc(tmp_path: Path) -> None:
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    try:
        t = s.ProcessTable()
        t.seed_from_proc()
        me = t.get(os.getpid())
        assert me is not None
        port = srv.getsockname()[1]
        fd = me.fds[srv.fileno()]
        assert (fd.type, fd.l4proto, fd.sip, fd.sport, fd.is_server) == ("ipv4", "tcp", "127.0.0.1", port, True)
    finally:
        srv.close()


def test_names_from_passwd_and_group(tmp_path: Path) -> None:
    pw, gr = tmp_path / "passwd", tmp_path / "group"
    pw.write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/zsh\n")
    gr.write_text("root:x:0:\nstaff:x:50:alice\n")
    db = s.NameDb(pw, gr)
    assert db.user(1000) == ("alice", "/home/alice", "/bin/zsh")
    assert db.user(4242) is None
    assert db.group(50) == "staff"
    pw.write_text("bob:x:1000:1000::/home/bob:/bin/sh\n")
    os.utime(pw, (1, 1))  # a different mtime: the cache reloads
    db.refresh_if_changed()
    assert db.user(1000) == ("bob", "/home/bob", "/bin/sh")


def test_sweep_forgets_processes_that_are_gone(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    t = s.ProcessTable()
    t.ensure(1)
    t.ensure(999999)
    assert t.sweep(tmp_path) == 1
    assert set(t.procs) == {1}


def test_fd_as_copies_every_field_but_the_number_and_flags() -> None:
    """state.fd_as spells dataclasses.replace out for speed: a field added to Fd later, or one left out, would
    give a dup the default instead of the source's value, which this catches."""
    from falconet.model.event import Fd

    src = Fd(0)
    for n, f in enumerate(dataclasses.fields(Fd)):  # a distinct, non-default value in every field
        value = getattr(src, f.name)
        setattr(src, f.name, True if isinstance(value, bool) else (1000 + n if f.name in ("num", "ino", "dev",
                "flags", "cport", "sport") else f"{f.name}-{n}"))
    got = s.fd_as(src, 7, 0o2000000)
    assert got == dataclasses.replace(src, num=7, flags=0o2000000) and got is not src
