"""What the ptrace tests share: the scripted workload (the daemon tests' attacker actions that fit one process
tree, with negative twins), a test host in a network namespace for the miner-port connection, and `falconet
run` started the way users start it (a subprocess; alerts as JSON lines in a file output)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from nethost import CONNECT_CODE, MINER_PORT, OTHER_PORT, NetHost, net_host

from falconet.rules import DEFAULT_RULES
from falconet.sensor.ptrace import fastpath
from resources import missing

FALCONET = str(Path(sys.executable).with_name("falconet"))
PY = "/usr/bin/python3"

# The actions of tests/daemon/test_daemon_live.py, in one shell script (one process tree), each carrying the
# token; the negative controls carry NEG-tokens. $1 token, $2 work directory, $3 the test host's address.
WORKLOAD = r"""
set -u
TOK=$1; WORK=$2; PEER=$3
cat /etc/shadow /nonexistent-$TOK >/dev/null 2>&1
"$WORK/nginx" -c "sh -c 'exit 0' $TOK; exit 0"
touch /etc/falconet-pt-$TOK /usr/bin/falconet-pt-$TOK
ln -s /etc/shadow "$WORK/link-$TOK"
/bin/true --url stratum+tcp://pool.example.org:3333 $TOK
/usr/bin/python3 -c "$CONNECT" $PEER $MINER $TOK
cat /etc/hostname /nonexistent-NEG$TOK >/dev/null 2>&1
bash -c "sh -c 'exit 0' NEG$TOK; exit 0"
/usr/bin/python3 -c "$CONNECT" $PEER $OTHER NEG$TOK
touch "$WORK/file-NEG$TOK"
rm -f /etc/falconet-pt-$TOK /usr/bin/falconet-pt-$TOK
cat /etc/shadow /nonexistent-BARRIER$TOK >/dev/null 2>&1
exit 0
"""

EXPECTED_RULES = {
    "Read sensitive authentication file", "Shell spawned by server process", "Write below etc",
    "Write below binary or library directory", "Create symlink over sensitive file",
    "Crypto miner using the Stratum protocol", "Outbound connection to crypto mining pool port",
}


def needs_two_cpus() -> None:
    """The placement tests move threads between CPUs 0 and 1, in the C stop loop."""
    if not fastpath.BUILT:
        missing("the C stop loop (sensor/ptrace/stoploop.c) is not built: `pip install -e .` builds it")
    if not {0, 1} <= os.sched_getaffinity(0):
        missing("the placement tests need CPUs 0 and 1")


def token() -> str:
    return "fpt" + uuid.uuid4().hex[:10]


def write_workload(work: Path) -> Path:
    shutil.copy("/bin/dash", work / "nginx")  # a process really named nginx
    script = work / "workload.sh"
    script.write_text(f"CONNECT='{CONNECT_CODE}'; MINER={MINER_PORT}; OTHER={OTHER_PORT}\n" + WORKLOAD)
    return script


def config_text(work: Path, alerts: Path, rules: Path = DEFAULT_RULES) -> str:
    return f"""
rules_files: [{rules}]
json_output: true
stdout_output: {{enabled: false}}
file_output: {{enabled: true, keep_alive: true, filename: {alerts}}}
grpc: {{enabled: false}}
webserver: {{enabled: false}}
"""


def read_alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Falconet:
    """`falconet run ...` in a subprocess, stderr collected line by line."""

    def __init__(self, argv: list[str], **popen: Any) -> None:
        self.proc = subprocess.Popen([FALCONET, "run", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, **popen)
        self.lines: list[str] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        rx = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._pump.is_alive():
                raise AssertionError(f"falconet exited ({self.proc.returncode}):\n" + "\n".join(self.lines))
            return None

        result: re.Match[str] = wait_until(found, timeout, f"{pattern!r} from falconet")
        return result

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._pump.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def miner_host() -> AbstractContextManager[NetHost]:
    """The test host of tests/nethost.py (as tests/daemon's testnet fixture), named for these tests."""
    return net_host("fpt", PY)
