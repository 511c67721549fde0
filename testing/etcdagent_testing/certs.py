"""Throwaway PKI for TLS test clusters (built with the ``cryptography`` package)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TLSFiles", "make_tls_files"]


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS test cluster.

    ``server_cert`` is used by every member for both client and peer traffic; ``client_cert`` is
    signed by ``ca_file``; ``other_ca_file`` is an unrelated CA (to test "wrong CA" failures);
    ``expired_client_cert`` is signed by ``ca_file`` but expired yesterday.

    The client certs carry **no CommonName**: with ``--client-cert-auth`` and auth enabled, etcd's
    gRPC-JSON gateway answers HTTP 400 "CommonName of client sending a request against gateway
    will be ignored and not used as expected" to any client cert with a CN (3.4 and 3.5).
    The server cert's CN ("etcd server") is no etcd user: the gateway presents that cert to
    etcd's own gRPC listener, so a user of that name would be granted to token-less requests.
    """

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path
    expired_client_cert: Path
    expired_client_key: Path


_Key = ec.EllipticCurvePrivateKey


def _key() -> _Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str | None, unit: str = "etcdagent") -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcdagent tests"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
    ]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _write_key(path: Path, key: _Key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(common_name: str, now: dt.datetime) -> tuple[_Key, x509.Certificate]:
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common_name: str | None,
    unit: str,
    ca_key: _Key,
    ca_cert: x509.Certificate,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    hosts: Sequence[str] = (),
    server: bool = False,
) -> tuple[_Key, x509.Certificate]:
    key = _key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, unit))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_tls_files(
    directory: Path, *, hosts: Sequence[str] = ("127.0.0.1", "localhost", "etcd.test")
) -> TLSFiles:
    """Create a CA, a server cert (SANs ``hosts``), client certs and a wrong CA in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    ca_key, ca_cert = _ca("etcdagent test CA", now)
    _other_key, other_cert = _ca("etcdagent unrelated CA", now)
    server_key, server_cert = _leaf(
        "etcd server",
        "server",
        ca_key,
        ca_cert,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
        hosts=hosts,
        server=True,
    )
    client_key, client_cert = _leaf(
        None,
        "client",
        ca_key,
        ca_cert,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
    )
    expired_key, expired_cert = _leaf(
        None,
        "expired client",
        ca_key,
        ca_cert,
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )

    files = TLSFiles(
        ca_file=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        other_ca_file=directory / "other-ca.pem",
        expired_client_cert=directory / "expired-client.pem",
        expired_client_key=directory / "expired-client-key.pem",
    )
    _write_cert(files.ca_file, ca_cert)
    _write_cert(files.other_ca_file, other_cert)
    _write_cert(files.server_cert, server_cert)
    _write_key(files.server_key, server_key)
    _write_cert(files.client_cert, client_cert)
    _write_key(files.client_key, client_key)
    _write_cert(files.expired_client_cert, expired_cert)
    _write_key(files.expired_client_key, expired_key)
    return files
