"""Tokenize and detokenize batches: token formats, record sealing and the store, together.

The route engine, the vault API and pipelines call this module; it is the only place where
plaintext values meet the store. One store round trip serves a whole batch, plus one more for
each round of token collisions.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from gateway.errors import (
    InvalidTokenError,
    InvalidValueError,
    KeyMaterialError,
    StoreError,
    TokenSpaceExhaustedError,
)
from gateway.store.base import PutRequest, PutResult, PutStatus, StoredRecord, TokenStore
from gateway.tokens.crypto import (
    MAX_NAME_BYTES,
    ObsoleteRecordLayoutError,
    RecordCipher,
    SealedBlobError,
    TamperedBlobError,
    fingerprint,
    read_key_version,
)
from gateway.tokens.formats import MAX_TOKEN_LENGTH, TokenFormat, get_format, has_control_characters
from gateway.tokens.keys import KeyRing
from gateway.tokens.record import RecordMetadata, ValueType

__all__ = ["Revealed", "TokenizeItem", "ValueType", "Vault"]

logger = logging.getLogger("gateway.store")

MAX_PUT_ATTEMPTS: Final = 10
"""Rounds of new tokens tried for items whose token is taken, before the batch fails."""
MAX_TTL_SECONDS: Final = 100 * 365 * 24 * 3600

# A NUMBER value is written back into JSON as a number, so it must fit the JSON number grammar.
_JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_UNKNOWN_OR_EXPIRED: Final = "unknown or expired token"

KEY_CHECK_LOOKUP_KEY: Final = bytes(32)
"""Store key of the key-check record. No token maps to it: a lookup key is an HMAC-SHA256
output, which is all zero bytes with probability 2**-256."""
_KEY_CHECK_TEXT: Final = "vaultgate key check"
"""Fixed text whose lookup key the key-check record holds, so that it depends on the index key."""
_KEY_CHECK_CLASS: Final = "vaultgate.key_check"


@dataclass(frozen=True, slots=True)
class TokenizeItem:
    """One value to tokenize and how."""

    value: str
    """The value as text; a JSON number keeps its exact source text, such as ``4242.50``."""
    format: str = "uuid"
    value_type: ValueType = ValueType.STRING
    deterministic: bool = False
    """Whether the same class, format and value always get the same token (while it lives).

    The first tokenization decides the token's value type and expiry; later ones with another
    ``value_type`` or ``ttl`` get the existing token unchanged.
    """
    ttl: float | None = None
    """Seconds until the token expires, or None to keep it."""
    class_name: str | None = None
    """The data class, such as ``card.pan``; None means the format's default class."""


@dataclass(frozen=True, slots=True)
class Revealed:
    """A detokenized value with the metadata sealed beside it."""

    value: str
    value_type: ValueType
    format: str
    class_name: str
    expires_at_ms: int | None = None
    """Unix time in milliseconds at which the token expires, or None if it never does."""


@dataclass(slots=True)
class _PendingItem:
    """An item on its way to the store, with the token tried in the current round."""

    position: int
    value: str
    token_format: TokenFormat
    metadata: RecordMetadata
    index_key: bytes | None
    token: str = ""


