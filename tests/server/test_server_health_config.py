"""gRPC health and reflection on the real server, and ServerConfig's sentence-style validation."""

from __future__ import annotations

import grp
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_support import mtls_credentials
from shared_server import ServerFactory, ServerHandle

from falconet.server.app import AlertServer
from falconet.server.config import ConfigError, ServerConfig, parse_listen
from falconet.server.tls import CertificateError


def test_health_reports_serving_for_every_service(alert_server: ServerHandle, certs_dir: Path) -> None:
    with grpc.secure_channel(alert_server.tcp_target, mtls_credentials(certs_dir)) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", "falco.outputs.service", "falco.version.service", "falconet.v1.AlertService"):
            # types-grpcio-health-checking's HealthStub declares no methods
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=20)  # type: ignore[attr-defined]
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_reflection_lists_the_services(alert_server: ServerHandle) -> None:
    with grpc.insecure_channel(alert_server.unix_target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        # types-grpcio-reflection types this method as binascii.Incomplete (a mistake in the stub package)
        info: Callable[
            [Iterator[reflection_pb2.ServerReflectionRequest]], Iterator[reflection_pb2.ServerReflectionResponse]
        ] = stub.ServerReflectionInfo  # type: ignore[assignment]
        [reply] = list(
            info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        names = {s.name for s in reply.list_services_response.service}
        assert {
            "falco.outputs.service",
            "falco.version.service",
            "falconet.v1.AlertService",
            "falconet.v1.InputService",
            "grpc.health.v1.Health",
        } <= names
        [reply] = list(
            info(
                iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="falco.outputs.service")])
            )
        )
        assert reply.file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("unix:///run/x.sock", ("unix:///run/x.sock", "/run/x.sock")),
        ("unix:/run/x.sock", ("unix:///run/x.sock", "/run/x.sock")),
        ("0.0.0.0:5060", ("0.0.0.0:5060", None)),
        ("[::1]:0", ("[::1]:0", None)),
    ],
)
def test_listen_addresses(address: str, expected: tuple[str, str | None]) -> None:
    parsed = parse_listen(address)
    assert (parsed.address, str(parsed.unix_path) if parsed.unix_path else None) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"listen": ()}, "no listen address"),
        ({"listen": ("localhost",)}, "neither unix:///PATH nor HOST:PORT"),
        ({"listen": ("unix://relative.sock",)}, "absolute socket path"),
        ({"listen": ("127.0.0.1:70000",)}, "neither unix:///PATH nor HOST:PORT"),
        ({"listen": ("127.0.0.1:5060",)}, "needs mutual TLS"),
        ({"listen": ("unix:///tmp/a.sock", "unix:///tmp/a.sock")}, "given twice"),
        ({"tls_ca": Path("/nonexistent/ca.crt")}, "needs all three files"),
        ({"retention": 0}, "retention must be at least 1"),
        ({"unix_group": "no-such-group-falconet"}, "group 'no-such-group-falconet' does not exist"),
        ({"input_allow_cns": frozenset({" x"})}, "allow-list entry"),
        ({"hostname": ""}, "hostname '' must be non-empty"),
    ],
)
def test_config_errors_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**kwargs).validate()  # type: ignore[arg-type]


def test_missing_or_mismatched_tls_files_are_named(certs_dir: Path, tmp_path: Path) -> None:
    missing = ServerConfig.with_certs_dir(tmp_path, listen=("127.0.0.1:0",))
    with pytest.raises(ConfigError, match="does not exist"):
        AlertServer(missing)
    (tmp_path / "ca.crt").write_bytes((certs_dir / "ca.crt").read_bytes())
    (tmp_path / "server.crt").write_bytes((certs_dir / "server.crt").read_bytes())
    (tmp_path / "server.key").write_bytes((certs_dir / "client.key").read_bytes())
    with pytest.raises(CertificateError, match="does not belong to"):
        AlertServer(ServerConfig.with_certs_dir(tmp_path, listen=("127.0.0.1:0",)))


def test_unix_socket_gets_the_configured_mode_and_group(alert_server_factory: ServerFactory) -> None:
    # Any group other than our own (as root, chown to it works), else our own.
    other = next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), None) if os.geteuid() == 0 else None
    group = other.gr_name if other is not None else grp.getgrgid(os.getgid()).gr_name
    handle = alert_server_factory(unix_mode=0o600, unix_group=group)
    st = handle.unix_path.stat()
    assert (st.st_mode & 0o777) == 0o600
    assert st.st_gid == grp.getgrnam(group).gr_gid


def test_a_socket_in_use_by_another_server_is_not_taken(alert_server: ServerHandle) -> None:
    config = ServerConfig(listen=(alert_server.unix_target,))
    server = AlertServer(config)
    with pytest.raises(ConfigError, match="another server is listening on it"):
        alert_server.run(server.start())
    assert alert_server.unix_path.is_socket()


def test_a_socket_directory_that_cannot_be_made_is_named(alert_server: ServerHandle, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    server = AlertServer(ServerConfig(listen=(f"unix://{blocker}/sub/s.sock",)))
    with pytest.raises(ConfigError, match=f"cannot create '{blocker}/sub': Not a directory"):
        alert_server.run(server.start())
