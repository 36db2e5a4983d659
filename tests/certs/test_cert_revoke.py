"""`falconet certs revoke NAME|SERIAL`: a real subprocess writing a real CRL that cryptography verifies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from falconet.certs import init_certs, issue_client
from falconet.certs.revoke import read_crl

FALCONET = str(Path(sys.executable).with_name("falconet"))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FALCONET, "certs", "revoke", *map(str, args)], capture_output=True, text=True, timeout=60, env=os.environ
    )


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_revoke_by_name_then_by_serial_accumulates_in_a_crl_signed_by_the_ca(tmp_path: Path) -> None:
    init_certs(tmp_path)
    issue_client(tmp_path, "alice")
    issue_client(tmp_path, "bob")
    res = run("alice", "--dir", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "CN=alice" in res.stdout and f"wrote {tmp_path / 'crl.pem'}" in res.stdout
    bob = _serial(tmp_path / "bob.crt")
    res = run(f"{bob:x}", "--dir", tmp_path)  # the serial as `certs inspect` prints it
    assert res.returncode == 0, res.stderr
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    assert read_crl(tmp_path / "crl.pem", ca) == {_serial(tmp_path / "alice.crt"), bob}
    assert oct((tmp_path / "crl.pem").stat().st_mode & 0o777) == "0o644"
    again = run("alice", "--dir", tmp_path)
    assert again.returncode == 0 and "already revoked" in again.stdout
    assert read_crl(tmp_path / "crl.pem", ca) == {_serial(tmp_path / "alice.crt"), bob}


def test_revoke_refuses_what_it_cannot_revoke(tmp_path: Path) -> None:
    init_certs(tmp_path / "a")
    init_certs(tmp_path / "b")
    (tmp_path / "a" / "stranger.crt").write_bytes((tmp_path / "b" / "client.crt").read_bytes())
    for who, message in (
        ("ca", "the CA itself cannot be revoked"),
        ("no-such-client", "neither a client name"),
        ("stranger", "was not issued by the CA"),
        ("0xzz", "neither a client name"),
    ):
        res = run(who, "--dir", tmp_path / "a")
        assert res.returncode == 1 and message in res.stderr, (who, res.stderr)
    assert not (tmp_path / "a" / "crl.pem").exists()
    res = run("client", "--dir", tmp_path / "nowhere")
    assert res.returncode == 1 and "no CA in" in res.stderr
