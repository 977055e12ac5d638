"""A self-signed certificate for the load balancer on a laptop, unless one is there already.

Run by the compose file's one-shot `certs` service before HAProxy starts:
``python make_certificate.py /certs/signup.pem``. HAProxy reads one PEM file: the certificate
(chain), then its private key. In production, mount your own file there (``SIGNUP_TLS_DIR``):
this never replaces an existing one.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(days: int = 825) -> bytes:
    """For ``localhost`` and ``127.0.0.1``: browsers warn, which is right for a laptop."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def main(path: Path) -> None:
    if path.exists():
        print(f"{path} is there already: kept")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(self_signed())
    # HAProxy reads it as its own, unprivileged user; the key is a throwaway laptop one.
    partial.chmod(0o644)
    partial.rename(path)
    print(f"{path}: a self-signed certificate for localhost, made")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
