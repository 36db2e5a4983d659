"""Server-side mutual TLS: certificate files checked before use, and swapped at runtime without dropping streams.

gRPC asks a fetcher for the certificate configuration at each new handshake; `reload()` re-reads the files and
hands the new configuration to the next handshake, while established connections (and their streams) keep
the session they negotiated. Files that do not fit together are refused with the reason and the old ones kept.
The files are checked by `falconet.certs.check`, the same check the SDK runs on a client's files.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from falconet.certs.check import CertFilesError, check_tls_files

CertificateError = CertFilesError
"""Certificate files that cannot serve; the message names the file and the problem (falconet.certs' error)."""


@dataclass(frozen=True)
class ServerTLSFiles:
    ca: Path
    cert: Path
    key: Path


def load_checked(files: ServerTLSFiles) -> tuple[bytes, bytes, bytes]:
    """Reads (ca, cert, key) PEM bytes and checks them with the one certificate-file check (falconet.certs.check)
    for the server role: parseable, key matches, in date, chains to the CA, allowed for serverAuth."""
    checked = check_tls_files(files.ca, files.cert, files.key, role="server")
    return checked.ca, checked.cert, checked.key


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
