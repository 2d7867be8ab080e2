"""TLS contexts: the proxy's server side, and its side as a client of the database.

When no certificate is configured, a self-signed one is generated with
`cryptography` on first use and kept under the state directory, so clients that
pin it keep working across restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sluice.config import TargetConfig
from sluice.errors import ConfigError


def server_context(cert_file: str, key_file: str, state_dir: Path) -> ssl.SSLContext:
    """A TLS server context from the given files, or from a generated self-signed pair."""
    if not cert_file:
        cert_file, key_file = ensure_self_signed(state_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert_file}: {exc}") from exc
    return ctx


def ensure_self_signed(state_dir: Path) -> tuple[str, str]:
    """Paths of a self-signed certificate and key under `state_dir`, made if missing."""
    cert_path, key_path = state_dir / "tls" / "sluice.crt", state_dir / "tls" / "sluice.key"
    if cert_path.exists() and key_path.exists():
        return str(cert_path), str(key_path)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluice")])
    now = dt.datetime.now(dt.UTC)
    alt = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(alt, critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """A private key as PEM, readable by its owner only (mode 0600 from the start)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def client_context(target: TargetConfig) -> ssl.SSLContext | None:
    """The context for connecting to a target, or None when TLS is disabled."""
    if target.tls == "disable":
        return None
    if target.tls in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=target.tls_ca_file or None)
        ctx.check_hostname = target.tls == "verify-full"
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
