"""mTLS on the TCP port: every bad client is refused without disturbing the good ones, and certificates can be
rotated while streams stay open."""

from __future__ import annotations

import datetime as dt
import queue
import shutil
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_support import falco_request, make_alert, mtls_credentials
from shared_server import ServerFactory, ServerHandle

from falconet.certs import init_certs, issue_client_window
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc, version_pb2, version_pb2_grpc
from falconet.server.tls import CertificateError


def _version(target: str, creds: grpc.ChannelCredentials | None) -> version_pb2.response:
    channel = grpc.secure_channel(target, creds) if creds is not None else grpc.insecure_channel(target)
    with channel:
        stub = version_pb2_grpc.serviceStub(channel)
        reply: version_pb2.response = stub.version(version_pb2.request(), timeout=20)
        return reply


def _requests(q: queue.Queue[outputs_pb2.request | None]) -> Iterator[outputs_pb2.request]:
    while (item := q.get()) is not None:
        yield item


@pytest.fixture(scope="module")
def bad_clients(
    tmp_path_factory: pytest.TempPathFactory, certs_dir: Path
) -> dict[str, grpc.ChannelCredentials | None]:
    ca = (certs_dir / "ca.crt").read_bytes()
    foreign = tmp_path_factory.mktemp("foreign")
    init_certs(foreign)
    now = dt.datetime.now(dt.UTC)
    issue_client_window(
        certs_dir,
        "expired-client",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
        force=True,
    )
    return {
        "no client certificate": grpc.ssl_channel_credentials(ca),
        "certificate from another CA": grpc.ssl_channel_credentials(
            ca, (foreign / "client.key").read_bytes(), (foreign / "client.crt").read_bytes()
        ),
        "expired certificate": mtls_credentials(certs_dir, "expired-client"),
        "server certificate used as client certificate": mtls_credentials(certs_dir, "server"),
        "plaintext": None,
    }


def test_good_client_is_served(alert_server: ServerHandle, certs_dir: Path) -> None:
    assert _version(alert_server.tcp_target, mtls_credentials(certs_dir)).version


@pytest.mark.parametrize(
    "case",
    [
        "no client certificate",
        "certificate from another CA",
        "expired certificate",
        "server certificate used as client certificate",
        "plaintext",
    ],
)
def test_bad_client_is_rejected_and_others_are_not_disturbed(
    alert_server: ServerHandle,
    certs_dir: Path,
    bad_clients: dict[str, grpc.ChannelCredentials | None],
    case: str,
) -> None:
    q: queue.Queue[outputs_pb2.request | None] = queue.Queue()
    q.put(falco_request())
    with grpc.secure_channel(alert_server.tcp_target, mtls_credentials(certs_dir)) as good:
        stream = outputs_pb2_grpc.serviceStub(good).sub(_requests(q))
        alert_server.publish(make_alert(0))
        assert next(stream).cursor.sequence == 1
        with pytest.raises(grpc.RpcError) as info:
            _version(alert_server.tcp_target, bad_clients[case])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # The open stream and new good connections carry on.
        alert_server.publish(make_alert(1))
        assert next(stream).cursor.sequence == 2
        assert _version(alert_server.tcp_target, mtls_credentials(certs_dir)).version
        stream.cancel()
    q.put(None)


def test_certificates_reload_without_dropping_streams(
    alert_server_factory: ServerFactory, tmp_path: Path
) -> None:
    certs = tmp_path / "live"
    init_certs(certs)
    handle = alert_server_factory(certs=certs)
    old = tmp_path / "old"
    shutil.copytree(certs, old)
    q: queue.Queue[outputs_pb2.request | None] = queue.Queue()
    q.put(falco_request())
    with grpc.secure_channel(handle.tcp_target, mtls_credentials(old)) as before:
        stream = outputs_pb2_grpc.serviceStub(before).sub(_requests(q))
        handle.publish(make_alert(0))
        assert next(stream).cursor.sequence == 1
        init_certs(certs, force=True)  # a whole new CA, server and client certificate
        handle.call(handle.server.reload_certificates)
        assert handle.server.certificate_reloads == 1
        # New handshakes use the new files: clients of the new CA get in, clients of the old one do not.
        assert _version(handle.tcp_target, mtls_credentials(certs)).version
        with pytest.raises(grpc.RpcError):
            _version(handle.tcp_target, mtls_credentials(old))
        # The stream opened before the rotation is still live.
        handle.publish(make_alert(1))
        assert next(stream).cursor.sequence == 2
        stream.cancel()
    q.put(None)


def test_reload_of_broken_files_is_refused_and_the_old_ones_stay(
    alert_server_factory: ServerFactory, tmp_path: Path
) -> None:
    certs = tmp_path / "live"
    init_certs(certs)
    handle = alert_server_factory(certs=certs)
    good_key = (certs / "server.key").read_bytes()
    other = tmp_path / "other"
    init_certs(other)
    (certs / "server.key").write_bytes((other / "server.key").read_bytes())
    with pytest.raises(CertificateError, match="does not belong to"):
        handle.call(handle.server.reload_certificates)
    (certs / "server.key").write_bytes(b"garbage")
    with pytest.raises(CertificateError, match="not an unencrypted PEM private key"):
        handle.call(handle.server.reload_certificates)
    (certs / "server.key").write_bytes(good_key)
    assert _version(handle.tcp_target, mtls_credentials(certs)).version  # still serving with the old files


@pytest.mark.parametrize(
    ("version", "accepted"),
    [(ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True)],
)
def test_tls_below_1_2_is_refused_by_the_server(
    alert_server: ServerHandle, certs_dir: Path, version: ssl.TLSVersion, accepted: bool
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Security level 0 so that this client does offer old versions: a refusal is then the server's.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python deprecates TLS 1.1: that is what we try
        ctx.minimum_version = ctx.maximum_version = version
    ctx.load_verify_locations(certs_dir / "ca.crt")
    ctx.load_cert_chain(certs_dir / "client.crt", certs_dir / "client.key")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((alert_server.tcp_host, alert_server.tcp_port), timeout=30) as raw:
        if accepted:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        else:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                ctx.wrap_socket(raw, server_hostname="localhost")
