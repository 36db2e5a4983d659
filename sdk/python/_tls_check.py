"""Checks the client's own mTLS files before dialing, so a mistake is named instead of surfacing as a bare
"handshake failed" (or worse, the server silently closing the connection after the handshake, as TLS 1.3
servers do when they reject a client certificate).

Checked, in the order a user would fix them: each file readable and of the right kind; the key unencrypted
and belonging to the certificate; the CA and the certificate within their validity; the certificate issued
by the given CA and usable for client authentication (cryptography's webpki client verifier).
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from falconet.certs.inspect import EXPIRY_WARNING_DAYS, chain_problem
from falconet.sdk.errors import TLSFilesError

log = logging.getLogger("falconet.sdk")


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """The PEM bytes grpc needs, read once and checked."""

    ca: bytes
    cert: bytes
    key: bytes


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSFilesError(f"the {what} {path} does not exist", str(path)) from None
    except IsADirectoryError:
        raise TLSFilesError(f"the {what} {path} is a directory, not a file", str(path)) from None
    except PermissionError:
        raise TLSFilesError(
            f"the {what} {path} is not readable by this user (permission denied)", str(path)
        ) from None
    except OSError as exc:
        raise TLSFilesError(f"cannot read the {what} {path}: {exc.strerror or exc}", str(path)) from None


def _load_cert(data: bytes, path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        hint = " (it holds a private key: are --cert and --key swapped?)" if b"PRIVATE KEY" in data else ""
        raise TLSFilesError(f"the {what} {path} is not a PEM certificate{hint}", str(path)) from None


def check_client_files(ca: Path, cert: Path, key: Path, *, now: _dt.datetime | None = None) -> TLSFiles:
    """Reads and checks the three files; raises TLSFilesError naming the file and the problem."""
    moment = now or _dt.datetime.now(_dt.UTC)
    ca_pem, cert_pem, key_pem = (
        _read(ca, "CA certificate"),
        _read(cert, "client certificate"),
        _read(key, "key"),
    )
    ca_cert = _load_cert(ca_pem, ca, "CA certificate")
    leaf = _load_cert(cert_pem, cert, "client certificate")
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TLSFilesError(
            f"the key {key} is encrypted; Falconet needs an unencrypted key", str(key)
        ) from None
    except ValueError:
        hint = " (it holds a certificate: are --cert and --key swapped?)" if b"CERTIFICATE" in key_pem else ""
        raise TLSFilesError(f"the key {key} is not a PEM private key{hint}", str(key)) from None
    if private.public_key() != leaf.public_key():
        raise TLSFilesError(
            f"the key {key} does not belong to the certificate {cert} (they come from different pairs)",
            str(key),
        )
    if moment > ca_cert.not_valid_after_utc:
        raise TLSFilesError(
            f"the CA certificate {ca} expired on {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC", str(ca)
        )
    if moment > leaf.not_valid_after_utc:
        raise TLSFilesError(
            f"the client certificate {cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            "issue a new one with `falconet certs client NAME --dir DIR`",
            str(cert),
        )
    if moment < leaf.not_valid_before_utc:
        raise TLSFilesError(
            f"the client certificate {cert} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(is this machine's clock right?)",
            str(cert),
        )
    problem = chain_problem(leaf, ca_cert, now=moment, role="client")
    if problem:
        raise TLSFilesError(
            f"the client certificate {cert} does not chain to the CA {ca}: {problem}", str(cert)
        )
    left = leaf.not_valid_after_utc - moment
    if left < _dt.timedelta(days=EXPIRY_WARNING_DAYS):
        log.warning("the client certificate %s expires in %d days; renew it soon", cert, left.days)
    return TLSFiles(ca_pem, cert_pem, key_pem)
