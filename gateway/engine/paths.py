"""Request-path normalization and route path patterns.

A field rule that fails to match protects nothing: a request to ``/api/%63heckout`` or
``/api//checkout/`` that the gateway relays unmatched reaches a backend that routes it to
``/api/checkout`` with the card number in plaintext. So matching works on a normalized path and
leans towards matching: dot segments are removed (RFC 3986, 5.2.4), repeated slashes merged,
percent-encoded unreserved characters decoded, a trailing slash ignored, matrix parameters
(``;jsessionid=...``, which Tomcat and Spring strip) ignored, every other escape decoded, and by
default letter case ignored.
``%2F``, ``%5C`` and ``\\`` count as ``/``. The path that is relayed is normalized the same way
except for case and matrix parameters, so the upstream receives the path that was matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")
# Encoded slashes and backslashes: backends that decode them, and IIS for a raw backslash, route
# them as '/'; so does the relay, which keeps the path it matches and the path it sends alike.
_SLASH_LIKE = re.compile(r"%2[fF]|%5[cC]|\\")
_FORMAT_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")


def normalize_path(path: str) -> str:
    """Return the path to relay: unreserved escapes decoded, ``%2F``, ``%5C`` and ``\\`` made
    into ``/``, dot segments and ``//`` removed."""
    if not path.startswith("/"):
        path = "/" + path
    path = _SLASH_LIKE.sub("/", path)
    path = _UNRESERVED_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), path)

    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        if segment == "..":
            if output:
                output.pop()
            if is_last:
                output.append("")
        elif segment == ".":
            if is_last:
                output.append("")
        elif segment == "" and not is_last:
            continue
        else:
            output.append(segment)
    return "/" + "/".join(output)


def matching_key(normalized_path: str, *, case_sensitive: bool) -> str:
    """Return the form of a normalized path that mounts and patterns are compared with.

    Every remaining escape is decoded here, because some backends decode escapes before
    routing.
    """
    decoded = normalize_path(unquote(normalized_path))
    segments = [segment.split(";", 1)[0] for segment in decoded.split("/")]
    key = "/".join(segments).rstrip("/") or "/"
    return key if case_sensitive else key.lower()


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A route path such as ``/v1/customers/{id}`` or ``/v{version}/payments``.

    ``{name}`` and ``*`` match one or more characters within a segment; ``**`` as the last
    segment matches any rest of the path, including nothing.
    """

    pattern: str
    case_sensitive: bool
    regex: re.Pattern[str]

    @classmethod
    def compile(cls, pattern: str, *, case_sensitive: bool = False) -> PathPattern:
        if not pattern.startswith("/"):
            raise ValueError("a path pattern starts with '/'")
        key = matching_key(pattern, case_sensitive=True)
        body = "/" if key == "/" else ""
        segments = key.split("/")[1:] if key != "/" else []
        for position, segment in enumerate(segments):
            if segment == "**":
                if position != len(segments) - 1:
                    raise ValueError("'**' may only be the last segment of a path pattern")
                body += "(?:/.*)?"
            elif "**" in segment:
                raise ValueError("'**' must be a whole segment")
            else:
                body += "/" + _segment_regex(segment)
        flags = 0 if case_sensitive else re.IGNORECASE
        return cls(pattern, case_sensitive, re.compile(body + r"\Z", flags))

    def matches(self, key: str) -> bool:
        """Tell whether a ``matching_key`` of a request path matches the pattern."""
        return self.regex.match(key) is not None


def _segment_regex(part: str) -> str:
    pieces: list[str] = []
    for piece in re.split(r"(\{[^{}/]*\}|\*)", part):
        if not piece:
            continue
        if piece == "*" or (piece.startswith("{") and piece.endswith("}")):
            if piece.startswith("{") and not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", piece):
                raise ValueError(f"invalid parameter {piece}; use {{name}} with letters and _")
            pieces.append("[^/]+")
        elif "{" in piece or "}" in piece:
            raise ValueError("unbalanced '{' or '}' in path pattern")
        else:
            pieces.append(re.escape(piece))
    return "".join(pieces)


def without_format_suffix(key: str) -> str | None:
    """Return a matching key without a final ``.json``-style suffix, or None when it has none.

    Rails routes ``/orders.json`` to the ``/orders`` action, so a route must match both.
    """
    match = _FORMAT_SUFFIX.search(key)
    if match is None or "/" in key[match.start() :]:
        return None
    return key[: match.start()]


@dataclass(frozen=True, slots=True)
class Mount:
    """A connection's path prefix, split into matching segments once at start-up."""

    segments: tuple[str, ...]
    """The mount's segments as ``matching_key`` gives them; empty for ``/``."""
    case_sensitive: bool

    @classmethod
    def compile(cls, mount: str, *, case_sensitive: bool) -> Mount:
        key = matching_key(mount, case_sensitive=case_sensitive)
        return cls(tuple(key.split("/")[1:]) if key != "/" else (), case_sensitive)

    def strip(self, normalized_path: str, segments: list[str] | None = None) -> str | None:
        """Return the path below the mount, or None when the path is not under it.

        The mount must end at a segment boundary: ``/stripe`` contains ``/stripe/v1`` but not
        ``/stripes``. Matrix parameters in the mount's own segments are dropped with it.
        ``segments`` is ``normalized_path.split("/")`` when the caller has it already.
        """
        if not self.segments:
            return normalized_path
        if segments is None:
            segments = normalized_path.split("/")
        count = len(self.segments)
        if len(segments) <= count:
            return None
        for segment, expected in zip(segments[1 : count + 1], self.segments, strict=True):
            segment = segment.split(";", 1)[0]
            if not self.case_sensitive:
                segment = segment.lower()
            if segment != expected:
                return None
        return "/" + "/".join(segments[count + 1 :])


def strip_mount(normalized_path: str, mount: str, *, case_sensitive: bool) -> str | None:
    """Return the path below ``mount``, or None when the path is not under it (see ``Mount``)."""
    return Mount.compile(mount, case_sensitive=case_sensitive).strip(normalized_path)
