"""Drive a field rewrite through the vault: the async step between prepare and apply."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config.model import Limits
from gateway.engine.rewrite import MessageParts, RewriteCounts, prepare_rewrite
from gateway.engine.routing import Operation
from gateway.tokens.vault import Vault


async def rewrite_message(
    operations: Sequence[Operation], parts: MessageParts, vault: Vault, limits: Limits
) -> tuple[MessageParts, RewriteCounts]:
    """Return the message with its fields tokenized and detokenized, and how many of each.

    Costs at most one store round trip for the tokenize batch and one for the detokenize batch.
    Raises ``MessageError`` subclasses; nothing of the message is usable after a raise.
    """
    pending = prepare_rewrite(operations, parts, limits)
    if pending.is_empty:
        return parts, RewriteCounts()
    tokens = await vault.tokenize_many(pending.tokenize_items) if pending.tokenize_items else []
    revealed = (
        await vault.detokenize_many(pending.detokenize_tokens) if pending.detokenize_tokens else []
    )
    return pending.apply(tokens, revealed), pending.counts
