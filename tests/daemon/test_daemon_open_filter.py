"""The kernel-side open filter the daemon derives from the default rules loses no alert: as root, real sensor.

Two daemons run at once on the default rules, one with `sensor.open_path_filter: false`, one with it on (the
default), so both watch the very same syscalls. The workload is the attacker actions of the end-to-end tests
(test_daemon_live.py), the name-only rules' files in a home below /tmp, and benign opens the filter keeps in the
kernel. Every action carries a token; after the workload a barrier read of /etc/shadow, seen by both daemons,
proves everything before it has been written out (one ordered ring buffer per sensor, one ordered engine), so
the two alert sets are compared without sleeping. When CI=true a sensor that cannot load is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, read_json_lines, wait_until

from falconet.rules import DEFAULT_RULES
from falconet.server.reports import DROP_RULE

pytestmark = pytest.mark.bpf
PY = "/usr/bin/python3"


def need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the open-filter end-to-end test needs root (CI runs as root)")
        pytest.skip("the open-filter end-to-end test needs root for the eBPF sensor")


def config(work: Path, open_filter: bool, rules: Path = DEFAULT_RULES) -> str:
    return f"""
rules_files: [{rules}]
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {work / "alerts.json"}}}
grpc:
  enabled: true
  bind_address: ["unix://{work / "falconet.sock"}"]
webserver: {{enabled: false}}
sensor: {{ring_buffer_bytes: {8 << 20}, open_path_filter: {str(open_filter).lower()}}}
"""


def start(work: Path, open_filter: bool) -> DaemonProcess:
    work.mkdir()
    daemon = DaemonProcess(work, config(work, open_filter), "ebpf", [])
    try:
        daemon.wait_for_line(r"falconet: ready", timeout=180)
    except AssertionError as exc:
        daemon.kill()
        pytest.fail(f"falconet run with the eBPF sensor did not start:\n{exc}")
    return daemon


@contextmanager
def daemon_pair(base: Path, rules: Path = DEFAULT_RULES) -> Iterator[tuple[Path, Path]]:
    """Two daemons on `rules`, filter off and on; yields their work folders once both are ready.

    Both start at once: each compiles its BPF program first, and one after the other that took most of the
    test's time limit on a loaded host (this test timed out twice)."""
    started: list[DaemonProcess] = []
    try:
        for name, on in (("off", False), ("on", True)):
            work = base / name
            work.mkdir(parents=True)
            started.append(DaemonProcess(work, config(work, on, rules), "ebpf", []))
        for daemon in started:
            try:
                daemon.wait_for_line(r"falconet: ready", timeout=180)
            except AssertionError as exc:
                pytest.fail(f"falconet run with the eBPF sensor did not start:\n{exc}")
        started[1].wait_for_line(r"open path filter on: \d+ path prefixes", timeout=60)
        started[1].wait_for_line(r"event gates on: \d+ event types", timeout=60)
        yield base / "off", base / "on"
    finally:
        for d in started:
            d.signal(signal.SIGTERM)
        for d in started:
            try:
                d.wait(30)
            finally:
                d.kill()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    need_root()
    with daemon_pair(tmp_path_factory.mktemp("openfilter")) as pair:
        yield pair


def run(*argv: str, cwd: str | Path | None = None) -> None:
    subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


PTRACE_CODE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w); os.read(r, 1); os._exit(0)
libc.ptrace(16, pid, None, None)
os.waitpid(pid, 0)
libc.ptrace(17, pid, None, None)
os.write(w, b'x'); os.waitpid(pid, 0)
"""

# Opens a file the filter keeps back, then acts on the fd: later events on it must not change any alert.
FD_CODE = """
import os, sys
fd = os.open('/etc/hostname', os.O_RDONLY)
os.read(fd, 10)
os.dup2(fd, 1)
for _ in range(200):
    os.close(os.open('/usr/lib/os-release', os.O_RDONLY))
