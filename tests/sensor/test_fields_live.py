"""Fields Falco's upstream rules read that only the kernel can give right, proven with the real sensor: real
processes doing real syscalls, and (where a rule is the point) Falco's rules loaded unmodified from
../shared/upstream-rules/current deciding on the live events.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from falconet.model.event import Event
from falconet.rules.engine import Engine, Resolvers
from falconet.rules.fields import resolve
from resources import shared_path

from .conftest import PY, LiveSensor, collect, start_or_skip

from falconet.sensor import SensorConfig

pytestmark = [pytest.mark.bpf, pytest.mark.root, pytest.mark.upstream]

TYPES = {"execve", "execveat", "memfd_create", "sendto", "recvfrom", "setuid", "read", "unshare"}


@pytest.fixture(scope="module")
def sensor() -> Iterator[LiveSensor]:
    live = LiveSensor(start_or_skip(SensorConfig(ringbuf_bytes=64 << 20, syscalls=set(TYPES))))
    try:
        yield live
    finally:
        live.close()


def _upstream(*files: str) -> Engine:
    paths = [shared_path("upstream-rules", "current", f) for f in files]
    return Engine.from_files(paths, rule_matching="all", resolvers=Resolvers.local())


def _rules_fired(engine: Engine, e: Event) -> list[str]:
    return [a.rule for a in engine.process(e)]


def _run(code: str) -> str:
    return subprocess.run([PY, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True,
                          timeout=60).stdout


# --- proc.exepath from the kernel's executable file -------------------------------------------------------


MEMFD_EXEC = """
    import ctypes, os, sys
    fd = os.memfd_create("falconet-fileless", 0)
    with open("/bin/true", "rb") as src:
        os.write(fd, src.read())
    pid = os.fork()
    if pid == 0:
        if sys.argv[1] == "proc":
            os.execv(f"/proc/self/fd/{fd}", ["fileless", "ck-memfd-proc"])
        libc = ctypes.CDLL(None, use_errno=True)
        argv = (ctypes.c_char_p * 3)(b"fileless", b"ck-memfd-at", None)
        envp = (ctypes.c_char_p * 1)(None)
        libc.syscall(322, fd, b"", argv, envp, 0x1000)   # execveat(fd, "", AT_EMPTY_PATH)
        os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    print(pid, flush=True)
