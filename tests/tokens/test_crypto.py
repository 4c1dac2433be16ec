from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.secret import Secret
from gateway.tokens.crypto import (
    ObsoleteRecordLayoutError,
    RecordCipher,
    TamperedBlobError,
    fingerprint,
    read_key_version,
)
from gateway.tokens.keys import KeyFile, KeyRing, MasterKey
from gateway.tokens.record import RecordMetadata, ValueType
from tests.conftest import make_key_ring

MASTER_KEY_2 = bytes([2]) * 32
INDEX_KEY = bytes(range(32, 64))
TOKEN = "4242421234564242"
VALUE = "4242424242424242"
METADATA = RecordMetadata("card.pan", "pan", ValueType.STRING, 1735689600000, 1735693200000)

# Made with the keys of make_key_ring and the bytes of CountingBytes: the first record has salt
# 00..0f and nonce 10..1b, the second 1c..2b and 2c..37, and the sealed token nonce 38..43.
# Records are sealed for the lookup key of their token (LOOKUP_KEY_VECTOR for TOKEN).
RECORD_VECTOR = bytes.fromhex(
    "0200000002000102030405060708090a0b0c0d0e0f101112131415161718191a1b000001941f297c00000001"
    "941f606a80010370616e08636172642e70616ebb0b31e235a2feda043f3c73bd073e63e745838726f53ef4ec"
    "7490af8a7439f1"
)
NUMBER_RECORD_VECTOR = bytes.fromhex(
    "02000000021c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637000001941f297c00000000"
    "00000000000204757569640c67656e657269632e757569643dd9e8cf7603e36cac02dfc71662cbc62831e040"
    "de6d4f"
)
# The record of RECORD_VECTOR in layout 1, which bound the token instead of its lookup key.
LAYOUT_1_RECORD_VECTOR = bytes.fromhex(
    "0100000002000102030405060708090a0b0c0d0e0f101112131415161718191a1b000001941f297c00000001"
    "941f606a80010370616e08636172642e70616ebb0b31e235a2feda043f3c73bd073e63281be34d49740587ef"
    "f3828676882ed7"
)
BLIND_INDEX_VECTOR = bytes.fromhex(
    "6498a6d1c6868c58eda930f2c7478a35cf38c2ddfde418daf0c2ef955aebc94d"
)
SEALED_TOKEN_VECTOR = bytes.fromhex(
    "0138393a3b3c3d3e3f4041424304c7a268117a9898b13a96de75832d46bb2be178e820c13431ea919297ac9be1"
)
LOOKUP_KEY_VECTOR = bytes.fromhex(
    "c10d8989147ec161f0b5a2a38111b5854885c7a4101658aa95724e2e6fb9bea6"
)


class CountingBytes:
    """A stand-in for the random source that returns 00, 01, 02, ... across calls."""

    def __init__(self, start: int = 0) -> None:
        self.next = start

    def __call__(self, count: int) -> bytes:
        chunk = bytes((self.next + offset) % 256 for offset in range(count))
        self.next += count
        return chunk


def fixed_cipher(ring: KeyRing | None = None) -> RecordCipher:
    return RecordCipher(ring or make_key_ring(), random_bytes=CountingBytes())


def frame(part: bytes) -> bytes:
    return struct.pack(">I", len(part)) + part


def derive(key: bytes, *, salt: bytes | None, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=label).derive(key)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize()


def test_record_blob_matches_vector() -> None:
    assert fixed_cipher().seal_record(LOOKUP_KEY_VECTOR, VALUE, METADATA) == RECORD_VECTOR


def test_number_record_blob_matches_vector() -> None:
    cipher = fixed_cipher()
    cipher.seal_record(LOOKUP_KEY_VECTOR, VALUE, METADATA)  # uses salt 00..0f and nonce 10..1b
    metadata = RecordMetadata("generic.uuid", "uuid", ValueType.NUMBER, 1735689600000, None)
    lookup_key = cipher.lookup_key("tok_00112233445566778899aabbccddeeff")

    blob = cipher.seal_record(lookup_key, "4242.50", metadata)

    assert blob == NUMBER_RECORD_VECTOR


def test_record_vector_follows_documented_layout() -> None:
    salt, nonce = bytes(range(16)), bytes(range(16, 28))
    header = (
        bytes([2])
        + struct.pack(">I", 2)
        + salt
        + nonce
        + struct.pack(">QQ", 1735689600000, 1735693200000)
        + bytes([1])
        + frame_short(b"pan")
        + frame_short(b"card.pan")
    )
    record_key = derive(MASTER_KEY_2, salt=salt, label=b"vaultgate record key v1")
    lookup_secret = derive(INDEX_KEY, salt=None, label=b"vaultgate lookup key v1")
    lookup_key = hmac_sha256(lookup_secret, TOKEN.encode())
    associated_data = frame(b"vaultgate record v2") + frame(lookup_key) + header

    ciphertext = AESGCM(record_key).encrypt(nonce, VALUE.encode(), associated_data)

    assert header + ciphertext == RECORD_VECTOR


