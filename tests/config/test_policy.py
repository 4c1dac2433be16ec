from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.policy.model import MaskKind, PolicyAction, View

ROUTE = """\
connection: pay
upstream: http://127.0.0.1:9
auth: {clients: [backend]}
routes:
  - name: pay
    match: {path: /pay}
    request:
      - {json: $.number, action: detokenize}
      - {json: $.email, action: tokenize, class: pii.email}
"""

POLICY = """\
clients:
  backend:
    keys: [{secret: backend-key-0123456789}]
    roles: [payments]
classes:
  card.pan: {format: pan, mask: first6_last4, reveal_to: [pay]}
  pii.email: {format: uuid, deterministic: true, ttl: 30d, mask: email}
roles:
  payments:
    grants:
      - {actions: [tokenize, detokenize], classes: [card.pan, pii.email], view: masked, rate_limit: 10/m}
      - {actions: [delete], classes: ["*"]}
"""


def write(tmp_path: Path, policy: str, route: str = ROUTE) -> Path:
    (tmp_path / "routes").mkdir(exist_ok=True)
    (tmp_path / "routes/pay.yaml").write_text(route)
    (tmp_path / "gw.yaml").write_text("routes: [routes/*.yaml]\n" + textwrap.dedent(policy))
    return tmp_path / "gw.yaml"


def messages(tmp_path: Path, policy: str, route: str = ROUTE) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, policy, route), environ={})
    return "\n".join(str(problem) for problem in caught.value.problems)


def test_policy_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, POLICY), environ={})
    policy = config.policy
    assert policy.clients["backend"].roles == ("payments",)
    pan = policy.classes["card.pan"]
    assert (pan.format, pan.mask, pan.reveal_to) == (
        "pan",
        MaskKind.FIRST6_LAST4,
        frozenset({"pay"}),
    )
    email = policy.classes["pii.email"]
    assert email.deterministic
    assert email.ttl == 30 * 86400
    first, second = policy.roles["payments"].grants
    assert first.view is View.MASKED
    assert first.rate_limit is not None
    assert (first.rate_limit.count, first.rate_limit.period) == (10, 60.0)
    assert second.actions == frozenset({PolicyAction.DELETE})
    grant = policy.best_grant(policy.clients["backend"], PolicyAction.DETOKENIZE, "card.pan")
    assert grant is first
    assert policy.best_grant(policy.clients["backend"], PolicyAction.DELETE, "anything") is second


def test_operation_takes_its_class_settings(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, POLICY), environ={})
    tokenize = config.connections[0].routes[0].request[1]
    assert tokenize.class_name == "pii.email"
    assert (tokenize.format, tokenize.deterministic, tokenize.ttl) == ("uuid", True, 30 * 86400)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("roles: [payments]", "roles: [payment]"), "client 'backend' has unknown role 'payment'"),
        (
            ("classes: [card.pan, pii.email]", "classes: [card.pan, pii.mail]"),
            "grants on unknown class 'pii.mail'",
        ),
        (("reveal_to: [pay]", "reveal_to: [stripe]"), "reveals to unknown connection 'stripe'"),
        (("reveal_to: [pay]", "reveal_to: [pya]"), "did you mean 'pay'?"),
        (("format: pan,", "format: card,"), "unknown token format 'card'"),
        (("mask: email", "mask: half"), "unknown mask 'half'"),
        (("view: masked", "view: partial"), "view 'partial' is unknown"),
        (("rate_limit: 10/m", "rate_limit: lots"), "rate_limit 'lots' is not a rate"),
        (("actions: [delete]", "actions: [erase]"), "unknown action 'erase'"),
        (("secret: backend-key-0123456789", "secret: short"), "shorter than 12 characters"),
    ],
)
def test_policy_mistakes(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert change[0] in POLICY
    assert expected in messages(tmp_path, POLICY.replace(*change))


def test_unknown_class_in_route(tmp_path: Path) -> None:
    route = ROUTE.replace("class: pii.email", "class: pii.phone")
    assert "tokenizes into unknown class 'pii.phone'" in messages(tmp_path, POLICY, route)
    route = ROUTE.replace("class: pii.email", "format: numeric")
    text = messages(tmp_path, POLICY, route)
    assert "unknown class 'generic.numeric' (the default class of format numeric)" in text


def test_operation_may_not_contradict_its_class(tmp_path: Path) -> None:
    route = ROUTE.replace("class: pii.email}", "class: pii.email, deterministic: false}")
    assert "sets deterministic False, but class 'pii.email' fixes it to True" in messages(
        tmp_path, POLICY, route
    )


def test_connection_with_unknown_client(tmp_path: Path) -> None:
    route = ROUTE.replace("clients: [backend]", "clients: [backend, ghost]")
    assert "allows unknown client 'ghost'" in messages(tmp_path, POLICY, route)


def test_shared_key_between_clients(tmp_path: Path) -> None:
    policy = POLICY.replace(
        "classes:\n",
        "  twin:\n    keys: [{secret: backend-key-0123456789}]\n    roles: [payments]\nclasses:\n",
    )
    assert "share a key" in messages(tmp_path, policy)


def test_unrevealed_class_and_unrevealable_connection_warn(tmp_path: Path) -> None:
    policy = POLICY.replace("reveal_to: [pay]", "reveal_to: []")
    config = load_config(write(tmp_path, policy), environ={})
    warnings = "\n".join(str(warning) for warning in config.warnings)
    assert "class 'pii.email' is revealed to no connection" in warnings
    assert "connection 'pay' detokenizes requests, but no class is revealed to it" in warnings
