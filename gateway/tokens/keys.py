"""Key files and the key ring: the master keys that seal values and the index key.

A key file is YAML::

    format: vaultgate-keys/1
    development: false
    primary: 2
    index_key: <base64 of 32 bytes>
    master_keys:
      - {version: 1, key: <base64 of 32 bytes>, created: "2025-01-02T03:04:05Z"}
      - {version: 2, key: <base64 of 32 bytes>, created: "2025-06-01T00:00:00Z"}

New records are sealed under the ``primary`` master key, and each record names the version it
was sealed under, so rotation adds a key and moves ``primary`` to it while older records still
open. Re-encryption can then find the records of an old version by their ``key_version``.

The index key never rotates. The lookup secret (token to store key) and the blind-index secret
(value to deterministic index entry) are derived from it with HKDF-SHA256 under distinct labels,
so deterministic tokens and lookups survive a master-key rotation. The audit key, which signs the
chain of audit records, is derived the same way, so an audit file stays verifiable after a
rotation too.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import KeyMaterialError
from gateway.secret import Secret

if TYPE_CHECKING:
    from gateway.config.model import KeysConfig

logger = logging.getLogger("gateway.keys")

KEY_FILE_FORMAT: Final = "vaultgate-keys/1"
KEY_BYTES: Final = 32
GENERATE_COMMAND: Final = "vaultgate keys generate > keys.yaml"

# HKDF info labels of the secrets derived from the index key. Changing one changes every
# deterministic token and every store key, so a new construction gets a new label instead.
LOOKUP_LABEL: Final = b"vaultgate lookup key v1"
BLIND_INDEX_LABEL: Final = b"vaultgate blind index v1"
TOKEN_SEAL_LABEL: Final = b"vaultgate index entry seal v1"
AUDIT_LABEL: Final = b"vaultgate audit record mac v1"

_FIELDS: Final = frozenset({"format", "development", "primary", "index_key", "master_keys"})
_MASTER_KEY_FIELDS: Final = frozenset({"version", "key", "created"})
_GROUP_OR_OTHERS: Final = 0o077


@dataclass(frozen=True, slots=True)
class MasterKey:
    version: int
    key: Secret[bytes]
    created: datetime


@dataclass(frozen=True, slots=True)
class KeyFile:
    """The parsed content of a key file."""

    development: bool
    primary: int
    master_keys: tuple[MasterKey, ...]
    index_key: Secret[bytes]

    def with_new_primary(self, *, created: datetime) -> KeyFile:
        """Return a copy with a new random master key that becomes the primary (key rotation)."""
        version = max(master.version for master in self.master_keys) + 1
        new_key = MasterKey(version, Secret(secrets.token_bytes(KEY_BYTES)), created)
        return replace(self, primary=version, master_keys=(*self.master_keys, new_key))


class KeyRing:
    """Master keys by version, the primary version, and the secrets derived from the index key."""

    def __init__(self, key_file: KeyFile) -> None:
        self.development = key_file.development
        self.primary_version = key_file.primary
        self._master_keys: Mapping[int, Secret[bytes]] = {
            master.version: master.key for master in key_file.master_keys
        }
        if self.primary_version not in self._master_keys:
            raise KeyMaterialError(f"primary master key version {key_file.primary} is missing")

        index_key = key_file.index_key.reveal()
        self.lookup_secret = Secret(_derive(index_key, LOOKUP_LABEL))
        self.blind_index_secret = Secret(_derive(index_key, BLIND_INDEX_LABEL))
        self.token_seal_key = Secret(_derive(index_key, TOKEN_SEAL_LABEL))
        self.audit_key = Secret(_derive(index_key, AUDIT_LABEL))

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._master_keys))

    def master_key(self, version: int) -> Secret[bytes]:
        """Return the master key of ``version``, or raise ``KeyMaterialError`` if it is missing."""
        try:
            return self._master_keys[version]
        except KeyError:
            raise KeyMaterialError(
                f"no master key with version {version} in the key ring"
            ) from None

    def __repr__(self) -> str:
        return f"KeyRing(primary_version={self.primary_version}, versions={self.versions})"


def _derive(index_key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label).derive(
        index_key
    )


_warned_development: set[str] = set()
"""Key sources whose development-key warning this process has logged."""


def load_key_ring(
    config: KeysConfig,
    *,
    base_dir: Path,
    generate_missing: bool = True,
    warn_development: bool = True,
) -> KeyRing:
    """Load the key ring from the environment variable or key file that ``config`` names.

    The environment variable, when set, wins over the file. A relative ``config.file`` is
    relative to ``base_dir``. With ``config.development`` on and no key anywhere, a development
    key file is generated there, unless ``generate_missing`` is false: tools that only read
    existing data pass false, because a new key cannot open anything. A development key is
    warned about once per process and source, and not at all with ``warn_development`` false,
    which pipeline worker processes pass because their parent warned already. Raises
    ``KeyMaterialError`` when no key is found outside development, when a development key is
    used outside development, or when the key is malformed.
    """
    path = _resolve(config.file, base_dir)
    text, source = _read_configured_key(config, path)

    if text is None and not generate_missing:
        raise KeyMaterialError(f"no master key found: {_where(config, path)}")
    if text is None:
        if not config.development:
            raise KeyMaterialError(
                f"no master key found: {_where(config, path)}. Create one with "
                f"`{GENERATE_COMMAND}` and point keys.file at it, or set keys.development to true "
                "to generate a development key"
            )
        if path is None:
            raise KeyMaterialError(
                "keys.development is on but keys.file is not set, so there is nowhere to write a "
                "development key. Set keys.file"
            )
        text, source = _create_development_key_file(path), str(path)
        # Creating the file logged its own warning with the same advice.
        _warned_development.add(source)

    key_file = parse_key_file(text, source=source)
    if key_file.development and not config.development:
        raise KeyMaterialError(
            f"{source} is a development key, which is not allowed with keys.development off. "
            f"Create a real key with `{GENERATE_COMMAND}` and point keys.file at it"
        )
    if key_file.development and warn_development and source not in _warned_development:
        # Once per process and key source. Forked gateway workers inherit the set.
        _warned_development.add(source)
        logger.warning(
            "using the DEVELOPMENT key from %s: never use it for real data. Create a real key "
            "with `%s`, point keys.file at it and set keys.development to false",
            source,
            GENERATE_COMMAND,
        )

    ring = KeyRing(key_file)
    logger.info(
        "loaded %d master key(s) from %s (versions %s, primary %d)",
        len(ring.versions),
        source,
        ", ".join(str(version) for version in ring.versions),
        ring.primary_version,
    )
    return ring


def _resolve(file: Path | None, base_dir: Path) -> Path | None:
    if file is None:
        return None
    return file if file.is_absolute() else base_dir / file


def _where(config: KeysConfig, path: Path | None) -> str:
    places = []
    if config.env:
        places.append(f"environment variable {config.env} is not set")
    places.append("keys.file is not set" if path is None else f"{path} does not exist")
    return " and ".join(places)


def _read_configured_key(config: KeysConfig, path: Path | None) -> tuple[str | None, str]:
    """Return the key file text and where it came from, or None when no key is configured."""
    if config.env and config.env in os.environ:
        text = os.environ[config.env]
        source = f"environment variable {config.env}"
        if not text.strip():
            raise KeyMaterialError(f"{source} is set but empty. Set it to a whole key file")
        return text, source

    if path is None or not path.exists():
        return None, ""
    _warn_if_shared(path)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyMaterialError(f"cannot read key file {path}: {exc}") from exc


def _warn_if_shared(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & _GROUP_OR_OTHERS:
        logger.warning(
            "key file %s is accessible to group or others (mode %03o). Restrict it with chmod 600",
            path,
            mode,
        )


def _create_development_key_file(path: Path) -> str:
    """Write a new development key file readable only by its owner, and return its text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = generate_key_file_text(development=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another gateway process created the file after the existence check, so that one is used.
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyMaterialError(f"cannot create development key file {path}: {exc}") from exc

    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    logger.warning(
        "generated a DEVELOPMENT key file at %s. Its key sits beside the data it protects, so "
        "it is for development only. Create a real key with `%s`, point keys.file at it and "
        "set keys.development to false",
        path,
        GENERATE_COMMAND,
    )
    return text


def generate_key_file_text(development: bool) -> str:
    """Return the text of a new key file with one random master key and a random index key."""
    created = datetime.now(UTC).replace(microsecond=0)
    master = MasterKey(1, Secret(secrets.token_bytes(KEY_BYTES)), created)
    key_file = KeyFile(
        development=development,
        primary=1,
        master_keys=(master,),
        index_key=Secret(secrets.token_bytes(KEY_BYTES)),
    )
    return render_key_file(key_file)


def render_key_file(key_file: KeyFile) -> str:
    """Return the YAML text of ``key_file``, which ``parse_key_file`` reads back unchanged."""
    header = [
        "# vaultgate key file. Whoever has it can reveal every tokenized value: keep it readable",
        "# only by the gateway (chmod 600), and back it up, because without it no token opens.",
    ]
    if key_file.development:
        header.append("# DEVELOPMENT KEY: generated for development; never use it for real data.")
    lines = [
        *header,
        f"format: {KEY_FILE_FORMAT}",
        f"development: {'true' if key_file.development else 'false'}",
        f"primary: {key_file.primary}",
        f'index_key: "{_encode(key_file.index_key)}"',
        "master_keys:",
    ]
    for master in key_file.master_keys:
        created = master.created.astimezone(UTC).isoformat().replace("+00:00", "Z")
        lines += [
            f"  - version: {master.version}",
            f'    key: "{_encode(master.key)}"',
            f'    created: "{created}"',
        ]
    return "\n".join(lines) + "\n"


def _encode(key: Secret[bytes]) -> str:
    return base64.b64encode(key.reveal()).decode("ascii")


def parse_key_file(text: str, *, source: str) -> KeyFile:
    """Parse and validate key file text. ``source`` names the text in errors.

    Raises ``KeyMaterialError``. Messages give the field and line but never file content,
    because the content is key material.
    """
    document = _load_yaml(text, source)
    if not isinstance(document, dict):
        raise KeyMaterialError(f"{source}: not a key file (expected a mapping of fields)")
    unknown = sorted(str(name) for name in document.keys() - _FIELDS)
    if unknown:
        raise KeyMaterialError(f"{source}: unknown fields {', '.join(unknown)}")
    if document.get("format") != KEY_FILE_FORMAT:
        raise KeyMaterialError(f"{source}: format must be {KEY_FILE_FORMAT}")

    development = document.get("development")
    if not isinstance(development, bool):
        raise KeyMaterialError(f"{source}: development must be true or false")
    primary = _version(document.get("primary"), f"{source}: primary")
    index_key = _key_bytes(document.get("index_key"), f"{source}: index_key")
    master_keys = _master_keys(document.get("master_keys"), source)

    if primary not in {master.version for master in master_keys}:
        raise KeyMaterialError(
            f"{source}: primary is {primary}, but no master key has that version"
        )
    return KeyFile(development, primary, master_keys, index_key)


def _load_yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # The error's own text quotes the offending line, which may contain a key, so only the
        # position is reported and the exception is not chained.
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise KeyMaterialError(f"{source}: invalid YAML at line {line}") from None
    except yaml.YAMLError:
        raise KeyMaterialError(f"{source}: invalid YAML") from None


def _master_keys(entries: object, source: str) -> tuple[MasterKey, ...]:
    if not isinstance(entries, list) or not entries:
        raise KeyMaterialError(f"{source}: master_keys must be a non-empty list")
    master_keys: list[MasterKey] = []
    for position, entry in enumerate(entries):
        where = f"{source}: master_keys[{position}]"
        if not isinstance(entry, dict):
            raise KeyMaterialError(f"{where} must be a mapping with version, key and created")
        unknown = sorted(str(name) for name in entry.keys() - _MASTER_KEY_FIELDS)
        if unknown:
            raise KeyMaterialError(f"{where}: unknown fields {', '.join(unknown)}")
        version = _version(entry.get("version"), f"{where}.version")
        if any(master.version == version for master in master_keys):
            raise KeyMaterialError(f"{where}.version: version {version} appears twice")
        key = _key_bytes(entry.get("key"), f"{where}.key")
        created = _timestamp(entry.get("created"), f"{where}.created")
        master_keys.append(MasterKey(version, key, created))
    return tuple(master_keys)


def _version(value: object, where: str) -> int:
    # bool is an int in Python, and `primary: true` is a mistake, not version 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 0xFFFFFFFF:
        raise KeyMaterialError(f"{where} must be an integer from 1 to 4294967295")
    return value


def _key_bytes(value: object, where: str) -> Secret[bytes]:
    expected = f"{where} must be the base64 encoding of {KEY_BYTES} random bytes"
    if not isinstance(value, str):
        raise KeyMaterialError(expected)
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise KeyMaterialError(expected) from None
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(f"{expected} (it decodes to {len(key)} bytes)")
    return Secret(key)


def _timestamp(value: object, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise KeyMaterialError(f"{where} must be an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise KeyMaterialError(f"{where} must be an ISO 8601 time")
    return value if value.tzinfo else value.replace(tzinfo=UTC)
