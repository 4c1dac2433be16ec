"""Content-Encoding: decode with an output cap, encode again after a rewrite.

Every decoder stops as soon as its output passes the cap, so a small compressed body cannot make
the gateway hold gigabytes (a decompression bomb). Supported codings are gzip, deflate (zlib
format, and raw deflate as some servers send it), br and zstd, also stacked such as
``gzip, br``. ``identity`` is a no-op.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli
from backports import zstd

from gateway.errors import BodyTooLargeError, InvalidBodyError, UnsupportedMediaError

SUPPORTED_CODINGS = ("gzip", "x-gzip", "deflate", "br", "zstd", "identity")


def parse_codings(content_encoding: str | None) -> list[str]:
    """Return the codings in the order they were applied, without ``identity``.

    Raises ``UnsupportedMediaError`` for a coding the gateway cannot decode.
    """
    if not content_encoding:
        return []
    codings = [coding.strip().lower() for coding in content_encoding.split(",")]
    for coding in codings:
        if coding not in SUPPORTED_CODINGS:
            raise UnsupportedMediaError(
                f"content encoding {coding!r} is not supported; use gzip, deflate, br or zstd"
            )
    return [coding for coding in codings if coding not in ("identity", "")]


def decode_body(body: bytes, codings: list[str], *, max_bytes: int) -> bytes:
    """Undo the codings, last applied first, failing once any output passes ``max_bytes``."""
    for coding in reversed(codings):
        decoder = _DECODERS[coding]
        try:
            body = decoder(body, max_bytes)
        except (zlib.error, brotli.error, zstd.ZstdError, EOFError) as exc:
            raise InvalidBodyError(f"body is not valid {coding} data") from exc
    return body


def encode_body(body: bytes, codings: list[str]) -> bytes:
    """Apply the codings in order, as the sender had."""
    for coding in codings:
        body = _ENCODERS[coding](body)
    return body


def _too_large(max_bytes: int) -> BodyTooLargeError:
    return BodyTooLargeError(f"body is larger than {max_bytes} bytes after decompression")


def _decode_zlib(body: bytes, max_bytes: int, wbits: int) -> bytes:
    output = bytearray()
    data = body
    while True:
        decompressor = zlib.decompressobj(wbits)
        output += decompressor.decompress(data, max_bytes + 1 - len(output))
        if len(output) > max_bytes:
            raise _too_large(max_bytes)
        if not decompressor.eof:
            if decompressor.unconsumed_tail:
                raise _too_large(max_bytes)
            raise zlib.error("truncated data")
        data = decompressor.unused_data
        # A gzip body may hold several members one after another (RFC 1952, 2.2).
        if not data or wbits != 16 + zlib.MAX_WBITS:
            break
    if data:
        raise zlib.error("trailing data after the compressed stream")
    return bytes(output)


def _decode_gzip(body: bytes, max_bytes: int) -> bytes:
    return _decode_zlib(body, max_bytes, 16 + zlib.MAX_WBITS)


def _decode_deflate(body: bytes, max_bytes: int) -> bytes:
    try:
        return _decode_zlib(body, max_bytes, zlib.MAX_WBITS)
    except zlib.error:
        return _decode_zlib(body, max_bytes, -zlib.MAX_WBITS)


def _decode_brotli(body: bytes, max_bytes: int) -> bytes:
    decompressor = brotli.Decompressor()
    output = decompressor.process(body, output_buffer_limit=max_bytes + 1)
    if len(output) > max_bytes or not decompressor.can_accept_more_data():
        raise _too_large(max_bytes)
    if not decompressor.is_finished():
        raise brotli.error("truncated data")
    return bytes(output)


def _decode_zstd(body: bytes, max_bytes: int) -> bytes:
    output = bytearray()
    data = body
    while data:
        decompressor = zstd.ZstdDecompressor()
        output += decompressor.decompress(data, max_length=max_bytes + 1 - len(output))
        if len(output) > max_bytes:
            raise _too_large(max_bytes)
        if not decompressor.eof:
            if not decompressor.needs_input:
                raise _too_large(max_bytes)
            raise zstd.ZstdError("truncated data")
        data = decompressor.unused_data
    return bytes(output)


def _encode_gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _decode_gzip,
    "x-gzip": _decode_gzip,
    "deflate": _decode_deflate,
    "br": _decode_brotli,
    "zstd": _decode_zstd,
}

_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _encode_gzip,
    "x-gzip": _encode_gzip,
    "deflate": zlib.compress,
    "br": lambda body: bytes(brotli.compress(body, quality=5)),
    "zstd": lambda body: bytes(zstd.compress(body)),
}
