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


@pytest.mark.parametrize("stream", ["sub", "batched"])
@pytest.mark.parametrize("lang", LANGS)
def test_example_survives_retained_alerts_no_input_would_accept(
    request: pytest.FixtureRequest, alert_server: ServerHandle, lang: str, stream: str
) -> None:
    """Issue 10, defect 1: alerts in the hub that the input service refuses (they came another way) still print,
    one valid JSON line each without raw controls, and the stream goes on past them."""
    import json
    import math

    from falconet.model.alert import Alert, Priority

    def odd(i: int, **kw: object) -> Alert:
        base = {"time_ns": 1, "rule": f"odd {i}", "priority": Priority.ERROR, "source": "syscall", "output": "o"}
        return Alert(**{**base, **kw})  # type: ignore[arg-type]

    alerts = [
        odd(0, time_ns=(1 << 62) * 1_000_000_000),
        odd(1, output_fields={"nan": math.nan, "inf": math.inf, "huge": 1 << 70}),
        odd(2, output="evil\x1b]0;owned\x07\u009b2J\nFAKE line", rule="", source="internal"),
        odd(3),
    ]
    for alert in alerts:
        alert_server.publish(alert)
    args = _transport_args(alert_server, "unix") + ["--from", "oldest", "--count", "4"]
    proc = _run(_binary(request, lang), args + (["--batched"] if stream == "batched" else []))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [json.loads(line)["rule"] for line in lines] == ["odd 0", "odd 1", "", "odd 3"]
    assert json.loads(lines[1])["output_fields"] == {"huge": 1 << 70, "inf": "Infinity", "nan": "NaN"}
    assert all(not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line) for line in lines)
