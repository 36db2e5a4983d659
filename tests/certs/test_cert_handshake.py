"""A real TLS 1.2+/1.3 handshake with the certificates from `init_certs`, through Python's ssl (OpenSSL): mutual
authentication succeeds with the issued pair, and OpenSSL itself refuses a foreign client, an expired client and
a server certificate posing as a client."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from falconet.certs import CertPaths, init_certs, issue_client_window


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertPaths, CertPaths]:
    base = tmp_path_factory.mktemp("pki")
    ours, foreign = init_certs(base / "ours"), init_certs(base / "foreign")
    now = dt.datetime.now(dt.UTC)
    issue_client_window(
        base / "ours", "expired", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )
    return ours, foreign


class OneShotServer:
    """Accepts one TLS connection requiring a client certificate, echoes one message, records what happened."""

    def __init__(self, paths: CertPaths) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(paths.ca_cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(paths.server_cert), str(paths.server_key))
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.peer_cn: str | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                self.peer_cn = str(cn[0].value)
                tls.sendall(tls.recv(100))
        except (ssl.SSLError, OSError) as exc:
            self.error = exc
        finally:
            conn.close()
            self.sock.close()

    def join(self) -> None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def client_ctx(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def exchange(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.sendall(b"ping")
            return tls.recv(100)


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", socket.gethostname()])
def test_mutual_handshake(pki: tuple[CertPaths, CertPaths], hostname: str) -> None:
    ours, _ = pki
    server = OneShotServer(ours)
    assert (
        exchange(server.port, client_ctx(ours.ca_cert, ours.client_cert, ours.client_key), hostname)
        == b"ping"
    )
    server.join()
    assert server.error is None and server.peer_cn == "falconet-client"


def test_client_rejects_server_from_foreign_ca(pki: tuple[CertPaths, CertPaths]) -> None:
    ours, foreign = pki
    server = OneShotServer(ours)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        exchange(server.port, client_ctx(foreign.ca_cert, foreign.client_cert, foreign.client_key))
    server.join()
    assert server.error is not None


def client_rejected(ours: CertPaths, cert: Path, key: Path) -> str:
    """Connects with the given client pair; returns OpenSSL's reason on the server side."""
    server = OneShotServer(ours)
    # With TLS 1.3 the client finishes its handshake before the server judges its certificate, so the
    # failure shows up on the client's first read (an alert, or a closed connection).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        reply = exchange(server.port, client_ctx(ours.ca_cert, cert, key))
        if not reply:
            raise ConnectionError("closed by server")
    server.join()
    assert isinstance(server.error, ssl.SSLError)
    return str(server.error)


def test_server_rejects_foreign_client(pki: tuple[CertPaths, CertPaths]) -> None:
    ours, foreign = pki
    assert "certificate verify failed" in client_rejected(ours, foreign.client_cert, foreign.client_key)


def test_server_rejects_expired_client(pki: tuple[CertPaths, CertPaths]) -> None:
    ours, _ = pki
    d = ours.ca_cert.parent
    assert "certificate has expired" in client_rejected(ours, d / "expired.crt", d / "expired.key")


def test_server_rejects_server_cert_as_client(pki: tuple[CertPaths, CertPaths]) -> None:
    ours, _ = pki
    assert "certificate purpose" in client_rejected(ours, ours.server_cert, ours.server_key)