"""

WRITE_CODE = "import os, sys; os.close(os.open(sys.argv[1], int(sys.argv[2]), 0o600))"


def workload(work: Path, tok: str) -> None:
    """Every action carries `tok` in its command line or a path, so its alerts mention it."""
    # Attacker actions of the end-to-end tests, absolute and through relative, dotted and dirfd paths.
    run("cat", "/etc/shadow", f"/nonexistent-{tok}")
    run("cat", "shadow", f"/nonexistent-{tok}", cwd="/etc")
    run("cat", "/usr/bin/../../etc/./shadow", f"/nonexistent-{tok}", cwd="/")
    run(
        PY,
        "-c",
        "import os; d = os.open('/etc', os.O_DIRECTORY); os.close(os.open('shadow', 0, dir_fd=d))",
        tok,
    )
    run(PY, "-c", "import os; os.fchdir(os.open('/etc', os.O_DIRECTORY)); open('shadow').close()", tok)
    # The same through a directory opened without O_DIRECTORY (a plain read-only open): the filter must not
    # keep it back, or user space could not resolve paths relative to it.
    run(PY, "-c", "import os; d = os.open('/etc', os.O_RDONLY); os.close(os.open('shadow', 0, dir_fd=d))", tok)
    run(PY, "-c", "import os; os.fchdir(os.open('/etc', os.O_RDONLY)); open('shadow').close()", tok)
    for target in (f"/etc/falconet-e2e-{tok}", f"/usr/bin/falconet-e2e-{tok}"):
        try:
            run("touch", target)
        finally:
            Path(target).unlink(missing_ok=True)
    try:
        run("touch", f"falconet-e2e-{tok}", cwd="/etc")
        run("touch", f"/usr/../etc/./falconet-e2e-{tok}", cwd="/")
    finally:
        Path(f"/etc/falconet-e2e-{tok}").unlink(missing_ok=True)
    run("ln", "-s", "/etc/shadow", str(work / f"link-{tok}"))
    # chmod with and without the setuid/setgid bits (the bit gate keeps the others back), by path and by fd
    (work / f"suid-{tok}").write_text("x")
    for mode in ("4755", "2750", "755", "1777", "644"):
        run("chmod", mode, str(work / f"suid-{tok}"))
        run(PY, "-c", "import os, sys; os.chmod(sys.argv[1], int(sys.argv[2], 8))", str(work / f"suid-{tok}"), mode,
            tok)
    nginx = work / "nginx"
    shutil.copy("/bin/dash", nginx)
    run(str(nginx), "-c", f"sh -c 'exit 0' {tok}; exit 0")
    run(PY, "-c", PTRACE_CODE, tok)
    run("/bin/true", "--url", "stratum+tcp://pool.example.org:3333", tok)
    # The rules that look for a file by name, in a home below /tmp (one of falconet_home_roots).
    home = Path(f"/tmp/fnx-home-{tok}")
    try:
        for sub in (".ssh", ".aws"):
            (home / sub).mkdir(parents=True)
        for name in (".ssh/id_ed25519", ".ssh/authorized_keys", ".aws/credentials", ".bash_history"):
            (home / name).write_text("x\n")
        run("cat", str(home / ".ssh/id_ed25519"))
        run("cat", str(home / ".aws/credentials"))
        run(PY, "-c", WRITE_CODE, str(home / ".ssh/authorized_keys"), str(os.O_WRONLY | os.O_APPEND))
        run(PY, "-c", WRITE_CODE, str(home / ".bash_history"), str(os.O_WRONLY | os.O_TRUNC))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    # Benign opens the filter keeps in the kernel, and later syscalls on such an fd.
    run("cat", "/etc/hostname", "/etc/os-release", f"/nonexistent-{tok}")
    run(PY, "-c", FD_CODE, tok)
    shm = Path(f"/dev/shm/fnx-{tok}")
    try:
        run(PY, "-c", WRITE_CODE, str(shm), str(os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
    finally:
        shm.unlink(missing_ok=True)


def comparable(alerts: list[dict[str, Any]], tok: str) -> list[tuple[str, str, Any]]:
    return [(a["rule"], a["priority"], a["output_fields"]) for a in alerts if tok in json.dumps(a)]


def compare(off_dir: Path, on_dir: Path, tok: str) -> list[tuple[str, str, Any]]:
    """The alerts of `tok` with the filter off, once both daemons have written out everything before a barrier
    and the filter-on daemon's alerts of `tok` are checked to be the same."""
    barrier = "fnx" + uuid.uuid4().hex[:10]
    run("cat", "/etc/shadow", f"/nonexistent-{barrier}")
    for work in (off_dir, on_dir):
        wait_until(
            lambda w=work: comparable(read_json_lines(w / "alerts.json"), barrier),  # type: ignore[misc]
            timeout=60,
            what=f"the barrier alert in {work.name}",
        )
    off = comparable(read_json_lines(off_dir / "alerts.json"), tok)
    on = comparable(read_json_lines(on_dir / "alerts.json"), tok)
    assert on == off, f"kernel drops reported: off {drop_reports(off_dir)}, on {drop_reports(on_dir)}"
    return off


