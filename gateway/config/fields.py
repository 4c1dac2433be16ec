"""Typed reads from YAML mappings that collect every problem with its line.

Validation goes on after a mistake so that ``vaultgate check`` can list all of them at once.
A read that fails records a ``ConfigProblem`` and returns the default.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from gateway.config.yamlsource import YamlList, YamlMap
from gateway.errors import ConfigProblem

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: Any) -> float:
    """Return seconds for ``15m``, ``30s``, ``500ms``, ``2h``, ``1d`` or a number of seconds."""
    problem = f"{value!r} is not a duration; use a number and a unit such as 30s, 15m or 2h"
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(problem)
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


def parse_size(value: Any) -> int:
    """Return bytes for ``1MiB``, ``512KB``, ``1048576`` and the like."""
    problem = f"{value!r} is not a size; use bytes or a unit such as 512KiB or 1MiB"
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(problem)
        unit = match.group(2).lower() if match.group(2) else None
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    if size <= 0:
        raise ValueError("a size must be greater than zero")
    return size


class Section:
    """One YAML mapping under validation; ``where`` names it in messages (``limits``)."""

    def __init__(self, mapping: YamlMap, file: str, problems: list[ConfigProblem], where: str):
        self.mapping = mapping
        self.file = file
        self.problems = problems
        self.where = where
        self.misspelled: set[str] = set()
        """Allowed keys that an unknown key was reported as a likely misspelling of."""

    @classmethod
    def of(
        cls, value: Any, file: str, problems: list[ConfigProblem], where: str, line: int
    ) -> Section | None:
        """Wrap a mapping; record a problem and return None when the value is not one."""
        if isinstance(value, YamlMap):
            return cls(value, file, problems, where)
        what = where or "the file"
        problems.append(ConfigProblem(file, line, f"{what} must be a mapping of keys to values"))
        return None

    def name_of(self, key: str) -> str:
        """Return the dotted name of a key for messages, such as ``limits.max_body_bytes``."""
        return f"{self.where}.{key}" if self.where else key

    def line(self, key: str | None = None) -> int:
        return self.mapping.line_of(key) if key is not None else self.mapping.line

    def problem(self, key: str | None, message: str, hint: str | None = None) -> None:
        self.problems.append(ConfigProblem(self.file, self.line(key), message, hint))

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.mapping:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
                self.misspelled.update(close)
                where = f" in {self.where}" if self.where else ""
                self.problem(key, f"unknown key {key!r}{where}", hint)

    def has(self, key: str) -> bool:
        return key in self.mapping and self.mapping[key] is not None

    def raw(self, key: str) -> Any:
        return self.mapping.get(key)

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        if not self.has(key):
            # A misspelled key was reported already; "missing" would only repeat it.
            if required and key not in self.misspelled:
                self.problem(None, f"{self.name_of(key)} is missing")
            return default
        value = self.mapping[key]
        if isinstance(value, (YamlMap | YamlList, bool)):
            self.problem(key, f"{self.name_of(key)} must be a string")
            return default
        text = str(value)
        if required and not text.strip():
            self.problem(key, f"{self.name_of(key)} must not be empty")
            return default
        return text

    def boolean(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value = self.mapping[key]
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        self.problem(key, f"{self.name_of(key)} is {value!r}; use true or false")
        return default

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        if not self.has(key):
            return default
        value = self.mapping[key]
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(str(value).strip())
        except ValueError:
            self.problem(key, f"{self.name_of(key)} is {value!r}; it must be a whole number")
            return default
        if number < minimum:
            self.problem(key, f"{self.name_of(key)} is {number}; it must be at least {minimum}")
            return default
        return number

    def duration(self, key: str, default: float | None) -> float | None:
        if not self.has(key):
            return default
        try:
            return parse_duration(self.mapping[key])
        except ValueError as exc:
            self.problem(key, f"{self.name_of(key)}: {exc}")
            return default

    def size(self, key: str, default: int) -> int:
        if not self.has(key):
            return default
        try:
            return parse_size(self.mapping[key])
        except ValueError as exc:
            self.problem(key, f"{self.name_of(key)}: {exc}")
            return default

    def string_list(self, key: str, default: list[str]) -> list[str]:
        """Read a list of strings; a single string counts as a list of one."""
        if not self.has(key):
            return default
        value = self.mapping[key]
        if isinstance(value, str):
            return [value]
        if isinstance(value, YamlList) and all(isinstance(item, str) for item in value):
            return list(value)
        self.problem(key, f"{self.name_of(key)} must be a string or a list of strings")
        return default

    def section(self, key: str) -> Section | None:
        """Return the nested mapping under ``key``, or None when it is absent or invalid."""
        if not self.has(key):
            return None
        return Section.of(
            self.mapping[key], self.file, self.problems, self.name_of(key), self.line(key)
        )
