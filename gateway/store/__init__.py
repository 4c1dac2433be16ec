"""Token stores: the interface in ``base``, one module per backend, and ``open_store``."""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import unquote

from gateway.errors import ConfigError
from gateway.store.base import TokenStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore

__all__ = ["TokenStore", "open_store"]

_SQLITE_PREFIX: Final = "sqlite:///"
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
_URL_HINT: Final = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db, redis://host:port/db or "
    "rediss://host:port/db"
)


def open_store(url: str, *, timeout: float, base_dir: Path) -> TokenStore:
    """Open the store that ``url`` names; ``timeout`` bounds each store operation in seconds.

    ``sqlite:///path`` is relative to ``base_dir`` (the gateway passes its working directory)
    and ``sqlite:////path`` is absolute. Redis URLs are those of redis-py. Raises
    ``ConfigError`` for a URL that names no supported store. The messages never repeat the
    URL, which may contain a password.
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url, base_dir), timeout=timeout)
    if scheme in _REDIS_SCHEMES:
        try:
            return RedisStore(url, timeout=timeout)
        except ValueError as exc:
            raise ConfigError.single(
                "store.url", None, f"invalid Redis URL: {exc}", _URL_HINT
            ) from None
    raise ConfigError.single(
        "store.url", None, f"unsupported store URL scheme {scheme!r}", _URL_HINT
    )


def _sqlite_path(url: str, base_dir: Path) -> Path:
    if not url.lower().startswith(_SQLITE_PREFIX):
        raise ConfigError.single(
            "store.url", None, "a SQLite URL must start with sqlite:/// (three slashes)", _URL_HINT
        )
    raw_path = url[len(_SQLITE_PREFIX) :]
    if "?" in raw_path or "#" in raw_path:
        raise ConfigError.single(
            "store.url", None, "a SQLite URL takes no query or fragment", _URL_HINT
        )
    path_text = unquote(raw_path)
    if not path_text or path_text.endswith("/"):
        raise ConfigError.single("store.url", None, "the SQLite URL names no file", _URL_HINT)
    if path_text == ":memory:":
        raise ConfigError.single(
            "store.url",
            None,
            "an in-memory SQLite database is not supported, because the store's reader and "
            "writer connections would each get a separate empty database",
            _URL_HINT,
        )
    path = Path(path_text)
    return path if path.is_absolute() else base_dir / path
