"""A certificate authority per data directory, and a certificate per proxy endpoint.

RDS gives clients a CA bundle to verify proxy endpoints with; Sluice does the
same: when `sluice server` first starts it makes a CA (`<data-dir>/tls/ca.pem`, its key 0600 beside
it) and, for every endpoint address, a certificate naming that address, so
`sslmode=verify-full sslrootcert=<data-dir>/tls/ca.pem` (PostgreSQL) or
`ssl_ca` with hostname checking (MySQL) verifies the endpoint a client
connects to. Certificates are kept and reused across restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sluice.tls import write_private_key

_VALID = dt.timedelta(days=3650)


class EndpointCertificates:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_file = directory / "ca.pem"
        self._ca_key_file = directory / "ca.key"

    def ensure_authority(self) -> Path:
        """The CA's file, made if missing: clients need it before any endpoint exists (the
        recipe's function is packaged with it)."""
        self._authority()
        return self.ca_file

    def for_address(self, address: str) -> tuple[str, str]:
        """(certificate file, key file) for an endpoint address, made if missing."""
        cert_file = self.directory / "endpoints" / f"{address}.pem"
        key_file = self.directory / "endpoints" / f"{address}.key"
        if not (cert_file.exists() and key_file.exists()):
            ca_key, ca_cert = self._authority()
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))])
            cert = (
                _builder(name, ca_cert.subject, key.public_key())
                .add_extension(san, critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256())
            )
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private_key(key_file, key)
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(cert_file), str(key_file)

    def _authority(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self.ca_file.exists() and self._ca_key_file.exists():
            key = serialization.load_pem_private_key(self._ca_key_file.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key, x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        (self.directory / "endpoints").mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sluice endpoint CA")])
        usage = x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False,
        )  # fmt: skip
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256())
        )
        write_private_key(self._ca_key_file, key)
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
    )
