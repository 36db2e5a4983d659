"""End to end, as root: `falconet run` with the default rules and the real eBPF sensor, real attacker actions.

Each action runs in its own short-lived processes carrying a unique token (in an argument or a path), so its
alerts can be told apart from whatever else this shared machine is doing. Alerts are read the way users read
them: `falco-client subscribe --output json` in a subprocess, and the Python SDK. After every action a
*barrier* (a read of /etc/shadow by a process carrying its own token, started only after the action's
processes have exited) proves that every alert of the action has been delivered: the BPF ring buffer is one
ordered queue and the hub preserves that order, so once the barrier's alert is in, the action's alerts are
too. That is how "exactly this alert" and "no alert at all" are checked without sleeping.

When CI=true (or as root) a sensor that cannot load FAILS these tests; elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess, read_json_lines, wait_until
from nethost import CONNECT_CODE, MINER_PORT, OTHER_PORT, NetHost, net_host

from falconet.rules import DEFAULT_RULES
from falconet.model.alert import parse_time
from falconet.sdk import Client

pytestmark = pytest.mark.bpf

PY = "/usr/bin/python3"  # a plain system python: proc.name is "python3"
VENV_BIN = Path(sys.executable).parent
TEST_COMM = Path("/proc/self/comm").read_text().strip()  # proc.pname of processes this test starts


def need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the end-to-end daemon tests need root (CI runs as root)")
        pytest.skip("the end-to-end daemon tests need root for the eBPF sensor")


# What each action must raise: rule names of rules/falconet_rules.yaml (checked to exist by the first test).
RULES = {
    "shadow": "Read sensitive authentication file",
    "web_shell": "Shell spawned by server process",
    "write_etc": "Write below etc",
    "write_bin": "Write below binary or library directory",
    "symlink": "Create symlink over sensitive file",
    "ptrace": "PTRACE attached to process",
    "stratum": "Crypto miner using the Stratum protocol",
    "miner_port": "Outbound connection to crypto mining pool port",
}


def test_the_expected_rules_exist_in_the_default_rules() -> None:
    import yaml

    names = {item["rule"] for item in yaml.safe_load(DEFAULT_RULES.read_text()) or [] if "rule" in item}
    assert set(RULES.values()) <= names, sorted(set(RULES.values()) - names)


def live_config(work: Path, *, ring: int = 8 << 20, open_filter: bool = True, extra: str = "") -> str:
    return f"""
rules_files: [{DEFAULT_RULES}]
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {work / 'alerts.json'}}}
grpc:
  enabled: true
  bind_address: ["unix://{work / 'falconet.sock'}"]
webserver: {{enabled: true, listen_address: 127.0.0.1, listen_port: 0}}
sensor: {{ring_buffer_bytes: {ring}, open_path_filter: {str(open_filter).lower()}}}
{extra}
"""


def start_live_daemon(work: Path, config: str) -> DaemonProcess:
    daemon = DaemonProcess(work, config, "ebpf", [])
    try:
        daemon.wait_for_line(r"falconet: ready", timeout=180)
    except AssertionError as exc:
        daemon.kill()
        pytest.fail(f"falconet run with the eBPF sensor did not start:\n{exc}")
    return daemon


class ClientStream:
    """`falco-client subscribe --output json --from oldest` in a subprocess; alerts collected as dicts."""

    def __init__(self, socket_path: Path) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "falco-client"), "subscribe", "--unix-socket", str(socket_path), "--output", "json",
             "--from", "oldest"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.alerts.append(json.loads(line))

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class SdkStream:
    """The Python SDK's `Client.subscribe(start="oldest")`, collected in a background thread."""

    def __init__(self, socket_path: Path) -> None:
        self.client = Client(unix_socket=socket_path)
        self.alerts: list[dict[str, Any]] = []
        self._iter = self.client.subscribe(start="oldest")
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for alert in self._iter:
                self.alerts.append(alert.to_json_dict())
        except Exception:  # the client was closed at the end of the module
            pass

    def close(self) -> None:
        self.client.close()