class Vault:
    """Batch tokenization and detokenization over one store and key ring.

    ``clock`` returns the current Unix time in seconds. It sets ``created_at`` and expiry times,
    and detokenize compares expiry times with it, so tests can move time forward.

    ``use_key_ring`` swaps the key ring while calls are running. Each call uses the ring that was
    current when it started, from start to end.
    """

    def __init__(
        self,
        store: TokenStore,
        key_ring: KeyRing,
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = MAX_PUT_ATTEMPTS,
    ) -> None:
        self._store = store
        self._cipher = RecordCipher(key_ring)
        self._clock = clock
        self._max_attempts = max_attempts

    @property
    def key_ring(self) -> KeyRing:
        return self._cipher.key_ring

    def now(self) -> float:
        """Return the current Unix time in seconds by the vault's clock."""
        return self._clock()

    def use_key_ring(self, key_ring: KeyRing) -> None:
        """Seal new records under ``key_ring`` and open records with it from the next call on.

        Raises ``KeyMaterialError``, and keeps the current ring, when ``key_ring`` has another
        index key: every existing token would then map to another store key and fail to
        detokenize. Only master keys may change, which is what rotation and retirement do.
        """
        current = self._cipher.key_ring
        if not current.lookup_secret.matches(key_ring.lookup_secret.reveal()):
            raise KeyMaterialError(
                "the new key ring has another index key, so no existing token would detokenize; "
                "keep the index key and change only master keys"
            )
        self._cipher = RecordCipher(key_ring)

    async def check_key_ring(self) -> None:
        """Make sure the store's records were sealed with this key ring; mark a new store.

        The first gateway to use a store writes a key-check record sealed under its key ring and
        holding the lookup key of a fixed text, so that it depends on the index key too. Later
        starts open that record. Raises ``KeyMaterialError`` when it does not open, because
        every existing token would then fail to detokenize.
        """
        cipher = self._cipher
        expected = cipher.lookup_key(_KEY_CHECK_TEXT).hex()
        [record] = await self._store.get_many([KEY_CHECK_LOOKUP_KEY])
        if record is None:
            metadata = RecordMetadata(
                class_name=_KEY_CHECK_CLASS,
                format="uuid",
                value_type=ValueType.STRING,
                created_at_ms=self._now_ms(),
                expires_at_ms=None,
            )
            blob = cipher.seal_record(KEY_CHECK_LOOKUP_KEY, expected, metadata)
            stored = StoredRecord(KEY_CHECK_LOOKUP_KEY, blob, read_key_version(blob), None)
            [result] = await self._store.put_many([PutRequest(stored)])
            if result.status is PutStatus.STORED:
                logger.info("marked the token store with a key-check record for this key ring")
                return
            # Another gateway wrote it first; check that one.
            [record] = await self._store.get_many([KEY_CHECK_LOOKUP_KEY])
            if record is None:
                raise StoreError("the key-check record vanished while it was written")

        try:
            opened = cipher.open_record(KEY_CHECK_LOOKUP_KEY, record.blob)
        except ObsoleteRecordLayoutError as exc:
            raise KeyMaterialError(
                f"the token store was written by an earlier development version of vaultgate "
                f"({exc}); start with an empty store"
            ) from None
        except TamperedBlobError:
            opened = None
        if opened is None or opened.value != expected:
            raise KeyMaterialError(
                "the token store holds records sealed under another key ring, so its tokens "
                "would not detokenize; start with the key file that created this store, or "
                "with an empty store"
            )

    async def tokenize_many(self, items: Sequence[TokenizeItem]) -> list[str | InvalidValueError]:
        """Return a token for each item, or the error that item got.

        Raises ``StoreUnavailableError`` when the store cannot be reached, and
        ``TokenSpaceExhaustedError`` when no free token of a format and length is found.
        A token is returned only after its record is durably written.
        """
        cipher = self._cipher
        results: list[str | InvalidValueError | None] = [None] * len(items)
        now_ms = self._now_ms()
        pending: list[_PendingItem] = []
        for position, item in enumerate(items):
            try:
                pending.append(self._prepare(cipher, position, item, now_ms))
            except InvalidValueError as error:
                results[position] = error

        for attempt in range(1, self._max_attempts + 1):
            if not pending:
                break
            if attempt > 1:
                logger.info(
                    "retrying %d tokens whose lookup key was taken (attempt %d of %d)",
                    len(pending),
                    attempt,
                    self._max_attempts,
                )
            pending = await self._put_round(cipher, pending, results)

        if pending:
            # NOTE: the records already stored for other items of this batch stay in the store
            # unused until they expire (or forever without a ttl). Deleting them is unsafe for
            # deterministic items, whose token another caller may have received meanwhile.
            raise _exhausted(pending[0], self._max_attempts)
        # Every position now has a token or an error.
        return cast(list[str | InvalidValueError], results)

    async def _put_round(
        self,
        cipher: RecordCipher,
        pending: list[_PendingItem],
        results: list[str | InvalidValueError | None],
    ) -> list[_PendingItem]:
        """Write one round of new tokens, fill in ``results`` and return the items that collided."""
        for item in pending:
            item.token = item.token_format.generate(item.value)
        requests = [_put_request(cipher, item) for item in pending]
        put_results = await self._store.put_many(requests)
        if len(put_results) != len(pending):
            raise StoreError(
                f"internal error: the store returned {len(put_results)} results for "
                f"{len(pending)} items"
            )

        collided = []
        for item, put_result in zip(pending, put_results, strict=True):
            if put_result.status is PutStatus.STORED:
                results[item.position] = item.token
            elif put_result.status is PutStatus.EXISTING:
                results[item.position] = _open_existing(cipher, item, put_result)
            else:
                collided.append(item)
        return collided

    def _prepare(
        self, cipher: RecordCipher, position: int, item: TokenizeItem, now_ms: int
    ) -> _PendingItem:
        """Validate an item and compute what does not change between collision rounds."""
        try:
            token_format = get_format(item.format)
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        token_format.validate(item.value)
        if item.value_type is ValueType.NUMBER and not _JSON_NUMBER.fullmatch(item.value):
            raise InvalidValueError("value of type number is not a valid JSON number")

        class_name = item.class_name or token_format.default_class
        if len(class_name.encode()) > MAX_NAME_BYTES:
            raise InvalidValueError(f"class name is longer than {MAX_NAME_BYTES} bytes")
        metadata = RecordMetadata(
            class_name=class_name,
            format=token_format.name,
            value_type=item.value_type,
            created_at_ms=now_ms,
            expires_at_ms=_expires_at_ms(item.ttl, now_ms),
        )

        index_key = None
        if item.deterministic:
            index_key = cipher.blind_index(class_name, token_format.name, item.value)
        return _PendingItem(position, item.value, token_format, metadata, index_key)

    async def detokenize_many(self, tokens: Sequence[str]) -> list[Revealed | InvalidTokenError]:
        """Return the original of each token, or an error for unknown, expired or malformed ones.

        Malformed tokens (empty, longer than 256 characters, with control characters) are
        rejected without a store lookup. A record that fails authentication is logged at ERROR
        on ``gateway.store`` under its fingerprint and reported as an invalid token.
        Raises ``StoreUnavailableError`` when the store cannot be reached.
        """
        cipher = self._cipher
        results: list[Revealed | InvalidTokenError | None] = [None] * len(tokens)
        lookups: list[tuple[int, bytes]] = []
        for position, token in enumerate(tokens):
            problem = _malformed_token_reason(token)
            if problem is not None:
                results[position] = InvalidTokenError(f"malformed token: {problem}")
            else:
                lookups.append((position, cipher.lookup_key(token)))

        if lookups:
            records = await self._store.get_many([lookup_key for _, lookup_key in lookups])
            if len(records) != len(lookups):
                raise StoreError(
                    f"internal error: the store returned {len(records)} records for "
                    f"{len(lookups)} keys"
                )
            now_ms = self._now_ms()
            for (position, lookup_key), record in zip(lookups, records, strict=True):
                results[position] = _reveal(cipher, lookup_key, record, now_ms)
        # Every position now has a revealed value or an error.
        return cast(list[Revealed | InvalidTokenError], results)

    def fingerprint(self, token: str) -> str:
        """Return the keyed fingerprint that names a token in logs and audit records."""
        return fingerprint(self._cipher.lookup_key(token))

    async def delete_tokens(self, tokens: Sequence[str]) -> int:
        """Delete the records of the tokens (and their index entries); return how many existed."""
        return await self._store.delete_many([self._cipher.lookup_key(token) for token in tokens])

    async def erase_values(self, values: Sequence[tuple[str, str, str]]) -> int:
        """Erase deterministic tokens by value, given (class, format, value) triples.

        Returns how many records were deleted. Only a deterministic token can be found from its
        value; tokens that were made non-deterministically stay until they expire or are
        deleted by token.
        """
        index_keys = [
            self._cipher.blind_index(class_name, token_format, value)
            for class_name, token_format, value in values
        ]
        return await self._store.erase_many(index_keys)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _put_request(cipher: RecordCipher, item: _PendingItem) -> PutRequest:
    lookup_key = cipher.lookup_key(item.token)
    blob = cipher.seal_record(lookup_key, item.value, item.metadata)
    record = StoredRecord(
        lookup_key=lookup_key,
        blob=blob,
        key_version=cipher.primary_version,
        expires_at=item.metadata.expires_at,
    )
    if item.index_key is None:
        return PutRequest(record)
    sealed_token = cipher.seal_token(item.token, item.index_key)
    return PutRequest(record, index_key=item.index_key, sealed_token=sealed_token)


