"""Certificate authorities, TLS leaves and the SSH host key of the lab.

Two CAs are made at every lab start: the trusted "sgw-reach Lab Root
CA" and "Lab Inspecting Firewall CA", which stands in for a middlebox
that re-signs TLS traffic.  Each HTTPS address gets one leaf whose SAN
list decides what it is good for:

* good, inspecting and expired leaves name every endpoint of every
  region plus the global names, so the only fault an address shows is
  the one it stands for, whatever SNI a client sends;
* the wrong-name leaf names only ``wrong.lab.test``;
* the directory server's leaf (good CA) names ``dc.lab.test`` and its
  address 10.231.0.70, so LDAPS verifies by name and by address alike.

Leaves are signed directly by their CA (no intermediate) and the served
chain is the leaf alone.  Keys are ECDSA P-256 because they are made in
a millisecond; a client that insists on RSA cannot be tested here.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import topology

GOOD_CA_NAME = "sgw-reach Lab Root CA"
INSPECT_CA_NAME = "Lab Inspecting Firewall CA"

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Leaf:
    """PEM files nginx needs for one HTTPS address."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every file made by `make_pki`."""

    ca_bundle: Path
    inspect_ca: Path
    leaves: dict[str, Leaf]
    ssh_host_key: Path
    dc: Leaf


@dataclass(frozen=True)
class _Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sgw-reach lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(common_name: str, now: datetime.datetime) -> _Ca:
    key = _new_key()
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 365 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(usage, critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Ca(cert, key)


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _make_leaf(
    ca: _Ca,
    names: tuple[str, ...],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    addresses: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    general += [x509.IPAddress(ipaddress.IPv4Address(a)) for a in addresses]
    san = x509.SubjectAlternativeName(general)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(san, critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def _write_private(path: Path, data: bytes) -> None:
    # Daemons (sshd above all) refuse keys others can read.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_leaf(
    directory: Path,
    stem: str,
    pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> Leaf:
    cert, key = pair
    leaf = Leaf(directory / f"{stem}.crt", directory / f"{stem}.key")
    leaf.cert.write_bytes(_cert_pem(cert))
    _write_private(
        leaf.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return leaf


def _write_ssh_host_key(path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )


def make_pki(directory: Path) -> Pki:
    """Create both CAs, the TLS leaves and an SSH host key."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    good = _make_ca(GOOD_CA_NAME, now)
    inspect = _make_ca(INSPECT_CA_NAME, now)
    every = topology.all_endpoint_names()
    valid = (now - _DAY, now + 90 * _DAY)
    expired = (now - 90 * _DAY, now - _DAY)
    leaves = {
        topology.TLS_GOOD: _write_leaf(
            directory, "good", _make_leaf(good, every, *valid)
        ),
        topology.TLS_INSPECT: _write_leaf(
            directory, "inspect", _make_leaf(inspect, every, *valid)
        ),
        topology.TLS_EXPIRED: _write_leaf(
            directory, "expired", _make_leaf(good, every, *expired)
        ),
        topology.TLS_WRONG_NAME: _write_leaf(
            directory, "wrong-name", _make_leaf(good, (topology.WRONG_NAME,), *valid)
        ),
    }
    ca_bundle = directory / "lab-root-ca.pem"
    ca_bundle.write_bytes(_cert_pem(good.cert))
    inspect_ca = directory / "inspecting-firewall-ca.pem"
    inspect_ca.write_bytes(_cert_pem(inspect.cert))
    ssh_host_key = directory / "ssh_host_ed25519_key"
    _write_ssh_host_key(ssh_host_key)
    dc = _write_leaf(
        directory,
        "dc",
        _make_leaf(good, (topology.DC_NAME,), *valid, addresses=(topology.DC,)),
    )
    return Pki(ca_bundle, inspect_ca, leaves, ssh_host_key, dc)
