"""The synchronous tokenizer that the per-partition transform calls, with a per-run cache.

The transform is plain synchronous code so that it can run in a worker process, or later in a
Spark or Dask task. ``VaultTokenizer`` runs the async ``Vault`` on an event loop of its own and
remembers the token of every value it tokenized, so a value repeated in a run costs one store
write however often it appears.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Final, NoReturn, Protocol

from gateway.audit.events import AuditEvent
from gateway.audit.log import AuditLog
from gateway.errors import InvalidTokenError, InvalidValueError
from gateway.pipelines.access import PipelineAccess
from gateway.tokens.vault import Revealed, TokenizeItem, Vault

DEFAULT_CACHE_ENTRIES: Final = 100_000
"""Tokens remembered per worker; at roughly 300 bytes an entry this keeps the cache near 30 MB."""


class Tokenizer(Protocol):
    """Batch tokenization and detokenization, as the transform needs it."""

    def tokenize(self, items: Sequence[TokenizeItem]) -> list[str | InvalidValueError]:
        """Return a token, or the item's error, for each item."""

    def detokenize(self, tokens: Sequence[str]) -> list[Revealed | InvalidTokenError]:
        """Return the original, or the token's error, for each token."""


class VaultTokenizer:
    """A ``Tokenizer`` over a ``Vault``, for one thread.

    ``loop`` is the event loop that the vault's store is used on; every vault call runs to
    completion on it. Equal items share one token while they are cached, also when they are not
    deterministic. Each cache evicts its oldest half when it reaches ``max_entries``, so a
    non-deterministic value seen again after eviction gets a new token. A cached token is used
    only until its ``ttl`` has passed by the vault's clock, and a cached value is revealed only
    until its token expires. Deterministic tokens with a ``ttl`` are not cached.
    """

    def __init__(
        self,
        vault: Vault,
        loop: asyncio.AbstractEventLoop,
        *,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        access: PipelineAccess | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._vault = vault
        self._loop = loop
        self._access = access
        self._audit = audit
        self._max_entries = max_entries
        self._tokens: dict[TokenizeItem, tuple[str, float]] = {}
        """Token of each item, and the vault time until which it may be used."""
        self._values: dict[str, Revealed] = {}
        self.store_items = 0
        """Items sent to the store so far; the cache keeps this below the items requested."""

    def tokenize(self, items: Sequence[TokenizeItem]) -> list[str | InvalidValueError]:
        now = self._vault.now()
        outcomes: dict[TokenizeItem, str | InvalidValueError | None] = {
            item: self._cached_token(item, now) for item in items
        }
        missing = [item for item, token in outcomes.items() if token is None]
        if missing:
            self.store_items += len(missing)
            # New tokens expire no earlier than ttl seconds after this time.
            started = self._vault.now()
            results = self._loop.run_until_complete(self._vault.tokenize_many(missing))
            self._make_room(self._tokens, len(missing))
            for item, result in zip(missing, results, strict=True):
                outcomes[item] = result
                if isinstance(result, InvalidValueError):
                    continue
                if item.ttl is None:
                    self._tokens[item] = (result, math.inf)
                elif not item.deterministic:
                    self._tokens[item] = (result, started + item.ttl)
                # NOTE: a deterministic token with a ttl is not cached, because it keeps the
                # expiry of its first tokenization, which may be much earlier than this call.
                # Each repeat of such a value costs a store round trip.
        results = [outcomes[item] or _unreachable() for item in items]
        if self._access is not None:
            fingerprints = [
                None if isinstance(result, InvalidValueError) else self._vault.fingerprint(result)
                for result in results
            ]
            self._record(self._access.tokenized([item.class_name for item in items], fingerprints))
        return results

    def detokenize(self, tokens: Sequence[str]) -> list[Revealed | InvalidTokenError]:
        now_ms = self._vault.now() * 1000
        outcomes: dict[str, Revealed | InvalidTokenError | None] = {
            token: self._cached_value(token, now_ms) for token in tokens
        }
        missing = [token for token, value in outcomes.items() if value is None]
        if missing:
            self.store_items += len(missing)
            results = self._loop.run_until_complete(self._vault.detokenize_many(missing))
            self._make_room(self._values, len(missing))
            for token, result in zip(missing, results, strict=True):
                outcomes[token] = result
                if not isinstance(result, InvalidTokenError):
                    self._values[token] = result
        results = [outcomes[token] or _unreachable() for token in tokens]
        if self._access is None:
            return results
        fingerprints = [self._vault.fingerprint(token) for token in tokens]
        revealed, events = self._access.reveal(tokens, results, fingerprints)
        # Recorded before any value is returned: no record, no reveal.
        self._record(events)
        return revealed

    def _cached_token(self, item: TokenizeItem, now: float) -> str | None:
        cached = self._tokens.get(item)
        if cached is None:
            return None
        token, usable_until = cached
        if now >= usable_until:
            del self._tokens[item]
            return None
        return token

    def _cached_value(self, token: str, now_ms: float) -> Revealed | None:
        revealed = self._values.get(token)
        if revealed is None:
            return None
        if revealed.expires_at_ms is not None and now_ms >= revealed.expires_at_ms:
            del self._values[token]
            return None
        return revealed

    def _record(self, events: list[AuditEvent]) -> None:
        if self._audit is not None and events:
            self._loop.run_until_complete(self._audit.record(events))

    def _make_room(self, cache: dict[Any, Any], incoming: int) -> None:
        if len(cache) + incoming <= self._max_entries:
            return
        # Dicts keep insertion order, so the first keys are the oldest entries.
        oldest = list(cache)[: len(cache) // 2 + incoming]
        for key in oldest:
            del cache[key]


def _unreachable() -> NoReturn:
    raise AssertionError("unreachable: every item has a result after the vault call")
