"""Certificate bootstrap for Falconet's mTLS: a CA, a server and client certificates, and their inspection.

`falconet certs init|client|inspect` (certs/cli.py) drive these functions; tests and fixtures call them directly.
"""

from falconet.certs.authority import (
    DEFAULT_CLIENT_NAME,
    CertPaths,
    cert_paths,
    init_certs,
    issue_client,
    issue_client_window,
)
from falconet.certs.errors import CertError, CertsExistError

__all__ = [
    "DEFAULT_CLIENT_NAME",
    "CertError",
    "CertPaths",
    "CertsExistError",
    "cert_paths",
    "init_certs",
    "issue_client",
    "issue_client_window",
]
