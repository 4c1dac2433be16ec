"""Field selectors: where in a message a field rule looks.

``json`` takes a JSONPath into a JSON body, ``form`` a field name of an
``application/x-www-form-urlencoded`` body written decoded (``card[number]``), ``multipart``
a part of a ``multipart/form-data`` body, ``query`` a
query-string parameter and ``header`` a header name. Reading and rewriting the fields is the
job of ``gateway.engine.rewrite``; this module only describes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.engine.jsonpath import JsonPath


@dataclass(frozen=True, slots=True)
class JsonSelector:
    path: JsonPath

    def __str__(self) -> str:
        return f"json {self.path.expression}"


@dataclass(frozen=True, slots=True)
class FormSelector:
    name: str

    def __str__(self) -> str:
        return f"form {self.name}"


@dataclass(frozen=True, slots=True)
class MultipartSelector:
    """A part of a ``multipart/form-data`` body by name; a file part is stored whole."""

    name: str

    def __str__(self) -> str:
        return f"multipart {self.name}"


@dataclass(frozen=True, slots=True)
class QuerySelector:
    name: str

    def __str__(self) -> str:
        return f"query {self.name}"


@dataclass(frozen=True, slots=True)
class HeaderSelector:
    name: str
    """Lower case, because header names are case-insensitive."""

    def __str__(self) -> str:
        return f"header {self.name}"


type FieldSelector = (
    JsonSelector | FormSelector | MultipartSelector | QuerySelector | HeaderSelector
)
type BodySelector = JsonSelector | FormSelector | MultipartSelector
