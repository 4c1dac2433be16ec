from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.store import open_store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore


async def test_sqlite_relative_to_base_dir(tmp_path: Path) -> None:
    store = open_store("sqlite:///./var/tokens.db", timeout=1.0, base_dir=tmp_path)
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "var" / "tokens.db"
        assert store.path.is_file()
    finally:
        await store.close()


async def test_sqlite_absolute_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/abs/tokens.db"  # tmp_path starts with "/", giving four slashes

    store = open_store(url, timeout=1.0, base_dir=Path("/nonexistent"))
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "abs" / "tokens.db"
    finally:
        await store.close()


async def test_sqlite_percent_decoded(tmp_path: Path) -> None:
    store = open_store("sqlite:///my%20tokens.db", timeout=1.0, base_dir=tmp_path)
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "my tokens.db"
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://cache.internal:6380/2"])
async def test_redis_urls_open_lazily(url: str, tmp_path: Path) -> None:
    store = open_store(url, timeout=1.0, base_dir=tmp_path)
    try:
        assert isinstance(store, RedisStore)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://db/tokens", id="unknown-scheme"),
        pytest.param("tokens.db", id="no-scheme"),
        pytest.param("sqlite://host/tokens.db", id="sqlite-host"),
        pytest.param("sqlite:tokens.db", id="sqlite-no-slashes"),
        pytest.param("sqlite:///", id="sqlite-no-file"),
        pytest.param("sqlite:///var/", id="sqlite-directory"),
        pytest.param("sqlite:///:memory:", id="sqlite-memory"),
        pytest.param("sqlite:///tokens.db?mode=ro", id="sqlite-query"),
        pytest.param("redis://:s3cret-pass@cache:port/0", id="redis-bad-port"),
    ],
)
def test_bad_url_raises_config_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url, timeout=1.0, base_dir=tmp_path)

    assert caught.value.problems[0].file == "store.url"
    assert "s3cret-pass" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []
