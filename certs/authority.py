"""Making Falconet's mTLS material: one local CA, a server certificate and client certificates it signs.

The profile is a real CA profile rather than the bare minimum TLS libraries accept, because strict verifiers
(cryptography's webpki `PolicyBuilder`, rustls, Go's crypto/x509) are what our Go and Rust clients use:
- the CA: BasicConstraints CA:TRUE (critical, path length 0), KeyUsage keyCertSign + cRLSign (critical), SKI;
- every leaf: BasicConstraints CA:FALSE (critical), KeyUsage digitalSignature (critical), one ExtendedKeyUsage
  (serverAuth or clientAuth, so a server certificate cannot pose as a client), SubjectAltNames, SKI, and an AKI
  naming the CA's key;
- ECDSA P-256 with SHA-256, random 159-bit serials, timezone-aware validity starting five minutes in the past
  (so a peer whose clock is slightly behind does not see a certificate from the future).
Keys are written 0600 and nothing is ever overwritten unless asked (`force`), since overwriting a CA key
silently invalidates every certificate issued from it.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from falconet.certs.errors import CertError, CertsExistError

DEFAULT_DAYS = 825
"""Leaf validity: the longest that Apple and browsers accept for TLS server certificates."""
CA_MIN_DAYS = 3650
"""The CA outlives its leaves, so `falconet certs client` keeps working after the first leaves are renewed."""
CLOCK_SKEW = _dt.timedelta(minutes=5)
DEFAULT_CLIENT_NAME = "falconet-client"
"""Common Name (and DNS SAN) of the client certificate `init_certs` writes as client.crt."""
SERVER_COMMON_NAME = "falconet-server"

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
CLIENT_CERT, CLIENT_KEY = "client.crt", "client.key"

_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
_CLIENT_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_RESERVED_CLIENT_NAMES = frozenset({"ca", "server"})


@dataclass(frozen=True, slots=True)
class CertPaths:
    """The six files `init_certs` writes (PEM; keys are PKCS#8, unencrypted, mode 0600)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def all(self) -> tuple[Path, ...]:
        return (
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.client_cert,
            self.client_key,
        )


def cert_paths(directory: Path) -> CertPaths:
    """Where `init_certs` puts its files in `directory` (nothing is read or written)."""
    d = Path(directory)
    return CertPaths(
        d / CA_CERT, d / CA_KEY, d / SERVER_CERT, d / SERVER_KEY, d / CLIENT_CERT, d / CLIENT_KEY
    )


def init_certs(
    directory: Path,
    *,
    sans: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
    client_name: str = DEFAULT_CLIENT_NAME,
) -> CertPaths:
    """Creates a CA, a server certificate and a client certificate in `directory` (created if missing).

    The server certificate names localhost, 127.0.0.1, ::1, this machine's host name and each of `sans` (host
    names or IP addresses). The client certificate's Common Name and DNS SAN are `client_name`.
    Raises CertsExistError, before writing anything, if any of the files exists and `force` is false; CertError
    for an invalid SAN, name or day count.
    """
    _check_days(days)
    alt_names = server_alt_names(sans)
    _check_client_name(client_name, allow_reserved=True)
    paths = cert_paths(directory)
    _refuse_overwrite(paths.all(), force, what="certificates")
    Path(directory).mkdir(parents=True, exist_ok=True)

    now = _dt.datetime.now(_dt.UTC)
    ca_key = _new_key()
    ca_cert = _build_ca(ca_key, now, max(days, CA_MIN_DAYS))
    server_key = _new_key()
    server_cert = _build_leaf(
        ca_cert, ca_key, server_key, SERVER_COMMON_NAME, alt_names, ExtendedKeyUsageOID.SERVER_AUTH, now, days
    )
    client_key = _new_key()
    client_cert = _build_leaf(
        ca_cert,
        ca_key,
        client_key,
        client_name,
        [x509.DNSName(client_name)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now,
        days,
    )
    # Keys first, certificates last: an interrupted run never leaves a certificate without its key.
    _write_key(paths.ca_key, ca_key)
    _write_key(paths.server_key, server_key)
    _write_key(paths.client_key, client_key)
    _write_cert(paths.ca_cert, ca_cert)
    _write_cert(paths.server_cert, server_cert)
    _write_cert(paths.client_cert, client_cert)
    return paths


def issue_client(
    directory: Path, name: str, *, days: int = DEFAULT_DAYS, force: bool = False
) -> tuple[Path, Path]:
    """Issues a client certificate `NAME.crt` (+ `NAME.key`) from the CA in `directory`.

    Its Common Name and DNS SAN are `name` (what a server's input allow-list matches). The validity is capped
    at the CA's own expiry. Returns (certificate path, key path).
    """
    _check_days(days)
    now = _dt.datetime.now(_dt.UTC)
    return issue_client_window(
        directory, name, not_before=now - CLOCK_SKEW, not_after=now + _dt.timedelta(days=days), force=force
    )


def issue_client_window(
    directory: Path,
    name: str,
    *,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    force: bool = False,
) -> tuple[Path, Path]:
    """`issue_client` with an explicit validity window (capped at the CA's expiry).

    For rehearsing rotation and expiry: a window in the past yields an expired certificate that clients and
    servers must refuse with a clear reason.
    """
    _check_client_name(name, allow_reserved=False)
    if not_before.tzinfo is None or not_after.tzinfo is None or not_after <= not_before:
        raise CertError("the validity window needs timezone-aware times with not_before < not_after")
    d = Path(directory)
    ca_cert, ca_key = load_ca(d)
    cert_path, key_path = d / f"{name}.crt", d / f"{name}.key"
    _refuse_overwrite((cert_path, key_path), force, what=f"client {name!r}")
    key = _new_key()
    cert = build_leaf(
        ca_cert,
        ca_key,
        key,
        name,
        [x509.DNSName(name)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        not_before,
        min(not_after, ca_cert.not_valid_after_utc),
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Reads ca.crt and ca.key from `directory`; CertError says what is missing or wrong."""
    d = Path(directory)
    cert_path, key_path = d / CA_CERT, d / CA_KEY
    missing = [str(p) for p in (cert_path, key_path) if not p.exists()]
    if missing:
        raise CertError(
            f"no CA in {d}: {', '.join(missing)} not found; create one with `falconet certs init --dir {d}`"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read the CA certificate {cert_path}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertError(f"cannot read the CA key {key_path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"the CA key {key_path} is not an ECDSA key")
    if key.public_key() != cert.public_key():
        raise CertError(f"the CA key {key_path} does not belong to the CA certificate {cert_path}")
    return cert, key


def server_alt_names(extra: Iterable[str] = ()) -> list[x509.GeneralName]:
    """The server certificate's SANs: localhost, loopback addresses, this host's names, then `extra`."""
    names: list[x509.GeneralName] = []

    def add(gn: x509.GeneralName) -> None:
        if gn not in names:
            names.append(gn)

    add(x509.DNSName("localhost"))
    add(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    add(x509.IPAddress(ipaddress.ip_address("::1")))
    for host in (socket.gethostname(), socket.getfqdn()):
        # A host name that is not a valid DNS name (rare, but containers allow it) is left out rather than
        # making every `certs init` fail; --san can still add what clients actually dial.
        if host and _is_dns_name(host) and host != "localhost":
            add(x509.DNSName(host.lower()))
    for text in extra:
        add(parse_san(text))
    return names


def parse_san(text: str) -> x509.GeneralName:
    """A --san value: an IPv4/IPv6 address, or a DNS name (a leading `*.` wildcard allowed)."""
    value = text.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    host = value[2:] if value.startswith("*.") else value
    if not _is_dns_name(host):
        raise CertError(
            f"invalid SAN {text!r}: expected a host name (e.g. falconet.example.com) or an IP address"
        )
    return x509.DNSName(value.lower())


def _is_dns_name(host: str) -> bool:
    host = host.rstrip(".")
    return 0 < len(host) <= 253 and all(_NAME_RE.match(label) for label in host.split("."))


def _check_client_name(name: str, *, allow_reserved: bool) -> None:
    if not _CLIENT_NAME_RE.match(name) or ".." in name:
        raise CertError(
            f"invalid client name {name!r}: use 1-64 letters, digits, '.', '-' or '_', "
            "starting and ending with a letter or digit"
        )
    if not allow_reserved and name.lower() in _RESERVED_CLIENT_NAMES:
        raise CertError(f"invalid client name {name!r}: {name}.crt would clash with the CA or server files")


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise CertError(f"invalid validity {days!r} days: expected a whole number of days, at least 1")


def _refuse_overwrite(paths: Iterable[Path], force: bool, *, what: str) -> None:
    if force:
        return
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise CertsExistError(
            f"refusing to overwrite existing {what}: {', '.join(existing)}; "
            "pass --force to replace them (certificates issued by a replaced CA stop verifying)",
            existing,
        )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; an ECDSA leaf only signs (its TLS handshakes)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _build_ca(key: ec.EllipticCurvePrivateKey, now: _dt.datetime, days: int) -> x509.Certificate:
    host = socket.gethostname() or "localhost"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Falconet"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Falconet CA ({host})"[:64]),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def build_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    alt_names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
) -> x509.Certificate:
    """Signs one leaf with the given validity window exactly (tests use it to make expired certificates)."""
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Falconet"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _build_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    alt_names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: _dt.datetime,
    days: int,
) -> x509.Certificate:
    # A leaf never outlives its CA: verifiers would reject it from that day on anyway.
    not_after = min(now + _dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    return build_leaf(ca_cert, ca_key, key, common_name, alt_names, usage, now - CLOCK_SKEW, not_after)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(path, data, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Writes via a temporary file in the same directory and renames it over `path`.

    The temporary file is created 0600 by mkstemp, so a key is never readable by others, not even briefly;
    the rename means a reader (the server reloading certificates) never sees a half-written file.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
