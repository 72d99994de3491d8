"""The embedded sink's self-signed TLS certificate, made once and pinned by the client.

The certificate is never trusted through a CA bundle: the SMTP client trusts exactly this
certificate (by value and by SHA-256 fingerprint), so a self-signed leaf is all that is needed.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "sink-cert.pem"
KEY_FILE = "sink-key.pem"
VALIDITY = timedelta(days=365)
_CLOCK_SKEW = timedelta(minutes=5)


def ensure_sink_certificate(folder: Path) -> tuple[Path, Path]:
    """Return ``(cert_path, key_path)`` under ``folder``, creating them unless a valid pair exists.

    A pair is reused while the certificate is unexpired and matches the key; otherwise both are
    replaced. A lock file keeps concurrent processes from writing a key and a certificate that do
    not belong together.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    with open(folder / ".sink-cert.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _usable(cert_path, key_path):
                key = ec.generate_private_key(ec.SECP256R1())
                _write_atomically(key_path, _key_pem(key), mode=0o600)
                _write_atomically(cert_path, _certificate_pem(key), mode=0o644)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return cert_path, key_path


def fingerprint_sha256(cert_pem: bytes) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding (what a peer presents in TLS)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _usable(cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return False
    if certificate.not_valid_after_utc <= datetime.now(UTC):
        return False
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(serialization.Encoding.DER, raw) == key.public_key().public_bytes(
        serialization.Encoding.DER, raw
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "carecast embedded sink"),
        ]
    )
    now = datetime.now(UTC)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write_atomically(path: Path, content: bytes, mode: int) -> None:
    """Write to a sibling temp file created with ``mode`` and rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