def _open_existing(cipher: RecordCipher, item: _PendingItem, put_result: PutResult) -> str:
    """Return the token of the index entry that the store found for a deterministic item."""
    if put_result.sealed_token is None or item.index_key is None:
        raise StoreError("store reported an existing index entry but returned no sealed token")
    try:
        return cipher.open_token(put_result.sealed_token, item.index_key)
    except TamperedBlobError as exc:
        logger.error("index entry %s failed to open: %s", fingerprint(item.index_key), exc)
        raise StoreError("a deterministic index entry in the store failed to open") from None


def _reveal(
    cipher: RecordCipher, lookup_key: bytes, record: StoredRecord | None, now_ms: int
) -> Revealed | InvalidTokenError:
    if record is None:
        return InvalidTokenError(_UNKNOWN_OR_EXPIRED)
    try:
        opened = cipher.open_record(lookup_key, record.blob)
    except SealedBlobError as exc:
        logger.error("token record %s failed to open: %s", fingerprint(lookup_key), exc)
        return InvalidTokenError("token record failed its integrity check")

    # The sealed expiry decides, because the store's own expiry column is not authenticated.
    if opened.metadata.is_expired(now_ms):
        return InvalidTokenError(_UNKNOWN_OR_EXPIRED)
    return Revealed(
        value=opened.value,
        value_type=opened.metadata.value_type,
        format=opened.metadata.format,
        class_name=opened.metadata.class_name,
        expires_at_ms=opened.metadata.expires_at_ms,
    )


def _expires_at_ms(ttl: float | None, now_ms: int) -> int | None:
    if ttl is None:
        return None
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL_SECONDS:
        raise InvalidValueError(f"ttl must be more than 0 and at most {MAX_TTL_SECONDS} seconds")
    return now_ms + math.ceil(ttl * 1000)


def _malformed_token_reason(token: str) -> str | None:
    if not token:
        return "it is empty"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"it is longer than {MAX_TOKEN_LENGTH} characters"
    if has_control_characters(token):
        return "it contains control characters"
    try:
        token.encode()
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    return None


def _exhausted(item: _PendingItem, attempts: int) -> TokenSpaceExhaustedError:
    return TokenSpaceExhaustedError(
        f"no free token of format {item.token_format.name} and length {len(item.value)} was "
        f"found in {attempts} attempts; use the uuid format for values of this length"
    )
