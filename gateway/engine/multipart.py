"""Strict ``multipart/form-data`` bodies (RFC 7578): parse, replace parts, encode again.

Parsing is strict for the same reason as the other body codecs: the gateway and the upstream
must see the same parts. A preamble, an epilogue, a part without ``Content-Disposition:
form-data; name=...``, duplicate disposition parameters and ``filename*`` (which RFC 7578,
4.2 forbids) are rejected with ``InvalidBodyError``. Parts that no rule touches are relayed
byte for byte.

A file part that is tokenized goes into the vault as a file envelope: a JSON text with the
file name, the media type and the bytes in base64, so that a function can put the file back
later with the name and type it came with.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

import simplejson

from gateway.errors import InvalidBodyError, UnsupportedMediaError

MULTIPART_MEDIA_TYPE = "multipart/form-data"
# RFC 2046, 5.1.1: 1 to 70 characters from bchars, not ending in a space.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_PARAMETER = re.compile(r'\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\\r\n]|\\.)*)"|([^\s;"]+))\s*')
_FILE_ENVELOPE_TYPE = "vaultgate.file"


@dataclass(slots=True)
class MultipartPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes
    raw: bytes
    """The part as it came (headers, blank line, data); relayed unchanged unless replaced."""

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidBodyError(f"multipart field {self.name} is not valid UTF-8") from exc


@dataclass(slots=True)
class MultipartForm:
    boundary: str
    parts: list[MultipartPart]

    def find(self, name: str) -> list[MultipartPart]:
        """Return every part that a backend could read as ``name``, as ``FormData.find`` does."""
        folded = name.casefold()
        return [
            part
            for part in self.parts
            if part.name.casefold() == folded or part.name.casefold().startswith(folded + "[")
        ]

    def replace_with_text(self, part: MultipartPart, value: str) -> None:
        """Turn a part into a plain text field with the same name, such as a file into its token."""
        replacement = text_part(part.name, value)
        part.filename, part.content_type = None, None
        part.data, part.raw = replacement.data, replacement.raw

    def encode(self) -> bytes:
        delimiter = b"--" + self.boundary.encode("ascii")
        chunks = [delimiter + b"\r\n" + part.raw + b"\r\n" for part in self.parts]
        return b"".join(chunks) + delimiter + b"--\r\n"

    @property
    def content_type(self) -> str:
        return f'{MULTIPART_MEDIA_TYPE}; boundary="{self.boundary}"'


@dataclass(frozen=True, slots=True)
class FileValue:
    filename: str | None
    content_type: str | None
    data: bytes


def new_form() -> MultipartForm:
    return MultipartForm("vaultgate-" + secrets.token_hex(16), [])


def text_part(name: str, value: str) -> MultipartPart:
    data = value.encode("utf-8")
    head = f"Content-Disposition: form-data; name={_quote(name)}\r\n\r\n".encode()
    return MultipartPart(name, None, None, data, head + data)


def file_part(name: str, file: FileValue) -> MultipartPart:
    disposition = f"form-data; name={_quote(name)}"
    if file.filename is not None:
        disposition += f"; filename={_quote(file.filename)}"
    content_type = file.content_type or "application/octet-stream"
    if any(character in content_type for character in "\r\n"):
        raise InvalidBodyError(f"content type of multipart file {name} has a line break")
    head = f"Content-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
    return MultipartPart(name, file.filename, content_type, file.data, head.encode() + file.data)


def _quote(text: str) -> str:
    # Browsers percent-encode these three in names and file names (WHATWG HTML, form submission).
    escaped = text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return f'"{escaped}"'


def boundary_of(content_type: str | None) -> str:
    """Return the boundary parameter of a ``multipart/form-data`` Content-Type."""
    _, _, parameters = (content_type or "").partition(";")
    try:
        boundary = _parameters(parameters, "Content-Type").get("boundary")
    except InvalidBodyError:
        boundary = None
    if boundary is None or not _BOUNDARY.match(boundary):
        raise UnsupportedMediaError(
            "multipart/form-data needs a valid boundary parameter in Content-Type"
        )
    return boundary


def parse_multipart(body: bytes, boundary: str) -> MultipartForm:
    """Split a body into its parts; raise ``InvalidBodyError`` for anything ambiguous."""
    delimiter = b"--" + boundary.encode("ascii")
    if not body.startswith(delimiter + b"\r\n"):
        raise InvalidBodyError("multipart body must start with its boundary, without a preamble")
    closing = b"\r\n" + delimiter + b"--"
    end = body.rfind(closing)
    if end < 0 or body[end + len(closing) :] not in (b"", b"\r\n"):
        raise InvalidBodyError("multipart body must end with its closing boundary")

    inner = body[len(delimiter) + 2 : end]
    raw_parts = inner.split(b"\r\n" + delimiter + b"\r\n")
    if any(delimiter in raw for raw in raw_parts):
        raise InvalidBodyError("multipart body has a boundary line that is not a part separator")
    return MultipartForm(boundary, [_parse_part(raw) for raw in raw_parts])


def _parse_part(raw: bytes) -> MultipartPart:
    head, separator, data = raw.partition(b"\r\n\r\n")
    if not separator:
        raise InvalidBodyError("multipart part has no blank line after its headers")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError as exc:
        raise InvalidBodyError("multipart part headers are not valid UTF-8") from exc

    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or name != line.partition(":")[0].lower():
            raise InvalidBodyError("multipart part has a malformed header line")
        if name in headers:
            raise InvalidBodyError(f"multipart part has a duplicate {name} header")
        headers[name] = value.strip()

    disposition = headers.get("content-disposition")
    if disposition is None:
        raise InvalidBodyError("multipart part has no Content-Disposition header")
    kind, _, parameters = disposition.partition(";")
    if kind.strip().lower() != "form-data":
        raise InvalidBodyError("multipart part is not form-data")
    found = _parameters(parameters, "Content-Disposition")
    if "filename*" in found:
        raise InvalidBodyError("multipart part uses filename*, which form-data does not allow")
    part_name = found.get("name")
    if part_name is None:
        raise InvalidBodyError("multipart part has no name")
    return MultipartPart(part_name, found.get("filename"), headers.get("content-type"), data, raw)


def _parameters(text: str, header: str) -> dict[str, str]:
    found: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _PARAMETER.match(text, position)
        if match is None:
            raise InvalidBodyError(f"{header} has a malformed parameter")
        key = match.group(1).lower()
        if key in found:
            raise InvalidBodyError(f"{header} has a duplicate {key} parameter")
        quoted: str | None = match.group(2)
        plain: str = match.group(3)
        found[key] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
        position = match.end()
        if position < len(text):
            if text[position] != ";":
                raise InvalidBodyError(f"{header} has a malformed parameter")
            position += 1
    return found


def file_envelope(file: FileValue) -> str:
    """Return the text that the vault keeps for a file."""
    return simplejson.dumps(
        {
            "type": _FILE_ENVELOPE_TYPE,
            "filename": file.filename,
            "content_type": file.content_type,
            "data": base64.b64encode(file.data).decode("ascii"),
        },
        separators=(",", ":"),
    )


def parse_file_envelope(text: str) -> FileValue | None:
    """Return the file in a vault value, or None when the value is not a file envelope."""
    if not text.startswith("{"):
        return None
    try:
        document = simplejson.loads(text)
        if not isinstance(document, dict) or document.get("type") != _FILE_ENVELOPE_TYPE:
            return None
        data = base64.b64decode(document["data"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    filename, content_type = document.get("filename"), document.get("content_type")
    return FileValue(
        filename if isinstance(filename, str) else None,
        content_type if isinstance(content_type, str) else None,
        data,
    )