"""


@pytest.mark.parametrize("how", ["proc", "execveat"])
def test_memfd_exec_is_fileless_and_fires_upstream_rule(sensor: LiveSensor, how: str) -> None:
    marker = "ck-memfd-proc" if how == "proc" else "ck-memfd-at"
    code = textwrap.dedent(MEMFD_EXEC)

    def workload() -> int:
        out = subprocess.run([PY, "-c", code, how], check=True, capture_output=True, text=True, timeout=60)
        return int(out.stdout)

    pid, evs = collect(sensor, workload, lambda c, e: e.proc.pid == c and e.type.startswith("execve")
                       and e.res == 0 and marker in e.proc.args, lambda k: len(k) >= 1)
    e = evs[0]
    assert e.type == ("execve" if how == "proc" else "execveat")
    assert e.proc.exepath == "/memfd:falconet-fileless (deleted)"
    assert resolve("proc.is_exe_from_memfd").extract(e) is True
    assert resolve("proc.exepath").extract(e) == "/memfd:falconet-fileless (deleted)"
    assert "Fileless execution via memfd_create" in _rules_fired(_upstream("falco_rules.yaml"), e)


def test_execveat_empty_path_names_the_new_image(sensor: LiveSensor, tmp_path: Path) -> None:
    """execveat(fd, "", AT_EMPTY_PATH) of a file: the exepath is that file, not the image that called it."""
    target = tmp_path / "falconet-true"
    target.write_bytes(Path("/bin/true").read_bytes())
    target.chmod(0o755)
    code = f"""
        import ctypes, os
        fd = os.open({str(target)!r}, os.O_RDONLY)
        pid = os.fork()
        if pid == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            argv = (ctypes.c_char_p * 3)(b"renamed", b"ck-execveat-file", None)
            envp = (ctypes.c_char_p * 1)(None)
            libc.syscall(322, fd, b"", argv, envp, 0x1000)
            os._exit(99)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        print(pid, flush=True)
    """
    pid, evs = collect(sensor, lambda: int(_run(code)), lambda c, e: e.proc.pid == c and e.type == "execveat"
                       and e.res == 0, lambda k: len(k) >= 1)
    e = evs[0]
    assert e.proc.exepath == str(target) and e.args["trusted_exepath"] == str(target)
    assert e.proc.exe_from_memfd is False and e.proc.exe_ino == os.stat(target).st_ino


def test_exepath_through_symlink_and_of_a_deleted_file(sensor: LiveSensor, tmp_path: Path) -> None:
    """The kernel's path is the file's, not the name used to reach it (a symlink resolves), and an unlinked
    file reads as d_path spells it."""
    real = tmp_path / "real-true"
    real.write_bytes(Path("/bin/true").read_bytes())
    real.chmod(0o755)
    link = tmp_path / "link-true"
    link.symlink_to(real)
    _, evs = collect(sensor, lambda: subprocess.run([str(link), "ck-link"], check=True, timeout=30).returncode,
                     lambda _c, e: e.type == "execve" and e.res == 0 and "ck-link" in e.proc.args,
                     lambda k: len(k) >= 1)
    assert evs[0].proc.exepath == str(real)
    code = f"""
        import os
        fd = os.open({str(real)!r}, os.O_RDONLY)
        os.unlink({str(real)!r})
        pid = os.fork()
        if pid == 0:
            os.execv(f"/proc/self/fd/{{fd}}", ["gone", "ck-deleted"])
        os.waitpid(pid, 0)
        print(pid, flush=True)
    """
    _, evs = collect(sensor, lambda: int(_run(code)), lambda c, e: e.proc.pid == c and e.type == "execve"
                     and e.res == 0, lambda k: len(k) >= 1)
    assert evs[0].proc.exepath == str(real) + " (deleted)"


# --- fd.name_changed: an unconnected UDP socket talking to a new peer --------------------------------------


UDP_RULE = """
- rule: udp peer changed
  desc: the UDP branch of Falco's outbound/inbound macros
  condition: >
    evt.type in (sendto, sendmsg, recvfrom, recvmsg) and fd.l4proto != tcp and fd.connected=false
    and fd.name_changed=true and (fd.typechar = 4 or fd.typechar = 6) and evt.rawres >= 0
  output: peer %fd.name
  priority: NOTICE
