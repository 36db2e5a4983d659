"""`falconet run` with a `web_console` block: the real daemon (replayed events through a FIFO, no root) mounts
the console over mutual TLS; an alert the engine raises reaches the page's stream; SIGHUP after a revocation
ends the revoked certificate's stream; SIGTERM stops it all cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from console_support import SyncEvents, client_ssl, sequences

from falconet.certs import issue_client
from falconet.certs.revoke import revoke
from falconet.model.event import Event, Fd, Process, User

RULES = """\
- rule: Console shadow read
  desc: /etc/shadow opened
  condition: evt.type in (open, openat) and fd.name = /etc/shadow
  output: "shadow opened (proc.name=%proc.name fd.name=%fd.name)"
  priority: WARNING
  tags: [test]
"""


def open_event(num: int, name: str) -> str:
    proc = Process(pid=4242 + num, ppid=1, name=name, exe=name, exepath=f"/usr/bin/{name}", args=["/etc/shadow"],
                   cwd="/root", user=User(0, "root"))  # fmt: skip
    ev = Event(num=num, ts=1_700_000_000_000_000_000 + num, type="openat", tid=4242 + num, res=3, proc=proc,
               args={"fd": 3, "dirfd": -100, "name": "/etc/shadow", "flags": 0, "mode": 0},
               fd=Fd(num=3, type="file", name="/etc/shadow", nameraw="/etc/shadow", flags=0))  # fmt: skip
    return json.dumps(ev.to_dict()) + "\n"


class Lines:
    """stderr of the daemon, collected by a thread; `wait` for a line with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.stream = stream
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        """After the process ended: the pump has read everything; the pipe is closed."""
        self.thread.join(30)
        self.stream.close()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, needle: str, timeout: float = 60.0) -> str:
        with self.cond:
            found = self.cond.wait_for(lambda: any(needle in line for line in self.lines), timeout)
            assert found, f"no line with {needle!r}:\n" + "\n".join(self.lines)
            return next(line for line in self.lines if needle in line)


def test_the_daemon_serves_the_console_and_cuts_revoked_streams_on_sighup(tmp_path: Path, certs_dir: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        (certs / name).write_bytes((certs_dir / name).read_bytes())
    issue_client(certs, "alice")
    issue_client(certs, "bob")
    (tmp_path / "rules.yaml").write_text(RULES)
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    (tmp_path / "falconet.yaml").write_text(f"""
rules_files: [{tmp_path / 'rules.yaml'}]
stdout_output: {{enabled: false}}
grpc:
  enabled: true
  bind_address: ["unix://{tmp_path / 'f.sock'}"]
webserver: {{enabled: false}}
web_console:
  enabled: true
  listen_address: 127.0.0.1
  listen_port: 0
  cert_chain: {certs / 'server.crt'}
  private_key: {certs / 'server.key'}
  client_ca: {certs / 'ca.crt'}
  allowed_common_names: [alice, bob]
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "falconet.server.cli", "run", "-c", str(tmp_path / "falconet.yaml"),
         "--source", f"replay:{fifo}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=dict(os.environ, FALCO_HOSTNAME="console-host"),
    )  # fmt: skip
    feed = None
    lines = Lines(proc.stderr)
    try:
        feed = open(fifo, "w", encoding="utf-8")  # noqa: SIM115 - the capture stays open while the test runs
        url = lines.wait("web console on ").split("web console on ", 1)[1].strip()
        assert url.startswith("https://127.0.0.1:")
        lines.wait("falconet: ready")
        _exercise(url, certs, feed, proc)
    finally:
        if feed is not None:
            feed.close()  # the end of the capture: the daemon stops by itself
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            lines.close()


def _exercise(url: str, certs: Path, feed: Any, proc: subprocess.Popen[str]) -> None:
    a = SyncEvents(url + "api/stream", ssl_context=client_ssl(certs, "alice"))
    b = SyncEvents(url + "api/stream", ssl_context=client_ssl(certs, "bob"))
    try:
        assert a.status == b.status == 200
        feed.write(open_event(1, "<script>x</script>"))
        feed.flush()
        events = a.until(lambda ev: len(sequences(ev)) == 1)
        alert = [x for e in events if e.event == "alerts" for x in e.data["alerts"]][0]
        assert alert["rule"] == "Console shadow read" and alert["hostname"] == "console-host"
        assert alert["output_fields"]["proc.name"] == "<script>x</script>"
        b.until(lambda ev: len(sequences(ev)) == 1)
        revoke(certs, "alice")
        proc.send_signal(signal.SIGHUP)
        with pytest.raises(ConnectionError):
            a.until(lambda ev: False, timeout=30)  # the daemon ended alice's stream
        again = SyncEvents(url + "api/info", ssl_context=client_ssl(certs, "alice"))
        assert again.status == 403
        again.close()
        feed.write(open_event(2, "cat"))
        feed.flush()
        b.until(lambda ev: len(sequences(ev)) == 2)  # bob's stream goes on
    finally:
        a.close()
        b.close()
