"""Run the steps of a route phase in order: field operation batches and function steps.

Each batch of consecutive field operations goes to the vault in one round trip through
``Enforcer.rewrite``, under the caller's policies. A function step gets the message as a plain
dictionary (``gateway.functions.message``); what it returns is checked before the next step
sees it. A function's own vault requests go through ``ApiOperations`` as a caller of its own:
the client or role that its step names, on the route's connection, so that the same grants,
``reveal_to`` rules, rate limits and audit records apply as to any client.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, TypeGuard

from gateway.config.model import Limits
from gateway.engine.multipart import parse_file_envelope
from gateway.engine.rewrite import RewriteCounts
from gateway.engine.routing import Route
from gateway.engine.steps import FunctionStep, OperationBatch, phase_plan
from gateway.errors import (
    ForbiddenError,
    FunctionFailedError,
    MessageError,
    RateLimitedError,
)
from gateway.functions.message import (
    HttpMessage,
    InvalidReturnError,
    from_function_message,
    to_function_message,
)
from gateway.functions.pool import FunctionPools, VaultHandler
from gateway.policy.enforcer import ApiOperations, Caller, Enforcer, Phase
from gateway.policy.model import Client
from gateway.tokens.vault import ValueType

logger = logging.getLogger("gateway.functions")


class PhaseRunner:
    def __init__(self, enforcer: Enforcer, limits: Limits, pool: FunctionPools | None) -> None:
        self._enforcer = enforcer
        self._api = ApiOperations(enforcer)
        self._limits = limits
        self.pool = pool

    async def run(
        self, route: Route, phase: Phase, message: HttpMessage, caller: Caller
    ) -> tuple[HttpMessage, RewriteCounts]:
        """Return the message after every step of the phase, and the fields processed."""
        if phase is Phase.REQUEST:
            operations, functions = route.request, route.request_functions
        else:
            operations, functions = route.response, route.response_functions
        if not functions:
            parts, counts = await self._enforcer.rewrite(operations, message.parts, caller, phase)
            message.parts = parts
            return message, counts

        total = RewriteCounts()
        for step in phase_plan(operations, functions):
            if isinstance(step, OperationBatch):
                parts, counts = await self._enforcer.rewrite(
                    step.operations, message.parts, caller, phase
                )
                message.parts = parts
                total.tokenized += counts.tokenized
                total.detokenized += counts.detokenized
            else:
                message = await self._run_function(step, message, caller, phase)
        return message, total

    async def _run_function(
        self, step: FunctionStep, message: HttpMessage, caller: Caller, phase: Phase
    ) -> HttpMessage:
        plain = to_function_message(message, self._limits)
        if step.compiled is not None:
            try:
                result = step.compiled(plain)
            except MessageError:
                raise
            except Exception as exc:
                logger.exception("built-in step %s failed", step.name)
                raise FunctionFailedError(
                    f"built-in step {step.name} failed with {type(exc).__name__}"
                ) from None
        else:
            if self.pool is None:
                raise FunctionFailedError(f"function {step.name} has no worker pool")
            vault = self._vault_handler(step, caller, phase)
            result = await self.pool.call(step.name, plain, step.args, vault)
        try:
            return from_function_message(result, message, self._limits)
        except (InvalidReturnError, MessageError) as exc:
            reason = exc.message if isinstance(exc, MessageError) else str(exc)
            raise FunctionFailedError(
                f"function {step.name} returned an invalid message: {reason}"
            ) from None

    def _vault_handler(self, step: FunctionStep, caller: Caller, phase: Phase) -> VaultHandler:
        client = self._function_client(step)
        function_caller = Caller(client, caller.connection, f"function {step.name}")

        async def handle(request: dict[str, Any]) -> dict[str, Any]:
            if client is None:
                reason = (
                    f"function {step.name} has no role or client on its step, so it may not use "
                    "the vault"
                )
                operation = request.get("op")
                action = operation if operation in ("tokenize", "detokenize") else "detokenize"
                await self._enforcer.record_denial(function_caller, reason, action=action)
                return _denied(reason)
            return await self._vault_request(request, function_caller, phase)

        return handle

    def _function_client(self, step: FunctionStep) -> Client | None:
        policy = self._enforcer.policy
        if step.client is not None:
            return policy.clients.get(step.client)
        if step.role is not None:
            return Client(name=f"function:{step.name}", keys=(), roles=(step.role,))
        return None

    async def _vault_request(
        self, request: dict[str, Any], caller: Caller, phase: Phase
    ) -> dict[str, Any]:
        operation = request.get("op")
        if operation == "tokenize":
            values, class_name = request.get("values"), request.get("class")
            if not _strings(values) or not isinstance(class_name, str):
                return _invalid("tokenize takes a list of strings and a class name")
            if len(values) > self._limits.max_fields:
                return _invalid(f"at most {self._limits.max_fields} values per request")
            items = [(value, ValueType.STRING, class_name) for value in values]
            return _results(list(await self._api.tokenize(caller, items)))
        if operation in ("detokenize", "file"):
            requested = [request.get("token")] if operation == "file" else request.get("tokens")
            if not _strings(requested):
                return _invalid(f"{operation} takes tokens as strings")
            tokens: list[str] = list(requested)
            if len(tokens) > self._limits.max_fields:
                return _invalid(f"at most {self._limits.max_fields} tokens per request")
            revealed = await self._api.detokenize(caller, tokens, None, phase=phase)
            answer = _results(
                [item if isinstance(item, MessageError) else item.value for item in revealed]
            )
            if operation == "file" and "result" in answer:
                return _file_answer(answer["result"][0])
            return answer
        return _invalid(f"unknown vault request {str(operation)[:20]!r}")


def _strings(values: Any) -> TypeGuard[list[str]]:
    return isinstance(values, list) and all(isinstance(value, str) for value in values)


def _results(items: list[Any]) -> dict[str, Any]:
    for item in items:
        if isinstance(item, MessageError):
            if isinstance(item, ForbiddenError | RateLimitedError):
                return _denied(item.message)
            return {"error": {"denied": False, "message": item.message}}
    return {"result": items}


def _file_answer(value: str) -> dict[str, Any]:
    file = parse_file_envelope(value)
    if file is None:
        return _invalid("the token does not hold a file")
    return {
        "result": {
            "filename": file.filename,
            "content_type": file.content_type,
            "data": base64.b64encode(file.data).decode("ascii"),
        }
    }


def _denied(message: str) -> dict[str, Any]:
    return {"error": {"denied": True, "message": message}}


def _invalid(message: str) -> dict[str, Any]:
    return {"error": {"denied": False, "message": message}}