"""


def test_udp_sendto_and_recvfrom_to_a_new_peer_change_the_fd_name(sensor: LiveSensor) -> None:
    code = """
        import os, socket
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 0))
        q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); q.bind(("127.0.0.1", 0))
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.sendto(b"1", r.getsockname())      # new peer
        a.sendto(b"2", r.getsockname())      # same peer
        a.sendto(b"3", q.getsockname())      # another peer
        b.sendto(b"4", r.getsockname())
        r.recvfrom(16); r.recvfrom(16)       # both from a
        r.recvfrom(16)                       # from b
        print(os.getpid(), a.fileno(), r.getsockname()[1], q.getsockname()[1], a.getsockname()[1],
              b.getsockname()[1], flush=True)
    """
    ctx, evs = collect(sensor, lambda: [int(x) for x in _run(code).split()],
                       lambda c, e: e.proc.pid == c[0] and e.type in ("sendto", "recvfrom"),
                       lambda k: len(k) >= 7)
    _pid, afd, rport, qport, aport, bport = ctx
    sends = [(e.fd.num, e.fd.name, e.fd.name_changed) for e in evs if e.type == "sendto"]  # type: ignore[union-attr]
    assert sends[:3] == [(afd, f"0.0.0.0:{aport}->127.0.0.1:{rport}", True),
                         (afd, f"0.0.0.0:{aport}->127.0.0.1:{rport}", False),
                         (afd, f"0.0.0.0:{aport}->127.0.0.1:{qport}", True)]
    assert sends[3][2] is True
    recvs = [e for e in evs if e.type == "recvfrom"]
    assert [e.fd.name_changed for e in recvs] == [True, False, True]  # type: ignore[union-attr]
    assert all(e.fd.l4proto == "udp" and e.fd.connected is False for e in evs)  # type: ignore[union-attr]
    assert f":{aport}" in (recvs[0].fd.name or "") and f":{bport}" in (recvs[2].fd.name or "")  # type: ignore[union-attr]
    engine = Engine.from_texts([("udp.yaml", UDP_RULE)], rule_matching="all", resolvers=Resolvers.local())
    assert [bool(engine.process(e)) for e in evs if e.type == "sendto"] == [True, False, True, True]


# --- uid arguments rendered as user names ------------------------------------------------------------------


def test_setuid_argument_renders_as_user_name_so_exclusions_apply(sensor: LiveSensor) -> None:
    """root -> nobody: the result is "nobody becoming itself", which Falco's exclusion spares; daemon trying to
    become nobody (refused) is what "Non sudo setuid" is about."""
    code = """
        import os
        def child(first):
            pid = os.fork()
            if pid == 0:
                if first is not None:
                    os.setresuid(first, first, first)
                try:
                    os.setuid(65534)
                except PermissionError:
                    os._exit(3)
                os._exit(0)
            return pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        a, ra = child(None)   # root becomes nobody
        b, rb = child(1)      # daemon tries to become nobody
        assert (ra, rb) == (0, 3), (ra, rb)
        print(a, b, flush=True)
    """
    (a, b), evs = collect(sensor, lambda: [int(x) for x in _run(code).split()],
                          lambda c, e: e.type == "setuid" and e.proc.pid in c, lambda k: len(k) >= 2)
    by_pid = {e.proc.pid: e for e in evs}
    became, refused = by_pid[a], by_pid[b]
    assert became.res == 0 and became.proc.user.name == "nobody" and became.arg_text == {"uid": "nobody"}
    assert refused.res < 0 and refused.proc.user.name == "daemon" and refused.arg_text == {"uid": "nobody"}
    assert resolve("evt.arg.uid").extract(became) == "nobody"
    assert resolve("evt.rawarg.uid").extract(became) == 65534
    engine = _upstream("falco_rules.yaml", "falco-incubating_rules.yaml")
    engine.enable_rules("Non sudo setuid")
    assert "Non sudo setuid" not in _rules_fired(engine, became)
    assert "Non sudo setuid" in _rules_fired(engine, refused)


# --- evt.buffer: the first snaplen bytes of a read/recv/send -----------------------------------------------

JAVA_RULE = "Java Process Class File Download"
CLASS_FILE = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(range(192))  # a class file's magic, then more


def _java_download(sensor: LiveSensor) -> list[Event]:
    """A process whose argv[0] is a java path receives a class file over a loopback TCP connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    code = f"""
        import os, socket
        c = socket.create_connection(("127.0.0.1", {port}))
        got = b""
        while len(got) < {len(CLASS_FILE)}:
            got += c.recv(4096)
        print(os.getpid(), flush=True)
    """

    def workload() -> int:
        child = subprocess.Popen(["/usr/lib/jvm/bin/java", "-c", textwrap.dedent(code)], executable=PY,
                                 stdout=subprocess.PIPE, text=True)
        conn, _ = srv.accept()
        conn.sendall(CLASS_FILE)
        out, _ = child.communicate(timeout=60)
        conn.close()
        return int(out)

    try:
        _, evs = collect(sensor, workload, lambda c, e: e.proc.pid == c and e.type == "recvfrom" and e.res > 0,
                         lambda k: len(k) >= 1)
    finally:
        srv.close()
    return evs


def test_java_class_file_received_over_loopback_fires_upstream_rule(sensor: LiveSensor) -> None:
    e = _java_download(sensor)[0]
    data = resolve("evt.buffer").extract(e)
    assert isinstance(data, bytes) and data == CLASS_FILE[:min(80, e.res)]  # Falco's default snaplen
    assert resolve("evt.rawarg.data").extract(e) == data.decode("utf-8", "surrogateescape")
    assert e.proc.exe == "/usr/lib/jvm/bin/java" and e.fd is not None and e.fd.type == "ipv4"
    engine = _upstream("falco_rules.yaml", "falco-sandbox_rules.yaml")
    engine.enable_rules(JAVA_RULE)
    assert JAVA_RULE in _rules_fired(engine, e)
    # what the daemon asks the sensor for: the rule reads the buffer of recvfrom
    types = engine.buffer_event_types()
    assert types is not None and "recvfrom" in types


