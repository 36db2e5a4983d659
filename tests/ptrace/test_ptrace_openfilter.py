"""The open filter under ptrace: the tracer keeps back the opens (and their fds' closes) the eBPF probe keeps
back, so the engine sees the same events under either driver.

The differential case runs one workload under both drivers with rules whose prefixes leave most opens out, and
a rule on every close of the workload's process: under the eBPF driver the close of a kept-back fd never
reaches user space, so any close the tracer let through (or kept back wrongly) changes the alerts. The
workload reuses a kept-back fd's number for a watched file, opens a directory without O_DIRECTORY (never
kept back), a relative path (never judged), a write-only file it then dup2()s (the new number is known), a
pipe and a failed open.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ptrace_harness import PY, Falconet, config_text, read_alerts, token, wait_until

from falconet.sensor.ptrace.openfilter import (
    OPEN_KEEP,
    OPEN_OTHER,
    OPEN_READ,
    OPEN_WRITE,
    PATH_SCAN_MAX,
    OpenFilter,
    open_need,
)
from resources import require_root

RULES = """
- rule: ptf close
  desc: every close of the workload's process (the close of a kept-back fd never reaches user space)
  condition: evt.type = close and proc.name = ptfclose
  output: "close fd=%fd.num name=%fd.name res=%evt.res cmd=%proc.cmdline"
  priority: WARNING
- rule: ptf watched open
  desc: the one path the rules watch
  condition: evt.type in (open, openat) and fd.name = /etc/shadow and proc.name = ptfclose
  output: "open fd=%fd.num name=%fd.name cmd=%proc.cmdline"
  priority: WARNING
"""

SCRIPT = """
import os, sys
tok, work = sys.argv[1], sys.argv[2]
if tok.startswith("BARRIER"):
    os.open("/etc/shadow", os.O_RDONLY)
    os._exit(0)
hidden = work + "/hidden-" + tok
open(hidden, "w").close()
a = os.open(hidden, os.O_RDONLY)          # kept back; its close too
os.close(a)
b = os.open("/etc/shadow", os.O_RDONLY)   # the same number, watched: open and close alert
os.close(b)
c = os.open(work, os.O_RDONLY)            # a directory without O_DIRECTORY: never kept back
os.close(c)
d = os.open(hidden, os.O_WRONLY)          # kept back ...
os.dup2(d, 40)                            # ... but the dup's number is known
os.close(40)
os.close(d)
r, w = os.pipe()
os.close(r)
os.close(w)
try:
    os.open(work + "/missing-" + tok, os.O_RDONLY)  # a failed open, kept back: no fd
except OSError:
    pass
os.chdir(work)
e = os.open("hidden-" + tok, os.O_RDONLY)  # relative: never judged
os.close(e)
os._exit(0)
"""


def _workload(work: Path) -> None:
    (work / "rules.yaml").write_text(RULES)
    (work / "ptf.py").write_text(SCRIPT)
    os.symlink(PY, work / "ptfclose")  # the process's name is the symlink's
    (work / "run.sh").write_text('"$2/ptfclose" -I -S "$2/ptf.py" "$1" "$2"\n'
                                 '"$2/ptfclose" -I -S "$2/ptf.py" "BARRIER$1" "$2"\n')


def _comparable(alerts: list[dict[str, Any]], tok: str, work: Path) -> list[tuple[str, str]]:
    out = []
    for alert in alerts:
        if tok in json.dumps(alert):
            out.append((alert["rule"], alert["output"].split(": ", 1)[-1].replace(tok, "TOK")
                        .replace(str(work), "WORK")))
    return sorted(out)


def _run(work: Path, source: str, tok: str) -> tuple[list[dict[str, Any]], list[str]]:
    alerts = work / f"{source}.json"
    (work / f"{source}.yaml").write_text(config_text(work, alerts, work / "rules.yaml"))
    argv = ["-c", str(work / f"{source}.yaml"), "--no-store", "--source", source]
    if source == "ptrace":
        daemon = Falconet([*argv, "--", "sh", str(work / "run.sh"), tok, str(work)])
        try:
            assert daemon.wait(180) == 0, "\n".join(daemon.lines)
        finally:
            daemon.stop()
        return read_alerts(alerts), daemon.lines
    daemon = Falconet(argv)
    try:
        daemon.wait_line(r"falconet: ready", timeout=180)
        done = subprocess.run(["sh", str(work / "run.sh"), tok, str(work)], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: f"BARRIER{tok}" in json.dumps(read_alerts(alerts)), 60, "the barrier alert")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, "\n".join(daemon.lines)
    finally:
        daemon.stop()
    return read_alerts(alerts), daemon.lines


@pytest.mark.bpf
@pytest.mark.root
def test_the_tracer_keeps_back_what_the_probe_keeps_back(tmp_path: Path) -> None:
    require_root("the eBPF side loads the sensor")
    _workload(tmp_path)
    tok_e, tok_p = token(), token()
    ebpf, _ = _run(tmp_path, "ebpf", tok_e)
    ptrace, log = _run(tmp_path, "ptrace", tok_p)
    assert any("open path filter on" in line for line in log), log
    e, p = _comparable(ebpf, tok_e, tmp_path), _comparable(ptrace, tok_p, tmp_path)
    assert e == p, "\n".join(["eBPF:", *map(str, e), "ptrace:", *map(str, p)])
    closes = [text for rule, text in p if rule == "ptf close"]
    names = [text.split("name=")[1].split(" res=")[0] for text in closes]
    assert "/etc/shadow" in names and "WORK" in names and "WORK/hidden-TOK" in names, closes  # kept
    assert [r for r, _ in p].count("ptf watched open") == 2  # the workload's and the barrier's
    kept = [line for line in log if "kept back by the open filter" in line]
    assert kept and int(kept[0].split("; ")[-1].split()[0]) > 0, log


def test_the_tracer_decides_with_the_kernels_model() -> None:
    """sensor/openfilter.py's model on what the tracer reads: the flags from the open's own argument, a path
    that could not be read (or read cut at PATH_SCAN_MAX) never kept back, suffix atoms honoured."""
    filt = OpenFilter.build({"/etc/shadow": ["read"], "/etc/": ["write"], "*/id_rsa": ["read"]})
    rd, wr = open_need("openat", (0, 0, os.O_RDONLY, 0)), open_need("openat", (0, 0, os.O_WRONLY | os.O_CREAT, 0))
    assert (rd, wr) == (OPEN_READ, OPEN_WRITE | OPEN_OTHER)
    assert open_need("openat", (0, 0, os.O_RDONLY | os.O_DIRECTORY)) == OPEN_KEEP
    assert open_need("open", (0, os.O_RDWR | os.O_CLOEXEC)) == OPEN_READ | OPEN_WRITE
    assert open_need("creat", (0, 0)) == OPEN_WRITE | OPEN_OTHER and open_need("openat2", (0,) * 4) == OPEN_KEEP
    assert not filt.drops(b"/etc/shadow", rd) and filt.drops(b"/etc/hostname", rd)
    assert not filt.drops(b"/etc/hostname", wr) and not filt.drops(b"/home/u/.ssh/id_rsa", rd)
    assert filt.drops(b"/tmp/x", rd) and filt.drops(b"/tmp/x", rd)  # the second answer from the cache
    for unjudged in (b"tmp/x", b"/tmp//x", b"/tmp/../etc/shadow", b"/tmp/", None, b"/" + b"a" * (PATH_SCAN_MAX - 1)):
        assert not filt.drops(unjudged, rd), unjudged
    assert not filt.drops(b"/tmp/x", OPEN_KEEP)
