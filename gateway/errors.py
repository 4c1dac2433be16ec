"""The exception tree of vaultgate.

Every error that vaultgate raises on purpose is a ``VaultgateError``. Adapters map the errors of
aiohttp, redis, sqlite3 and mitmproxy onto this tree with ``raise ... from exc``, and turn a
``MessageError`` into an HTTP answer with its ``status`` and ``error_type``::

    VaultgateError
    ├── ConfigError                  bad configuration, route or key file (with file and line)
    ├── KeyMaterialError             master keys missing, malformed or not allowed here
    │   └── KeyRotationError         a rotation step is rejected, such as retiring a used key
    ├── MessageError                 a message cannot be processed; never forwarded as it came
    │   ├── NotFoundError            404 no connection is mounted at the path
    │   ├── RouteNotMatchedError     404 the connection rejects requests that match no route
    │   ├── AuthenticationError      401 missing or wrong client key
    │   │   └── ProxyAuthenticationError 407 missing or wrong forward proxy credentials
    │   ├── ForbiddenError           403 a policy denies the client or the connection this
    │   ├── InvalidBodyError         400 malformed body, duplicate keys, NaN, too deep
    │   ├── MissingFieldError        400 a required field is absent
    │   ├── InvalidValueError        400 a value does not fit the token format
    │   ├── RequestTimeoutError      408 the client sent its body too slowly (a TimeoutError)
    │   ├── BodyTooLargeError        413 over limits.max_body_bytes, also after decompression
    │   ├── UnsupportedMediaError    415 wrong content type or unknown content encoding
    │   ├── InvalidTokenError        422 unknown, expired or malformed token
    │   ├── RateLimitedError         429 a client passed its detokenize rate limit
    │   ├── StoreUnavailableError    503 the token store cannot be reached (a ConnectionError)
    │   ├── AuditUnavailableError    503 the audit trail cannot be written, so nothing is done
    │   ├── TokenSpaceExhaustedError 503 no free token of the format and length
    │   ├── FunctionFailedError      500 a function step raised, ran out of memory, crashed or
    │   │   │                            returned an invalid message
    │   │   └── FunctionTimeoutError 504 a function step passed its time limit (a TimeoutError)
    │   ├── UpstreamUnreachableError 502 connecting to the upstream failed (a ConnectionError)
    │   ├── UpstreamResponseError    502 the upstream response cannot be processed
    │   └── UpstreamTimeoutError     504 the upstream did not answer in time (a TimeoutError)
    ├── StoreError                   a store operation failed for another reason
    └── PipelineError                a pipeline run stopped; nothing was written to the output
        ├── MalformedRecordError     a record cannot be parsed (with file, row and reason)
        └── SourceError              an input cannot be read or an output cannot be written

Messages name routes, selectors, formats and reasons. They never contain a sensitive value, a
token or a key, because they end up in logs and in error bodies.
"""

from __future__ import annotations

from dataclasses import dataclass


class VaultgateError(Exception):
    """Base class of every error that vaultgate raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in a configuration, route or key file, with where it is and how to fix it."""

    file: str
    line: int | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(VaultgateError):
    """One or more configuration mistakes; ``problems`` lists each with its file and line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))

    @classmethod
    def single(
        cls, file: str, line: int | None, message: str, hint: str | None = None
    ) -> ConfigError:
        return cls([ConfigProblem(file, line, message, hint)])


class KeyMaterialError(VaultgateError):
    """Master keys are missing, malformed, or a development key is used outside development."""


class KeyRotationError(KeyMaterialError):
    """A key rotation step was rejected or failed. The message gives the reason and what to run."""


class StoreError(VaultgateError):
    """A token store operation failed for a reason other than reachability."""


class MessageError(VaultgateError):
    """A request or response that cannot be processed; it is rejected, never relayed as it came.

    ``status`` and ``error_type`` form the HTTP answer. ``route`` is filled in by the adapter
    when it knows which route the message matched.
    """

    status = 400
    error_type = "invalid_request"
    public_message: str | None = None
    """A fixed text sent to clients instead of ``message``, which may then name internals."""

    def __init__(self, message: str, *, route: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.route = route

    @property
    def client_message(self) -> str:
        return self.public_message or self.message


class NotFoundError(MessageError):
    status = 404
    error_type = "not_found"


class RouteNotMatchedError(MessageError):
    status = 404
    error_type = "route_not_matched"


class AuthenticationError(MessageError):
    status = 401
    error_type = "unauthorized"


class ProxyAuthenticationError(AuthenticationError):
    status = 407
    error_type = "proxy_unauthorized"


class ForbiddenError(MessageError):
    status = 403
    error_type = "forbidden"


class RateLimitedError(MessageError):
    status = 429
    error_type = "rate_limited"


class InvalidBodyError(MessageError):
    status = 400
    error_type = "invalid_body"


class MissingFieldError(MessageError):
    status = 400
    error_type = "missing_field"


class InvalidValueError(MessageError):
    status = 400
    error_type = "invalid_value"


class RequestTimeoutError(MessageError, TimeoutError):
    status = 408
    error_type = "request_timeout"


class BodyTooLargeError(MessageError):
    status = 413
    error_type = "body_too_large"


class UnsupportedMediaError(MessageError):
    status = 415
    error_type = "unsupported_media_type"


class InvalidTokenError(MessageError):
    status = 422
    error_type = "invalid_token"


class StoreUnavailableError(MessageError, ConnectionError):
    status = 503
    error_type = "store_unavailable"
    public_message = "the token store is unavailable; retry later"


class AuditUnavailableError(MessageError):
    status = 503
    error_type = "audit_unavailable"
    public_message = "the audit trail is unavailable; retry later"


class TokenSpaceExhaustedError(MessageError):
    status = 503
    error_type = "token_space_exhausted"


class FunctionFailedError(MessageError):
    status = 500
    error_type = "function_failed"


class FunctionTimeoutError(FunctionFailedError, TimeoutError):
    status = 504
    error_type = "function_timeout"


class UpstreamUnreachableError(MessageError, ConnectionError):
    status = 502
    error_type = "upstream_unreachable"
    # The message names internal addresses and TLS errors, which belong in the log only.
    public_message = "the upstream could not be reached"


class UpstreamResponseError(MessageError):
    status = 502
    error_type = "upstream_response_invalid"


class UpstreamTimeoutError(MessageError, TimeoutError):
    status = 504
    error_type = "upstream_timeout"


class PipelineError(VaultgateError):
    """A pipeline run stopped. The output, if any was started, is removed and never renamed."""


class MalformedRecordError(PipelineError):
    """A record that cannot be parsed: wrong field count, broken quoting, bad encoding, length.

    ``row`` counts records from 1, after the header of a CSV file, and is 0 for a problem of the
    file as a whole (a missing header, a block cut short). The message names the file, the row
    and the reason, never the record's content.
    """

    def __init__(self, file: str, row: int, reason: str) -> None:
        super().__init__(f"{file}: row {row}: {reason}")
        self.file = file
        self.row = row
        self.reason = reason


class SourceError(PipelineError):
    """An input that cannot be read, or an output that cannot be written or renamed."""
