"""Server-side mutual TLS: certificate files checked before use, and swapped at runtime without dropping streams.

gRPC asks a fetcher for the certificate configuration at each new handshake; `reload()` re-reads the files and
hands the new configuration to the next handshake, while established connections (and their streams) keep
the session they negotiated. Files that do not fit together are refused with the reason and the old ones kept.
"""

from __future__ import annotations

import datetime as _dt
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization


class CertificateError(ValueError):
    """Certificate files that cannot serve; the message names the file and the problem."""


@dataclass(frozen=True)
class ServerTLSFiles:
    ca: Path
    cert: Path
    key: Path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read the {what} {str(path)!r}: {exc.strerror}") from None


def load_checked(files: ServerTLSFiles) -> tuple[bytes, bytes, bytes]:
    """Reads (ca, cert, key) PEM bytes and checks they fit: parseable, key matches, certificate in date."""
    ca_pem = _read(files.ca, "CA certificate")
    cert_pem = _read(files.cert, "server certificate")
    key_pem = _read(files.key, "server key")
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise CertificateError(f"the CA certificate {str(files.ca)!r} is not a PEM certificate") from None
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise CertificateError(
            f"the server certificate {str(files.cert)!r} is not a PEM certificate"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError(
            f"the server key {str(files.key)!r} is not an unencrypted PEM private key"
        ) from None
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateError(f"the server key {str(files.key)!r} does not belong to {str(files.cert)!r}")
    now = _dt.datetime.now(_dt.UTC)
    if cert.not_valid_after_utc < now:
        raise CertificateError(
            f"the server certificate {str(files.cert)!r} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        )
    if cert.not_valid_before_utc > now:
        raise CertificateError(
            f"the server certificate {str(files.cert)!r} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}"
        )
    return ca_pem, cert_pem, key_pem


class ReloadableServerCredentials:
    """mTLS server credentials (client certificate required and verified against the CA) that can be reloaded."""

    def __init__(self, files: ServerTLSFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.reloads = 0
        ca, cert, key = load_checked(files)
        self._initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        # grpc's contract lets the fetch callback return None (keep the current certificates); the
        # types-grpcio stub leaves that out.
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=True  # type: ignore[arg-type]
        )

    def reload(self) -> None:
        """Re-reads the files; the next handshakes use them. Raises CertificateError (old files stay in use)."""
        ca, cert, key = load_checked(self.files)
        config = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
        with self._lock:
            self._pending = config
            self.reloads += 1

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC on each new handshake; returning None keeps the current configuration.
        with self._lock:
            config, self._pending = self._pending, None
        return config
