"""Read YAML into plain values that remember their line numbers, with ``${VAR}`` substitution.

Mappings become ``YamlMap`` and sequences ``YamlList``: a dict and a list that also carry the
line of each key or item, so that a validation error can name the line of the mistake. A duplicate
key is an error (PyYAML would keep the last one silently).

Every scalar may use ``${VAR}`` or ``${VAR:-default}``; ``$$`` stands for a literal ``$``. A
substituted scalar stays a string, and the validator converts it to the type it expects, so
``port: ${PORT:-8080}`` works.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError, ConfigProblem

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


class YamlMap(dict[str, Any]):
    """A mapping that records its own line and the line of each key (1-based)."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YamlList(list[Any]):
    """A sequence that records its own line and the line of each item (1-based)."""

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def load_yaml_file(path: Path, environ: Mapping[str, str] | None = None) -> Any:
    """Read one YAML document from ``path``; raise ``ConfigError`` with file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, f"cannot read file: {exc.strerror}")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "file is not UTF-8")]) from exc
    return load_yaml_text(text, str(path), os.environ if environ is None else environ)


def load_yaml_text(text: str, file: str, environ: Mapping[str, str]) -> Any:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        hint = None
        if "'{'" in str(exc.problem) or "'}'" in str(exc.problem):
            hint = 'a path with {name} inside {...} needs quotes: path: "/orders/{id}"'
        raise ConfigError(
            [ConfigProblem(file, line, f"invalid YAML: {exc.problem}", hint)]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, None, f"invalid YAML: {exc}")]) from exc
    if node is None:
        return None

    problems: list[ConfigProblem] = []
    value = _convert(node, _Context(file, environ, problems))
    if problems:
        raise ConfigError(problems)
    return value


class _Context:
    def __init__(self, file: str, environ: Mapping[str, str], problems: list[ConfigProblem]):
        self.file = file
        self.environ = environ
        self.problems = problems
        self.constructor = yaml.SafeLoader("")


def _convert(node: yaml.Node, context: _Context) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        mapping = YamlMap()
        mapping.line = line
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = _convert(key_node, context)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                context.problems.append(
                    ConfigProblem(context.file, key_line, f"key {key!r} is not a string")
                )
                continue
            if key in mapping:
                context.problems.append(
                    ConfigProblem(
                        context.file,
                        key_line,
                        f"duplicate key {key!r}",
                        f"first given on line {mapping.key_lines[key]}",
                    )
                )
                continue
            mapping[key] = _convert(value_node, context)
            mapping.key_lines[key] = key_line
        return mapping

    if isinstance(node, yaml.SequenceNode):
        sequence = YamlList(_convert(item, context) for item in node.value)
        sequence.line = line
        sequence.item_lines = [item.start_mark.line + 1 for item in node.value]
        return sequence

    assert isinstance(node, yaml.ScalarNode)
    if "$" in node.value:
        return _substitute(node.value, line, context)
    return context.constructor.construct_object(node, deep=True)


def _substitute(text: str, line: int, context: _Context) -> str:
    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name is None:
            context.problems.append(
                ConfigProblem(
                    context.file, line, "unclosed '${'", "write ${NAME} or ${NAME:-default}"
                )
            )
            return ""
        value = context.environ.get(name)
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        context.problems.append(
            ConfigProblem(
                context.file,
                line,
                f"environment variable {name} is not set",
                f"set it, or give a default as ${{{name}:-value}}",
            )
        )
        return ""

    return _VARIABLE.sub(replace, text)
