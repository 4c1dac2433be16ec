"""Vault operations under the policy: every tokenize, reveal, delete and erase is authorized,
rate-limited where a grant sets a limit, and audited before its result leaves the gateway.

The proxies call ``rewrite`` for a route's field operations; the vault API calls the batch
methods. A denial rejects the whole message or item and is audited too. The audit records are
written before any plaintext is released: when they cannot be written, nothing is revealed.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from gateway.audit.events import AuditEvent, AuditSink, Outcome
from gateway.config.model import Limits
from gateway.engine.rewrite import MessageParts, RewriteCounts, prepare_rewrite
from gateway.engine.routing import Operation
from gateway.errors import (
    ForbiddenError,
    InvalidTokenError,
    InvalidValueError,
    MessageError,
    RateLimitedError,
)
from gateway.policy.masks import render
from gateway.policy.model import Client, DataClass, Grant, PolicyAction, PolicySet, View
from gateway.policy.ratelimit import RateLimiter
from gateway.tokens.vault import Revealed, TokenizeItem, ValueType, Vault


class Phase(enum.Enum):
    REQUEST = "request"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class Caller:
    """The client and the connection or API call behind a request: an audit record's subject."""

    client: Client | None
    """None on a public connection, which may only tokenize."""
    connection: str | None
    """The connection of a proxied message, or None for the vault API."""
    operation: str
    """The route name, or the vault API call such as ``POST /v1/detokenize``."""

    @property
    def client_name(self) -> str | None:
        return self.client.name if self.client else None


@dataclass(frozen=True, slots=True)
class RevealedView:
    """A detokenized value as the caller may see it."""

    value: str
    value_type: ValueType
    class_name: str
    view: View


@dataclass(slots=True)
class _Audit:
    caller: Caller
    events: list[AuditEvent] = field(default_factory=list)

    def add(
        self,
        action: PolicyAction,
        outcome: Outcome,
        class_name: str | None,
        fingerprint: str | None,
        *,
        view: View | None = None,
        reason: str | None = None,
    ) -> None:
        self.events.append(
            AuditEvent(
                action=action.value,
                outcome=outcome,
                client=self.caller.client_name,
                connection=self.caller.connection,
                operation=self.caller.operation,
                class_name=class_name,
                token_fingerprint=fingerprint,
                view=view.label if view else None,
                reason=reason,
            )
        )