def test_buffers_are_copied_only_for_the_syscalls_asked(sensor: LiveSensor) -> None:
    sensor.sensor.set_data_syscalls({"read"})
    try:
        e = _java_download(sensor)[0]
    finally:
        sensor.sensor.set_data_syscalls(None)
    assert e.res > 0 and e.args["data"] is None and resolve("evt.buffer").extract(e) is None


# --- credentials from before the syscall -------------------------------------------------------------------

UNSHARE_RULE = "Change namespace privileges via unshare"
CAP_SYS_ADMIN = 21
UNSHARE_CODE = """
    import ctypes, os
    os.setgroups([]); os.setresgid(1000, 1000, 1000); os.setresuid(1000, 1000, 1000)   # drops every capability
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(0x10000000) == 0, ctypes.get_errno()                            # CLONE_NEWUSER
    print(os.getpid(), flush=True)
"""


def test_successful_unshare_of_a_user_namespace_fires_upstream_rule(sensor: LiveSensor) -> None:
    """An unprivileged process in a container makes itself a user namespace: the kernel gives it every
    capability there, but what the rule asks is what it had before, which is none."""
    from .test_containers_live import CID, CgroupPlace

    place = CgroupPlace(f"docker/{CID}", ("v2",))
    stage = f"import os, sys; sys.stdin.readline(); os.execv({PY!r}, [{PY!r}, '-c', {textwrap.dedent(UNSHARE_CODE)!r}])"

    def workload() -> int:
        child = subprocess.Popen([PY, "-c", stage], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdin is not None
        place.enter(child.pid)
        out, _ = child.communicate("go\n", timeout=60)
        assert child.returncode == 0
        return int(out)

    try:
        pid, evs = collect(sensor, workload, lambda c, e: e.proc.pid == c and e.type == "unshare",
                           lambda k: len(k) >= 1)
    finally:
        place.remove()
    e = evs[0]
    assert e.res == 0 and e.container.full_id == CID
    assert e.proc.user.uid == 1000 and not e.proc.cap_permitted >> CAP_SYS_ADMIN & 1
    assert e.proc.cap_permitted == 0 and e.proc.cap_effective == 0
    engine = _upstream("falco_rules.yaml", "falco-incubating_rules.yaml")
    assert UNSHARE_RULE in _rules_fired(engine, e)


# --- the environment beyond its first 48 entries -----------------------------------------------------------

ENV_RULE = "Potential Local Privilege Escalation via Environment Variables Misuse"


def _exec_with_env(sensor: LiveSensor, marker: str) -> Event:
    env = {f"FILLER_{i:02d}": "x" * 40 for i in range(60)}  # 60 entries first: the variable is the 61st
    env["GLIBC_TUNABLES"] = "glibc.malloc.mxfast=0"
    env.update({f"AFTER_{i:02d}": "y" for i in range(20)})
    _, evs = collect(sensor, lambda: subprocess.run(["/bin/true", marker], env=env, check=True, timeout=30),
                     lambda _c, e: e.type == "execve" and e.res == 0 and marker in e.proc.args,
                     lambda k: len(k) >= 1)
    return evs[0]


def test_a_variable_at_position_61_is_seen_and_fires_upstream_rule(sensor: LiveSensor) -> None:
    e = _exec_with_env(sensor, "ck-env-61")
    assert len(e.proc.env) == 81 and e.proc.env[60] == "GLIBC_TUNABLES=glibc.malloc.mxfast=0"
    assert e.proc.env[:2] == ["FILLER_00=" + "x" * 40, "FILLER_01=" + "x" * 40] and e.proc.env[-1] == "AFTER_19=y"
    assert resolve("proc.env", "GLIBC_TUNABLES").extract(e) == "glibc.malloc.mxfast=0"
    engine = _upstream("falco_rules.yaml", "falco-incubating_rules.yaml")
    assert ENV_RULE in _rules_fired(engine, e)
    assert engine.reads_environment()


def test_without_rules_that_read_the_environment_only_48_entries_are_read(sensor: LiveSensor) -> None:
    sensor.sensor.set_env_max(48)
    try:
        e = _exec_with_env(sensor, "ck-env-48")
    finally:
        sensor.sensor.set_env_max(sensor.sensor.config.env_max)
    assert len(e.proc.env) == 48 and not any(v.startswith("GLIBC_TUNABLES=") for v in e.proc.env)
