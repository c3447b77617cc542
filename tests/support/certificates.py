"""Certificates for TLS servers on loopback, each signed by itself: an authority no machine trusts, which a test
names in a connection's ``verify`` extra to trust it."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(folder: Path, *, expired: bool = False) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 only (not ``localhost``) and its key, written to ``folder``; ``expired``: one
    whose last valid day was yesterday. The certificate is also its authority's, to name in ``verify``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowruns test authority")])
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    valid_from, valid_to = (now - 2 * day, now - day) if expired else (now - datetime.timedelta(minutes=5), now + day)
    made = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert, private = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(made.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, private
