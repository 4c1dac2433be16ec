from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
from backports import zstd

from gateway.engine.encoding import decode_body, encode_body, parse_codings
from gateway.errors import BodyTooLargeError, InvalidBodyError, UnsupportedMediaError

PAYLOAD = b'{"card": {"number": "tok_abc"}}' * 10


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "br", "zstd"])
def test_round_trip(coding: str) -> None:
    encoded = encode_body(PAYLOAD, [coding])
    assert encoded != PAYLOAD
    assert decode_body(encoded, [coding], max_bytes=10_000) == PAYLOAD


def test_stacked_codings_are_undone_in_reverse() -> None:
    codings = parse_codings("gzip, br")
    encoded = brotli.compress(gzip.compress(PAYLOAD))
    assert decode_body(encoded, codings, max_bytes=10_000) == PAYLOAD
    assert encode_body(PAYLOAD, codings) != PAYLOAD


def test_raw_deflate_is_accepted() -> None:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = compressor.compress(PAYLOAD) + compressor.flush()
    assert decode_body(raw, ["deflate"], max_bytes=10_000) == PAYLOAD


def test_multi_member_gzip() -> None:
    body = gzip.compress(b"abc") + gzip.compress(b"def")
    assert decode_body(body, ["gzip"], max_bytes=100) == b"abcdef"


def test_multi_frame_zstd() -> None:
    body = zstd.compress(b"abc") + zstd.compress(b"def")
    assert decode_body(body, ["zstd"], max_bytes=100) == b"abcdef"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_each_decoder_caps_output(coding: str) -> None:
    bomb = encode_body(b"\0" * 20_000_000, [coding])
    with pytest.raises(BodyTooLargeError):
        decode_body(bomb, [coding], max_bytes=1_000_000)


def test_exact_cap_is_allowed() -> None:
    body = encode_body(b"x" * 1000, ["gzip"])
    assert decode_body(body, ["gzip"], max_bytes=1000) == b"x" * 1000
    with pytest.raises(BodyTooLargeError):
        decode_body(body, ["gzip"], max_bytes=999)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt_or_truncated_data(coding: str) -> None:
    encoded = encode_body(PAYLOAD, [coding])
    with pytest.raises(InvalidBodyError, match=coding):
        decode_body(encoded[: len(encoded) // 2], [coding], max_bytes=10_000)
    with pytest.raises(InvalidBodyError, match=coding):
        decode_body(b"not compressed at all", [coding], max_bytes=10_000)


def test_unknown_coding() -> None:
    with pytest.raises(UnsupportedMediaError, match="compress"):
        parse_codings("compress")


def test_identity_is_dropped() -> None:
    assert parse_codings("identity") == []
    assert parse_codings(None) == []
