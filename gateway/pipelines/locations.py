"""Where inputs come from and outputs go: local paths, ``s3://bucket/key`` and
``sftp://[user@]host[:port]/path``.

An input is read from a local file. A remote one is first copied to a temporary local file in
blocks, so memory stays constant and the workers can read their partitions from disk. An output
is written to a temporary local file, and ``commit`` then moves it into place in one step: a
rename on disk and over SFTP, the completion of the upload on S3. So a failed run never leaves a
partial output where the final one belongs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from gateway.errors import SourceError

TEMPORARY_MARK: Final = ".vaultgate-partial"
"""Part of the name of every temporary output, so that a reader can skip unfinished files."""


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file: where it is, and its name relative to the folder it was listed from."""

    location: str
    relative_name: str


class Location(ABC):
    """A file or folder in one kind of storage."""

    url: str

    @abstractmethod
    def is_folder(self) -> bool:
        """Return whether the location names a folder (or an S3 prefix ending in ``/``)."""

    @abstractmethod
    def list_files(self) -> list[InputFile]:
        """Return the files of a folder, sorted by name, or the file itself."""

    @abstractmethod
    def child(self, relative_name: str) -> Location:
        """Return the location of a file under this folder."""

    @abstractmethod
    def download(self, target: Path) -> None:
        """Copy the file to a local path. Raises ``SourceError`` when it cannot be read."""

    @abstractmethod
    def upload(self, source: Path) -> None:
        """Put a local file here in one step. Raises ``SourceError`` when that fails."""

    def size(self) -> int | None:
        return None


class LocalLocation(Location):
    def __init__(self, path: Path, url: str | None = None) -> None:
        self.path = path
        self.url = url or str(path)
        """The path as given; a trailing separator marks a folder that may not exist yet."""

    def is_folder(self) -> bool:
        return self.path.is_dir() or self.url.endswith(os.sep)

    def list_files(self) -> list[InputFile]:
        if not self.path.exists():
            raise SourceError(f"input {self.path} does not exist")
        if not self.path.is_dir():
            return [InputFile(self.url, self.path.name)]
        files = sorted(
            entry
            for entry in self.path.iterdir()
            if entry.is_file()
            and TEMPORARY_MARK not in entry.name
            and not entry.name.startswith(".")
        )
        return [InputFile(str(entry), entry.name) for entry in files]

    def child(self, relative_name: str) -> Location:
        return LocalLocation(self.path / relative_name)

    def download(self, target: Path) -> None:
        raise AssertionError("local files are read in place")

    def upload(self, source: Path) -> None:
        try:
            os.replace(source, self.path)
        except OSError as exc:
            raise SourceError(f"cannot move the output into place at {self.path}: {exc}") from exc

    def size(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None


def parse_location(url: str) -> Location:
    """Return the location a command-line argument or spec value names."""
    if url.startswith("s3://"):
        from gateway.pipelines.s3 import S3Location

        return S3Location.parse(url)
    if url.startswith("sftp://"):
        from gateway.pipelines.sftp import SftpLocation

        return SftpLocation.parse(url)
    if "://" in url:
        raise SourceError(
            f"unsupported location {url.split('://')[0]}://; use a local path, s3:// or sftp://"
        )
    return LocalLocation(Path(url), url)


@contextlib.contextmanager
def local_copy(location: Location, scratch: Path) -> Iterator[Path]:
    """Yield a local path with the content of ``location``, removed afterwards if it is a copy."""
    if isinstance(location, LocalLocation):
        yield location.path
        return
    descriptor, name = tempfile.mkstemp(prefix="input-", dir=scratch)
    os.close(descriptor)
    path = Path(name)
    try:
        location.download(path)
        yield path
    finally:
        path.unlink(missing_ok=True)


class PendingOutput:
    """A temporary local file that becomes the output at ``commit``, or disappears at ``discard``.

    A local output's temporary file sits in the output's folder, so that ``commit`` is a rename
    within one file system.
    """

    def __init__(self, location: Location, scratch: Path) -> None:
        self.location = location
        if isinstance(location, LocalLocation):
            folder = location.path.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SourceError(f"cannot create the output folder {folder}: {exc}") from exc
            prefix = f".{location.path.name}{TEMPORARY_MARK}-"
        else:
            folder = scratch
            prefix = f"output{TEMPORARY_MARK}-"
        try:
            descriptor, name = tempfile.mkstemp(prefix=prefix, dir=folder)
        except OSError as exc:
            raise SourceError(f"cannot create a temporary output in {folder}: {exc}") from exc
        os.close(descriptor)
        self.path = Path(name)

    def commit(self) -> None:
        try:
            with open(self.path, "rb+") as file:
                os.fsync(file.fileno())
            self.location.upload(self.path)
        finally:
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def remote_name(path: str) -> str:
    return PurePosixPath(path).name