class Enforcer:
    def __init__(
        self,
        vault: Vault,
        policy: PolicySet,
        audit: AuditSink,
        limits: Limits,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._vault = vault
        self._policy = policy
        self._audit = audit
        self._limits = limits
        self._limiter = limiter or RateLimiter()

    @property
    def policy(self) -> PolicySet:
        return self._policy

    async def record_denial(
        self, caller: Caller, reason: str, *, action: str = "authenticate"
    ) -> None:
        """Audit a request refused before any field was read, such as a wrong API key."""
        event = AuditEvent(
            action=action,
            outcome=Outcome.DENIED,
            client=caller.client_name,
            connection=caller.connection,
            operation=caller.operation,
            reason=reason,
        )
        await self._audit.record([event])

    # Proxied messages

    async def rewrite(
        self,
        operations: Sequence[Operation],
        parts: MessageParts,
        caller: Caller,
        phase: Phase,
    ) -> tuple[MessageParts, RewriteCounts]:
        """Return the message with its fields tokenized and detokenized under the policy.

        Raises ``MessageError`` subclasses: a denial is ``ForbiddenError`` (403) and a rate
        limit ``RateLimitedError`` (429); both are audited before they are raised.
        """
        pending = prepare_rewrite(operations, parts, self._limits)
        if pending.is_empty:
            return parts, RewriteCounts()
        audit = _Audit(caller)
        try:
            tokens = await self._tokenize_fields(pending.tokenize_items, caller, phase, audit)
            revealed = await self._reveal_fields(pending.detokenize_tokens, caller, phase, audit)
        finally:
            if audit.events:
                await self._audit.record(audit.events)
        return pending.apply(tokens, revealed), pending.counts

    async def _tokenize_fields(
        self, items: list[TokenizeItem], caller: Caller, phase: Phase, audit: _Audit
    ) -> list[str | InvalidValueError]:
        if not items:
            return []
        # A response's fields are tokenized for the connection's sake, so no grant is needed.
        # A public connection's callers may tokenize without one, as a checkout page does.
        if phase is Phase.REQUEST and caller.client is not None:
            for item in items:
                class_name = item.class_name or ""
                if (
                    self._policy.best_grant(caller.client, PolicyAction.TOKENIZE, class_name)
                    is None
                ):
                    reason = f"client {caller.client.name!r} may not tokenize class {class_name!r}"
                    audit.add(
                        PolicyAction.TOKENIZE, Outcome.DENIED, class_name, None, reason=reason
                    )
                    raise ForbiddenError(reason)

        results = await self._vault.tokenize_many(items)
        for item, result in zip(items, results, strict=True):
            if isinstance(result, InvalidValueError):
                audit.add(
                    PolicyAction.TOKENIZE,
                    Outcome.FAILED,
                    item.class_name,
                    None,
                    reason="value does not fit the format",
                )
            else:
                audit.add(
                    PolicyAction.TOKENIZE,
                    Outcome.ALLOWED,
                    item.class_name,
                    self._vault.fingerprint(result),
                )
        return results

    async def _reveal_fields(
        self, tokens: list[str], caller: Caller, phase: Phase, audit: _Audit
    ) -> list[Revealed | InvalidTokenError]:
        if not tokens:
            return []
        results = await self._vault.detokenize_many(tokens)
        shown: list[Revealed | InvalidTokenError] = []
        for token, result in zip(tokens, results, strict=True):
            fingerprint = self._vault.fingerprint(token)
            if isinstance(result, InvalidTokenError):
                audit.add(
                    PolicyAction.DETOKENIZE,
                    Outcome.FAILED,
                    None,
                    fingerprint,
                    reason="unknown, expired or malformed token",
                )
                shown.append(result)
                continue
            grant, data_class = self._authorize_reveal(
                result.class_name, caller, phase, fingerprint, audit
            )
            view = View.PLAIN if phase is Phase.REQUEST else grant.view
            audit.add(
                PolicyAction.DETOKENIZE, Outcome.ALLOWED, result.class_name, fingerprint, view=view
            )
            shown.append(_as_viewed(result, view, data_class))
        return shown

    def _authorize_reveal(
        self, class_name: str, caller: Caller, phase: Phase, fingerprint: str, audit: _Audit
    ) -> tuple[Grant, DataClass]:
        """Return the grant and class that allow a reveal, or audit and raise the denial."""
        data_class = self._policy.classes.get(class_name)
        error: MessageError | None = None
        grant = None
        if data_class is None:
            error = ForbiddenError(
                f"class {class_name!r} is not defined, so its tokens are not revealed"
            )
        elif phase is Phase.REQUEST and caller.connection not in data_class.reveal_to:
            error = ForbiddenError(
                f"class {class_name!r} may not be revealed to connection {caller.connection!r}"
            )
        elif caller.client is None:
            error = ForbiddenError("a public connection may not detokenize")
        else:
            grant = self._policy.best_grant(caller.client, PolicyAction.DETOKENIZE, class_name)
            if grant is None:
                error = ForbiddenError(
                    f"client {caller.client.name!r} may not detokenize class {class_name!r}"
                )
            elif phase is Phase.REQUEST and grant.view is not View.PLAIN:
                # The upstream gets plaintext, and so may the caller through it (an upstream
                # can echo what it got), so a masked or redacted grant does not allow it.
                error = ForbiddenError(
                    f"client {caller.client.name!r} may see class {class_name!r} only "
                    f"{grant.view.label}, and a request sends the plain value upstream"
                )
            elif grant.rate_limit is not None and not self._limiter.try_take(
                caller.client.name, class_name, grant.rate_limit
            ):
                error = RateLimitedError(
                    f"client {caller.client.name!r} passed its detokenize rate limit for class "
                    f"{class_name!r}; retry later"
                )
        if error is not None or grant is None or data_class is None:
            assert error is not None
            audit.add(
                PolicyAction.DETOKENIZE,
                Outcome.DENIED,
                class_name,
                fingerprint,
                reason=error.message,
            )
            raise error
        return grant, data_class


class ApiOperations:
    """The vault API's batch operations: per-item results, one store round trip per batch."""

    def __init__(self, enforcer: Enforcer) -> None:
        self._enforcer = enforcer

    async def record_denial(self, caller: Caller, reason: str) -> None:
        await self._enforcer.record_denial(caller, reason)

    async def tokenize(
        self, caller: Caller, items: Sequence[tuple[str, ValueType, str]]
    ) -> list[str | MessageError]:
        """Tokenize (value, value type, class name) items; each gets a token or its error."""
        enforcer, policy = self._enforcer, self._enforcer.policy
        audit = _Audit(caller)
        results: list[str | MessageError | None] = [None] * len(items)
        allowed: list[tuple[int, TokenizeItem]] = []
        for position, (value, value_type, class_name) in enumerate(items):
            data_class = policy.classes.get(class_name)
            if data_class is None:
                reason = "the class is not defined"
                audit.add(PolicyAction.TOKENIZE, Outcome.FAILED, None, None, reason=reason)
                results[position] = InvalidValueError(reason)
                continue
            if (
                caller.client is None
                or policy.best_grant(caller.client, PolicyAction.TOKENIZE, class_name) is None
            ):
                reason = f"client {caller.client_name!r} may not tokenize class {class_name!r}"
                audit.add(PolicyAction.TOKENIZE, Outcome.DENIED, class_name, None, reason=reason)
                results[position] = ForbiddenError(reason)
                continue
            allowed.append((position, _item_of(value, value_type, data_class)))

        try:
            tokens = (
                await enforcer._vault.tokenize_many([item for _, item in allowed])
                if allowed
                else []
            )
            for (position, item), token in zip(allowed, tokens, strict=True):
                results[position] = token
                if isinstance(token, InvalidValueError):
                    audit.add(
                        PolicyAction.TOKENIZE,
                        Outcome.FAILED,
                        item.class_name,
                        None,
                        reason="value does not fit the format",
                    )
                else:
                    audit.add(
                        PolicyAction.TOKENIZE,
                        Outcome.ALLOWED,
                        item.class_name,
                        enforcer._vault.fingerprint(token),
                    )
        finally:
            if audit.events:
                await enforcer._audit.record(audit.events)
        return [result for result in results if result is not None]

    async def detokenize(
        self,
        caller: Caller,
        tokens: Sequence[str],
        requested: View | None,
        *,
        phase: Phase = Phase.RESPONSE,
    ) -> list[RevealedView | MessageError]:
        """Reveal tokens in the requested view, capped by the caller's best grant per class.

        With ``phase`` REQUEST the values go to the caller's connection's upstream, so each
        class must also name that connection in ``reveal_to``, as for a route's detokenize.
        """
        enforcer, vault = self._enforcer, self._enforcer._vault
        audit = _Audit(caller)
        results: list[RevealedView | MessageError] = []
        try:
            revealed = await vault.detokenize_many(tokens) if tokens else []
            for token, result in zip(tokens, revealed, strict=True):
                fingerprint = vault.fingerprint(token)
                if isinstance(result, InvalidTokenError):
                    audit.add(
                        PolicyAction.DETOKENIZE,
                        Outcome.FAILED,
                        None,
                        fingerprint,
                        reason="unknown, expired or malformed token",
                    )
                    results.append(InvalidTokenError("unknown, expired or malformed token"))
                    continue
                try:
                    grant, data_class = enforcer._authorize_reveal(
                        result.class_name, caller, phase, fingerprint, audit
                    )
                except (ForbiddenError, RateLimitedError) as error:
                    results.append(error)
                    continue
                view = min(requested, grant.view) if requested else grant.view
                audit.add(
                    PolicyAction.DETOKENIZE,
                    Outcome.ALLOWED,
                    result.class_name,
                    fingerprint,
                    view=view,
                )
                shown = _as_viewed(result, view, data_class)
                results.append(RevealedView(shown.value, shown.value_type, result.class_name, view))
        finally:
            if audit.events:
                await enforcer._audit.record(audit.events)
        return results

    async def delete(self, caller: Caller, token: str) -> None:
        """Delete one token; raise ``InvalidTokenError`` or ``ForbiddenError`` when it cannot.

        The record of an allowed delete is written before the token is deleted: when the audit
        trail cannot be written, nothing is deleted.
        """
        enforcer, vault = self._enforcer, self._enforcer._vault
        audit = _Audit(caller)
        fingerprint = vault.fingerprint(token)
        try:
            [revealed] = await vault.detokenize_many([token])
            if isinstance(revealed, InvalidTokenError):
                audit.add(
                    PolicyAction.DELETE,
                    Outcome.FAILED,
                    None,
                    fingerprint,
                    reason="unknown, expired or malformed token",
                )
                raise InvalidTokenError("unknown, expired or malformed token")
            self._authorize_delete(
                caller, revealed.class_name, fingerprint, audit, PolicyAction.DELETE
            )
        finally:
            await _flush(enforcer, audit)

        await _record_before(
            enforcer,
            audit,
            PolicyAction.DELETE,
            revealed.class_name,
            fingerprint,
            vault.delete_tokens([token]),
        )

    async def erase(self, caller: Caller, class_name: str, values: Sequence[str]) -> int:
        """Erase the deterministic tokens of values of one class; return how many were deleted.

        As with ``delete``, the record is written before anything is erased.
        """
        enforcer, policy = self._enforcer, self._enforcer.policy
        audit = _Audit(caller)
        try:
            data_class = policy.classes.get(class_name)
            if data_class is None or not data_class.deterministic:
                # The caller's text is not quoted: a value put in the wrong field would leak.
                # A defined class's name comes from the configuration, so it may be quoted.
                reason = (
                    "the class is not defined"
                    if data_class is None
                    else f"class {data_class.name!r} is not deterministic, so its tokens cannot be "
                    "found by value; delete them by token"
                )
                audit.add(PolicyAction.ERASE, Outcome.FAILED, None, None, reason=reason)
                raise InvalidValueError(reason)
            self._authorize_delete(caller, class_name, None, audit, PolicyAction.ERASE)
        finally:
            await _flush(enforcer, audit)

        return await _record_before(
            enforcer,
            audit,
            PolicyAction.ERASE,
            class_name,
            None,
            enforcer._vault.erase_values(
                [(class_name, data_class.format, value) for value in values]
            ),
        )

    def _authorize_delete(
        self,
        caller: Caller,
        class_name: str,
        fingerprint: str | None,
        audit: _Audit,
        action: PolicyAction,
    ) -> None:
        policy = self._enforcer.policy
        if (
            caller.client is None
            or policy.best_grant(caller.client, PolicyAction.DELETE, class_name) is None
        ):
            reason = f"client {caller.client_name!r} may not delete class {class_name!r}"
            audit.add(action, Outcome.DENIED, class_name, fingerprint, reason=reason)
            raise ForbiddenError(reason)


async def _flush(enforcer: Enforcer, audit: _Audit) -> None:
    if audit.events:
        await enforcer._audit.record(audit.events)
        audit.events.clear()


async def _record_before[Result](
    enforcer: Enforcer,
    audit: _Audit,
    action: PolicyAction,
    class_name: str,
    fingerprint: str | None,
    operation: Awaitable[Result],
) -> Result:
    """Record an allowed action, then perform it; a failure of it is recorded too.

    When the allowed record cannot be written, ``operation`` is closed without running.
    """
    audit.add(action, Outcome.ALLOWED, class_name, fingerprint)
    try:
        await _flush(enforcer, audit)
    except BaseException:
        if inspect.iscoroutine(operation):
            operation.close()
        raise
    try:
        return await operation
    except Exception:
        audit.add(action, Outcome.FAILED, class_name, fingerprint, reason="the store failed")
        await _flush(enforcer, audit)
        raise


def _item_of(value: str, value_type: ValueType, data_class: DataClass) -> TokenizeItem:
    return TokenizeItem(
        value=value,
        format=data_class.format,
        value_type=value_type,
        deterministic=data_class.deterministic,
        ttl=data_class.ttl,
        class_name=data_class.name,
    )


def _as_viewed(revealed: Revealed, view: View, data_class: DataClass) -> Revealed:
    if view is View.PLAIN:
        return revealed
    # A masked number is text, such as ************4242.
    return Revealed(
        value=render(revealed.value, view, data_class.mask),
        value_type=ValueType.STRING,
        format=revealed.format,
        class_name=revealed.class_name,
    )


__all__ = ["ApiOperations", "Caller", "Enforcer", "Phase", "RevealedView"]
