"""Master key rotation: add a primary key, re-encrypt records under it, retire an old key.

A rotation takes these steps, and ``vaultgate keys`` runs each one:

1. ``add_primary_key`` writes the key file with a new master key version as the primary.
2. Every gateway reloads the key file (SIGHUP). From then on it seals new records under the new
   version and opens records of every version in the file.
3. ``reencrypt`` reseals the records of other versions under the primary, in batches, while
   gateways serve traffic. A record is replaced only if it is unchanged since it was read, so a
   record deleted or written meanwhile stays as the gateway left it.
4. ``retire_key`` removes an old version from the key file once no record uses it. Gateways drop
   it on their next reload.

Run step 3 only after step 2 has reached every gateway: a gateway that still has the old key
file cannot open the records that ``reencrypt`` reseals, and it keeps sealing new records under
the old primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from gateway.errors import KeyMaterialError, KeyRotationError
from gateway.store.base import StoredRecord, TokenStore
from gateway.tokens.crypto import RecordCipher, SealedBlobError, fingerprint
from gateway.tokens.keys import KeyFile, KeyRing, parse_key_file, render_key_file

logger = logging.getLogger("gateway.keys")

DEFAULT_BATCH_SIZE: Final = 500
STATE_FORMAT: Final = "vaultgate-reencrypt-state/1"


@dataclass(frozen=True, slots=True)
class ReencryptProgress:
    """Running totals of one ``reencrypt`` call."""

    scanned: int = 0
    """Records read from the store, on every key version."""
    reencrypted: int = 0
    """Records resealed under the primary version and replaced in the store."""
    conflicts: int = 0
    """Records deleted, expired or written again between read and replace, so left as they are."""
    failed: int = 0
    """Records that failed to open: tampered, of layout 1, or of a version not in the key ring."""


@dataclass(frozen=True, slots=True)
class ReencryptReport:
    """Result of one ``reencrypt`` call."""

    primary_version: int
    before: dict[int, int]
    """Live records by key version when the call started."""
    after: dict[int, int]
    """Live records by key version when the call ended."""
    progress: ReencryptProgress
    completed: bool
    """Whether the scan reached the end; False when ``stop_event`` ended it early."""
    elapsed: float
    """Seconds from the start of the scan to its end."""

    @property
    def remaining(self) -> int:
        """Live records under versions other than the primary when the call ended."""
        primary = self.primary_version
        return sum(count for version, count in self.after.items() if version != primary)


def add_primary_key(key_file_path: Path) -> KeyFile:
    """Add a new random master key to the key file as its primary version, and return the result.

    The file is replaced atomically, readable only by its owner. Raises ``KeyMaterialError`` when
    the file cannot be read or parsed, and ``KeyRotationError`` when it cannot be written.
    """
    key_file = read_key_file(key_file_path)
    rotated = key_file.with_new_primary(created=datetime.now(UTC).replace(microsecond=0))
    write_key_file(key_file_path, rotated)
    logger.info("added master key version %d to %s as the primary", rotated.primary, key_file_path)
    return rotated


async def retire_key(key_file_path: Path, version: int, store: TokenStore) -> KeyFile:
    """Remove master key ``version`` from the key file, and return the result.

    Raises ``KeyRotationError``, leaving the file as it is, when ``version`` is the primary, is
    not in the file, or still seals live records in ``store``.
    """
    key_file = read_key_file(key_file_path)
    versions = sorted(master.version for master in key_file.master_keys)
    if version == key_file.primary:
        raise KeyRotationError(
            f"master key version {version} is the primary of {key_file_path}; add a new primary "
            "with `vaultgate keys rotate` and re-encrypt before retiring it"
        )
    if version not in versions:
        raise KeyRotationError(
            f"{key_file_path} has no master key version {version}; its versions are "
            f"{_listed(versions)}"
        )

    in_use = (await store.count_by_key_version()).get(version, 0)
    if in_use:
        raise KeyRotationError(
            f"{in_use} records are still sealed under master key version {version}; run "
            "`vaultgate keys reencrypt` until none are left, then retire it"
        )

    remaining = tuple(master for master in key_file.master_keys if master.version != version)
    retired = replace(key_file, master_keys=remaining)
    write_key_file(key_file_path, retired)
    logger.info("retired master key version %d from %s", version, key_file_path)
    return retired


def read_key_file(path: Path) -> KeyFile:
    """Read and parse a key file; raise ``KeyMaterialError`` naming the file on failure."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyMaterialError(f"cannot read key file {path}: {exc}") from exc
    return parse_key_file(text, source=str(path))


def write_key_file(path: Path, key_file: KeyFile) -> None:
    """Replace the key file at ``path`` atomically with ``key_file``, with mode 0600.

    The new file is written and synced beside the old one, then renamed over it, so a reader sees
    either the old or the new file, and a crash leaves one of them. Run as root, the new file
    gets the owner and group of the old one, so the gateway that reads it still can.
    """
    # NOTE: two rotations of one file at the same time can both read the old file, and the later
    # rename then drops the key the other one added. Run one key command at a time.
    directory = path.parent
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise KeyRotationError(f"cannot write key file {path}: {exc}") from exc
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            _copy_owner(path, file.fileno())
            file.write(render_key_file(key_file))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _sync_directory(directory)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise KeyRotationError(f"cannot write key file {path}: {exc}") from exc


def _copy_owner(path: Path, descriptor: int) -> None:
    if os.geteuid() != 0:
        return
    with contextlib.suppress(FileNotFoundError):
        status = path.stat()
        os.fchown(descriptor, status.st_uid, status.st_gid)


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _listed(versions: list[int]) -> str:
    return ", ".join(str(version) for version in versions)


