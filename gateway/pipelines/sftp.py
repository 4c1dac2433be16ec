"""SFTP locations, through asyncssh: ``sftp://[user@]host[:port]/path``.

Authentication and host checks are asyncssh's: the client keys and ``known_hosts`` of
``~/.ssh``, or the files that ``VAULTGATE_SFTP_KEY`` and ``VAULTGATE_SFTP_KNOWN_HOSTS`` name.
A password in the URL is rejected, because the URL shows up in logs and in the report. An
output is uploaded under a temporary name in its folder and then renamed, so a reader of the
folder never finds half a file.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import asyncssh

from gateway.errors import SourceError
from gateway.pipelines.locations import TEMPORARY_MARK, InputFile, Location

KEY_VARIABLE: Final = "VAULTGATE_SFTP_KEY"
KNOWN_HOSTS_VARIABLE: Final = "VAULTGATE_SFTP_KNOWN_HOSTS"
CONNECT_TIMEOUT: Final = 30.0

T = TypeVar("T")


class SftpLocation(Location):
    def __init__(self, host: str, port: int, username: str | None, path: str) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.path = path
        user = f"{username}@" if username else ""
        self.url = f"sftp://{user}{host}:{port}{path}"

    @classmethod
    def parse(cls, url: str) -> SftpLocation:
        parts = urlsplit(url)
        if parts.password is not None:
            raise SourceError(
                "an sftp:// URL must not contain a password; use a client key "
                f"(~/.ssh or ${KEY_VARIABLE})"
            )
        if not parts.hostname or not parts.path:
            raise SourceError(f"{url} is not sftp://[user@]host[:port]/path")
        username = unquote(parts.username) if parts.username else None
        return cls(parts.hostname, parts.port or 22, username, unquote(parts.path))

    def is_folder(self) -> bool:
        return self.path.endswith("/")

    def list_files(self) -> list[InputFile]:
        async def listing(sftp: asyncssh.SFTPClient) -> list[InputFile]:
            if not await sftp.isdir(self.path):
                if not await sftp.isfile(self.path):
                    raise SourceError(f"input {self.url} does not exist")
                return [InputFile(self.url, posixpath.basename(self.path))]
            names = sorted(
                str(name) for name in await sftp.listdir(self.path) if not str(name).startswith(".")
            )
            files = []
            for name in names:
                full = posixpath.join(self.path, name)
                if TEMPORARY_MARK not in name and await sftp.isfile(full):
                    files.append(InputFile(self._with_path(full).url, name))
            return files

        return self._run(listing, "list")

    def _with_path(self, path: str) -> SftpLocation:
        return SftpLocation(self.host, self.port, self.username, path)

    def child(self, relative_name: str) -> Location:
        return self._with_path(posixpath.join(self.path, relative_name))

    def download(self, target: Path) -> None:
        async def get(sftp: asyncssh.SFTPClient) -> None:
            await sftp.get(self.path, str(target))

        self._run(get, "read")

    def upload(self, source: Path) -> None:
        folder, name = posixpath.split(self.path)
        temporary = posixpath.join(folder, f".{name}{TEMPORARY_MARK}-{secrets.token_hex(4)}")

        async def put(sftp: asyncssh.SFTPClient) -> None:
            await sftp.put(str(source), temporary)
            try:
                await sftp.posix_rename(temporary, self.path)
            except asyncssh.SFTPError:
                await sftp.remove(temporary)
                raise

        self._run(put, "write")

    def _run(self, action: Callable[[asyncssh.SFTPClient], Awaitable[T]], verb: str) -> T:
        async def session() -> T:
            async with (
                asyncssh.connect(self.host, self.port, **self._options()) as connection,
                connection.start_sftp_client() as sftp,
            ):
                return await action(sftp)

        try:
            return asyncio.run(session())
        except SourceError:
            raise
        except (OSError, asyncssh.Error) as exc:
            raise SourceError(f"cannot {verb} {self.url}: {exc}") from exc

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
        if self.username:
            options["username"] = self.username
        if os.environ.get(KEY_VARIABLE):
            options["client_keys"] = [os.environ[KEY_VARIABLE]]
        if os.environ.get(KNOWN_HOSTS_VARIABLE):
            options["known_hosts"] = os.environ[KNOWN_HOSTS_VARIABLE]
        return options
