"""The certificates `init_certs` / `issue_client` write follow a real CA profile and verify with cryptography's
own webpki verifiers, for the roles they are meant for and for no other."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from falconet.certs import (
    DEFAULT_CLIENT_NAME,
    CertError,
    CertsExistError,
    init_certs,
    issue_client,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, x509.Certificate]]:
    d = tmp_path_factory.mktemp("certs")
    paths = init_certs(d, sans=["falconet.example.com", "10.0.0.7", "fd00::7"], days=400)
    certs = {"ca": load(paths.ca_cert), "server": load(paths.server_cert), "client": load(paths.client_cert)}
    return d, certs


def test_ca_profile(made: tuple[Path, dict[str, x509.Certificate]]) -> None:
    _, certs = made
    ca = certs["ca"]
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(ca, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert ca.subject == ca.issuer
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert ext(ca, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key)


@pytest.mark.parametrize("role", ["server", "client"])
def test_leaf_profile(made: tuple[Path, dict[str, x509.Certificate]], role: str) -> None:
    _, certs = made
    ca, leaf = certs["ca"], certs[role]
    assert not ext(leaf, x509.BasicConstraints).value.ca
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    want = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [want]
    ski = ext(leaf, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca, x509.SubjectKeyIdentifier).value.digest
    pub = leaf.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    leaf.verify_directly_issued_by(ca)


def test_server_sans(made: tuple[Path, dict[str, x509.Certificate]]) -> None:
    _, certs = made
    san = ext(certs["server"], x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert {"localhost", "falconet.example.com", socket.gethostname().lower()} <= dns
    assert {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.0.0.7", "fd00::7")} <= ips


def test_client_names(made: tuple[Path, dict[str, x509.Certificate]]) -> None:
    _, certs = made
    client = certs["client"]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEFAULT_CLIENT_NAME
    san = ext(client, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [DEFAULT_CLIENT_NAME]


def test_serials_random_and_times_aware(made: tuple[Path, dict[str, x509.Certificate]]) -> None:
    _, certs = made
    serials = {c.serial_number for c in certs.values()}
    assert len(serials) == 3 and all(s > 1 << 64 for s in serials)
    now = dt.datetime.now(dt.UTC)
    for name, cert in certs.items():
        assert cert.not_valid_before_utc.tzinfo is not None
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
        if name != "ca":
            assert abs((cert.not_valid_after_utc - now) - dt.timedelta(days=400)) < dt.timedelta(minutes=5)
    # The CA outlives the leaves it signs.
    assert certs["ca"].not_valid_after_utc > certs["server"].not_valid_after_utc


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("localhost"),
        x509.DNSName("falconet.example.com"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
    ],
)
def test_server_verifier_accepts(
    made: tuple[Path, dict[str, x509.Certificate]], name: x509.DNSName | x509.IPAddress
) -> None:
    _, certs = made
    verifier = PolicyBuilder().store(Store([certs["ca"]])).build_server_verifier(name)
    chain = verifier.verify(certs["server"], [])
    assert chain[-1] == certs["ca"]


def test_server_verifier_rejects_other_names_and_client_cert(
    made: tuple[Path, dict[str, x509.Certificate]],
) -> None:
    _, certs = made
    builder = PolicyBuilder().store(Store([certs["ca"]]))
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("elsewhere.example.com")).verify(certs["server"], [])
    with pytest.raises(VerificationError):  # a client certificate cannot serve (EKU clientAuth only)
        builder.build_server_verifier(x509.DNSName(DEFAULT_CLIENT_NAME)).verify(certs["client"], [])


def test_client_verifier(made: tuple[Path, dict[str, x509.Certificate]]) -> None:
    _, certs = made
    builder = PolicyBuilder().store(Store([certs["ca"]]))
    verified = builder.build_client_verifier().verify(certs["client"], [])
    assert verified.subjects == [x509.DNSName(DEFAULT_CLIENT_NAME)]
    with pytest.raises(VerificationError):  # the server certificate cannot pose as a client
        builder.build_client_verifier().verify(certs["server"], [])


def test_client_verifier_rejects_foreign_ca(
    made: tuple[Path, dict[str, x509.Certificate]], tmp_path: Path
) -> None:
    _, certs = made
    other = init_certs(tmp_path / "other")
    builder = PolicyBuilder().store(Store([certs["ca"]]))
    with pytest.raises(VerificationError):
        builder.build_client_verifier().verify(load(other.client_cert), [])


def test_issue_client(made: tuple[Path, dict[str, x509.Certificate]]) -> None:
    d, certs = made
    cert_path, key_path = issue_client(d, "publisher", days=30)
    assert (cert_path.name, key_path.name) == ("publisher.crt", "publisher.key")
    cert = load(cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "publisher"
    verified = PolicyBuilder().store(Store([certs["ca"]])).build_client_verifier().verify(cert, [])
    assert verified.subjects == [x509.DNSName("publisher")]
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert key.public_key() == cert.public_key()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_key_and_cert_modes(tmp_path: Path) -> None:
    paths = init_certs(tmp_path / "c")
    for key in (paths.ca_key, paths.server_key, paths.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for cert in (paths.ca_cert, paths.server_cert, paths.client_cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644, cert
    # Keys match their certificates.
    for cert, key in ((paths.ca_cert, paths.ca_key), (paths.server_cert, paths.server_key)):
        assert (
            serialization.load_pem_private_key(key.read_bytes(), None).public_key() == load(cert).public_key()
        )
    # Nothing but the six files (no temporary leftovers).
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(p.name for p in paths.all())


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    paths = init_certs(tmp_path)
    before = {p: p.read_bytes() for p in paths.all()}
    with pytest.raises(CertsExistError, match="--force") as info:
        init_certs(tmp_path)
    assert str(paths.ca_key) in info.value.existing
    assert {p: p.read_bytes() for p in paths.all()} == before
    # Even one existing file stops the whole run before anything is written.
    paths.server_cert.unlink()
    with pytest.raises(CertsExistError):
        init_certs(tmp_path)
    assert not paths.server_cert.exists()
    assert paths.ca_key.read_bytes() == before[paths.ca_key]
    # With force, everything is replaced.
    init_certs(tmp_path, force=True)
    assert all(p.read_bytes() != before[p] for p in paths.all() if p in before)
    # The same for issue_client.
    issue_client(tmp_path, "bob")
    first = (tmp_path / "bob.key").read_bytes()
    with pytest.raises(CertsExistError, match="bob"):
        issue_client(tmp_path, "bob")
    assert (tmp_path / "bob.key").read_bytes() == first
    issue_client(tmp_path, "bob", force=True)
    assert (tmp_path / "bob.key").read_bytes() != first


@pytest.mark.parametrize("san", ["not a host", "-bad.example", "a..b", "x" * 70 + ".example", ""])
def test_invalid_san_writes_nothing(tmp_path: Path, san: str) -> None:
    with pytest.raises(CertError, match="invalid SAN"):
        init_certs(tmp_path / "c", sans=[san])
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("name", ["ca", "server", "has space", "../escape", "-x", ""])
def test_invalid_client_names(tmp_path: Path, name: str) -> None:
    init_certs(tmp_path)
    with pytest.raises(CertError, match="invalid client name"):
        issue_client(tmp_path, name)


def test_issue_client_without_ca(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="no CA in .*falconet certs init"):
        issue_client(tmp_path, "bob")


def test_invalid_days(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="at least 1"):
        init_certs(tmp_path, days=0)


def test_leaf_never_outlives_ca(tmp_path: Path) -> None:
    init_certs(tmp_path)
    cert_path, _ = issue_client(tmp_path, "longlived", days=100_000)
    assert load(cert_path).not_valid_after_utc <= load(tmp_path / "ca.crt").not_valid_after_utc
