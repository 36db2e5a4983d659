"""`falconet certs init|client|inspect` as a user runs them: a real subprocess, real files, exit statuses."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from falconet.certs import issue_client_window

FALCONET = str(Path(sys.executable).with_name("falconet"))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FALCONET, "certs", *map(str, args)], capture_output=True, text=True, timeout=60, env=os.environ
    )


def test_init_client_inspect(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    res = run("init", "--dir", d, "--san", "falconet.example.com", "--san", "10.9.8.7", "--days", "90")
    assert res.returncode == 0, res.stderr
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"):
        assert f"wrote {d / name}" in res.stdout
    assert stat.S_IMODE((d / "server.key").stat().st_mode) == 0o600

    res = run("client", "publisher", "--dir", d)
    assert res.returncode == 0, res.stderr
    assert (d / "publisher.crt").exists() and stat.S_IMODE((d / "publisher.key").stat().st_mode) == 0o600

    res = run("inspect", d / "server.crt", "--ca", d / "ca.crt")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "subject:    CN=falconet-server,O=Falconet" in out
    assert "DNS:localhost" in out and "IP:127.0.0.1" in out and "IP:::1" in out
    assert "DNS:falconet.example.com" in out and "IP:10.9.8.7" in out
    assert "EKU:        serverAuth" in out
    assert "validity:   valid, 89 days left" in out
    assert f"chains to {d / 'ca.crt'}" in out

    res = run("inspect", d / "publisher.crt")
    assert res.returncode == 0 and "CN=publisher" in res.stdout and "EKU:        clientAuth" in res.stdout
    assert "chain" not in res.stdout  # no --ca, no claim either way


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run("init", "--dir", tmp_path).returncode == 0
    key = (tmp_path / "ca.key").read_bytes()
    res = run("init", "--dir", tmp_path)
    assert res.returncode == 1
    assert "refusing to overwrite" in res.stderr and "--force" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "ca.key").read_bytes() == key
    assert run("init", "--dir", tmp_path, "--force").returncode == 0
    assert (tmp_path / "ca.key").read_bytes() != key

    assert run("client", "bob", "--dir", tmp_path).returncode == 0
    res = run("client", "bob", "--dir", tmp_path)
    assert res.returncode == 1 and "refusing to overwrite" in res.stderr


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    res = run("init", "--dir", tmp_path, "--san", "no spaces allowed")
    assert res.returncode == 1 and "invalid SAN 'no spaces allowed'" in res.stderr
    res = run("client", "bob", "--dir", tmp_path / "nothing")
    assert res.returncode == 1 and "no CA in" in res.stderr and "falconet certs init" in res.stderr
    res = run("inspect", tmp_path / "missing.crt")
    assert res.returncode == 1 and "cannot read" in res.stderr and "Traceback" not in res.stderr
    assert run("init", "--dir", tmp_path / "c").returncode == 0
    res = run("inspect", tmp_path / "c" / "client.key")
    assert res.returncode == 1 and "not a PEM or DER certificate (it holds a private key)" in res.stderr


def test_inspect_warns_before_expiry(tmp_path: Path) -> None:
    assert run("init", "--dir", tmp_path).returncode == 0
    assert run("client", "shortlived", "--dir", tmp_path, "--days", "10").returncode == 0
    res = run("inspect", tmp_path / "shortlived.crt", "--ca", tmp_path / "ca.crt")
    assert res.returncode == 0, res.stdout
    assert "WARNING: expires in 9 days" in res.stdout


def test_inspect_expired_and_foreign(tmp_path: Path) -> None:
    assert run("init", "--dir", tmp_path / "a").returncode == 0
    assert run("init", "--dir", tmp_path / "b").returncode == 0
    now = dt.datetime.now(dt.UTC)
    issue_client_window(
        tmp_path / "a", "old", not_before=now - dt.timedelta(days=20), not_after=now - dt.timedelta(days=3)
    )
    res = run("inspect", tmp_path / "a" / "old.crt", "--ca", tmp_path / "a" / "ca.crt")
    assert res.returncode == 1
    assert "validity:   EXPIRED 3 days ago" in res.stdout
    assert "does NOT chain" in res.stdout and "it expired on" in res.stdout

    res = run("inspect", tmp_path / "a" / "client.crt", "--ca", tmp_path / "b" / "ca.crt")
    assert res.returncode == 1
    assert "does NOT chain" in res.stdout and "signature does not verify" in res.stdout


def test_help_ends_with_examples() -> None:
    res = run("--help")
    assert res.returncode == 0
    assert res.stdout.rstrip().splitlines()[-2].strip().startswith("falconet certs revoke")


def test_inspect_reads_der(tmp_path: Path) -> None:
    assert run("init", "--dir", tmp_path).returncode == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "client.crt").read_bytes())
    (tmp_path / "client.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    res = run("inspect", tmp_path / "client.der", "--ca", tmp_path / "ca.crt")
    assert res.returncode == 0, res.stderr
    assert "CN=falconet-client" in res.stdout and "chains to" in res.stdout
