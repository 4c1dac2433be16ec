"""The forward proxy's certificate authority, kept as PEM files in ``forward.ca_dir``.

Clients of the forward proxy trust this CA, and the proxy signs a certificate with it for each
host it intercepts. The directory holds:

- ``vaultgate-ca.pem``: the private key and the certificate, mode 0600. Anyone with this file
  can impersonate any host to every client that trusts the CA, so it must not leave the
  gateway's machine.
- ``vaultgate-ca-cert.pem``: the certificate alone, for clients (``vaultgate ca export``).
- ``vaultgate-dhparam.pem``: Diffie-Hellman parameters for DHE cipher suites.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs

logger = logging.getLogger("gateway.forward")

KEY_FILE = "vaultgate-ca.pem"
CERT_FILE = "vaultgate-ca-cert.pem"
DHPARAM_FILE = "vaultgate-dhparam.pem"
_KEY_SIZE = 2048
_ORGANIZATION = "vaultgate"
_COMMON_NAME = "vaultgate forward proxy CA"


@dataclass(frozen=True, slots=True)
class CaFiles:
    directory: Path

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def dhparam_file(self) -> Path:
        return self.directory / DHPARAM_FILE

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())

    def fingerprint(self) -> str:
        """Return the SHA-256 fingerprint of the certificate, as colon-separated hex."""
        digest = hashlib.sha256(self.certificate().public_bytes(serialization.Encoding.DER))
        return ":".join(f"{byte:02X}" for byte in digest.digest())


def ensure_ca(directory: Path) -> CaFiles:
    """Return the CA in ``directory``, creating it first when there is none.

    Warns when the key file can be read by other users.
    """
    files = CaFiles(directory)
    if not files.key_file.exists():
        _create(files)
        logger.info(
            "created the forward proxy CA in %s (SHA-256 %s); give clients %s",
            directory,
            files.fingerprint(),
            files.cert_file,
        )
    mode = stat.S_IMODE(files.key_file.stat().st_mode)
    if mode & 0o077:
        logger.warning(
            "forward proxy CA key %s has mode %o, so other users can read it; run chmod 600 on it",
            files.key_file,
            mode,
        )
    if not files.cert_file.exists() or not files.dhparam_file.exists():
        # The key file contains the certificate too, so the others can be written again from it.
        certificate = x509.load_pem_x509_certificate(files.key_file.read_bytes())
        _write_public_files(files, certificate)
    return files


def rotate_ca(directory: Path) -> CaFiles:
    """Replace the CA in ``directory`` with a new one; the old key is overwritten."""
    files = CaFiles(directory)
    _create(files)
    return files


def load_cert_store(files: CaFiles) -> certs.CertStore:
    """Return a mitmproxy certificate store that signs with this CA."""
    return certs.CertStore.from_files(files.key_file, files.dhparam_file)


def _create(files: CaFiles) -> None:
    files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key, certificate = certs.create_ca(
        organization=_ORGANIZATION, cn=_COMMON_NAME, key_size=_KEY_SIZE
    )
    key_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    _write_atomically(files.key_file, key_pem + certificate_pem, mode=0o600)
    _write_public_files(files, certificate)


def _write_public_files(files: CaFiles, certificate: x509.Certificate) -> None:
    _write_atomically(
        files.cert_file, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644
    )
    _write_atomically(files.dhparam_file, certs.DEFAULT_DHPARAM, mode=0o644)


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode``, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
