from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.config.loader import load_config, parse_address
from gateway.config.model import Address
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_and_shipped_routes_load() -> None:
    config = load_config(ROOT / "config.example.yaml", environ={})
    assert config.listen.reverse == Address("127.0.0.1", 8080)
    assert config.store.url == "sqlite:///" + str(ROOT / "var/tokens.db")
    assert config.keys.development is True
    assert config.keys.env == "VAULTGATE_KEYS"
    assert config.limits.max_body_bytes == 1024 * 1024
    assert config.limits.upstream_timeout == 30.0
    names = sorted(connection.name for connection in config.connections)
    assert names == ["adyen", "bookings", "checkout", "contracts", "payments", "signing", "stripe"]
    mounts = {connection.name: connection.mount for connection in config.connections}
    assert mounts == {
        "adyen": "/adyen",
        "bookings": "/bookings",
        "checkout": "/",
        "contracts": "/contracts",
        "payments": "/pay",
        "signing": "/signing",
        "stripe": "/stripe",
    }
    assert sorted(config.functions.modules) == ["attach_contract", "to_adyen", "to_stripe"]


def test_environment_overrides_example_defaults() -> None:
    environ = {
        "VAULTGATE_LISTEN": "0.0.0.0:9000",
        "VAULTGATE_STORE": "redis://127.0.0.1:6390/2",
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
        "VAULTGATE_DEVELOPMENT": "false",
        "VAULTGATE_BACKEND_KEY": "backend-key-0123456789",
        "VAULTGATE_SUPPORT_KEY": "support-key-0123456789",
    }
    config = load_config(ROOT / "config.example.yaml", environ=environ)
    assert config.listen.reverse == Address("0.0.0.0", 9000)
    assert config.store.url == "redis://127.0.0.1:6390/2"
    assert config.keys.development is False
    stripe = next(c for c in config.connections if c.name == "stripe")
    assert stripe.upstream == "http://127.0.0.1:12111"


def test_relative_paths_follow_config_file(tmp_path: Path) -> None:
    (tmp_path / "routes").mkdir()
    shutil.copy(ROOT / "routes/stripe.yaml", tmp_path / "routes/stripe.yaml")
    (tmp_path / "gw.yaml").write_text(
        "store: {url: 'sqlite:///data/t.db'}\nkeys: {file: k.yaml}\nroutes: [routes/*.yaml]\n"
        "clients: {backend: {keys: [{secret: backend-key-0123456789}], roles: [pay]}}\n"
        "roles: {pay: {grants: [{actions: [detokenize], classes: ['*']}]}}\n"
    )
    config = load_config(tmp_path / "gw.yaml", environ={})
    assert config.store.url == "sqlite:///" + str(tmp_path / "data/t.db")
    assert config.keys.file == tmp_path / "k.yaml"
    assert [connection.name for connection in config.connections] == ["stripe"]


def test_problems_from_every_file_are_collected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("connection: a\nupstream: http://x\nmount: /same\n")
    (tmp_path / "b.yaml").write_text("connection: a\nupstream: http://y\nmount: /same/\n")
    (tmp_path / "c.yaml").write_text("connection: c\nupstream: nope\nmount: /c\n")
    (tmp_path / "gw.yaml").write_text(
        "listen: {reverse: 'localhost'}\nlimits: {max_body_bytes: lots}\nroutes: ['*.yaml', 'none/*.yaml']\n"
        "logging: {level: LOUD}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gw.yaml", environ={})
    messages = "\n".join(str(problem) for problem in caught.value.problems)
    for expected in (
        "gw.yaml:1: listen.reverse",
        "gw.yaml:2: limits.max_body_bytes",
        "gw.yaml:3: routes entry 'none/*.yaml' matches no file",
        "gw.yaml:4: logging.level",
        "c.yaml:2: upstream 'nope'",
        "declared twice",
        "mount /same/ is used twice",
    ):
        assert expected in messages


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:8080", Address("127.0.0.1", 8080)), ("[::1]:0", Address("::1", 0))],
)
def test_parse_address(text: str, address: Address) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["8080", "host:port", "host:70000", ":80"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_address(text)


def test_development_client_keys_refused_outside_development() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "config.example.yaml", environ={"VAULTGATE_DEVELOPMENT": "false"})
    messages = [problem.message for problem in caught.value.problems]
    assert any("client 'backend' uses a development key" in message for message in messages)
    assert any("client 'support' uses a development key" in message for message in messages)


def test_two_listeners_on_one_address(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(
        "listen: {reverse: '127.0.0.1:9000', admin: '127.0.0.1:9000', forward: 'off'}\nroutes: []\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gw.yaml", environ={})
    assert "listen.reverse and listen.admin are both 127.0.0.1:9000" in str(caught.value)


@pytest.mark.parametrize(
    ("listen", "environ", "workers"),
    [
        pytest.param("{reverse: '127.0.0.1:9000'}", {}, 1, id="default"),
        pytest.param("{workers: 4}", {}, 4, id="number"),
        pytest.param("{workers: '${WORKERS:-1}'}", {"WORKERS": "3"}, 3, id="variable"),
        pytest.param("{workers: '${WORKERS:-1}'}", {}, 1, id="variable-default"),
    ],
)
def test_listen_workers_read(
    tmp_path: Path, listen: str, environ: dict[str, str], workers: int
) -> None:
    (tmp_path / "gw.yaml").write_text(f"listen: {listen}\nroutes: []\n")
    config = load_config(tmp_path / "gw.yaml", environ=environ)
    assert config.listen.workers == workers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("0", "listen.workers is 0; it must be at least 1", id="zero"),
        pytest.param("two", "listen.workers is 'two'; it must be a whole number", id="word"),
    ],
)
def test_listen_workers_rejects(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "gw.yaml").write_text(f"listen: {{workers: {value}}}\nroutes: []\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gw.yaml", environ={})
    assert message in str(caught.value)


def test_example_config_reads_workers_variable() -> None:
    config = load_config(ROOT / "config.example.yaml", environ={"VAULTGATE_WORKERS": "2"})
    assert config.listen.workers == 2
    assert load_config(ROOT / "config.example.yaml", environ={}).listen.workers == 1
