"""`vaultgate check` on function steps: unknown functions and bad arguments, with file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.errors import ConfigError, ConfigProblem

MODULE = """\
def transform(message, *, currency: str, amount: int = 0, vault=None):
    return message
"""


def problems_of(
    tmp_path: Path, route_steps: str, modules: dict[str, str] | None = None
) -> list[ConfigProblem]:
    (tmp_path / "routes").mkdir()
    (tmp_path / "functions").mkdir()
    for name, source in (modules if modules is not None else {"convert": MODULE}).items():
        (tmp_path / "functions" / f"{name}.py").write_text(source)
    route_file = (
        "connection: c\n"
        "upstream: http://127.0.0.1:1\n"
        "routes:\n"
        "  - name: r\n"
        "    match: {path: /x}\n"
        "    request:\n" + textwrap.indent(textwrap.dedent(route_steps), "      ")
    )
    (tmp_path / "routes" / "c.yaml").write_text(route_file)
    (tmp_path / "gw.yaml").write_text(
        "routes: [routes/*.yaml]\nfunctions: {dir: functions}\n"
        "roles: {r: {grants: [{actions: [tokenize], classes: [x], view: plain}]}}\n"
        "classes: {x: {format: uuid}, p: {format: pan}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gw.yaml", environ={})
    return caught.value.problems


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, problems
    return problems[0]


def test_unknown_function(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "- function: convrt\n"))
    assert problem.file.endswith("c.yaml")
    assert problem.line == 7
    assert "unknown function 'convrt'" in problem.message
    assert "no module convrt.py" in problem.message


def test_misspelled_argument(tmp_path: Path) -> None:
    steps = "- function: convert\n  args:\n    currency: eur\n    amout: 5\n"
    problem = only(problems_of(tmp_path, steps))
    assert problem.line == 10
    assert "has no argument 'amout'" in problem.message
    assert problem.hint == "did you mean 'amount'?"


def test_missing_and_mistyped_arguments(tmp_path: Path) -> None:
    steps = "- function: convert\n  args: {amount: five}\n"
    problems = problems_of(tmp_path, steps)
    messages = sorted((problem.line, problem.message) for problem in problems)
    assert messages == [
        (7, "function convert needs the argument 'currency'"),
        (8, "argument 'amount' of function convert must be int"),
    ]


def test_builtin_argument_error_has_its_line(tmp_path: Path) -> None:
    steps = "- function: split_date\n  args:\n    field: $.at\n    day: $..d\n"
    problem = only(problems_of(tmp_path, steps))
    assert problem.line == 10
    assert "must name one place" in problem.message


def test_unknown_role_and_role_without_vault(tmp_path: Path) -> None:
    modules = {"convert": "def transform(message, *, currency='x'):\n    return message\n"}
    problems = problems_of(tmp_path, "- function: convert\n  role: nobody\n", modules)
    messages = sorted(problem.message for problem in problems)
    assert messages == [
        "function convert gets a role but takes no vault parameter",
        "function step convert has unknown role 'nobody'",
        "function step convert uses the vault under a role, but connection 'c' has no auth "
        "section, so anyone could call it",
    ]


def test_module_syntax_error_has_module_line(tmp_path: Path) -> None:
    modules = {"convert": "def transform(message):\n    return (\n"}
    problems = problems_of(tmp_path, "- function: convert\n", modules)
    assert any(
        problem.file.endswith("convert.py")
        and problem.line == 2
        and "syntax error" in problem.message
        for problem in problems
    ), problems


def test_module_without_transform(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "- function: convert\n", {"convert": "x = 1\n"})
    assert any("has no top-level def transform" in problem.message for problem in problems)


def test_multipart_into_pan_class(tmp_path: Path) -> None:
    steps = "- {multipart: file, action: tokenize, class: p}\n"
    problem = only(problems_of(tmp_path, steps))
    assert problem.line == 7
    assert "cannot hold a file" in problem.message


def test_multipart_detokenize_is_rejected(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "- {multipart: file, action: detokenize}\n")
    assert any("can only be tokenized" in problem.message for problem in problems)


def test_mixed_body_types_around_a_function_are_allowed(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    steps = (
        "- {json: $.a, action: tokenize, class: x}\n"
        "- function: convert\n"
        "  args: {currency: eur}\n"
        "- {form: a, action: tokenize, class: x}\n"
        "- {json: $.b, action: tokenize, class: x}\n"
    )
    problem = only(problems_of(tmp_path / "x", steps))
    assert "mixes json and form fields in one run" in problem.message


def test_role_on_public_connection(tmp_path: Path) -> None:
    modules = {"convert": "def transform(message, *, vault):\n    return message\n"}
    problem = only(problems_of(tmp_path, "- function: convert\n  role: r\n", modules))
    assert problem.line == 7
    assert "has no auth section, so anyone could call it" in problem.message
