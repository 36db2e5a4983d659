"""Before dialing over mTLS the SDK checks its own files and names the problem, instead of leaving the user with a
failed handshake. Each case is a real file made by `falconet.certs`."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from falconet.certs import init_certs, issue_client, issue_client_window
from falconet.sdk import Client, ConfigError, TLSFilesError
from falconet.sdk._tls_check import check_client_files


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sdk-pki")
    ours, foreign = base / "ours", base / "foreign"
    init_certs(ours)
    init_certs(foreign)
    now = dt.datetime.now(dt.UTC)
    issue_client_window(
        ours, "expired", not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(days=2)
    )
    issue_client_window(
        ours, "future", not_before=now + dt.timedelta(days=2), not_after=now + dt.timedelta(days=9)
    )
    issue_client(ours, "soon", days=5)
    key = serialization.load_pem_private_key((ours / "client.key").read_bytes(), None)
    (ours / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return ours, foreign


def check(
    d: Path, ca: str = "ca.crt", cert: str = "client.crt", key: str = "client.key", ca_dir: Path | None = None
) -> None:
    check_client_files((ca_dir or d) / ca, d / cert, d / key)


def test_good_files_pass(pki: tuple[Path, Path]) -> None:
    ours, _ = pki
    files = check_client_files(ours / "ca.crt", ours / "client.crt", ours / "client.key")
    assert files.cert == (ours / "client.crt").read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cert": "missing.crt"}, r"client certificate .*missing.crt does not exist"),
        ({"key": "missing.key"}, r"key .*missing.key does not exist"),
        ({"ca": "missing.crt"}, r"CA certificate .*missing.crt does not exist"),
        ({"key": "server.key"}, r"key .*server.key does not belong to the certificate .*client.crt"),
        ({"cert": "expired.crt", "key": "expired.key"}, r"client certificate .*expired.crt expired on"),
        ({"cert": "future.crt", "key": "future.key"}, r"not valid before .*clock"),
        ({"cert": "server.crt", "key": "server.key"}, r"does not chain .*clientAuth"),
        ({"cert": "client.key", "key": "client.crt"}, r"not a PEM certificate .*swapped"),
        ({"key": "encrypted.key"}, r"encrypted"),
    ],
)
def test_bad_files_are_named(pki: tuple[Path, Path], kwargs: dict[str, Any], message: str) -> None:
    ours, _ = pki
    with pytest.raises(TLSFilesError, match=message):
        check(ours, **kwargs)


def test_foreign_ca(pki: tuple[Path, Path]) -> None:
    ours, foreign = pki
    with pytest.raises(
        TLSFilesError, match=r"does not chain to the CA .*foreign/ca.crt: .*signature does not verify"
    ) as info:
        check(ours, ca_dir=foreign)
    assert info.value.path == str(ours / "client.crt")


def test_directory_instead_of_file(pki: tuple[Path, Path]) -> None:
    ours, _ = pki
    with pytest.raises(TLSFilesError, match="is a directory"):
        check_client_files(ours, ours / "client.crt", ours / "client.key")


def test_expiring_soon_is_a_warning(pki: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    ours, _ = pki
    with caplog.at_level(logging.WARNING, logger="falconet.sdk"):
        check(ours, cert="soon.crt", key="soon.key")
    assert "expires in 4 days" in caplog.text


def test_client_checks_before_dialing(pki: tuple[Path, Path]) -> None:
    ours, _ = pki
    # Port 1 on localhost: nothing there, but the file problem is reported first, without a connection.
    with pytest.raises(TLSFilesError, match="expired"):
        Client(
            host="127.0.0.1", port=1, ca=ours / "ca.crt", cert=ours / "expired.crt", key=ours / "expired.key"
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "localhost"}, "needs ca, cert and key; missing: ca, cert, key"),
        ({"cert": "c.crt"}, "need a host"),
        (
            {"unix_socket": "/x", "host": "h", "ca": "a", "cert": "b", "key": "c"},
            "either a UNIX socket or a host",
        ),
        ({"host": "h", "port": 70000, "ca": "a", "cert": "b", "key": "c"}, "invalid port"),
    ],
)
def test_connection_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Client(**kwargs)  # type: ignore[arg-type]
