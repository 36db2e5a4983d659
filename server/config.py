"""The alert server's settings, validated in one place with messages a user can act on.

Addresses are gRPC-style: `unix:///abs/path` (a UNIX socket, no TLS: access is the socket file's mode and
group) or `HOST:PORT` (TCP, always mutual TLS: there is no plaintext TCP). Falco's usual port is 5060.
"""

from __future__ import annotations

import grp
from dataclasses import dataclass, field
from pathlib import Path

from falconet.server.errors import ConfigError
from falconet.server.hub import DEFAULT_RETENTION, default_hostname
from falconet.server.limits import Limits
from falconet.server.store_schema import StoreConfig

__all__ = ["DEFAULT_LISTEN", "DEFAULT_UNIX_SOCKET", "FALCO_PORT", "ConfigError", "Listen", "ServerConfig", "parse_listen"]

DEFAULT_UNIX_SOCKET = "/run/falconet/falconet.sock"
DEFAULT_LISTEN = f"unix://{DEFAULT_UNIX_SOCKET}"
FALCO_PORT = 5060


@dataclass(frozen=True, slots=True)
class Listen:
    """One parsed listen address."""

    address: str
    unix_path: Path | None = None  # set for UNIX sockets
    host: str = ""
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return self.unix_path is not None


def parse_listen(address: str, *, what: str = "listen address") -> Listen:
    """Reads `unix:///abs/path`, `unix:/abs/path`, `HOST:PORT` or `[V6]:PORT`; raises ConfigError naming the
    address as `what` (the daemon's file says `grpc.bind_address entry`).

    The only reader of listen addresses: `falconet serve`, the alert server and the daemon's configuration
    file all accept and refuse the same addresses, so a file that loads also binds.
    """
    text = address.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise ConfigError(
                f"{what} {address!r} must name an absolute socket path, e.g. unix:///run/falconet/falconet.sock"
            )
        return Listen(address=f"unix://{path}", unix_path=Path(path))
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(
            f"{what} {address!r} is neither unix:///PATH nor HOST:PORT (e.g. 0.0.0.0:{FALCO_PORT}, "
            f"[::1]:{FALCO_PORT}, 127.0.0.1:0 for any free port)"
        )
    return Listen(address=text, host=host, port=int(port_text))


@dataclass(frozen=True)
class ServerConfig:
    """Everything the alert server needs; `validate()` (called by AlertServer) explains what is wrong."""

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    unix_mode: int = 0o660
    unix_group: str | None = None
    input_allow_cns: frozenset[str] = frozenset()
    retention: int = DEFAULT_RETENTION
    hostname: str = field(default_factory=default_hostname)
    max_batch: int = 1000
    """Most alerts per message of the batched stream when the client does not say."""
    store: StoreConfig = field(default_factory=StoreConfig)
    """The persistent alert store (server/store.py); its path None = memory only."""
    limits: Limits = field(default_factory=Limits)
    tls_crl: Path | None = None
    """The CRL the server enforces (default: crl.pem next to the CA certificate; missing = nothing revoked)."""

    @property
    def crl_path(self) -> Path | None:
        if self.tls_crl is not None:
            return self.tls_crl
        return None if self.tls_ca is None else self.tls_ca.parent / "crl.pem"

    @classmethod
    def with_certs_dir(
        cls, certs: Path, listen: tuple[str, ...] = (DEFAULT_LISTEN,), **kw: object
    ) -> ServerConfig:
        """Uses ca.crt, server.crt and server.key from a directory made by `falconet certs init`."""
        return cls(
            listen=listen,
            tls_ca=certs / "ca.crt",
            tls_cert=certs / "server.crt",
            tls_key=certs / "server.key",
            **kw,  # type: ignore[arg-type]
        )

    def listens(self) -> list[Listen]:
        return [parse_listen(a) for a in self.listen]

    def validate(self) -> list[Listen]:
        """Checks every setting; returns the parsed addresses or raises ConfigError naming the problem."""
        if not self.listen:
            raise ConfigError("no listen address: give at least one (unix:///PATH or HOST:PORT)")
        listens = self.listens()
        seen: set[str] = set()
        for item in listens:
            if item.address in seen:
                raise ConfigError(f"listen address {item.address!r} is given twice")
            seen.add(item.address)
        tls = (self.tls_ca, self.tls_cert, self.tls_key)
        if any(p is not None for p in tls) and not all(p is not None for p in tls):
            raise ConfigError(
                "TLS needs all three files: the CA certificate, the server certificate and its key"
            )
        if any(not item.is_unix for item in listens):
            if not all(p is not None for p in tls):
                tcp = next(item.address for item in listens if not item.is_unix)
                raise ConfigError(
                    f"TCP address {tcp!r} needs mutual TLS: give the CA, server certificate and key "
                    "(e.g. --certs DIR made by `falconet certs init`); plaintext TCP is not offered"
                )
            for label, p in (
                ("CA certificate", self.tls_ca),
                ("server certificate", self.tls_cert),
                ("server key", self.tls_key),
            ):
                assert p is not None
                if not p.is_file():
                    raise ConfigError(f"the {label} {str(p)!r} does not exist or is not a file")
        if not 0 <= self.unix_mode <= 0o777:
            raise ConfigError(f"unix socket mode {oct(self.unix_mode)} is not a permission mode (0 to 0o777)")
        if self.unix_group is not None:
            try:
                grp.getgrnam(self.unix_group)
            except KeyError:
                if not self.unix_group.isdigit():
                    raise ConfigError(f"unix socket group {self.unix_group!r} does not exist") from None
        if self.retention < 1:
            raise ConfigError(f"retention must be at least 1 alert, got {self.retention}")
        if not self.hostname or self.hostname != self.hostname.strip():
            raise ConfigError(
                f"hostname {self.hostname!r} must be non-empty without spaces around it (it is put on every alert)"
            )
        for problem in self.store.problems():
            raise ConfigError(problem)
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1 alert, got {self.max_batch}")
        for problem in self.limits.problems():
            raise ConfigError(problem)
        for cn in self.input_allow_cns:
            if not cn or cn != cn.strip():
                raise ConfigError(
                    f"input allow-list entry {cn!r} must be a non-empty Common Name without spaces around it"
                )
        return listens
