"""Where and how to dial: the UNIX socket (no TLS; the socket's permissions are the access control) or TCP
with mTLS. Also turns grpc's terse failures into a sentence that says what was tried and why it failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from falconet.sdk._models import DEFAULT_TCP_PORT, DEFAULT_UNIX_SOCKET
from falconet.sdk._tls_check import TLSFiles, check_client_files
from falconet.sdk.errors import (
    ConfigError,
    ConnectError,
    FalconetError,
    InvalidArgument,
    PermissionDenied,
    ServerError,
)

# grpc's own reconnect back-off starts at 1 s and grows to 120 s; a subscriber that lost its server wants it
# back within our (much shorter) Backoff, so the channel may retry as quickly.
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    # Despite its name, gRPC core reads this one as the least time a connection attempt (TCP connect, TLS
    # handshake, HTTP/2 settings) is given before it is abandoned; at 100 ms a loaded host failed calls with
    # "Timeout occurred: FD Shutdown" or a torn handshake instead of the server's answer. Keep gRPC's 20 s.
    ("grpc.min_reconnect_backoff_ms", 20_000),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A subscriber may wait hours for its next alert: ping the server so a peer that vanished without closing
    # the connection (a partition, a rebooted host) is noticed and the subscription reconnects. Our server
    # accepts pings every 10 s; a stock gRPC server that finds these too frequent says so, and the client's
    # gRPC then doubles the interval by itself.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 64 << 20),
]

# How grpc words a connection the peer closed or reset.
_CONNECTION_LOST = ("socket closed", "connection reset", "end of tcp stream", "broken pipe")

# Status codes after which reconnecting can help (the server went away, restarted, or shed the stream).
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved address plus, for TCP, the checked mTLS material."""

    target: str
    description: str
    unix_path: str | None = None
    tls: TLSFiles | None = None
    server_name: str | None = None
    ca_path: str | None = None
    cert_path: str | None = None

    @classmethod
    def resolve(
        cls,
        *,
        unix_socket: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        ca: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
    ) -> Endpoint:
        """Validates the connection arguments; for mTLS, checks the files (TLSFilesError names a problem)."""
        tls_args = {"ca": ca, "cert": cert, "key": key}
        if host is None:
            if port is not None or server_name is not None or any(v is not None for v in tls_args.values()):
                raise ConfigError(
                    "port, ca, cert, key and server_name need a host (they are for mTLS over TCP)"
                )
            return cls.unix(unix_socket if unix_socket is not None else DEFAULT_UNIX_SOCKET)
        if unix_socket is not None:
            raise ConfigError("give either a UNIX socket or a host, not both")
        missing = [name for name, v in tls_args.items() if v is None]
        if missing:
            raise ConfigError(
                f"a TCP connection is always mTLS and needs ca, cert and key; missing: {', '.join(missing)}"
            )
        if not host:
            raise ConfigError("the host is empty")
        port = DEFAULT_TCP_PORT if port is None else port
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"invalid port {port!r}: expected 1 to 65535")
        assert ca is not None and cert is not None and key is not None
        files = check_client_files(Path(ca), Path(cert), Path(key))
        addr = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        name = f", server name {server_name}" if server_name else ""
        return cls(
            target=addr,
            description=f"mTLS to {addr} (CA {ca}, certificate {cert}{name})",
            tls=files,
            server_name=server_name,
            ca_path=str(ca),
            cert_path=str(cert),
        )

    @classmethod
    def unix(cls, socket: str | os.PathLike[str]) -> Endpoint:
        text = os.fspath(socket)
        if text.startswith("unix://"):
            text = text[len("unix://") :]
        elif text.startswith("unix:"):
            text = text[len("unix:") :]
        if not text:
            raise ConfigError("the UNIX socket path is empty")
        path = os.path.abspath(text)
        return cls(target=f"unix://{path}", description=f"the UNIX socket {path}", unix_path=path)

    def options(self) -> list[tuple[str, int | str]]:
        opts = list(_CHANNEL_OPTIONS)
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return opts

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.tls.ca, private_key=self.tls.key, certificate_chain=self.tls.cert
        )

    def channel(self) -> grpc.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.insecure_channel(self.target, options=self.options())
        return grpc.secure_channel(self.target, creds, options=self.options())

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.aio.insecure_channel(self.target, options=self.options())
        return grpc.aio.secure_channel(self.target, creds, options=self.options())

    # -- explaining failures -----------------------------------------------------------------------------------

    def explain(self, code: grpc.StatusCode | None, details: str, *, established: bool = False) -> str:
        """Why a connection attempt failed, as far as grpc's status lets us know.

        `established`: the server had already accepted this connection (answered a call on it), so a closed or
        reset connection means the server went away; without it, over mTLS, it may be a refused certificate.
        """
        d = details or ""
        low = d.lower()
        if established and any(s in low for s in _CONNECTION_LOST):
            return (
                f"the connection to the server was lost ({_last_line(d)}): it stopped, crashed or restarted, or "
                "the network dropped"
            )
        if self.unix_path is not None:
            path = self.unix_path
            if "no such file" in low:
                return (
                    f"the socket {path} does not exist; is the daemon running (`falconet run` or "
                    "`falconet serve`), and is this its --unix-socket?"
                )
            if "connection refused" in low:
                return f"nothing is listening on {path} (a socket left behind by a daemon that stopped?)"
            if "permission denied" in low:
                return (
                    f"permission denied on {path}: run as root or as a member of the socket's group "
                    "(see the server's unix socket mode/group settings)"
                )
        else:
            if "dns resolution failed" in low or "name or service not known" in low:
                return f"the host name in {self.target} does not resolve"
            if "connection refused" in low:
                return f"nothing is listening on {self.target} (is the server running, and on this port?)"
            if "not in peer certificate" in low:
                name = self.server_name or self.target.rsplit(":", 1)[0].strip("[]")
                return (
                    f"the server's certificate does not name the host dialed ({name}): pass a name it holds with "
                    "--server-name, or re-issue it with `falconet certs init --san NAME`"
                )
            if "certificate_verify_failed" in low or "certificate verify failed" in low:
                return (
                    f"the server's certificate does not verify against the CA {self.ca_path}, or does not name "
                    "the host dialed (check the CA, or pass the name the server certificate holds as "
                    "--server-name)"
                )
            if "wrong_version_number" in low or "packet_length_too_long" in low or "http_request" in low:
                return f"{self.target} does not speak TLS (is it the daemon's gRPC port?)"
            if any(s in low for s in ("alert", "bad_certificate", "unknown_ca", "certificate_required")):
                return (
                    f"the server rejected our certificate {self.cert_path} during the TLS handshake (is the "
                    "server configured with the same CA?)"
                )
            if "handshake" in low or "ssl" in low or "tsi_" in low:
                return f"the TLS handshake failed ({_last_line(d)})"
            if any(s in low for s in _CONNECTION_LOST):
                return (
                    "the server closed the connection right away; with TLS 1.3 this is how a server rejects "
                    f"a client certificate ({self.cert_path}): is the server configured with the same CA?"
                )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "no answer before the deadline (server overloaded, or a firewall dropping packets?)"
        return _last_line(d) or (code.name if code is not None else "unknown error")

    def error(self, err: grpc.RpcError) -> FalconetError:
        """The SDK error for an RpcError raised by a call to this endpoint."""
        code = _code(err)
        details = _details(err)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or code is None:
            return ConnectError(self.description, self.explain(code, details))
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(code.name, details)
        if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            return PermissionDenied(code.name, details)
        return ServerError(code.name, details)


def _code(err: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(err, "code", None)
    return code() if callable(code) else None


def _details(err: grpc.RpcError) -> str:
    details = getattr(err, "details", None)
    text = details() if callable(details) else None
    return str(text or err)


def is_retryable(err: grpc.RpcError) -> bool:
    return _code(err) in RETRYABLE


def _last_line(details: str) -> str:
    # grpc details read "failed to connect to all addresses; last error: UNAVAILABLE: unix:/x: reason".
    return details.split("last error:")[-1].strip()
