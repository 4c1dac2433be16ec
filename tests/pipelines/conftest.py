"""Fixtures for pipeline tests: a gateway configuration on each real store, and the data files."""

from __future__ import annotations

import asyncio
import csv
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from moto.server import ThreadedMotoServer

from gateway.config.loader import load_config
from gateway.pipelines.workers import VaultSettings
from gateway.store import open_store
from gateway.store.base import TokenStore
from gateway.tokens.keys import load_key_ring
from gateway.tokens.vault import Vault
from tests.pipelines.remote_servers import HOST, QUIET_LOGGERS, SftpServer
from tests.redis_server import RedisServer, _free_port

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SYNTHESIZED = DATA / "synthesized"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_config(directory: Path, store_url: str) -> Path:
    """Write a gateway configuration with a development key and no routes; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.yaml"
    path.write_text(
        f'store: {{url: "{store_url}"}}\n'
        "keys: {file: keys.yaml, development: true}\n"
        "routes: []\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(params=["sqlite", "redis"])
def gateway_config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A gateway configuration on each real store in turn, empty at the start of the test."""
    if request.param == "sqlite":
        return write_config(tmp_path / "gateway", "sqlite:///tokens.db")
    server: RedisServer = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
    return write_config(tmp_path / "gateway", server.url)


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "gateway", "sqlite:///tokens.db")


def settings_of(config_path: Path) -> VaultSettings:
    config = load_config(config_path)
    return VaultSettings(
        store_url=config.store.url,
        store_timeout=config.limits.store_timeout,
        base_dir=config.source.parent,
        keys=config.keys,
    )


class OpenVault:
    """A vault on the configuration's store, with its own event loop, for checks in tests."""

    def __init__(self, config_path: Path) -> None:
        settings = settings_of(config_path)
        self.loop = asyncio.new_event_loop()
        self.store: TokenStore = open_store(
            settings.store_url, timeout=settings.store_timeout, base_dir=settings.base_dir
        )
        self.vault = Vault(self.store, load_key_ring(settings.keys, base_dir=settings.base_dir))

    def reveal(self, tokens: list[str]) -> list[str]:
        results = self.loop.run_until_complete(self.vault.detokenize_many(tokens))
        return [getattr(result, "value", "<invalid>") for result in results]

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture
def open_vault() -> Iterator[type[OpenVault]]:
    opened: list[OpenVault] = []

    class Tracked(OpenVault):
        def __init__(self, config_path: Path) -> None:
            super().__init__(config_path)
            opened.append(self)

    yield Tracked
    for vault in opened:
        vault.close()


@pytest.fixture(autouse=True)
def quiet_client_logs() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Start moto's S3 server and point boto3 at it through the environment."""
    server = ThreadedMotoServer(ip_address=HOST, port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # The server keeps its buckets in this process, so each test starts from a reset.
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(reset, timeout=10) as reply:  # noqa: S310
        reply.read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", HOST)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def sftp_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SftpServer]:
    root = tmp_path / "sftp-root"
    root.mkdir()
    keys = tmp_path / "ssh"
    keys.mkdir()
    server = SftpServer(root, keys)
    server.start()
    monkeypatch.setenv("VAULTGATE_SFTP_KEY", str(server.client_key_file))
    monkeypatch.setenv("VAULTGATE_SFTP_KNOWN_HOSTS", str(server.known_hosts_file))
    try:
        yield server
    finally:
        server.stop()
