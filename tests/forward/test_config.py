"""Forward proxy settings: route file keys hosts and upstream TLS, listen.forward, forward."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config.connections import load_connection_file
from gateway.config.loader import load_config
from gateway.config.model import Address, UnlistedHosts
from gateway.engine.routing import UpstreamTls
from gateway.errors import ConfigError
from tests.forward.certificates import TestCa

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "connection: pay\nupstream: https://api.example.com\nroutes: []\n"


def route_problems(tmp_path: Path, extra: str) -> list[str]:
    path = tmp_path / "route.yaml"
    path.write_text(ROUTE + textwrap.dedent(extra))
    with pytest.raises(ConfigError) as caught:
        load_connection_file(path, {})
    return [str(problem) for problem in caught.value.problems]


def config_problems(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "routes").mkdir(exist_ok=True)
    (tmp_path / "routes" / "pay.yaml").write_text(ROUTE + "hosts: [api.example.com]\n")
    (tmp_path / "gateway.yaml").write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gateway.yaml", environ={})
    return [str(problem) for problem in caught.value.problems]


def test_hosts_are_lower_case_without_final_dot(tmp_path: Path) -> None:
    path = tmp_path / "route.yaml"
    path.write_text(ROUTE + "hosts: [API.Example.com., files.example.com]\n")
    connection = load_connection_file(path, {})
    assert connection.hosts == ("api.example.com", "files.example.com")


@pytest.mark.parametrize(
    "entry",
    ["https://api.example.com", "api.example.com:443", "api example.com", "-api.example.com"],
    ids=["url", "port", "space", "leading-dash"],
)
def test_host_entry_must_be_a_name(tmp_path: Path, entry: str) -> None:
    problems = route_problems(tmp_path, f"hosts: ['{entry}']\n")
    assert any("is not a host name" in problem for problem in problems), problems


def test_host_listed_twice_is_a_problem(tmp_path: Path) -> None:
    problems = route_problems(tmp_path, "hosts: [a.example, A.example]\n")
    assert any("listed twice" in problem for problem in problems), problems


def test_host_of_two_connections_is_a_problem(tmp_path: Path) -> None:
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "a.yaml").write_text(ROUTE + "mount: /a\nhosts: [api.example.com]\n")
    (routes / "b.yaml").write_text(
        ROUTE.replace("pay", "pay2") + "mount: /b\nhosts: [api.example.com]\n"
    )
    (tmp_path / "gateway.yaml").write_text("keys: {file: k.yaml}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gateway.yaml", environ={})
    assert any("listed by two connections" in str(p) for p in caught.value.problems)


def test_upstream_tls_files_resolve_against_base_dir(tmp_path: Path, test_ca: TestCa) -> None:
    client = test_ca.issue("vaultgate", client=True)
    path = tmp_path / "routes" / "route.yaml"
    path.parent.mkdir()
    path.write_text(
        ROUTE
        + f"upstream_ca: {test_ca.cert_file.relative_to(tmp_path)}\n"
        + f"client_cert: {client.cert_file}\nclient_key: {client.key_file}\n"
    )
    connection = load_connection_file(path, {}, base_dir=tmp_path)
    assert connection.upstream_tls == UpstreamTls(
        test_ca.cert_file, client.cert_file, client.key_file
    )


def test_empty_upstream_ca_means_none(tmp_path: Path) -> None:
    path = tmp_path / "route.yaml"
    path.write_text(ROUTE + "upstream_ca: ${UPSTREAM_CA:-}\n")
    assert load_connection_file(path, {}).upstream_tls is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("upstream_ca: missing.pem\n", "is not a readable file"),
        ("client_key: {key}\n", "client_key needs client_cert"),
        ("upstream_ca: {key}\n", "holds no valid PEM certificate"),
        ("client_cert: {ca}\n", "cannot be loaded"),
    ],
    ids=["missing-file", "key-without-cert", "key-as-ca", "cert-without-key"],
)
def test_bad_upstream_tls_files_are_problems(
    tmp_path: Path, test_ca: TestCa, extra: str, expected: str
) -> None:
    issued = test_ca.issue("vaultgate", client=True)
    text = extra.format(key=issued.key_file, ca=test_ca.cert_file)
    problems = route_problems(tmp_path, text)
    assert any(expected in problem for problem in problems), problems


def test_forward_is_off_without_listen_forward(tmp_path: Path) -> None:
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "pay.yaml").write_text(ROUTE)
    (tmp_path / "gateway.yaml").write_text("keys: {file: k.yaml}\n")
    config = load_config(tmp_path / "gateway.yaml", environ={})
    assert config.listen.forward is None
    assert config.forward.ca_dir == tmp_path / "var/ca"
    assert config.forward.unlisted_hosts is UnlistedHosts.DENY
    assert config.forward.proxy_auth is True


def test_example_config_serves_forward_on_8081() -> None:
    config = load_config(ROOT / "config.example.yaml", environ={})
    assert config.listen.forward == Address("127.0.0.1", 8081)
    assert config.forward.ca_dir == ROOT / "var/ca"
    hosts = {connection.name: connection.hosts for connection in config.connections}
    assert hosts["adyen"] == ("checkout-test.adyen.com",)
    assert hosts["stripe"] == ("api.stripe.com",)
    assert {name for name, listed in hosts.items() if listed} == {"adyen", "stripe"}
    off = load_config(ROOT / "config.example.yaml", environ={"VAULTGATE_FORWARD_LISTEN": "off"})
    assert off.listen.forward is None


def test_forward_section_is_read(tmp_path: Path) -> None:
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "pay.yaml").write_text(ROUTE + "hosts: [api.example.com]\n")
    (tmp_path / "gateway.yaml").write_text(
        "keys: {file: k.yaml}\nlisten: {forward: '127.0.0.1:0'}\n"
        "forward: {ca_dir: /srv/ca, unlisted_hosts: tunnel, proxy_auth: required}\n"
    )
    config = load_config(tmp_path / "gateway.yaml", environ={})
    assert config.listen.forward == Address("127.0.0.1", 0)
    assert config.forward.ca_dir == Path("/srv/ca")
    assert config.forward.unlisted_hosts is UnlistedHosts.TUNNEL
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("forward", "expected"),
    [
        ("{proxy_auth: off, unlisted_hosts: tunnel}", "cannot be combined"),
        ("{unlisted_hosts: allow}", "must be deny or tunnel"),
        ("{proxy_auth: maybe}", "must be required or off"),
        ("{ca_directory: x}", "unknown key 'ca_directory'"),
    ],
    ids=["open-proxy", "bad-unlisted", "bad-proxy-auth", "misspelled"],
)
def test_bad_forward_section_is_a_problem(tmp_path: Path, forward: str, expected: str) -> None:
    problems = config_problems(tmp_path, f"keys: {{file: k.yaml}}\nforward: {forward}\n")
    assert any(expected in problem for problem in problems), problems


def test_proxy_auth_off_as_yaml_boolean(tmp_path: Path) -> None:
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "pay.yaml").write_text(ROUTE)
    (tmp_path / "gateway.yaml").write_text("keys: {file: k.yaml}\nforward: {proxy_auth: off}\n")
    assert load_config(tmp_path / "gateway.yaml", environ={}).forward.proxy_auth is False


def test_forward_without_hosts_warns(tmp_path: Path) -> None:
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "pay.yaml").write_text(ROUTE)
    (tmp_path / "gateway.yaml").write_text(
        "keys: {file: k.yaml}\nlisten: {forward: '127.0.0.1:0'}\n"
    )
    config = load_config(tmp_path / "gateway.yaml", environ={})
    assert any("no route file lists hosts" in str(warning) for warning in config.warnings)


def test_bare_off_turns_listeners_off(tmp_path: Path) -> None:
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "pay.yaml").write_text(ROUTE)
    (tmp_path / "gateway.yaml").write_text(
        "keys: {file: k.yaml}\nlisten: {admin: off, forward: off}\n"
    )
    config = load_config(tmp_path / "gateway.yaml", environ={})
    assert config.listen.admin is None
    assert config.listen.forward is None
