"""Sealing of token records and index entries, and the keyed hashes that name them in the store.

Every primitive comes from ``cryptography``: HKDF-SHA256, HMAC-SHA256 and AES-256-GCM.

Record blob, layout version 2 (integers unsigned big-endian)::

    offset    size  field
    0         1     layout version, 2
    1         4     master key version
    5         16    salt, random per record
    21        12    AES-GCM nonce, random per record
    33        8     created_at, Unix time in ms
    41        8     expires_at, Unix time in ms, 0 for never
    49        1     value type: 1 string, 2 number
    50        1     length F of the format name
    51        F     format name, UTF-8
    51+F      1     length C of the class name
    52+F      C     class name, UTF-8
    52+F+C    n+16  AES-256-GCM ciphertext of the value (UTF-8, n bytes), then the GCM tag

Everything before the ciphertext is the header. The record key is
``HKDF-SHA256(ikm=master key of that version, salt=salt, info=RECORD_KEY_LABEL)``, 32 bytes.
The associated data is ``frame(RECORD_DOMAIN) + frame(lookup key) + header``, where
``frame(x)`` is the 4-byte length of ``x`` followed by ``x`` and the lookup key is the store key
of the record (``RecordCipher.lookup_key`` of its token). So a blob opens only in the store row
it was sealed for, and its metadata and key version cannot be changed without failing
authentication. Binding the lookup key rather than the token lets re-encryption reseal a record
from its store row alone, without the token, which the store never holds.

Layout version 1 bound the token itself. Only development versions of vaultgate wrote it, and
opening such a blob raises ``ObsoleteRecordLayoutError``.

Sealed token of a deterministic index entry, layout version 1::

    offset  size  field
    0       1     layout version, 1
    1       12    AES-GCM nonce, random
    13      n+16  AES-256-GCM ciphertext of the token (UTF-8), then the GCM tag

It is sealed under the key ring's token seal key with associated data
``frame(INDEX_ENTRY_DOMAIN) + frame(index key)``, so it opens only in its own index entry.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import KeyMaterialError, StoreError
from gateway.tokens.keys import KeyRing
from gateway.tokens.record import RecordMetadata, ValueType

RECORD_LAYOUT: Final = 2
OBSOLETE_RECORD_LAYOUTS: Final = frozenset({1})
"""Record layouts that earlier development versions wrote and this version cannot open."""
SEALED_TOKEN_LAYOUT: Final = 1
RECORD_KEY_LABEL: Final = b"vaultgate record key v1"
RECORD_DOMAIN: Final = b"vaultgate record v2"
INDEX_ENTRY_DOMAIN: Final = b"vaultgate index entry v1"

SALT_BYTES: Final = 16
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MAX_NAME_BYTES: Final = 255
"""Maximum length in UTF-8 bytes of a format or class name, set by its one-byte length field."""

_FIXED_HEADER: Final = struct.Struct(">BI16s12sQQB")
_VALUE_TYPE_CODES: Final = {ValueType.STRING: 1, ValueType.NUMBER: 2}
_VALUE_TYPES_BY_CODE: Final = {code: value_type for value_type, code in _VALUE_TYPE_CODES.items()}


class SealedBlobError(StoreError):
    """A sealed record or token failed to open. The message gives the reason and never any part
    of the blob."""


class TamperedBlobError(SealedBlobError):
    """A sealed record or token failed to open because it was changed, truncated, moved to another
    store row or index entry, or sealed under a master key that the key ring does not have."""


class ObsoleteRecordLayoutError(SealedBlobError):
    """A record blob has a layout that only an earlier development version of vaultgate wrote."""


@dataclass(frozen=True, slots=True)
class OpenedRecord:
    value: str
    metadata: RecordMetadata
    key_version: int


class RecordCipher:
    """The sealing and hashing operations of one key ring.

    ``random_bytes`` makes salts and nonces. Tests pass a fixed source to produce test vectors.
    Everything else must keep the default, because a repeated nonce breaks AES-GCM.
    """

    def __init__(
        self, key_ring: KeyRing, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self._key_ring = key_ring
        self._random_bytes = random_bytes
        self._token_seal = AESGCM(key_ring.token_seal_key.reveal())
        self._lookup_hmac = _KeyedHmac(key_ring.lookup_secret.reveal())
        self._blind_index_hmac = _KeyedHmac(key_ring.blind_index_secret.reveal())

    def lookup_key(self, token: str) -> bytes:
        """Return the store key of a token: HMAC-SHA256 of its UTF-8 under the lookup secret."""
        return self._lookup_hmac.digest(token.encode())

    def blind_index(self, class_name: str, format: str, value: str) -> bytes:
        """Return the deterministic index key of a value: HMAC-SHA256 under the blind-index
        secret of the framed class name, format name and value."""
        message = _frame(class_name.encode()) + _frame(format.encode()) + _frame(value.encode())
        return self._blind_index_hmac.digest(message)

    @property
    def key_ring(self) -> KeyRing:
        return self._key_ring

    @property
    def primary_version(self) -> int:
        """The master key version that ``seal_record`` seals under."""
        return self._key_ring.primary_version

    def seal_record(self, lookup_key: bytes, value: str, metadata: RecordMetadata) -> bytes:
        """Encrypt ``value`` under the primary master key, bound to the store row ``lookup_key``
        and to ``metadata``."""
        key_version = self._key_ring.primary_version
        salt = self._random_bytes(SALT_BYTES)
        nonce = self._random_bytes(NONCE_BYTES)
        header = _record_header(key_version, salt, nonce, metadata)

        record_key = self._record_key(key_version, salt)
        associated_data = _record_aad(lookup_key, header)
        ciphertext = AESGCM(record_key).encrypt(nonce, value.encode(), associated_data)
        return header + ciphertext

    def open_record(self, lookup_key: bytes, blob: bytes) -> OpenedRecord:
        """Decrypt a record blob sealed for the store row ``lookup_key``.

        Raises ``TamperedBlobError``, or ``ObsoleteRecordLayoutError`` for a blob of layout 1.
        """
        key_version, salt, nonce, metadata, header_length = _parse_record_header(blob)
        try:
            record_key = self._record_key(key_version, salt)
        except KeyMaterialError:
            raise TamperedBlobError(
                f"record is sealed under master key version {key_version}, which the key ring "
                "does not have"
            ) from None

        header = blob[:header_length]
        try:
            plaintext = AESGCM(record_key).decrypt(
                nonce, blob[header_length:], _record_aad(lookup_key, header)
            )
        except InvalidTag:
            raise TamperedBlobError("record failed authentication") from None
        return OpenedRecord(_decode(plaintext, "record value"), metadata, key_version)

    def reseal_record(self, lookup_key: bytes, blob: bytes) -> bytes:
        """Decrypt a record blob and seal its value and metadata again under the primary master
        key, for the same store row. Raises as ``open_record`` does."""
        opened = self.open_record(lookup_key, blob)
        return self.seal_record(lookup_key, opened.value, opened.metadata)

    def seal_token(self, token: str, index_key: bytes) -> bytes:
        """Encrypt ``token`` for the deterministic index entry ``index_key``."""
        nonce = self._random_bytes(NONCE_BYTES)
        ciphertext = self._token_seal.encrypt(nonce, token.encode(), _index_entry_aad(index_key))
        return bytes([SEALED_TOKEN_LAYOUT]) + nonce + ciphertext

    def open_token(self, sealed: bytes, index_key: bytes) -> str:
        """Decrypt a sealed token of index entry ``index_key``, or raise ``TamperedBlobError``."""
        if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES:
            raise TamperedBlobError("sealed token is truncated")
        if sealed[0] != SEALED_TOKEN_LAYOUT:
            raise TamperedBlobError(f"unknown sealed token layout version {sealed[0]}")
        nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            plaintext = self._token_seal.decrypt(nonce, ciphertext, _index_entry_aad(index_key))
        except InvalidTag:
            raise TamperedBlobError("sealed token failed authentication") from None
        return _decode(plaintext, "sealed token")

    def _record_key(self, key_version: int, salt: bytes) -> bytes:
        master_key = self._key_ring.master_key(key_version).reveal()
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=RECORD_KEY_LABEL)
        return hkdf.derive(master_key)


def fingerprint(lookup_key: bytes) -> str:
    """Return a short name of a record for logs: the first 8 bytes of its keyed lookup key, in hex.

    It identifies the record in the store without revealing the token.
    """
    return lookup_key[:8].hex()


def read_key_version(blob: bytes) -> int:
    """Return the master key version a record blob names, without authenticating it."""
    return _parse_record_header(blob)[0]


class _KeyedHmac:
    """HMAC-SHA256 under one key, keyed once: each digest copies the keyed context, which costs
    about a third of setting up a new one for every message."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.HMAC(key, hashes.SHA256())

    def digest(self, message: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.finalize()


def _frame(part: bytes) -> bytes:
    return struct.pack(">I", len(part)) + part


def _record_aad(lookup_key: bytes, header: bytes) -> bytes:
    return _frame(RECORD_DOMAIN) + _frame(lookup_key) + header


def _index_entry_aad(index_key: bytes) -> bytes:
    return _frame(INDEX_ENTRY_DOMAIN) + _frame(index_key)


def _record_header(key_version: int, salt: bytes, nonce: bytes, metadata: RecordMetadata) -> bytes:
    fixed = _FIXED_HEADER.pack(
        RECORD_LAYOUT,
        key_version,
        salt,
        nonce,
        metadata.created_at_ms,
        metadata.expires_at_ms or 0,
        _VALUE_TYPE_CODES[metadata.value_type],
    )
    return (
        fixed + _short_field(metadata.format, "format") + _short_field(metadata.class_name, "class")
    )


def _short_field(name: str, what: str) -> bytes:
    encoded = name.encode()
    if len(encoded) > MAX_NAME_BYTES:
        raise ValueError(f"{what} name is longer than {MAX_NAME_BYTES} bytes")
    return bytes([len(encoded)]) + encoded


def _parse_record_header(blob: bytes) -> tuple[int, bytes, bytes, RecordMetadata, int]:
    """Return key version, salt, nonce, metadata and header length, all still unauthenticated."""
    if len(blob) < _FIXED_HEADER.size:
        raise TamperedBlobError("record is truncated")
    layout, key_version, salt, nonce, created_ms, expires_ms, type_code = _FIXED_HEADER.unpack_from(
        blob
    )
    if layout in OBSOLETE_RECORD_LAYOUTS:
        raise ObsoleteRecordLayoutError(
            f"record has layout version {layout}, which only earlier development versions of "
            f"vaultgate wrote; this version reads layout {RECORD_LAYOUT} only, so tokenize the "
            "values again into an empty store"
        )
    if layout != RECORD_LAYOUT:
        raise TamperedBlobError(f"unknown record layout version {layout}")
    value_type = _VALUE_TYPES_BY_CODE.get(type_code)
    if value_type is None:
        raise TamperedBlobError(f"unknown value type code {type_code}")

    format_name, offset = _read_short_field(blob, _FIXED_HEADER.size)
    class_name, offset = _read_short_field(blob, offset)
    if len(blob) < offset + TAG_BYTES:
        raise TamperedBlobError("record is truncated")
    metadata = RecordMetadata(
        class_name=class_name,
        format=format_name,
        value_type=value_type,
        created_at_ms=created_ms,
        expires_at_ms=expires_ms or None,
    )
    return key_version, salt, nonce, metadata, offset


def _read_short_field(blob: bytes, offset: int) -> tuple[str, int]:
    if len(blob) <= offset:
        raise TamperedBlobError("record is truncated")
    end = offset + 1 + blob[offset]
    if len(blob) < end:
        raise TamperedBlobError("record is truncated")
    return _decode(blob[offset + 1 : end], "record header"), end


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise TamperedBlobError(f"{what} is not valid UTF-8") from None
