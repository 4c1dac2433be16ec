"""The message dictionary that functions get, and the checks on what they return."""

from __future__ import annotations

import base64
import gzip
from decimal import Decimal
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.config.model import Limits
from gateway.engine.multipart import boundary_of, parse_multipart
from gateway.engine.rewrite import MessageParts
from gateway.functions.message import (
    HttpMessage,
    InvalidReturnError,
    from_function_message,
    to_function_message,
)

LIMITS = Limits(max_body_bytes=4096, max_json_depth=5)


def request(
    body: bytes, content_type: str | None = "application/json", **headers: str
) -> HttpMessage:
    all_headers: CIMultiDict[str] = CIMultiDict(headers)
    if content_type:
        all_headers["Content-Type"] = content_type
    return HttpMessage(MessageParts(all_headers, body, "a=1&b=x+y"), "POST", "/in")


def test_request_as_dictionary() -> None:
    message = to_function_message(request(b'{"n": 1.50}', X_Trace="t1"), LIMITS)
    assert message == {
        "method": "POST",
        "path": "/in",
        "query": [["a", "1"], ["b", "x y"]],
        "headers": {"x_trace": "t1", "content-type": "application/json"},
        "body_type": "json",
        "body": {"n": Decimal("1.50")},
    }


def test_compressed_form_body_is_decoded() -> None:
    original = request(
        gzip.compress(b"a=1&card%5Bn%5D=2"),
        "application/x-www-form-urlencoded",
        Content_Encoding="gzip",
    )
    original.parts.headers["Content-Encoding"] = "gzip"
    message = to_function_message(original, LIMITS)
    assert message["body"] == [["a", "1"], ["card[n]", "2"]]
    result = from_function_message(message, original, LIMITS)
    assert "Content-Encoding" not in result.parts.headers
    assert result.parts.body == b"a=1&card[n]=2"


def test_unchanged_message_keeps_everything() -> None:
    original = request(b'{"a":[1,2]}', Accept="x")
    original.parts.headers.add("X-Many", "1")
    original.parts.headers.add("X-Many", "2")
    result = from_function_message(to_function_message(original, LIMITS), original, LIMITS)
    assert result.method == "POST"
    assert result.path == "/in"
    assert result.parts.query == "a=1&b=x+y"
    assert result.parts.headers.getall("X-Many") == ["1", "2"]
    assert result.parts.body == b'{"a":[1,2]}'


def test_json_to_form_and_new_path() -> None:
    original = request(b"{}")
    message = to_function_message(original, LIMITS)
    message.update(
        path="/v1/x/../charges", body_type="form", body=[["card[number]", "4242"], ["n", 5]]
    )
    message["headers"]["idempotency-key"] = "k1"
    result = from_function_message(message, original, LIMITS)
    assert result.path == "/v1/charges"
    assert result.parts.body == b"card[number]=4242&n=5"
    assert result.parts.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert result.parts.headers["Idempotency-Key"] == "k1"


def test_multipart_output() -> None:
    original = request(b"{}")
    message = to_function_message(original, LIMITS)
    data = base64.b64encode(b"\x00\x01file").decode()
    message.update(
        body_type="multipart",
        body=[
            {"name": "a", "value": "1"},
            {"name": "f", "filename": "f.bin", "content_type": None, "data": data},
        ],
    )
    result = from_function_message(message, original, LIMITS)
    form = parse_multipart(result.parts.body, boundary_of(result.parts.headers["Content-Type"]))
    assert [(part.name, part.data) for part in form.parts] == [("a", b"1"), ("f", b"\x00\x01file")]
    assert form.parts[1].content_type == "application/octet-stream"


def change(**changes: Any) -> dict[str, Any]:
    message = to_function_message(request(b"{}"), LIMITS)
    message.update(changes)
    return message


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        pytest.param("text", "returned str, not a message dictionary", id="not-dict"),
        pytest.param(change(extra=1), "unknown message key 'extra'", id="unknown-key"),
        pytest.param(change(method="post"), "method must be", id="lower-case-method"),
        pytest.param(change(path="v1"), "starting with '/'", id="relative-path"),
        pytest.param(change(path="/a?b=1"), "must not contain '?'", id="query-in-path"),
        pytest.param(change(status=200), "a request has no status", id="status-on-request"),
        pytest.param(change(query="a=1"), "query must be a list", id="query-string"),
        pytest.param(change(query=[["a"]]), "pairs", id="query-pair"),
        pytest.param(change(headers=[]), "headers must be a dictionary", id="headers-list"),
        pytest.param(change(headers={"bad name": "x"}), "is not valid", id="header-name"),
        pytest.param(
            change(headers={"x": "a\r\nb"}), "without control characters", id="header-crlf"
        ),
        pytest.param(change(headers={"content-length": "1"}), "set by the relay", id="framing"),
        pytest.param(change(headers={"transfer-encoding": "chunked"}), "set by the relay", id="te"),
        pytest.param(change(body_type="xml"), "body_type must be one of", id="body-type"),
        pytest.param(change(body_type="none", body={}), "needs body None", id="none-with-body"),
        pytest.param(
            change(body={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}), "nested deeper", id="depth"
        ),
        pytest.param(change(body={"a": "x" * 5000}), "more than limits.max_body_bytes", id="size"),
        pytest.param(change(body={"a": "\ud800"}), "unpaired surrogate", id="surrogate"),
        pytest.param(
            change(body_type="form", body=[["a", {"b": 1}]]), "strings or numbers", id="form-object"
        ),
        pytest.param(
            change(body_type="multipart", body=[{"name": "f", "data": "!!"}]),
            "not base64",
            id="bad-base64",
        ),
        pytest.param(
            change(body_type="multipart", body=[{"value": "x"}]), "with a name", id="part-name"
        ),
        pytest.param(
            change(body_type="raw", body=None),
            "only for bodies functions cannot read",
            id="raw-json",
        ),
    ],
)
def test_invalid_returns(result: Any, reason: str) -> None:
    with pytest.raises(InvalidReturnError, match=reason):
        from_function_message(result, request(b"{}"), LIMITS)


def test_raw_body_passes_unchanged() -> None:
    original = request(b"\x89PNG", "image/png")
    message = to_function_message(original, LIMITS)
    assert message["body_type"] == "raw"
    assert message["body"] is None
    message["headers"]["x-seen"] = "1"
    result = from_function_message(message, original, LIMITS)
    assert result.parts.body == b"\x89PNG"
    assert result.parts.headers["X-Seen"] == "1"


def test_response_status_may_change() -> None:
    original = HttpMessage(MessageParts(CIMultiDict(), b""), "GET", "/x", status=200)
    message = to_function_message(original, LIMITS)
    assert message["status"] == 200
    message["status"] = 404
    assert from_function_message(message, original, LIMITS).status == 404
    message["status"] = 100
    with pytest.raises(InvalidReturnError, match="from 200 to 599"):
        from_function_message(message, original, LIMITS)
