"""
Syncthing device identities: a key, a self-signed certificate, a device ID.

Every Syncthing program proves who it is with a TLS certificate and is named
by the SHA-256 of that certificate.  The tests make their own identities
instead of relying on C{syncthing generate}, so that the relay and discovery
tests need only the two servers installed, and so that the device ID
derivation is checked against what the real programs print.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _luhnBase32(group: str) -> str:
    """
    The check character Syncthing appends to a 13-character group.

    Syncthing's variant of Luhn mod 32 doubles every second character
    counting from the left, starting with the second; a standard Luhn would
    count from the right.  Device IDs carry this variant, so it is the one
    that must be reproduced.
    """
    factor = 1
    total = 0
    for character in group:
        addend = factor * _ALPHABET.index(character)
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return _ALPHABET[(32 - total % 32) % 32]


def deviceIDFromDigest(digest: bytes) -> str:
    """
    The canonical string form of the device ID whose raw form is C{digest}.

    The 32 bytes are base32-encoded without padding (52 characters), cut into
    four groups of 13 that each get a check character, and shown in groups
    of 7 joined by dashes.
    """
    if len(digest) != 32:
        raise ValueError(f"a device ID is 32 bytes, not {len(digest)}")
    encoded = base64.b32encode(digest).decode("ascii").rstrip("=")
    checked = "".join(
        encoded[i : i + 13] + _luhnBase32(encoded[i : i + 13]) for i in range(0, 52, 13)
    )
    return "-".join(checked[i : i + 7] for i in range(0, 56, 7))


def deviceIDFromCertificate(der: bytes) -> str:
    """
    The device ID of the certificate whose DER encoding is C{der}.
    """
    return deviceIDFromDigest(hashlib.sha256(der).digest())


def deviceIDToBytes(deviceID: str) -> bytes:
    """
    The raw 32 bytes of C{deviceID} given in canonical string form, checking
    its check characters; the relay protocol carries device IDs this way.
    """
    flat = deviceID.replace("-", "").upper()
    if len(flat) != 56:
        raise ValueError(f"not a device ID: {deviceID!r}")
    groups = [flat[i : i + 14] for i in range(0, 56, 14)]
    for group in groups:
        if _luhnBase32(group[:13]) != group[13]:
            raise ValueError(f"bad check character in device ID {deviceID!r}")
    encoded = "".join(group[:13] for group in groups) + "===="
    return base64.b32decode(encoded)


@attrs.frozen
class Identity:
    """
    A key and certificate on disk, and the device ID they make.

    @ivar certPath: the PEM certificate, named C{cert.pem} as every Syncthing
        program expects.
    @ivar keyPath: the PEM private key, C{key.pem}.
    @ivar deviceID: the canonical device ID of the certificate.
    """

    certPath: Path
    keyPath: Path
    deviceID: str

    @property
    def directory(self) -> Path:
        """
        The directory holding C{cert.pem} and C{key.pem}, which is what
        C{strelaysrv -keys} and a Syncthing home want.
        """
        return self.certPath.parent

    @property
    def deviceIDBytes(self) -> bytes:
        """
        The raw 32-byte form of L{deviceID}.
        """
        return deviceIDToBytes(self.deviceID)

    def clientContext(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """
        A TLS client context presenting this identity.

        Syncthing servers have self-signed certificates that are pinned by
        device ID, not checked against a CA, so verification is left to
        L{verifyPeer} after the handshake.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certPath, self.keyPath)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context


def verifyPeer(sock: ssl.SSLSocket, expectedDeviceID: str | None) -> str:
    """
    The device ID of the certificate C{sock}'s peer presented, checked
    against C{expectedDeviceID} when one is given (the C{?id=} pin of a
    Syncthing URL).

    @raise AssertionError: if the peer is someone else.
    """
    der = sock.getpeercert(binary_form=True)
    if der is None:
        raise AssertionError("the peer presented no certificate")
    peerID = deviceIDFromCertificate(der)
    if expectedDeviceID is not None and peerID != expectedDeviceID:
        raise AssertionError(f"peer is {peerID}, expected {expectedDeviceID}")
    return peerID


def generateIdentity(directory: Path, commonName: str = "syncthing") -> Identity:
    """
    Make a new ECDSA P-384 key and a self-signed certificate in
    C{directory} (created if needed), like the ones Syncthing generates.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Syncthing"),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                    x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                ]
            ),
            False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(commonName)]), False)
        .sign(key, hashes.SHA256())
    )
    certPath = directory / "cert.pem"
    keyPath = directory / "key.pem"
    certPath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyPath.chmod(0o600)
    der = certificate.public_bytes(serialization.Encoding.DER)
    return Identity(certPath, keyPath, deviceIDFromCertificate(der))


def identityFromFiles(directory: Path) -> Identity:
    """
    The identity whose C{cert.pem} and C{key.pem} are in C{directory}
    (for example made by C{syncthing generate}).
    """
    certPath = directory / "cert.pem"
    certificate = x509.load_pem_x509_certificate(certPath.read_bytes())
    der = certificate.public_bytes(serialization.Encoding.DER)
    return Identity(certPath, directory / "key.pem", deviceIDFromCertificate(der))
