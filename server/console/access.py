"""Who may read the console: mutual TLS with an allow-list of Common Names and the CRL, or a bearer token.

The TLS handshake checks a client certificate's chain, dates and clientAuth usage against the CA (as gRPC's
does); every request then checks what the handshake cannot: the Common Name is allow-listed and the serial is
not revoked by the CRL (the one the gRPC server reads, server/guard.py's RevocationList, re-read on SIGHUP, when
the console also ends the open streams of certificates it now revokes). A token is compared in constant time.
With both configured, either credential admits a request (browsers behind a proxy send the token).
"""

from __future__ import annotations

import hmac
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from falconet.certs.check import check_tls_files
from falconet.server.console.config import ConsoleConfig, ConsoleConfigError
from falconet.server.guard import RevocationList


@dataclass(frozen=True, slots=True)
class Reader:
    """An admitted request's credential: `cert:CN` (with the certificate's serial) or `token`."""

    identity: str
    serial: int | None = None


class Denied(Exception):
    """A request refused; the message is safe to send (it names no secret)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Access:
    """The credentials one console accepts; `admit` is called per request with the peer's certificate."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.allowed = config.allowed_common_names
        self._token = _read_token(config.token_file) if config.token_file is not None else None
        crl = config.crl_path
        self.revocations = (
            RevocationList(crl, config.client_ca) if crl is not None and config.client_ca is not None else None
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The listener's TLS context (None: plain HTTP, loopback only); files checked as the gRPC server's."""
        cfg = self.config
        if cfg.cert_chain is None or cfg.private_key is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cfg.client_ca is not None:
            check_tls_files(cfg.client_ca, cfg.cert_chain, cfg.private_key, role="server")
            ctx.load_verify_locations(str(cfg.client_ca))
            # With a token too, a browser without a certificate may still present the token.
            ctx.verify_mode = ssl.CERT_OPTIONAL if self._token is not None else ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(str(cfg.cert_chain), str(cfg.private_key))
        except (OSError, ssl.SSLError) as exc:
            raise ConsoleConfigError(
                f"web_console.cert_chain {cfg.cert_chain} and private_key {cfg.private_key} cannot serve: {exc}"
            ) from None
        return ctx

    def reload_crl(self) -> frozenset[int]:
        """Re-reads the CRL (CertError keeps the old one); returns the serials revoked now."""
        if self.revocations is None:
            return frozenset()
        self.revocations.serials = self.revocations.read()
        return self.revocations.serials

    def admit(self, peer_der: bytes | None, authorization: str) -> Reader:
        """The request's reader, or Denied (401: no credential, 403: a credential this console refuses)."""
        if peer_der is not None and self.config.client_ca is not None:
            return self._admit_certificate(peer_der)
        if self._token is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token):
                return Reader("token")
            if authorization:
                raise Denied(401, "the bearer token is not this console's")
            raise Denied(401, "a bearer token (or a client certificate) is required")
        raise Denied(401, "a client certificate is required")

    def _admit_certificate(self, der: bytes) -> Reader:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise Denied(403, "the client certificate cannot be read") from None
        serial = cert.serial_number
        if self.revocations is not None and serial in self.revocations.serials:
            raise Denied(403, f"the client certificate (serial {serial:x}) is revoked by the server's CRL")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(names[0].value) if names else ""
        if cn not in self.allowed:
            shown = "".join(ch if ch.isprintable() else "?" for ch in cn)[:64]
            raise Denied(403, f"the client certificate CN={shown!r} is not allowed to read this console")
        return Reader(f"cert:{cn}", serial)


def _read_token(path: Path) -> bytes:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsoleConfigError(f"web_console.token_file {path} cannot be read: {exc}") from None
    if len(token) < 16:
        raise ConsoleConfigError(
            f"web_console.token_file {path} holds {len(token)} characters; a token needs at least 16 "
            "(e.g. `openssl rand -hex 32 > FILE`)"
        )
    return token.encode()
