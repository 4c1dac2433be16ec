from __future__ import annotations

import pytest

from gateway.config.yamlsource import YamlList, YamlMap, load_yaml_text
from gateway.errors import ConfigError


def load(text: str, **environ: str) -> object:
    return load_yaml_text(text, "test.yaml", environ)


def test_lines_are_remembered() -> None:
    document = load("a: 1\nb:\n  - x\n  - y\n")
    assert isinstance(document, YamlMap)
    assert document.line_of("b") == 2
    items = document["b"]
    assert isinstance(items, YamlList)
    assert items.line_of(1) == 4


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("v: ${HOST}", {"HOST": "example"}, "example"),
        ("v: ${HOST:-fallback}", {}, "fallback"),
        ("v: ${HOST:-fallback}", {"HOST": ""}, "fallback"),
        ("v: ${HOST}", {"HOST": ""}, ""),
        ("v: http://${HOST:-localhost}:${PORT:-80}/x", {"PORT": "81"}, "http://localhost:81/x"),
        ("v: $$literal", {}, "$literal"),
        ("v: price$", {}, "price$"),
        ("v: ${URL:-sqlite:///./var/tokens.db}", {}, "sqlite:///./var/tokens.db"),
    ],
)
def test_environment_substitution(text: str, environ: dict[str, str], expected: str) -> None:
    document = load(text, **environ)
    assert isinstance(document, YamlMap)
    assert document["v"] == expected


def test_substituted_scalar_stays_a_string() -> None:
    document = load("port: ${PORT:-8080}\nplain: 8080\n")
    assert isinstance(document, YamlMap)
    assert document["port"] == "8080"
    assert document["plain"] == 8080


def test_missing_variable_reports_line_and_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        load("a: 1\nkey: ${SECRET_KEY}\n")
    problem = caught.value.problems[0]
    assert problem.line == 2
    assert "SECRET_KEY" in problem.message
    assert problem.hint is not None
    assert "${SECRET_KEY:-" in problem.hint


def test_unclosed_variable() -> None:
    with pytest.raises(ConfigError, match="unclosed"):
        load("v: ${OOPS\n")


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load("a: 1\nb: 2\na: 3\n")
    problem = caught.value.problems[0]
    assert problem.line == 3
    assert "duplicate key 'a'" in problem.message
    assert problem.hint == "first given on line 1"


def test_invalid_yaml_reports_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load("a: 1\nb: [1, 2\nc: 3\n")
    assert caught.value.problems[0].line is not None
    assert "invalid YAML" in caught.value.problems[0].message
