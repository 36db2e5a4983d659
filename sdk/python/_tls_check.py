"""Checks the client's own mTLS files before dialing, so a mistake is named instead of surfacing as a bare
"handshake failed" (or worse, the server silently closing the connection after the handshake, as TLS 1.3
servers do when they reject a client certificate).

The check itself is `falconet.certs.check.check_tls_files`, the one the server runs on its own files; here it
runs for the client role, its error becomes the SDK's `TLSFilesError`, and a certificate close to its end is
logged as a warning.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from falconet.certs.check import CertFilesError, check_tls_files
from falconet.certs.check import CheckedFiles as TLSFiles
from falconet.certs.inspect import EXPIRY_WARNING_DAYS
from falconet.sdk.errors import TLSFilesError

__all__ = ["TLSFiles", "check_client_files"]

log = logging.getLogger("falconet.sdk")


def check_client_files(ca: Path, cert: Path, key: Path, *, now: _dt.datetime | None = None) -> TLSFiles:
    """Reads and checks the three files; raises TLSFilesError naming the file and the problem."""
    try:
        files = check_tls_files(ca, cert, key, role="client", now=now)
    except CertFilesError as exc:
        raise TLSFilesError(str(exc), exc.path) from None
    if files.expires_in < _dt.timedelta(days=EXPIRY_WARNING_DAYS):
        log.warning("the client certificate %s expires in %d days; renew it soon", cert, files.expires_in.days)
    return files
