"""multipart/form-data parsing and encoding, and tokenizing a file part."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.config.model import Limits
from gateway.engine.multipart import (
    FileValue,
    boundary_of,
    file_envelope,
    parse_file_envelope,
    parse_multipart,
)
from gateway.engine.rewrite import MessageParts, prepare_rewrite
from gateway.engine.routing import Action, Operation
from gateway.engine.selectors import MultipartSelector
from gateway.errors import InvalidBodyError, MissingFieldError, UnsupportedMediaError

BOUNDARY = "b0undary"
BODY = (
    b"--b0undary\r\n"
    b'Content-Disposition: form-data; name="customer"\r\n\r\n'
    b"cus_1\r\n"
    b"--b0undary\r\n"
    b'Content-Disposition: form-data; name="contract"; filename="c.pdf"\r\n'
    b"Content-Type: application/pdf\r\n\r\n"
    b"%PDF\r\n--not-the-boundary\x00\xff\r\n"
    b"--b0undary--\r\n"
)


def test_parse_and_encode_round_trip() -> None:
    form = parse_multipart(BODY, BOUNDARY)
    assert [part.name for part in form.parts] == ["customer", "contract"]
    contract = form.parts[1]
    assert contract.filename == "c.pdf"
    assert contract.content_type == "application/pdf"
    assert contract.data == b"%PDF\r\n--not-the-boundary\x00\xff"
    assert form.encode() == BODY


def test_replace_file_with_token() -> None:
    form = parse_multipart(BODY, BOUNDARY)
    form.replace_with_text(form.parts[1], "tok_1")
    encoded = form.encode()
    assert b"%PDF" not in encoded
    again = parse_multipart(encoded, BOUNDARY)
    assert again.parts[1].data == b"tok_1"
    assert again.parts[1].filename is None
    assert again.parts[0].raw == form.parts[0].raw


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"preamble\r\n" + BODY, "without a preamble"),
        (BODY.replace(b"--b0undary--\r\n", b""), "closing boundary"),
        (BODY + b"epilogue", "closing boundary"),
        (BODY.replace(b'; name="customer"', b""), "has no name"),
        (BODY.replace(b'filename="c.pdf"', b"filename*=UTF-8''c.pdf"), "filename*"),
        (BODY.replace(b'name="customer"', b'name="a"; name="b"'), "duplicate name"),
        (
            BODY.replace(b'form-data; name="customer"', b'attachment; name="customer"'),
            "not form-data",
        ),
        (
            BODY.replace(
                b"Content-Type: application/pdf\r\n", b"Content-Type: a\r\nContent-Type: b\r\n"
            ),
            "duplicate content-type",
        ),
        (
            BODY.replace(b'name="customer"\r\n', b'name="customer"\r\ngarbage\r\n'),
            "malformed header",
        ),
        (BODY.replace(b"\r\n\r\ncus_1", b"\r\ncus_1"), "no blank line"),
    ],
)
def test_ambiguous_bodies_are_rejected(body: bytes, message: str) -> None:
    with pytest.raises(InvalidBodyError, match=message):
        parse_multipart(body, BOUNDARY)


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", "abc"),
        ('multipart/form-data; charset=utf-8; boundary="a b:c"', "a b:c"),
    ],
)
def test_boundary_of(content_type: str, boundary: str) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "x" * 71,
    ],
)
def test_invalid_boundary(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaError, match="boundary"):
        boundary_of(content_type)


def test_file_envelope_round_trip() -> None:
    file = FileValue("c.pdf", "application/pdf", bytes(range(256)))
    assert parse_file_envelope(file_envelope(file)) == file
    assert parse_file_envelope("plain text") is None
    assert parse_file_envelope('{"type": "other"}') is None


def operation(name: str, *, required: bool = False) -> Operation:
    return Operation(MultipartSelector(name), Action.TOKENIZE, required=required)


def test_prepare_rewrite_tokenizes_file_part() -> None:
    headers = CIMultiDict({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    pending = prepare_rewrite([operation("contract")], MessageParts(headers, BODY), Limits())
    [item] = pending.tokenize_items
    assert parse_file_envelope(item.value) == FileValue(
        "c.pdf", "application/pdf", b"%PDF\r\n--not-the-boundary\x00\xff"
    )
    parts = pending.apply(["tok_1"], [])
    assert b"tok_1" in parts.body
    assert b"%PDF" not in parts.body


def test_prepare_rewrite_requires_multipart_media_type() -> None:
    headers = CIMultiDict({"Content-Type": "application/json"})
    with pytest.raises(UnsupportedMediaError, match="multipart/form-data"):
        prepare_rewrite([operation("contract")], MessageParts(headers, BODY), Limits())


def test_prepare_rewrite_missing_required_part() -> None:
    headers = CIMultiDict({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    with pytest.raises(MissingFieldError, match="multipart nothing"):
        prepare_rewrite(
            [operation("nothing", required=True)], MessageParts(headers, BODY), Limits()
        )
