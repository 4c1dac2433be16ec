"""The synchronous tokenizer that the per-partition transform calls, with a per-run cache.

The transform is plain synchronous code so that it can run in a worker process, or later in a
Spark or Dask task. ``VaultTokenizer`` runs the async ``Vault`` on an event loop of its own and
remembers the token of every value it tokenized, so a value repeated in a run costs one store
write however often it appears.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, NoReturn, Protocol

from gateway.audit.events import AuditEvent
from gateway.audit.log import AuditLog
from gateway.errors import InvalidTokenError, InvalidValueError
from gateway.pipelines.access import PipelineAccess
from gateway.tokens.vault import Revealed, TokenizeItem, Vault

_START_TURNS: Final = 4
"""Event loop turns that a submitted batch gets at once: enough for the Redis store's batching
and client to send the batch. Fewer only make the store start later, at ``result``."""
DEFAULT_CACHE_ENTRIES: Final = 100_000
"""Tokens remembered per worker; at roughly 300 bytes an entry this keeps the cache near 30 MB."""


class PendingTokens(Protocol):
    """Tokens on their way from ``Tokenizer.submit``."""

    def result(self) -> list[str | InvalidValueError]:
        """Wait for the tokens, and return a token or the item's error for each item."""


class Tokenizer(Protocol):
    """Batch tokenization and detokenization, as the transform needs it."""

    def submit(self, items: Sequence[TokenizeItem]) -> PendingTokens:
        """Start tokenizing ``items``, so that other work can run until ``result`` is called.

        Results are collected in the order the batches were submitted.
        """

    def cancel_pending(self) -> None:
        """Give up on every submitted batch whose result was not collected yet."""

    def detokenize(self, tokens: Sequence[str]) -> list[Revealed | InvalidTokenError]:
        """Return the original, or the token's error, for each token."""


class VaultTokenizer:
    """A ``Tokenizer`` over a ``Vault``, for one thread.

    ``loop`` is the event loop that the vault's store is used on. A submitted batch is sealed
    and handed to the store at once. The loop runs again when its result is collected, so the
    store (the SQLite writer thread, or the Redis server) works on one batch while the caller
    plans the next. Equal items share one token while they are cached or in flight, also when
    they are not deterministic. Each cache evicts its oldest half when it reaches
    ``max_entries``, so a non-deterministic value seen again after eviction gets a new token.
    A cached token is used only until its ``ttl`` has passed by the vault's clock, and a cached
    value is revealed only until its token expires. Deterministic tokens with a ``ttl`` are not
    cached.
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
        self._in_flight: dict[TokenizeItem, _TokenBatch] = {}
        self._unfinished: deque[_TokenBatch] = deque()
        self.store_items = 0
        """Items sent to the store so far; the cache keeps this below the items requested."""

    def tokenize(self, items: Sequence[TokenizeItem]) -> list[str | InvalidValueError]:
        """Return a token, or the item's error, for each item."""
        return self.submit(items).result()

    def submit(self, items: Sequence[TokenizeItem]) -> _TokenBatch:
        now = self._vault.now()
        known: dict[TokenizeItem, str | InvalidValueError] = {}
        sources: dict[TokenizeItem, _TokenBatch] = {}
        missing: list[TokenizeItem] = []
        for item in dict.fromkeys(items):
            token = self._cached_token(item, now)
            if token is not None:
                known[item] = token
            elif item in self._in_flight:
                sources[item] = self._in_flight[item]
            else:
                missing.append(item)

        # New tokens expire no earlier than ttl seconds after this time.
        batch = _TokenBatch(self, list(items), known, sources, missing, started=now)
        if missing:
            self.store_items += len(missing)
            batch.task = self._loop.create_task(self._vault.tokenize_many(missing))
            for item in missing:
                self._in_flight[item] = batch
            # A few turns of the loop seal the batch and hand it to the store.
            self._loop.run_until_complete(_turns(_START_TURNS))
        self._unfinished.append(batch)
        return batch

    def _finish(self, batch: _TokenBatch) -> list[str | InvalidValueError]:
        """Collect the results of every batch up to ``batch``, in order, and audit them."""
        while self._unfinished and batch.results is None:
            self._finish_first()
        assert batch.results is not None, "the batch was cancelled"
        return batch.results

    def _finish_first(self) -> None:
        batch = self._unfinished[0]
        try:
            if batch.task is not None:
                stored = self._loop.run_until_complete(batch.task)
                self._make_room(self._tokens, len(batch.missing))
                for item, result in zip(batch.missing, stored, strict=True):
                    batch.known[item] = result
                    if isinstance(result, InvalidValueError):
                        continue
                    if item.ttl is None:
                        self._tokens[item] = (result, math.inf)
                    elif not item.deterministic:
                        self._tokens[item] = (result, batch.started + item.ttl)
                    # NOTE: a deterministic token with a ttl is not cached, because it keeps the
                    # expiry of its first tokenization, which may be much earlier than this call.
                    # Each repeat of such a value costs a store round trip.
            for item, source in batch.sources.items():
                batch.known[item] = source.outcome(item)
            # Each batch refers to the batch before it, so a kept reference would keep every
            # earlier batch of the run alive.
            batch.sources = {}
        except BaseException:
            self.cancel_pending()
            raise
        finally:
            self._forget(batch)

        results = [batch.known[item] for item in batch.items]
        if self._access is not None:
            fingerprints = [
                None if isinstance(result, InvalidValueError) else self._vault.fingerprint(result)
                for result in results
            ]
            self._record(
                self._access.tokenized([item.class_name for item in batch.items], fingerprints)
            )
        batch.results = results

    def cancel_pending(self) -> None:
        """Cancel every batch still in flight and wait until their tasks end.

        Records that a cancelled batch already wrote stay in the store unused, as they do when
        a run stops for any other reason. No token of theirs was returned.
        """
        tasks = [batch.task for batch in self._unfinished if batch.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        while self._unfinished:
            self._forget(self._unfinished[0])

    def _forget(self, batch: _TokenBatch) -> None:
        if self._unfinished and self._unfinished[0] is batch:
            self._unfinished.popleft()
        for item in batch.missing:
            if self._in_flight.get(item) is batch:
                del self._in_flight[item]

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


class _TokenBatch:
    """One submitted batch: its items, the tokens already known, and the vault call for the rest."""

    def __init__(
        self,
        tokenizer: VaultTokenizer,
        items: list[TokenizeItem],
        known: dict[TokenizeItem, str | InvalidValueError],
        sources: dict[TokenizeItem, _TokenBatch],
        missing: list[TokenizeItem],
        *,
        started: float,
    ) -> None:
        self.items = items
        self.known = known
        """The token or error of each distinct item, complete once the batch is finished."""
        self.sources = sources
        """Items that an earlier batch still in flight is tokenizing, with that batch."""
        self.missing = missing
        self.started = started
        """The vault time when the batch was submitted, from which new tokens' ttl counts."""
        self.task: asyncio.Task[list[str | InvalidValueError]] | None = None
        self.results: list[str | InvalidValueError] | None = None
        self._tokenizer = tokenizer

    def result(self) -> list[str | InvalidValueError]:
        return self._tokenizer._finish(self)

    def outcome(self, item: TokenizeItem) -> str | InvalidValueError:
        """Return the token or error of an item of this finished batch."""
        return self.known[item]


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def _unreachable() -> NoReturn:
    raise AssertionError("unreachable: every item has a result after the vault call")
