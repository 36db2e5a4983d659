"""Revocation: an X.509 CRL, signed by the CA, next to the CA certificate (`crl.pem`), that the server enforces.

`falconet certs revoke NAME|SERIAL` adds a certificate to DIR/crl.pem (creating it the first time); the server
reads the CRL next to its CA certificate at start and on SIGHUP, refuses every call from a revoked certificate
and ends the revoked certificate's open streams. A standard CRL rather than a private deny-list, so `openssl crl
-in crl.pem -text` and any other TLS stack can read the same file. The server checks the CRL's signature against
the CA before it trusts it: a file anyone could write must not be able to un-revoke or revoke.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from falconet.certs.authority import CA_CERT, _write_atomic, load_ca
from falconet.certs.errors import CertError

CRL_FILE = "crl.pem"
CRL_DAYS = 3650
"""The CRL's nextUpdate: Falconet reads it on SIGHUP, not on a schedule, so it must not go stale by itself."""

_SERIAL = re.compile(r"^(?:0x)?[0-9a-fA-F]+(?::[0-9a-fA-F]{2})*$")


@dataclass(frozen=True, slots=True)
class Revoked:
    """What `revoke` did: the serial, the certificate's subject when known, and the CRL written."""

    serial: int
    subject: str | None
    crl: Path
    already: bool


def read_crl(path: Path, ca: x509.Certificate) -> frozenset[int]:
    """The serials a CRL revokes; CertError when it is unreadable or not issued and signed by `ca`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read the CRL {path}: {exc.strerror}") from None
    try:
        crl = (
            x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        raise CertError(f"the CRL {path} is not a PEM or DER certificate revocation list: {exc}") from None
    public = ca.public_key()
    try:
        signed = crl.issuer == ca.subject and crl.is_signature_valid(public)  # type: ignore[arg-type]
    except (InvalidSignature, TypeError):
        signed = False
    if not signed:
        raise CertError(
            f"the CRL {path} is not issued and signed by the CA {ca.subject.rfc4514_string()}; "
            "make it with `falconet certs revoke`"
        )
    return frozenset(entry.serial_number for entry in crl)


def parse_serial(text: str) -> int:
    """A serial as `falconet certs inspect` prints it (hex), optionally with 0x or colons; ValueError if not."""
    if not _SERIAL.match(text):
        raise ValueError(f"{text!r} is neither a client name with a certificate in the directory nor a hex serial")
    return int(text.replace(":", "").removeprefix("0x"), 16)


def revoke(directory: Path, who: str) -> Revoked:
    """Adds `who` (NAME, whose NAME.crt is in `directory`, or a hex SERIAL) to DIR/crl.pem, signed by the CA."""
    d = Path(directory)
    ca_cert, ca_key = load_ca(d)
    subject: str | None = None
    cert_path = d / f"{who}.crt"
    if "/" not in who and who not in (CA_CERT.removesuffix(".crt"),) and cert_path.is_file():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError as exc:
            raise CertError(f"cannot read {cert_path}: {exc}") from None
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CertError(f"{cert_path} was not issued by the CA in {d}; nothing to revoke there") from None
        serial, subject = cert.serial_number, cert.subject.rfc4514_string()
    elif who == CA_CERT.removesuffix(".crt"):
        raise CertError("the CA itself cannot be revoked; make a new one with `falconet certs init --force`")
    else:
        try:
            serial = parse_serial(who)
        except ValueError as exc:
            raise CertError(str(exc)) from None
    crl_path = d / CRL_FILE
    serials = read_crl(crl_path, ca_cert) if crl_path.exists() else frozenset()
    already = serial in serials
    _write_crl(crl_path, ca_cert, ca_key, serials | {serial})
    return Revoked(serial, subject, crl_path, already)


def _write_crl(
    path: Path, ca: x509.Certificate, key: ec.EllipticCurvePrivateKey, serials: frozenset[int]
) -> None:
    now = _dt.datetime.now(_dt.UTC)
    old: dict[int, _dt.datetime] = {}
    if path.exists():
        old_crl = x509.load_pem_x509_crl(path.read_bytes())
        old = {e.serial_number: e.revocation_date_utc for e in old_crl}
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + _dt.timedelta(days=CRL_DAYS))
    )
    for serial in sorted(serials):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(old.get(serial, now))
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(key, hashes.SHA256())
    _write_atomic(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