async def reencrypt(
    store: TokenStore,
    key_ring: KeyRing,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    state_file: Path | None = None,
    stop_event: asyncio.Event | None = None,
    on_batch: Callable[[ReencryptProgress], None] | None = None,
) -> ReencryptReport:
    """Reseal every live record of a non-primary key version under the primary version.

    The store is scanned in batches of about ``batch_size`` records, with one scan and one
    compare-and-set replace call per batch, so gateways keep serving. After each batch the scan
    cursor goes to ``state_file``. A later call with the same file and primary version resumes
    from there, and a completed scan deletes the file. ``stop_event`` ends the scan after the
    current batch, and ``on_batch`` receives the running totals after each batch. Raises the
    store's errors, such as ``StoreUnavailableError``, with the state file at the last batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    cipher = RecordCipher(key_ring)
    primary = key_ring.primary_version
    before = await store.count_by_key_version()
    cursor = _load_cursor(state_file, primary)
    if cursor is not None:
        logger.info("resuming re-encryption from the cursor in %s", state_file)

    progress = ReencryptProgress()
    started = time.monotonic()
    completed = False
    while not (stop_event is not None and stop_event.is_set()):
        records, cursor = await _scan(store, cursor, batch_size, state_file)
        progress = await _reencrypt_batch(store, cipher, records, progress)
        if cursor is None:
            completed = True
        else:
            _save_cursor(state_file, primary, cursor)
        if on_batch is not None:
            on_batch(progress)
        if completed:
            break

    elapsed = time.monotonic() - started
    if completed:
        _delete_state(state_file)
    after = await store.count_by_key_version()
    report = ReencryptReport(primary, before, after, progress, completed, elapsed)
    logger.info(
        "re-encryption to master key version %d %s: %d records scanned, %d re-encrypted, "
        "%d changed meanwhile, %d failed to open, %d left on other versions",
        primary,
        "finished" if completed else "stopped",
        progress.scanned,
        progress.reencrypted,
        progress.conflicts,
        progress.failed,
        report.remaining,
    )
    return report


async def _scan(
    store: TokenStore, cursor: str | None, batch_size: int, state_file: Path | None
) -> tuple[list[StoredRecord], str | None]:
    try:
        return await store.scan_records(cursor, batch_size)
    except ValueError as exc:
        # Only a cursor from the state file can be foreign to the store, such as one from a scan
        # of another backend.
        raise KeyRotationError(
            f"the store rejected the cursor in {state_file} ({exc}); delete the file to start over"
        ) from exc


async def _reencrypt_batch(
    store: TokenStore,
    cipher: RecordCipher,
    records: list[StoredRecord],
    progress: ReencryptProgress,
) -> ReencryptProgress:
    """Reseal the batch's records of other versions and replace them in one store call."""
    primary = cipher.key_ring.primary_version
    replacements: list[tuple[bytes, StoredRecord]] = []
    failed = 0
    for record in records:
        if record.key_version == primary:
            continue
        try:
            blob = cipher.reseal_record(record.lookup_key, record.blob)
        except SealedBlobError as exc:
            logger.error(
                "record %s of key version %d failed to open, so it stays as it is: %s",
                fingerprint(record.lookup_key),
                record.key_version,
                exc,
            )
            failed += 1
            continue
        resealed = StoredRecord(record.lookup_key, blob, primary, record.expires_at)
        replacements.append((record.blob, resealed))

    replaced = await store.replace_many(replacements) if replacements else 0
    return ReencryptProgress(
        scanned=progress.scanned + len(records),
        reencrypted=progress.reencrypted + replaced,
        conflicts=progress.conflicts + len(replacements) - replaced,
        failed=progress.failed + failed,
    )


def _load_cursor(state_file: Path | None, primary: int) -> str | None:
    """Return the saved cursor of a scan towards ``primary``, or None to start from the start.

    Raises ``KeyRotationError`` for a state file that cannot be read or is not one.
    """
    if state_file is None or not state_file.exists():
        return None
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyRotationError(
            f"cannot read re-encryption state file {state_file}: {exc}; delete it to start over"
        ) from exc
    valid = (
        isinstance(state, dict)
        and state.get("format") == STATE_FORMAT
        and isinstance(state.get("primary_version"), int)
        and isinstance(state.get("cursor"), str)
    )
    if not valid:
        raise KeyRotationError(
            f"{state_file} is not a re-encryption state file of this vaultgate version; delete "
            "it to start over"
        )
    if state["primary_version"] != primary:
        # The records that a scan towards an older primary passed are not under the current
        # primary yet, so the scan starts over.
        logger.info(
            "ignoring %s, which is from a re-encryption towards master key version %d",
            state_file,
            state["primary_version"],
        )
        return None
    cursor: str = state["cursor"]
    return cursor


def _delete_state(state_file: Path | None) -> None:
    if state_file is not None:
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()


def _save_cursor(state_file: Path | None, primary: int, cursor: str) -> None:
    """Write the state file atomically: a crash leaves the old or the new cursor, never a mix.

    A lost update only makes the next call scan a batch again, so the file is not synced.
    """
    if state_file is None:
        return
    state = {"format": STATE_FORMAT, "primary_version": primary, "cursor": cursor}
    temporary = state_file.with_name(f".{state_file.name}.tmp")
    try:
        temporary.write_text(json.dumps(state) + "\n", encoding="utf-8")
        os.replace(temporary, state_file)
    except OSError as exc:
        raise KeyRotationError(
            f"cannot write re-encryption state file {state_file}: {exc}"
        ) from exc