def frame_short(name: bytes) -> bytes:
    return bytes([len(name)]) + name


def test_lookup_key_is_hmac_of_token() -> None:
    lookup_secret = derive(INDEX_KEY, salt=None, label=b"vaultgate lookup key v1")

    assert fixed_cipher().lookup_key(TOKEN) == hmac_sha256(lookup_secret, TOKEN.encode())
    assert fixed_cipher().lookup_key(TOKEN) == LOOKUP_KEY_VECTOR


def test_blind_index_is_hmac_of_framed_fields() -> None:
    secret = derive(INDEX_KEY, salt=None, label=b"vaultgate blind index v1")
    message = frame(b"card.pan") + frame(b"pan") + frame(VALUE.encode())

    assert fixed_cipher().blind_index("card.pan", "pan", VALUE) == hmac_sha256(secret, message)
    assert fixed_cipher().blind_index("card.pan", "pan", VALUE) == BLIND_INDEX_VECTOR


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("card.pan", "pan", "42"), ("card.pa", "npan", "42")),
        (("a", "b", "cd"), ("a", "bc", "d")),
        (("card.pan", "pan", "42"), ("card.pan", "pan_last4", "42")),
        (("card.pan", "pan", "42"), ("other.pan", "pan", "42")),
    ],
)
def test_blind_index_separates_fields(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    cipher = fixed_cipher()

    assert cipher.blind_index(*first) != cipher.blind_index(*second)


def test_sealed_token_matches_vector() -> None:
    cipher = RecordCipher(make_key_ring(), random_bytes=CountingBytes(start=0x38))

    assert cipher.seal_token(TOKEN, BLIND_INDEX_VECTOR) == SEALED_TOKEN_VECTOR


def test_sealed_token_follows_documented_layout() -> None:
    seal_key = derive(INDEX_KEY, salt=None, label=b"vaultgate index entry seal v1")
    nonce = SEALED_TOKEN_VECTOR[1:13]
    associated_data = frame(b"vaultgate index entry v1") + frame(BLIND_INDEX_VECTOR)

    plaintext = AESGCM(seal_key).decrypt(nonce, SEALED_TOKEN_VECTOR[13:], associated_data)

    assert SEALED_TOKEN_VECTOR[0] == 1
    assert plaintext == TOKEN.encode()


def test_open_record_round_trip() -> None:
    opened = fixed_cipher().open_record(LOOKUP_KEY_VECTOR, RECORD_VECTOR)

    assert opened.value == VALUE
    assert opened.metadata == METADATA
    assert opened.key_version == 2
    assert read_key_version(RECORD_VECTOR) == 2


def test_open_token_round_trip() -> None:
    assert fixed_cipher().open_token(SEALED_TOKEN_VECTOR, BLIND_INDEX_VECTOR) == TOKEN


def test_seal_uses_fresh_salt_and_nonce() -> None:
    cipher = RecordCipher(make_key_ring())

    first = cipher.seal_record(LOOKUP_KEY_VECTOR, VALUE, METADATA)
    second = cipher.seal_record(LOOKUP_KEY_VECTOR, VALUE, METADATA)

    assert first[5:33] != second[5:33]
    assert cipher.open_record(LOOKUP_KEY_VECTOR, first).value == VALUE
    assert cipher.open_record(LOOKUP_KEY_VECTOR, second).value == VALUE


@pytest.mark.parametrize("position", range(len(RECORD_VECTOR)))
def test_record_with_flipped_byte_fails(position: int) -> None:
    tampered = bytearray(RECORD_VECTOR)
    tampered[position] ^= 0x01

    with pytest.raises(TamperedBlobError):
        fixed_cipher().open_record(LOOKUP_KEY_VECTOR, bytes(tampered))


@pytest.mark.parametrize("length", [0, 1, 32, 49, 60, len(RECORD_VECTOR) - 1])
def test_truncated_record_fails(length: int) -> None:
    with pytest.raises(TamperedBlobError):
        fixed_cipher().open_record(LOOKUP_KEY_VECTOR, RECORD_VECTOR[:length])


def test_record_moved_to_another_row_fails() -> None:
    cipher = RecordCipher(make_key_ring())
    other_lookup_key = cipher.lookup_key("4242425555554242")
    other_blob = cipher.seal_record(other_lookup_key, VALUE, METADATA)

    with pytest.raises(TamperedBlobError):
        cipher.open_record(LOOKUP_KEY_VECTOR, other_blob)
    with pytest.raises(TamperedBlobError):
        cipher.open_record(other_lookup_key, RECORD_VECTOR)


def test_record_sealed_for_token_text_fails() -> None:
    cipher = RecordCipher(make_key_ring())

    with pytest.raises(TamperedBlobError):
        cipher.open_record(TOKEN.encode(), RECORD_VECTOR)


def test_layout_1_record_names_earlier_version() -> None:
    with pytest.raises(ObsoleteRecordLayoutError) as caught:
        fixed_cipher().open_record(LOOKUP_KEY_VECTOR, LAYOUT_1_RECORD_VECTOR)

    assert "layout version 1" in str(caught.value)
    assert "earlier development versions" in str(caught.value)
    assert not isinstance(caught.value, TamperedBlobError)


def test_reseal_moves_record_to_primary() -> None:
    old_ring = make_key_ring(primary=2)
    rotated = KeyRing(key_file_of(old_ring).with_new_primary(created=datetime.now(UTC)))
    cipher = RecordCipher(rotated)

    resealed = cipher.reseal_record(LOOKUP_KEY_VECTOR, RECORD_VECTOR)
    opened = cipher.open_record(LOOKUP_KEY_VECTOR, resealed)

    assert read_key_version(resealed) == 3
    assert opened.value == VALUE
    assert opened.metadata == METADATA
    assert opened.key_version == 3


@pytest.mark.parametrize("version", [1, 3, 0xFFFFFFFF])
def test_record_with_other_key_version_fails(version: int) -> None:
    relabelled = RECORD_VECTOR[:1] + struct.pack(">I", version) + RECORD_VECTOR[5:]

    with pytest.raises(TamperedBlobError):
        fixed_cipher().open_record(LOOKUP_KEY_VECTOR, relabelled)


def test_record_fails_without_its_master_key() -> None:
    ring_without_version_2 = make_key_ring(primary=1)

    with pytest.raises(TamperedBlobError):
        fixed_cipher(ring_without_version_2).open_record(LOOKUP_KEY_VECTOR, RECORD_VECTOR)


def test_record_fails_under_other_master_key() -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    masters = tuple(MasterKey(version, Secret(bytes([9]) * 32), created) for version in (1, 2))
    other_ring = KeyRing(KeyFile(False, 2, masters, Secret(INDEX_KEY)))

    with pytest.raises(TamperedBlobError):
        fixed_cipher(other_ring).open_record(LOOKUP_KEY_VECTOR, RECORD_VECTOR)


def key_file_of(ring: KeyRing) -> KeyFile:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    masters = tuple(MasterKey(v, ring.master_key(v), created) for v in ring.versions)
    return KeyFile(False, ring.primary_version, masters, Secret(INDEX_KEY))


def test_records_open_after_rotation() -> None:
    old_ring = make_key_ring(primary=2)
    rotated = KeyRing(key_file_of(old_ring).with_new_primary(created=datetime.now(UTC)))
    cipher = RecordCipher(rotated)

    new_blob = cipher.seal_record(LOOKUP_KEY_VECTOR, VALUE, METADATA)

    assert cipher.open_record(LOOKUP_KEY_VECTOR, RECORD_VECTOR).value == VALUE
    assert read_key_version(new_blob) == 3
    assert cipher.open_record(LOOKUP_KEY_VECTOR, new_blob).value == VALUE
    assert cipher.lookup_key(TOKEN) == LOOKUP_KEY_VECTOR


@pytest.mark.parametrize("position", range(len(SEALED_TOKEN_VECTOR)))
def test_sealed_token_with_flipped_byte_fails(position: int) -> None:
    tampered = bytearray(SEALED_TOKEN_VECTOR)
    tampered[position] ^= 0x01

    with pytest.raises(TamperedBlobError):
        fixed_cipher().open_token(bytes(tampered), BLIND_INDEX_VECTOR)


def test_sealed_token_in_other_index_entry_fails() -> None:
    other_index_key = fixed_cipher().blind_index("card.pan", "pan", "4000056655665556")

    with pytest.raises(TamperedBlobError):
        fixed_cipher().open_token(SEALED_TOKEN_VECTOR, other_index_key)


def test_fingerprint_is_short_and_hides_token() -> None:
    lookup_key = fixed_cipher().lookup_key(TOKEN)

    assert fingerprint(lookup_key) == LOOKUP_KEY_VECTOR[:8].hex()
    assert TOKEN not in fingerprint(lookup_key)


def test_tamper_error_hides_blob() -> None:
    tampered = RECORD_VECTOR[:-1] + bytes([RECORD_VECTOR[-1] ^ 1])

    with pytest.raises(TamperedBlobError) as caught:
        fixed_cipher().open_record(LOOKUP_KEY_VECTOR, tampered)

    message = str(caught.value)
    assert TOKEN not in message
    assert VALUE not in message
    assert tampered.hex()[-16:] not in message
