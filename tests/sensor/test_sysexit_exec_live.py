"""An exec's record built at its exit alone (issue 12 item 1), with the real sensor and real execs.

A successful exec has no argument registers left and the caller's memory is gone: its argv and environment come
from the new image (as the kernel laid them on its stack: the same argv /proc/PID/cmdline shows, a #! script's
interpreter first) and its filename is the name it was given. A failed exec still has its registers: what the
caller passed. execveat's dirfd, path and flags survive a successful exec through its enter.
"""

from __future__ import annotations

import errno
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from falconet.model.event import Event

from .conftest import PY, LiveSensor, collect, start_or_skip

from falconet.sensor import SensorConfig

pytestmark = [pytest.mark.bpf, pytest.mark.root]

T = TypeVar("T")


@pytest.fixture(scope="module")
def sensor() -> Iterator[LiveSensor]:
    live = LiveSensor(start_or_skip(SensorConfig(ringbuf_bytes=64 << 20, syscalls={"execve", "execveat"})))
    try:
        yield live
    finally:
        live.close()


def _one(sensor: LiveSensor, workload: Callable[[], T], keep: Callable[[T, Event], bool]) -> tuple[T, Event]:
    ctx, evs = collect(sensor, workload, keep, lambda k: len(k) >= 1)
    return ctx, evs[0]


def test_a_script_exec_carries_the_new_images_argv_and_the_given_filename(sensor: LiveSensor,
                                                                        tmp_path: Path) -> None:
    script = tmp_path / "ck-script.sh"
    cmdline = tmp_path / "cmdline"
    script.write_text(f"#!/bin/sh\ncat /proc/$$/cmdline > {cmdline}\n")
    script.chmod(0o755)

    def workload() -> int:
        return subprocess.run(["./ck-script.sh", "ck-arg"], cwd=tmp_path, env={"CK_ENV": "ck-value"},
                              check=True, timeout=30).returncode

    _, e = _one(sensor, workload, lambda _c, e: e.type == "execve" and e.res == 0 and "ck-arg" in e.proc.args)
    shown = cmdline.read_bytes().rstrip(b"\0").split(b"\0")
    assert [e.args["exe"], *e.args["args"]] == [s.decode() for s in shown]
    assert shown[0] == b"/bin/sh" and shown[1:] == [b"./ck-script.sh", b"ck-arg"]
    assert e.args["filename"] == "./ck-script.sh"
    assert e.proc.env == ["CK_ENV=ck-value"]
    assert e.proc.exepath in ("/bin/dash", "/usr/bin/dash", "/bin/bash", "/usr/bin/bash")  # what /bin/sh is


def test_a_failed_exec_carries_what_the_caller_passed(sensor: LiveSensor, tmp_path: Path) -> None:
    missing = tmp_path / "ck-missing"
    code = f"""
        import os
        try:
            os.execve({str(missing)!r}, ["ck-missing-argv0", "ck-failed"], {{"CK_FAILED": "1"}})
        except FileNotFoundError:
            print(os.getpid(), flush=True)
    """

    def workload() -> int:
        out = subprocess.run([PY, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True,
                             timeout=60)
        return int(out.stdout)

    _, e = _one(sensor, workload, lambda c, e: e.proc.pid == c and e.type == "execve" and e.res != 0)
    assert e.res == -errno.ENOENT
    assert e.args["filename"] == str(missing)
    assert e.args["exe"] == "ck-missing-argv0" and e.args["args"] == ["ck-failed"]
    assert e.args["env"] == ["CK_FAILED=1"]


def test_execveat_keeps_its_dirfd_path_and_flags(sensor: LiveSensor, tmp_path: Path) -> None:
    target = tmp_path / "ck-true"
    target.write_bytes(Path("/bin/true").read_bytes())
    target.chmod(0o755)
    code = f"""
        import ctypes, os
        dirfd = os.open({str(tmp_path)!r}, os.O_RDONLY | os.O_DIRECTORY)
        pid = os.fork()
        if pid == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            argv = (ctypes.c_char_p * 3)(b"ck-true", b"ck-execveat-rel", None)
            envp = (ctypes.c_char_p * 1)(None)
            libc.syscall(322, dirfd, b"ck-true", argv, envp, 0x100)  # AT_SYMLINK_NOFOLLOW
            os._exit(99)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        print(pid, dirfd, flush=True)
    """

    def workload() -> tuple[int, int]:
        out = subprocess.run([PY, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True,
                             timeout=60)
        pid, dirfd = out.stdout.split()
        return int(pid), int(dirfd)

    (_, dirfd), e = _one(sensor, workload,
                         lambda c, e: e.proc.pid == c[0] and e.type.startswith("execve") and e.res == 0)
    assert e.type == "execveat"
    assert e.args["pathname"] == "ck-true" and e.args["exec_flags"] == 0x100
    assert e.proc.exepath == str(target) and e.proc.args == ["ck-execveat-rel"]
    assert e.args["dirfd"] == dirfd
