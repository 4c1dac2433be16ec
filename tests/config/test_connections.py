from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.connections import load_connection_file
from gateway.engine.routing import Action, UnmatchedPolicy
from gateway.engine.selectors import FormSelector, HeaderSelector, JsonSelector
from gateway.errors import ConfigError, ConfigProblem

VALID = """\
connection: shop
upstream: http://127.0.0.1:3000/base/
mount: /shop
unmatched: reject
auth:
  header: X-Api-Key
  clients: [backend, ops]
routes:
  - name: checkout
    match: {methods: [post, PUT], path: "/orders/{id}", content_type: application/json}
    request:
      - json: $.card.number
        action: tokenize
        format: pan
        deterministic: true
        ttl: 15m
        required: true
        class: card.pan
    response:
      - json: $.card.number
        action: detokenize
  - name: form
    match: {path: /pay}
    request:
      - {form: "card[number]", action: detokenize}
      - {header: X-Card, action: tokenize}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "route.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str, **environ: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_connection_file(write(tmp_path, text), environ)
    return caught.value.problems


def test_valid_file_builds_connection(tmp_path: Path) -> None:
    connection = load_connection_file(write(tmp_path, VALID), {})
    assert connection.name == "shop"
    assert connection.upstream == "http://127.0.0.1:3000/base"
    assert connection.mount == "/shop"
    assert connection.unmatched is UnmatchedPolicy.REJECT
    assert connection.auth is not None
    assert connection.auth.header == "X-Api-Key"
    assert connection.auth.scheme is None
    assert connection.auth.clients == ("backend", "ops")

    checkout, form = connection.routes
    assert checkout.match.methods == frozenset({"POST", "PUT"})
    assert checkout.match.content_types == frozenset({"application/json"})
    operation = checkout.request[0]
    assert isinstance(operation.selector, JsonSelector)
    assert operation.action is Action.TOKENIZE
    assert (operation.format, operation.deterministic, operation.ttl) == ("pan", True, 900.0)
    assert operation.required
    assert operation.class_name == "card.pan"
    assert checkout.response[0].action is Action.DETOKENIZE
    assert form.match.methods is None
    assert isinstance(form.request[0].selector, FormSelector)
    assert isinstance(form.request[1].selector, HeaderSelector)
    assert form.request[1].selector.name == "x-card"


def test_response_detokenize_needs_auth(tmp_path: Path) -> None:
    text = """\
connection: leaky
upstream: http://127.0.0.1:3000
routes:
  - name: reveal
    match: {path: /cards}
    response:
      - {json: $.number, action: detokenize}
"""
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert "sends plaintext" in problems[0].message
    assert problems[0].hint is not None
    assert "auth" in problems[0].hint


@pytest.mark.parametrize(
    ("snippet", "line", "message"),
    [
        ("      - {json: $.a, action: tokenise}", 7, "action must be tokenize or detokenize"),
        ("      - {json: $.a, form: a, action: tokenize}", 7, "exactly one selector"),
        ("      - {action: tokenize}", 7, "exactly one selector"),
        ("      - {json: 'card.number', action: tokenize}", 7, "starts with '$'"),
        ("      - {json: $.a, action: tokenize, format: card}", 7, "unknown token format"),
        ("      - {json: $.a, action: detokenize, format: pan}", 7, "applies to tokenize only"),
        ("      - {json: $.a, action: tokenize, ttl: soon}", 7, "duration"),
        ("      - {header: Content-Length, action: tokenize}", 7, "managed by the relay"),
        ("      - {json: $.a, action: tokenize, fromat: pan}", 7, "did you mean 'format'"),
    ],
)
def test_operation_problems_name_the_line(
    tmp_path: Path, snippet: str, line: int, message: str
) -> None:
    text = f"""\
connection: c
upstream: http://127.0.0.1:1
routes:
  - name: r
    match: {{path: /x}}
    request:
{snippet}
"""
    problems = problems_of(tmp_path, text)
    at_line = [problem for problem in problems if problem.line == line]
    assert any(message in p.message or message in (p.hint or "") for p in at_line), problems


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("connection: c\nupstream: ftp://x\n", "not an http:// or https:// URL"),
        ("connection: c\nupstream: http://x?a=1\n", "must not contain a query"),
        ("connection: c\n", "upstream is missing"),
        ("upstream: http://x\n", "connection is missing"),
        ("connection: c\nupstream: http://x\nmount: stripe\n", "must start with '/'"),
        ("connection: c\nupstream: http://x\nunmatched: drop\n", "relay or reject"),
        ("connection: c\nupstream: http://x\nroutes: {}\n", "routes must be a list"),
        ("connection: c\nupstream: http://x\nextra: 1\n", "unknown key 'extra'"),
        ("connection: c\nupstream: http://x\nauth: {header: X-Key}\n", "at least one client"),
        (
            "connection: c\nupstream: http://x\nroutes:\n  - name: pay\n    match: {path: /p}\n"
            "    request:\n      - {json: $.n, action: detokenize}\n",
            "no auth section, so anyone could call it",
        ),
        (
            "connection: c\nupstream: http://x\nroutes:\n  - {name: a, match: {path: /a}}\n"
            "  - {name: a, match: {path: /b}}\n",
            "used twice",
        ),
        (
            "connection: c\nupstream: http://x\nroutes:\n  - {name: a, match: {path: 'a/b'}}\n",
            "starts with '/'",
        ),
        (
            "connection: c\nupstream: http://x\nroutes:\n  - name: a\n    match: {path: /a}\n"
            "    request:\n      - {json: $.a, action: tokenize}\n      - {form: b, action: tokenize}\n",
            "mixes json and form",
        ),
    ],
)
def test_connection_problems(tmp_path: Path, text: str, message: str) -> None:
    problems = problems_of(tmp_path, text)
    assert any(message in problem.message for problem in problems), problems


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = """\
connection: c
upstream: ftp://x
mount: nope
routes:
  - name: r
    match: {path: /x}
    request:
      - {json: $.a, action: explode}
"""
    lines = sorted(problem.line or 0 for problem in problems_of(tmp_path, text))
    assert lines == [2, 3, 8]
