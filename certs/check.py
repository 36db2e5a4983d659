"""The one check of a set of mTLS files (CA, certificate, key) before they are used, for server and client alike.

The server checks its files at start and on every reload; the SDK and falco-client check theirs before dialing.
A mistake found here is named (which file, what is wrong, how to fix it), where a TLS handshake would only
say "handshake failed", or a TLS 1.3 server would silently close the connection after it. One check for both
sides keeps them from drifting: a server certificate whose chain or key usage is wrong used to pass the
server's own check and fail every client's handshake.

Checked, in the order a user would fix them: each file readable and of the right kind; the key unencrypted
and belonging to the certificate; the CA and the certificate within their validity; the certificate issued by
(one of) the CA file's certificates and usable for its role (serverAuth or clientAuth) under the webpki
profile (`falconet.certs.inspect.chain_problem`).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from falconet.certs.errors import CertError
from falconet.certs.inspect import chain_problem

Role = Literal["server", "client"]


class CertFilesError(CertError, ValueError):
    """A TLS file that cannot serve; the message names the file and the problem, `path` is the file."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class CheckedFiles:
    """The PEM bytes grpc needs, read once and checked; `expires_in` is the certificate's time left."""

    ca: bytes
    cert: bytes
    key: bytes
    expires_in: _dt.timedelta


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertFilesError(f"the {what} {path} does not exist", str(path)) from None
    except IsADirectoryError:
        raise CertFilesError(f"the {what} {path} is a directory, not a file", str(path)) from None
    except PermissionError:
        raise CertFilesError(
            f"the {what} {path} is not readable by this user (permission denied)", str(path)
        ) from None
    except OSError as exc:
        raise CertFilesError(f"cannot read the {what} {path}: {exc.strerror or exc}", str(path)) from None


def _load_certs(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        hint = (
            " (it holds a private key: are the certificate and key swapped?)"
            if b"PRIVATE KEY" in data
            else ""
        )
        raise CertFilesError(f"the {what} {path} is not a PEM certificate{hint}", str(path)) from None


def _load_key(data: bytes, path: Path, what: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertFilesError(
            f"the {what} {path} is encrypted; Falconet needs an unencrypted key", str(path)
        ) from None
    except ValueError:
        hint = (
            " (it holds a certificate: are the certificate and key swapped?)"
            if b"CERTIFICATE" in data
            else ""
        )
        raise CertFilesError(
            f"the {what} {path} is not an unencrypted PEM private key{hint}", str(path)
        ) from None


def check_tls_files(
    ca: Path, cert: Path, key: Path, *, role: Role, now: _dt.datetime | None = None
) -> CheckedFiles:
    """Reads and checks the three files for `role`; raises CertFilesError naming the file and the problem.

    The CA file may hold several certificates (a bundle during a CA rotation); the certificate must chain to
    one of them.
    """
    moment = now or _dt.datetime.now(_dt.UTC)
    ca_pem = _read(ca, "CA certificate")
    cert_pem = _read(cert, f"{role} certificate")
    key_what = "server key" if role == "server" else "key"  # the SDK has always said "the key"
    key_pem = _read(key, key_what)
    cas = _load_certs(ca_pem, ca, "CA certificate")
    leaf = _load_certs(cert_pem, cert, f"{role} certificate")[0]
    private = _load_key(key_pem, key, key_what)
    if private.public_key() != leaf.public_key():
        raise CertFilesError(
            f"the {key_what} {key} does not belong to the certificate {cert} (they come from different pairs)",
            str(key),
        )
    _check_dates(cas, leaf, ca, cert, role, moment)
    problem = _chain(leaf, cas, moment, role)
    if problem:
        raise CertFilesError(
            f"the {role} certificate {cert} does not chain to the CA {ca}: {problem}", str(cert)
        )
    return CheckedFiles(ca_pem, cert_pem, key_pem, leaf.not_valid_after_utc - moment)


def _check_dates(
    cas: list[x509.Certificate],
    leaf: x509.Certificate,
    ca: Path,
    cert: Path,
    role: Role,
    moment: _dt.datetime,
) -> None:
    if all(moment > c.not_valid_after_utc for c in cas):
        raise CertFilesError(
            f"the CA certificate {ca} expired on {cas[0].not_valid_after_utc:%Y-%m-%d %H:%M} UTC", str(ca)
        )
    if moment > leaf.not_valid_after_utc:
        how = (
            "`falconet certs client NAME --dir DIR`" if role == "client" else "`falconet certs init --force`"
        )
        raise CertFilesError(
            f"the {role} certificate {cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            f"issue a new one with {how}",
            str(cert),
        )
    if moment < leaf.not_valid_before_utc:
        raise CertFilesError(
            f"the {role} certificate {cert} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(is this machine's clock right?)",
            str(cert),
        )


def _chain(
    leaf: x509.Certificate, cas: list[x509.Certificate], moment: _dt.datetime, role: Role
) -> str | None:
    """None when `leaf` chains to one of `cas`; else the problem with the CA that named it (or the first)."""
    problems = [chain_problem(leaf, ca, now=moment, role=role) for ca in cas]
    if any(p is None for p in problems):
        return None
    named = [p for ca, p in zip(cas, problems, strict=True) if ca.subject == leaf.issuer]
    return (named or problems)[0]
