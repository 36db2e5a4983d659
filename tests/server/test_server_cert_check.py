"""The server checks its certificate files with the same check the SDK runs on a client's (falconet.certs.check):
a server certificate that does not chain to the configured CA, or whose key usage does not allow server
authentication, stops the server at start with the reason, instead of starting and failing every handshake."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from falconet.certs import init_certs
from falconet.server.app import AlertServer
from falconet.server.config import ServerConfig
from falconet.server.tls import CertificateError


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("server-pki")
    init_certs(base / "ours")
    init_certs(base / "foreign")
    return base / "ours", base / "foreign"


def _mixed(tmp_path: Path, ca_from: Path, pair_from: Path, pair: str) -> Path:
    """A certs directory with ca.crt from `ca_from` and server.crt/server.key = `pair`.crt/.key of `pair_from`."""
    d = tmp_path / "certs"
    d.mkdir()
    shutil.copy(ca_from / "ca.crt", d / "ca.crt")
    shutil.copy(pair_from / f"{pair}.crt", d / "server.crt")
    shutil.copy(pair_from / f"{pair}.key", d / "server.key")
    return d


CASES = {
    "foreign CA": (
        1,
        "server",
        r"server certificate .*server.crt does not chain to the CA .*ca.crt: .*signature",
    ),
    "client usage": (0, "client", r"server certificate .*server.crt does not chain .*serverAuth"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_server_start_refuses_a_certificate_with_a_wrong_chain_or_usage(
    pkis: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    which, pair, message = CASES[case]
    certs = _mixed(tmp_path, pkis[0], pkis[which], pair)
    with pytest.raises(CertificateError, match=message):
        AlertServer(
            ServerConfig.with_certs_dir(certs, listen=(f"unix://{tmp_path / 's.sock'}", "127.0.0.1:0"))
        )
    assert not (tmp_path / "s.sock").exists()  # refused before anything was bound


def test_falconet_serve_exits_with_the_reason(pkis: tuple[Path, Path], tmp_path: Path) -> None:
    certs = _mixed(tmp_path, pkis[0], pkis[1], "server")
    result = subprocess.run(
        [sys.executable, "-m", "falconet.server.cli", "serve", "--certs", str(certs), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "falconet serve: the server certificate" in result.stderr
    assert "does not chain to the CA" in result.stderr and "listening on" not in result.stdout


def test_good_files_still_start(pkis: tuple[Path, Path], tmp_path: Path) -> None:
    server = AlertServer(ServerConfig.with_certs_dir(pkis[0], listen=("127.0.0.1:0",)))
    assert server.config.tls_cert == pkis[0] / "server.crt"


def test_server_and_sdk_share_the_one_check() -> None:
    from falconet.certs import check
    from falconet.sdk import _tls_check
    from falconet.server import tls

    # looked up by name: the modules import it for their own use, and mypy sees no re-export
    assert getattr(tls, "check_tls_files") is check.check_tls_files is getattr(_tls_check, "check_tls_files")
    assert tls.CertificateError is check.CertFilesError
