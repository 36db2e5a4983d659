"""The Go and Rust examples against a real server: exact alert JSON over mTLS and the UNIX socket, and refusals.

Alerts built from the shared vectors (sdk/python/testdata/alert_vectors.json; every priority, nanosecond times,
typed output fields, sources, tags) are published into a real AlertServer; each example, a separate process,
subscribes from the oldest retained alert and must print exactly those alerts, in order, each line equal to the
vector's canonical line (with the cursor the hub assigned), byte for byte and after key sorting.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from multilang_support import canonical, vector_alerts
from shared_server import ServerHandle

from falconet.certs import init_certs

pytestmark = [pytest.mark.multilang, pytest.mark.timeout(1500)]  # the first test of a cold session builds Go and Rust

LANGS = ["go", "rust"]


def _binary(request: pytest.FixtureRequest, lang: str) -> Path:
    return request.getfixturevalue(f"{lang}_subscribe")  # type: ignore[no-any-return]


def _transport_args(
    server: ServerHandle, transport: str, certs: Path | None = None, **names: str
) -> list[str]:
    if transport == "unix":
        return ["--unix-socket", str(server.unix_path)]
    certs = certs or server.certs
    args = ["--addr", f"127.0.0.1:{server.tcp_port}", "--ca", str(names.get("ca", certs / "ca.crt"))]
    args += [
        "--cert",
        str(names.get("cert", certs / "client.crt")),
        "--key",
        str(names.get("key", certs / "client.key")),
    ]
    return args + ["--server-name", names.get("server_name", "localhost")]


def _run(binary: Path, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("stream", ["sub", "batched"])
@pytest.mark.parametrize("transport", ["mtls", "unix"])
@pytest.mark.parametrize("lang", LANGS)
def test_example_prints_exactly_the_published_alerts(
    request: pytest.FixtureRequest,
    alert_server: ServerHandle,
    lang: str,
    transport: str,
    stream: str,
) -> None:
    binary = _binary(request, lang)
    expected = vector_alerts()
    cursors = [alert_server.publish(e.alert) for e in expected]
    args = _transport_args(alert_server, transport) + ["--from", "oldest", "--count", str(len(expected))]
    if stream == "batched":
        args.append("--batched")
    proc = _run(binary, args)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(expected), proc.stdout
    for got, exp, cur in zip(lines, expected, cursors, strict=True):
        want = exp.line(cur, alert_server.hub.hostname)
        assert canonical(got) == canonical(want)
        assert got == want  # the canonical line itself, byte for byte


@pytest.mark.parametrize("lang", LANGS)
def test_example_filters_on_the_server(
    request: pytest.FixtureRequest, alert_server: ServerHandle, lang: str
) -> None:
    binary = _binary(request, lang)
    expected = vector_alerts()
    cursors = [alert_server.publish(e.alert) for e in expected]
    severe = [(e, c) for e, c in zip(expected, cursors, strict=True) if e.alert.priority <= 3]
    args = _transport_args(alert_server, "unix") + ["--from", "oldest", "--min-priority", "error"]
    proc = _run(binary, [*args, "--count", str(len(severe))])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [e.line(c, alert_server.hub.hostname) for e, c in severe]


@pytest.mark.parametrize("lang", LANGS)
def test_foreign_ca_is_refused_with_a_reason(
    request: pytest.FixtureRequest,
    alert_server: ServerHandle,
    tmp_path: Path,
    lang: str,
) -> None:
    binary = _binary(request, lang)
    foreign = tmp_path / "foreign"
    init_certs(foreign)
    alert_server.publish(vector_alerts()[0].alert)
    # A client whose whole set comes from another CA: it cannot verify the server, and says so.
    proc = _run(
        binary, _transport_args(alert_server, "mtls", certs=foreign) + ["--from", "oldest", "--count", "1"]
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert "not signed by the given CA" in proc.stderr, proc.stderr
    # Our CA, but a client certificate from another CA: the client names the problem before the server would
    # refuse it (the server's own refusal is exercised with Falco's client in test_falco_client_go.py).
    proc = _run(
        binary,
        _transport_args(
            alert_server, "mtls", cert=str(foreign / "client.crt"), key=str(foreign / "client.key")
        )
        + ["--from", "oldest", "--count", "1"],
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"client certificate {foreign / 'client.crt'} does not chain to CA" in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr and "goroutine" not in proc.stderr


@pytest.mark.parametrize("lang", LANGS)
def test_server_name_outside_the_sans_is_refused(
    request: pytest.FixtureRequest, alert_server: ServerHandle, lang: str
) -> None:
    binary = _binary(request, lang)
    args = _transport_args(alert_server, "mtls", server_name="not-in-the-sans.example")
    proc = _run(binary, [*args, "--from", "oldest", "--count", "1"])
    assert proc.returncode != 0 and proc.stdout == ""
    assert "not in the server certificate's SANs" in proc.stderr, proc.stderr


@pytest.mark.parametrize("lang", LANGS)
def test_bad_certificate_path_is_named(
    request: pytest.FixtureRequest, alert_server: ServerHandle, tmp_path: Path, lang: str
) -> None:
    binary = _binary(request, lang)
    missing = tmp_path / "nope" / "ca.crt"
    proc = _run(binary, _transport_args(alert_server, "mtls", ca=str(missing)) + ["--count", "1"])
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "cannot read" in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr and "goroutine" not in proc.stderr


@pytest.mark.parametrize("lang", LANGS)
def test_missing_socket_fails_fast_with_the_path(
    request: pytest.FixtureRequest, tmp_path: Path, lang: str
) -> None:
    binary = _binary(request, lang)
    sock = tmp_path / "absent.sock"
    proc = _run(binary, ["--unix-socket", str(sock), "--count", "1"], timeout=30)
    assert proc.returncode != 0
    assert str(sock) in proc.stderr, proc.stderr
