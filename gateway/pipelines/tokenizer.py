"""The synchronous tokenizer that the per-partition transform calls, with a per-run cache.

The transform is plain synchronous code so that it can run in a worker process, or later in a
Spark or Dask task. ``VaultTokenizer`` runs the async ``Vault`` on an event loop of its own and
remembers the token of every value it tokenized, so a value repeated in a run costs one store
write however often it appears.
"""

from __future__ import annotations

import asyncio
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
    non-deterministic value seen again after eviction gets a new token.
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
        self._tokens: dict[TokenizeItem, str] = {}
        self._values: dict[str, Revealed] = {}
        self.store_items = 0
        """Items sent to the store so far; the cache keeps this below the items requested."""

    def tokenize(self, items: Sequence[TokenizeItem]) -> list[str | InvalidValueError]:
        outcomes: dict[TokenizeItem, str | InvalidValueError | None] = {
            item: self._tokens.get(item) for item in items
        }
        missing = [item for item, token in outcomes.items() if token is None]
        if missing:
            self.store_items += len(missing)
            results = self._loop.run_until_complete(self._vault.tokenize_many(missing))
            self._make_room(self._tokens, len(missing))
            for item, result in zip(missing, results, strict=True):
                outcomes[item] = result
                if not isinstance(result, InvalidValueError):
                    self._tokens[item] = result
        results = [outcomes[item] or _unreachable() for item in items]
        if self._access is not None:
            fingerprints = [
                None if isinstance(result, InvalidValueError) else self._vault.fingerprint(result)
                for result in results
            ]
            self._record(self._access.tokenized([item.class_name for item in items], fingerprints))
        return results

    def detokenize(self, tokens: Sequence[str]) -> list[Revealed | InvalidTokenError]:
        outcomes: dict[str, Revealed | InvalidTokenError | None] = {
            token: self._values.get(token) for token in tokens
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
