"""Falco's own Go client (github.com/falcosecurity/client-go v0.6.1, unmodified) against our server.

This is what an existing Falco consumer runs: `OutputsWatch` (sub), `Get` and `Version` over the UNIX socket
and over mTLS with the files `falconet certs init` wrote. The probe (tests/sdk_multilang/clientgo) prints each
response as JSON; the alerts must be the published ones with every Falco field intact (non-string output fields
arrive JSON-encoded, as Falco sends them). Each transport is its own identity, so each sees the whole backlog.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from multilang_support import vector_alerts

from falconet.certs import init_certs
from falconet.model.alert import Alert

pytestmark = [pytest.mark.multilang, pytest.mark.timeout(900)]


def _probe(probe: Path, server: Any, transport: str, mode: str, *extra: str, certs: Path | None = None,
           ca: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    if transport == "unix":
        args = ["--unix-socket", f"unix://{server.unix_path}"]
    else:
        certs = certs or server.certs
        args = [
            "--host",
            "localhost",
            "--port",
            str(server.tcp_port),
            "--ca",
            str(ca or server.certs / "ca.crt"),
        ]
        args += ["--cert", str(certs / "client.crt"), "--key", str(certs / "client.key")]
    return subprocess.run(
        [str(probe), "--mode", mode, "--timeout", "30s", *args, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _falco_view(alert: Alert, hub_hostname: str) -> dict[str, Any]:
    """The response as Falco's client decodes it: output fields all strings, non-strings JSON-encoded."""
    return {
        "time_ns": alert.time_ns,
        "rule": alert.rule,
        "priority": int(alert.priority),
        "source": alert.source,
        "hostname": alert.hostname or hub_hostname,
        "output": alert.output,
        "output_fields": {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in alert.output_fields.items()
        },
        "tags": alert.tags,
    }


@pytest.mark.parametrize("transport", ["unix", "mtls"])
def test_outputs_watch_get_and_version(clientgo_probe: Path, alert_server: Any, transport: str) -> None:
    host = alert_server.hub.hostname
    first = [e.alert for e in vector_alerts()]
    for a in first:
        alert_server.publish(a)
    # sub: this identity's Falco cursor starts before everything, so the backlog comes first.
    proc = _probe(clientgo_probe, alert_server, transport, "sub", "--count", str(len(first)))
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x) for x in proc.stdout.splitlines()] == [_falco_view(a, host) for a in first]
    # get: only what was published since (the sub above advanced the cursor), then the stream ends.
    second = [e.alert for e in vector_alerts()[:3]]
    for a in second:
        alert_server.publish(a)
    proc = _probe(clientgo_probe, alert_server, transport, "get")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x) for x in proc.stdout.splitlines()] == [_falco_view(a, host) for a in second]
    proc = _probe(clientgo_probe, alert_server, transport, "get")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    # version: Falco's fields as a pre-0.37 client reads them.
    proc = _probe(clientgo_probe, alert_server, transport, "version")
    assert proc.returncode == 0, proc.stderr
    version = json.loads(proc.stdout)
    assert version["version"] and version["version"].startswith(f"{version['major']}.{version['minor']}.")
    assert version["engine_version"] > 0


def test_foreign_ca_client_is_refused_by_the_server(
    clientgo_probe: Path, alert_server: Any, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    init_certs(foreign)
    alert_server.publish(vector_alerts()[0].alert)
    # Falco's client checks nothing itself: the server refuses its foreign certificate in the handshake.
    proc = _probe(clientgo_probe, alert_server, "mtls", "version", certs=foreign)
    assert proc.returncode != 0
    assert "clientgo:" in proc.stderr and "Unavailable" in proc.stderr, proc.stderr
    # And a foreign CA on the client's side refuses our server.
    proc = _probe(clientgo_probe, alert_server, "mtls", "version", certs=foreign, ca=foreign / "ca.crt")
    assert proc.returncode != 0
    assert "certificate signed by unknown authority" in proc.stderr, proc.stderr