def drop_reports(work: Path) -> list[str]:
    """The daemon's kernel-drop alerts: a record the kernel dropped (a full ring buffer on a loaded machine) can
    change an alert (an exec's arguments lost show as `<NA>`), and the failure message should say so."""
    return [a["output"] for a in read_json_lines(work / "alerts.json") if a["rule"] == DROP_RULE]


def test_the_filter_on_and_off_give_the_same_alerts(daemons: tuple[Path, Path]) -> None:
    off_dir, on_dir = daemons
    tok = "fnx" + uuid.uuid4().hex[:10]
    workload(off_dir, tok)
    off = compare(off_dir, on_dir, tok)
    rules = sorted({rule for rule, _, _ in off})
    # The workload reaches the rules it is meant to (a comparison of nothing would prove nothing).
    assert {
        "Read sensitive authentication file", "Write below etc", "Write below binary or library directory",
        "Create symlink over sensitive file", "Shell spawned by server process", "PTRACE attached to process",
        "Crypto miner using the Stratum protocol", "Read SSH private key", "Read cloud credentials",
        "Modify SSH authorized keys", "Delete or rename shell history", "Set setuid or setgid bit",
    } <= set(rules), rules  # fmt: skip


def test_sighup_reapplies_the_filter_from_the_new_rules(tmp_path: Path) -> None:
    """A reload that adds a rule the analysis cannot bound turns the filter off (and the rule sees opens the
    filter would have kept back); reloading without it turns the filter on again."""
    need_root()
    tok = "fnx" + uuid.uuid4().hex[:10]
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "- rule: Marker read\n  desc: a rule on a file name anywhere (unbounded)\n"
        f"  condition: evt.type in (open, openat) and fd.name contains fnx-marker-{tok}\n"
        "  output: marker %fd.name\n  priority: WARNING\n"
    )
    marker = Path(f"/dev/shm/fnx-marker-{tok}")  # below no prefix of the default rules
    marker.write_text("x")
    daemon = start(tmp_path / "d", True)
    try:
        def on_lines() -> list[str]:
            return [ln for ln in daemon.lines if "open path filter on:" in ln]

        wait_until(lambda: len(on_lines()) == 1, timeout=60, what="the filter on at start")
        daemon.config_path.write_text(daemon.config_path.read_text().replace(
            f"rules_files: [{DEFAULT_RULES}]", f"rules_files: [{DEFAULT_RULES}, {extra}]"))  # fmt: skip
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_line(
            r"open path filter off: these rules may match an open of any path: Marker read", 60
        )
        run("cat", str(marker))
        barrier = "fnx" + uuid.uuid4().hex[:10]
        run("cat", "/etc/shadow", f"/nonexistent-{barrier}")
        alerts_file = tmp_path / "d" / "alerts.json"
        wait_until(lambda: barrier in alerts_file.read_text(), timeout=60, what="the barrier alert")
        rules = [a["rule"] for a in read_json_lines(alerts_file) if tok in json.dumps(a)]
        assert rules == ["Marker read"]
        daemon.config_path.write_text(daemon.config_path.read_text().replace(f", {extra}]", "]"))
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: len(on_lines()) == 2, timeout=60, what="the filter on again after the reload")
    finally:
        marker.unlink(missing_ok=True)
        daemon.signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        finally:
            daemon.kill()
