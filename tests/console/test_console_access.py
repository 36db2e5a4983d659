"""Who may read the console, over real sockets: token, mutual TLS with the allow-list and the CRL, loopback."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from console_support import ConsoleFactory, ConsoleHandle, SyncEvents, client_ssl, make_alert, new_token, sequences

from falconet.certs import issue_client
from falconet.certs.revoke import revoke
from falconet.server.console.app import WebConsole
from falconet.server.console.config import ConsoleConfig, ConsoleConfigError
from falconet.server.hub import Hub

API = ("api/info", "api/stream", "api/stats")


def _status(url: str, headers: dict[str, str] | None = None, ssl_context: ssl.SSLContext | None = None) -> int:
    """The HTTP status of a GET (urllib: its socket is closed when this returns, TLS included)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=ssl_context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_requests_without_the_token_are_refused(token_console: ConsoleHandle) -> None:
    h = token_console
    for path in API:
        assert _status(h.url + path) == 401
        assert _status(h.url + path, {"Authorization": "Bearer " + "0" * 48}) == 401
        assert _status(h.url + path, {"Authorization": f"Basic {h.token}"}) == 401
    assert _status(h.url + "api/info", {"Authorization": f"Bearer {h.token}"}) == 200
    assert h.console.refused == 9
    # The page itself is public package content, with no alert in it.
    assert _status(h.url) == 200


@pytest.fixture
def mtls_console(console_factory: ConsoleFactory, certs_dir: Path, tmp_path: Path) -> tuple[ConsoleHandle, Path]:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"):
        (certs / name).write_bytes((certs_dir / name).read_bytes())
    issue_client(certs, "mallory")
    issue_client(certs, "alice")
    handle = console_factory(
        cert_chain=certs / "server.crt", private_key=certs / "server.key", client_ca=certs / "ca.crt",
        allowed_common_names=frozenset({"falconet-client", "alice"}),
    )  # fmt: skip
    return handle, certs


def test_mtls_admits_allow_listed_names_only(mtls_console: tuple[ConsoleHandle, Path]) -> None:
    h, certs = mtls_console
    assert h.url.startswith("https://127.0.0.1:")
    for path in API:
        assert _status(h.url + path, ssl_context=client_ssl(certs, "client")) == 200, path
    assert _status(h.url + "api/info", ssl_context=client_ssl(certs, "mallory")) == 403
    assert _refused_without_certificate(h.console.port, client_ssl(certs, None))
    assert _plain_http_answer(h.console.port) == b""  # HTTP on the TLS port: no answer but a closed socket


def _refused_without_certificate(port: int, ctx: ssl.SSLContext) -> bool:
    """True when the server ends a TLS connection that presents no certificate (TLS 1.3 reports it on read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return tls.recv(1024) == b""
        except (ssl.SSLError, ConnectionResetError):
            return True


def _plain_http_answer(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        try:
            while chunk := raw.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        return data if data.startswith(b"HTTP/") else b""


def test_revoked_certificates_are_refused_and_their_streams_cut(mtls_console: tuple[ConsoleHandle, Path]) -> None:
    h, certs = mtls_console
    a = SyncEvents(h.url + "api/stream", ssl_context=client_ssl(certs, "alice"))
    c = SyncEvents(h.url + "api/stream", ssl_context=client_ssl(certs, "client"))
    try:
        h.publish(make_alert(1))
        a.until(lambda ev: sequences(ev) == [1])
        c.until(lambda ev: sequences(ev) == [1])
        revoke(certs, "alice")
        assert h.run(_reload(h.console)) == 1  # SIGHUP's work, on the console's loop
        with pytest.raises(ConnectionError):
            a.until(lambda ev: False)
        h.publish(make_alert(2))
        c.until(lambda ev: sequences(ev) == [1, 2])  # the other certificate's stream goes on
        refused = SyncEvents(h.url + "api/info", ssl_context=client_ssl(certs, "alice"))
        assert refused.status == 403
        assert "revoked" in json.loads(refused.response.read())["message"]
        refused.close()
    finally:
        a.close()
        c.close()


async def _reload(console: WebConsole) -> int:
    return console.reload()


def test_plain_http_is_refused_off_loopback(tmp_path: Path) -> None:
    token = new_token(tmp_path)
    for address in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        with pytest.raises(ConsoleConfigError, match="plain HTTP is only served on 127.0.0.1"):
            WebConsole(ConsoleConfig(enabled=True, listen_address=address, token_file=token), Hub(10))
    for address in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        ConsoleConfig(enabled=True, listen_address=address, token_file=token).check()


def test_a_console_without_credentials_is_refused(tmp_path: Path, certs_dir: Path) -> None:
    with pytest.raises(ConsoleConfigError, match="no access control"):
        WebConsole(ConsoleConfig(enabled=True), Hub(10))
    with pytest.raises(ConsoleConfigError, match="allowed_common_names"):
        ConsoleConfig(enabled=True, cert_chain=certs_dir / "server.crt", private_key=certs_dir / "server.key",
                      client_ca=certs_dir / "ca.crt").check()  # fmt: skip
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    with pytest.raises(ConsoleConfigError, match="at least 16"):
        WebConsole(ConsoleConfig(enabled=True, token_file=short), Hub(10))
