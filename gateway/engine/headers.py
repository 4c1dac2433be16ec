"""Header rules for relaying a message one hop further (RFC 9110, 7.6.1).

Hop-by-hop headers, and every header that ``Connection`` names, describe one connection and are
removed. Framing headers (Content-Length, Transfer-Encoding) are removed too, because the
relay writes the framing that fits the bytes it actually sends. Repeated headers such as
Set-Cookie keep their order.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

type Headers = CIMultiDict[str] | CIMultiDictProxy[str]


def _connection_tokens(headers: Headers) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", []):
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def end_to_end_headers(headers: Headers, *, also_remove: Iterable[str] = ()) -> CIMultiDict[str]:
    """Return a copy without hop-by-hop headers, those named in Connection, and ``also_remove``.

    Repeated fields get the spelling of their first line. aiohttp's client (3.14) keeps only the
    last of two lines whose names differ in case, so ``X-Card`` and ``x-card`` would lose one.
    """
    removed = HOP_BY_HOP | _connection_tokens(headers) | {name.lower() for name in also_remove}
    spellings: dict[str, str] = {}
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        folded = name.lower()
        if folded not in removed:
            kept.add(spellings.setdefault(folded, name), value)
    return kept


def upstream_request_headers(headers: Headers, *, auth_header: str | None) -> CIMultiDict[str]:
    """Headers to send upstream: the client's end-to-end headers minus Host, framing and Expect.

    The HTTP client sets Host from the upstream URL and the framing from the body it sends.
    ``auth_header`` is the gateway's own client credential, which never leaves the gateway.
    """
    remove = ["host", "content-length", "expect"]
    if auth_header:
        remove.append(auth_header)
    return end_to_end_headers(headers, also_remove=remove)


def client_response_headers(headers: Headers) -> CIMultiDict[str]:
    """Headers to send back to the client: the upstream's end-to-end headers minus framing."""
    return end_to_end_headers(headers, also_remove=("content-length",))
