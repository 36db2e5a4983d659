"""Reading a certificate back: what it names, what it may be used for, how long it lasts, whether a CA vouches.

`falconet certs inspect` prints this; `falconet.certs.check` (the file check the server, the SDK and
falco-client all run) uses `chain_problem` to refuse, with a reason, files the other side would reject anyway
(a TLS alert says far less than we can say here).
Chain checks use cryptography's webpki verifiers (the same profile rustls enforces for our Rust client), after
plainer checks whose failures can be named precisely (wrong issuer, bad signature, expired).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from falconet.certs.errors import CertError

EXPIRY_WARNING_DAYS = 30

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


@dataclass(frozen=True, slots=True)
class Inspection:
    """What `inspect_certificate` found. `chain` is None without a CA, "" when it chains, else the reason."""

    path: Path
    subject: str
    issuer: str
    serial: int
    sans: tuple[str, ...]
    eku: tuple[str, ...]
    is_ca: bool
    not_before: _dt.datetime
    not_after: _dt.datetime
    now: _dt.datetime
    ca_path: Path | None
    chain: str | None

    @property
    def expired(self) -> bool:
        return self.now > self.not_after

    @property
    def not_yet_valid(self) -> bool:
        return self.now < self.not_before

    @property
    def days_left(self) -> int:
        return (self.not_after - self.now).days

    @property
    def expiring_soon(self) -> bool:
        return not self.expired and self.not_after - self.now < _dt.timedelta(days=EXPIRY_WARNING_DAYS)

    @property
    def ok(self) -> bool:
        """Usable now, and chains to the CA when one was given (an expiry warning is still ok)."""
        return not self.expired and not self.not_yet_valid and not self.chain

    def render(self) -> str:
        lines = [
            f"file:       {self.path}",
            f"subject:    {self.subject}",
            f"issuer:     {self.issuer}",
            f"serial:     {self.serial:x}",
            f"type:       {'CA' if self.is_ca else 'leaf'}",
            f"SANs:       {', '.join(self.sans) if self.sans else '(none)'}",
            f"EKU:        {', '.join(self.eku) if self.eku else '(none)'}",
            f"not before: {self.not_before.isoformat()}",
            f"not after:  {self.not_after.isoformat()}",
        ]
        if self.expired:
            lines.append(f"validity:   EXPIRED {(self.now - self.not_after).days} days ago")
        elif self.not_yet_valid:
            lines.append(f"validity:   NOT YET VALID (starts {self.not_before.isoformat()})")
        elif self.expiring_soon:
            lines.append(f"validity:   WARNING: expires in {self.days_left} days; renew it soon")
        else:
            lines.append(f"validity:   valid, {self.days_left} days left")
        if self.ca_path is not None:
            if self.chain:
                lines.append(f"chain:      does NOT chain to {self.ca_path}: {self.chain}")
            else:
                lines.append(f"chain:      chains to {self.ca_path}")
        return "\n".join(lines)


def load_certificate(path: Path) -> x509.Certificate:
    """Reads the first certificate of a PEM or DER file; CertError names the file and the problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        hint = " (it holds a private key)" if b"PRIVATE KEY" in data else ""
        raise CertError(f"{path} is not a PEM or DER certificate{hint}") from None


def inspect_certificate(
    path: Path, ca_path: Path | None = None, *, now: _dt.datetime | None = None
) -> Inspection:
    """Inspects the certificate in `path`, checking its chain to the CA in `ca_path` when given."""
    moment = now or _dt.datetime.now(_dt.UTC)
    cert = load_certificate(path)
    chain: str | None = None
    if ca_path is not None:
        chain = chain_problem(cert, load_certificate(ca_path), now=moment) or ""
    return Inspection(
        path=Path(path),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        sans=tuple(_san_texts(cert)),
        eku=tuple(_eku_names(cert)),
        is_ca=_is_ca(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        now=moment,
        ca_path=Path(ca_path) if ca_path is not None else None,
        chain=chain,
    )


def chain_problem(
    cert: x509.Certificate,
    ca: x509.Certificate,
    *,
    now: _dt.datetime | None = None,
    role: str | None = None,
) -> str | None:
    """Why `cert` does not chain to `ca` at `now`, or None if it does.

    `role` is "server" or "client" (the verifier profile to apply); by default it follows the certificate's
    ExtendedKeyUsage. A CA certificate given as `cert` is checked as the trust anchor itself.
    """
    moment = now or _dt.datetime.now(_dt.UTC)
    if cert == ca:
        return None
    if cert.issuer != ca.subject:
        return f"it was issued by '{cert.issuer.rfc4514_string()}', not by '{ca.subject.rfc4514_string()}'"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "its signature does not verify with this CA's key (a different CA with the same name?)"
    if moment > ca.not_valid_after_utc:
        return f"the CA expired on {ca.not_valid_after_utc.isoformat()}"
    if moment > cert.not_valid_after_utc:
        return f"it expired on {cert.not_valid_after_utc.isoformat()}"
    if moment < cert.not_valid_before_utc:
        return f"it is not valid before {cert.not_valid_before_utc.isoformat()}"
    ekus = set(_eku_names(cert))
    if role is None:
        role = "server" if "serverAuth" in ekus else "client" if "clientAuth" in ekus else None
    if role == "client" and "clientAuth" not in ekus:
        return "its ExtendedKeyUsage does not allow client authentication (clientAuth); is it a server certificate?"
    if role == "server" and "serverAuth" not in ekus:
        return "its ExtendedKeyUsage does not allow server authentication (serverAuth)"
    builder = PolicyBuilder().store(Store([ca])).time(moment)
    try:
        if role == "server":
            sans = _sans(cert)
            if not sans:
                return "it has no SubjectAltName, so no client can match a host name against it"
            builder.build_server_verifier(sans[0]).verify(cert, [])
        elif role == "client":
            builder.build_client_verifier().verify(cert, [])
        else:
            return "its ExtendedKeyUsage allows neither serverAuth nor clientAuth"
    except VerificationError as exc:
        return f"the verifier rejects it: {exc}"
    return None


def _sans(cert: x509.Certificate) -> list[x509.DNSName | x509.IPAddress]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n for n in ext if isinstance(n, x509.DNSName | x509.IPAddress)]


def _san_texts(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        else:
            out.append(str(name))
    return out


def _eku_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in ext]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