@dataclass
class Live:
    work: Path
    daemon: DaemonProcess
    cli: ClientStream
    sdk: SdkStream
    tokens: list[str] = field(default_factory=list)

    def token(self) -> str:
        tok = "fnx" + uuid.uuid4().hex[:10]
        self.tokens.append(tok)
        return tok

    def mentioning(self, token: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Alerts whose JSON mentions `token`, as received by falco-client and by the SDK."""
        return (
            [a for a in list(self.cli.alerts) if token in json.dumps(a)],
            [a for a in list(self.sdk.alerts) if token in json.dumps(a)],
        )

    def barrier(self) -> None:
        """Returns once every alert raised before now has reached both subscribers (see the module doc)."""
        tok = self.token()
        subprocess.run(["cat", "/etc/shadow", f"/nonexistent-{tok}"], capture_output=True, check=False)
        wait_until(lambda: all(self.mentioning(tok)), timeout=30, what=f"the barrier alert {tok}")

    def alerts_for(self, token: str) -> list[dict[str, Any]]:
        """After a barrier: the token's alerts, which must be the same from falco-client and from the SDK."""
        self.barrier()
        cli, sdk = self.mentioning(token)
        strip = [{k: v for k, v in a.items() if k != "cursor"} for a in cli]
        assert strip == [{k: v for k, v in a.items() if k != "cursor"} for a in sdk]
        assert [a["cursor"] for a in cli] == [a["cursor"] for a in sdk]
        return cli


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    need_root()
    work = tmp_path_factory.mktemp("live")
    daemon = start_live_daemon(work, live_config(work))
    cli = ClientStream(work / "falconet.sock")
    sdk = SdkStream(work / "falconet.sock")
    handle = Live(work, daemon, cli, sdk)
    try:
        yield handle
    finally:
        cli.close()
        sdk.close()
        daemon.signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        finally:
            daemon.kill()


def run(*argv: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def only_alert(live: Live, token: str, rule: str) -> dict[str, Any]:
    alerts = live.alerts_for(token)
    assert [a["rule"] for a in alerts] == [rule], json.dumps(alerts, indent=1)
    return alerts[0]


def check_fields(alert: dict[str, Any], **expected: Any) -> None:
    fields = alert["output_fields"]
    for key, value in expected.items():
        name = key.replace("_", ".", 1) if key != "container_id" else "container.id"
        assert name in fields, f"{name} is not in the alert's output_fields: {fields}"
        assert fields[name] == value, (name, fields[name], value)


# -- the actions -------------------------------------------------------------------------------------------------


def test_reading_etc_shadow_from_a_short_lived_process(live: Live) -> None:
    tok = live.token()
    run("cat", "/etc/shadow", f"/nonexistent-{tok}")
    alert = only_alert(live, tok, RULES["shadow"])
    check_fields(
        alert,
        proc_name="cat",
        proc_pname=TEST_COMM,
        proc_cmdline=f"cat /etc/shadow /nonexistent-{tok}",
        user_name="root",
        fd_name="/etc/shadow",
        container_id="host",
    )


@pytest.mark.parametrize(
    "variant",
    ["relative", "dotdot", "dirfd"],
)
def test_attacker_path_variants_resolve_to_the_real_file(live: Live, variant: str) -> None:
    tok = live.token()
    if variant == "relative":
        run("cat", "shadow", f"/nonexistent-{tok}", cwd="/etc")
        cmdline = f"cat shadow /nonexistent-{tok}"
    elif variant == "dotdot":
        run("cat", "/usr/bin/../../etc/./shadow", f"/nonexistent-{tok}", cwd="/")
        cmdline = f"cat /usr/bin/../../etc/./shadow /nonexistent-{tok}"
    else:
        code = "import os; d = os.open('/etc', os.O_RDONLY | os.O_DIRECTORY); os.close(os.open('shadow', 0, dir_fd=d))"
        run(PY, "-c", code, tok)
        cmdline = f"python3 -c {code} {tok}"
    alert = only_alert(live, tok, RULES["shadow"])
    check_fields(alert, fd_name="/etc/shadow", proc_cmdline=cmdline, user_name="root", container_id="host")


def test_a_shell_spawned_by_a_web_server(live: Live) -> None:
    tok = live.token()
    nginx = live.work / "nginx"
    shutil.copy("/bin/dash", nginx)  # a process really named nginx; it forks a shell (two commands: no exec)
    run(str(nginx), "-c", f"sh -c 'exit 0' {tok}; exit 0")
    alert = only_alert(live, tok, RULES["web_shell"])
    check_fields(
        alert, proc_name="sh", proc_pname="nginx", proc_cmdline=f"sh -c exit 0 {tok}", user_name="root",
        container_id="host",
    )


@pytest.mark.parametrize("directory", ["/etc", "/usr/bin"])
def test_writing_below_a_system_directory(live: Live, directory: str) -> None:
    tok = live.token()
    target = f"{directory}/falconet-e2e-{tok}"
    try:
        run("touch", target)
        alerts = live.alerts_for(tok)
    finally:
        Path(target).unlink(missing_ok=True)
    key = "write_etc" if directory == "/etc" else "write_bin"
    assert [a["rule"] for a in alerts] == [RULES[key]], json.dumps(alerts, indent=1)
    check_fields(alerts[0], proc_name="touch", proc_cmdline=f"touch {target}", fd_name=target, user_name="root",
                 container_id="host", proc_pname=TEST_COMM)


@pytest.mark.parametrize("variant", ["relative", "dirfd", "dotdot"])
def test_writing_below_etc_through_attacker_path_variants(live: Live, variant: str) -> None:
    tok = live.token()
    name = f"falconet-e2e-{tok}"
    target = f"/etc/{name}"
    code = (
        "import os, sys; d = os.open('/etc', os.O_RDONLY | os.O_DIRECTORY); "
        "os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=d))"
    )
    try:
        if variant == "relative":
            run("touch", name, cwd="/etc")
        elif variant == "dirfd":
            run(PY, "-c", code, name)
        else:
            run("touch", f"/usr/../etc/./{name}", cwd="/")
        alerts = live.alerts_for(tok)
    finally:
        Path(target).unlink(missing_ok=True)
    assert [a["rule"] for a in alerts] == [RULES["write_etc"]], json.dumps(alerts, indent=1)
    check_fields(alerts[0], fd_name=target, user_name="root", container_id="host")


def test_a_symlink_over_a_sensitive_file(live: Live) -> None:
    tok = live.token()
    link = live.work / f"link-{tok}"
    run("ln", "-s", "/etc/shadow", str(link))
    alert = only_alert(live, tok, RULES["symlink"])
    check_fields(alert, proc_name="ln", proc_cmdline=f"ln -s /etc/shadow {link}", user_name="root",
                 container_id="host", proc_pname=TEST_COMM, fd_name=None)
    assert alert["output_fields"]["evt.arg.target"] == "/etc/shadow"
    assert alert["output_fields"]["evt.arg.linkpath"] == str(link)


PTRACE_CODE = """
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w); os.read(r, 1); os._exit(0)
if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
    sys.exit('ptrace attach failed: errno %d' % ctypes.get_errno())
os.waitpid(pid, 0)
libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
os.write(w, b'x'); os.waitpid(pid, 0)
"""


def test_ptrace_attach_to_a_child(live: Live) -> None:
    tok = live.token()
    done = run(PY, "-c", PTRACE_CODE, tok)
    assert done.returncode == 0, done.stderr
    alert = only_alert(live, tok, RULES["ptrace"])
    check_fields(alert, proc_name="python3", user_name="root", container_id="host", proc_pname=TEST_COMM,
                 proc_cmdline=f"python3 -c {PTRACE_CODE} {tok}", fd_name=None)
    assert alert["output_fields"]["evt.arg.request"] == "PTRACE_ATTACH"


def test_a_command_line_with_stratum(live: Live) -> None:
    tok = live.token()
    run("/bin/true", "--url", "stratum+tcp://pool.example.org:3333", tok)
    alert = only_alert(live, tok, RULES["stratum"])
    check_fields(alert, proc_name="true", proc_cmdline=f"true --url stratum+tcp://pool.example.org:3333 {tok}",
                 user_name="root", container_id="host", proc_pname=TEST_COMM, fd_name=None)


@pytest.fixture(scope="module")
def testnet(live: Live) -> Iterator[NetHost]:
    """A network namespace joined to this one by a veth pair, with a listener on a documentation address."""
    with net_host("fnet", PY) as host:
        yield host


def test_a_connection_to_a_miner_pool_port(live: Live, testnet: NetHost) -> None:
    tok = live.token()
    done = run(PY, "-c", CONNECT_CODE, testnet.peer_ip, str(MINER_PORT), tok)
    assert done.returncode == 0, done.stderr
    alert = only_alert(live, tok, RULES["miner_port"])
    check_fields(alert, proc_name="python3", user_name="root", container_id="host", proc_pname=TEST_COMM,
                 proc_cmdline=f"python3 -c {CONNECT_CODE} {testnet.peer_ip} {MINER_PORT} {tok}")
    # The connection as Falco names it, client (this side of the veth pair) -> server in the namespace.
    client, _, server = alert["output_fields"]["fd.name"].partition("->")
    assert server == f"{testnet.peer_ip}:{MINER_PORT}" and client.startswith(f"{testnet.host_ip}:")


# -- negative controls ---------------------------------------------------------------------------------------------


def test_harmless_twins_raise_nothing(live: Live, testnet: NetHost) -> None:
    tokens = {}
    tokens["hostname"] = tok = live.token()
    run("cat", "/etc/hostname", f"/nonexistent-{tok}")
    tokens["shell"] = tok = live.token()
    run("bash", "-c", f"sh -c 'exit 0' {tok}; exit 0")
    tokens["port"] = tok = live.token()
    done = run(PY, "-c", CONNECT_CODE, testnet.peer_ip, str(OTHER_PORT), tok)
    assert done.returncode == 0, done.stderr
    tokens["tmp_write"] = tok = live.token()
    run("touch", str(live.work / f"file-{tok}"))
    live.barrier()
    raised = {name: live.mentioning(tok)[0] for name, tok in tokens.items()}
    assert raised == {name: [] for name in tokens}, json.dumps(raised, indent=1)


def write_wheel(path: Path) -> None:
    """A minimal pure-Python wheel (PEP 427), so pip installs a local package with no build step or index."""
    import base64
    import hashlib
    import zipfile

    files = {
        "hello_falconet/__init__.py": "GREETING = 'hello'\n",
        "hello_falconet-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-falconet\nVersion: 1.0\n",
        "hello_falconet-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: falconet-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("hello_falconet-1.0.dist-info/RECORD,,")
    files["hello_falconet-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


def test_a_venv_and_pip_install_of_a_local_package_raise_nothing(live: Live) -> None:
    tok = live.token()
    base = live.work / f"benign-{tok}"
    base.mkdir()
    wheel = base / "hello_falconet-1.0-py3-none-any.whl"
    write_wheel(wheel)
    venv = base / "venv"
    done = run(PY, "-m", "venv", str(venv))
    assert done.returncode == 0, done.stderr
    done = run(str(venv / "bin" / "pip"), "install", "-q", "--no-index", str(wheel))
    assert done.returncode == 0, done.stderr
    done = run(str(venv / "bin" / "python"), "-c", "import hello_falconet; print(hello_falconet.GREETING)")
    assert done.stdout.strip() == "hello"
    live.barrier()
    # Every process of the workload has the token in its command line or working paths.
    assert live.mentioning(tok)[0] == []


def test_the_daemons_own_activity_raises_nothing(live: Live) -> None:
    live.daemon.signal(signal.SIGHUP)  # the reload re-reads config, rules and /etc files
    live.daemon.wait_for_line(r"falconet: reloaded")
    urllib.request.urlopen(live.daemon.metrics_url, timeout=10).read()
    live.barrier()
    own = str(live.daemon.proc.pid)
    mine = [
        a for a in live.cli.alerts
        if "falconet.server.cli run" in json.dumps(a) or a["output_fields"].get("proc.pid") == own
    ]
    assert mine == []


# -- replay and drops ----------------------------------------------------------------------------------------------


def test_replaying_a_capture_gives_the_live_alerts(live: Live, tmp_path: Path) -> None:
    from falconet.rules.engine import Engine

    types = Engine.from_files([DEFAULT_RULES]).event_types
    capture = tmp_path / "capture.jsonl"
    cmd = [sys.executable, "-m", "falconet.server.cli", "capture", "-w", str(capture)]
    if types is not None:
        cmd += ["-s", ",".join(sorted(types))]
    cap = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert cap.stderr is not None and cap.stderr.readline().strip() == "capturing"
        toks = [live.token() for _ in range(3)]
        run("cat", "/etc/shadow", f"/nonexistent-{toks[0]}")
        run("touch", f"/etc/falconet-e2e-{toks[1]}")
        Path(f"/etc/falconet-e2e-{toks[1]}").unlink(missing_ok=True)
        run("cat", "shadow", f"/nonexistent-{toks[2]}", cwd="/etc")
        live.barrier()
        end = live.tokens[-1]
    finally:
        cap.send_signal(signal.SIGTERM)
        cap.wait(60)
        if cap.stderr is not None:
            cap.stderr.close()
    assert end in capture.read_text(), "the capture stopped before the barrier's events"
    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    config = live_config(replay_dir).replace("webserver: {enabled: true", "webserver: {enabled: false")
    daemon = DaemonProcess(replay_dir, config, f"replay:{capture}", [])
    try:
        assert daemon.wait(120) == 0, daemon.stderr()
    finally:
        daemon.kill()
    replayed = read_json_lines(replay_dir / "alerts.json")

    def comparable(alerts: list[dict[str, Any]], tok: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in a.items() if k not in ("cursor", "time")} for a in alerts if tok in json.dumps(a)]

    def times(alerts: list[dict[str, Any]], tok: str) -> list[int]:
        return [parse_time(a["time"]) for a in alerts if tok in json.dumps(a)]

    offsets: set[int] = set()
    for tok in toks:
        live_alerts = comparable(live.cli.alerts, tok)
        assert live_alerts, f"no live alert for {tok}"
        assert comparable(replayed, tok) == live_alerts
        offsets |= {r - t for r, t in zip(times(replayed, tok), times(live.cli.alerts, tok), strict=True)}
    # The capture ran its own BPF programs on the same tracepoints: each reads the clock when it runs, so the
    # same syscall is stamped microseconds apart (and each sensor calibrates kernel to wall-clock time on its
    # own). Everything else is identical; the times agree to well under a millisecond.
    assert all(abs(d) < 1_000_000 for d in offsets), offsets


def test_a_tiny_ring_buffer_under_load_raises_the_internal_drop_alert(tmp_path: Path) -> None:
    need_root()
    # The open filter off: with it on, the kernel keeps these opens (and their closes) back, and the ring would
    # overflow only if something else on the machine happened to fill it.
    daemon = start_live_daemon(tmp_path, live_config(tmp_path, ring=4096, open_filter=False))
    load = subprocess.Popen(
        [PY, "-c", "import os\nwhile True:\n    os.close(os.open('/etc/hostname', os.O_RDONLY))"],
    )
    try:
        drops = wait_until(
            lambda: [a for a in read_json_lines(tmp_path / "alerts.json") if a["source"] == "internal"],
            timeout=60,
            what="the internal syscall-drop alert",
        )
    finally:
        load.kill()
        load.wait(10)
        daemon.signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        finally:
            daemon.kill()
    alert = drops[0]
    assert alert["rule"] == "Falco internal: syscall event drop"
    assert alert["priority"] == "Debug"
    n = int(alert["output_fields"]["n_drops"])
    assert n > 0 and alert["output"] == f"Falco internal: syscall event drop. {n} system calls dropped in last second."
    assert int(alert["output_fields"]["n_drops_buffer_total"]) == n
    assert alert["output_fields"]["ebpf_enabled"] == "1"
    assert "syscall event drop" in daemon.stderr()
