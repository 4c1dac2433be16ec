from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.audit.records import GENESIS, ChainPosition
from gateway.audit.verify import verify_audit_file
from gateway.audit.writer import MAX_LINE_BYTES, AuditFile, FileAuditLog
from gateway.errors import AuditUnavailableError
from tests.audit.conftest import (
    AUDIT_KEY,
    OTHER_KEY,
    file_mode,
    fingerprints,
    make_event,
    read_lines,
    write_lines,
)

LONG_INTERVAL = 3600.0
"""An fsync interval that no test outlasts, so only close() fsyncs."""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "audit.jsonl"


@contextlib.asynccontextmanager
async def started(
    path: Path, *, fsync: str = "interval", interval: float = LONG_INTERVAL
) -> AsyncIterator[FileAuditLog]:
    mode = "always" if fsync == "always" else "interval"
    log = FileAuditLog(AuditFile(path, fsync=mode, fsync_interval=interval), AUDIT_KEY)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


async def write_file(path: Path, count: int) -> None:
    async with started(path) as log:
        await log.record([make_event(number) for number in range(1, count + 1)])


@contextlib.contextmanager
def file_attribute(path: Path, attribute: str) -> Iterator[None]:
    """Set a file attribute with chattr (``i`` immutable, ``a`` append only), or skip."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    result = subprocess.run([chattr, f"+{attribute}", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"chattr +{attribute} failed (needs root and ext4 or similar): {result.stderr}")
    try:
        yield
    finally:
        subprocess.run([chattr, f"-{attribute}", str(path)], check=True)


async def test_records_are_appended_and_verify(path: Path) -> None:
    async with started(path) as log:
        await log.record([make_event(1), make_event(2)])
        await log.record([make_event(3)])
        position = log.position

    result = verify_audit_file(path, AUDIT_KEY)
    assert result.ok
    assert result.records == 3
    assert position == ChainPosition(3, result.last_mac)
    assert fingerprints(read_lines(path)) == [1, 2, 3]


async def test_new_file_is_private(path: Path) -> None:
    async with started(path) as log:
        await log.record([make_event(1)])

    assert file_mode(path) == 0o600
    assert file_mode(path.parent) == 0o700


async def test_concurrent_calls_share_one_write(path: Path) -> None:
    callers = 50
    async with started(path) as log:
        # Every call is queued before the writer task first runs, so all share its first batch.
        await asyncio.gather(
            *(log.record([make_event(2 * n), make_event(2 * n + 1)]) for n in range(callers))
        )
        assert log.batches_written == 1

    numbers = fingerprints(read_lines(path))
    assert len(numbers) == 2 * callers
    # The events of one call stay together and in order.
    for index in range(0, len(numbers), 2):
        assert numbers[index] % 2 == 0
        assert numbers[index + 1] == numbers[index] + 1
    assert verify_audit_file(path, AUDIT_KEY).ok


async def test_calls_during_a_write_form_next_batch(path: Path) -> None:
    async with started(path) as log:
        first = asyncio.create_task(log.record([make_event(1)]))
        # The first call starts the writer task, which runs before the later calls are queued.
        await asyncio.sleep(0)
        later = [asyncio.create_task(log.record([make_event(n)])) for n in range(2, 12)]
        await asyncio.gather(first, *later)

        assert log.batches_written == 2

    assert verify_audit_file(path, AUDIT_KEY).records == 11


async def test_chain_continues_after_restart(path: Path) -> None:
    await write_file(path, 3)

    async with started(path) as log:
        assert log.position.seq == 3
        await log.record([make_event(4), make_event(5)])

    result = verify_audit_file(path, AUDIT_KEY)
    assert result.ok
    assert result.records == 5
    assert result.last_seq == 5


async def test_close_logs_chain_end(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        await write_file(path, 2)

    result = verify_audit_file(path, AUDIT_KEY)
    closed = [record.getMessage() for record in caplog.records if "closed" in record.getMessage()]
    assert closed == [
        f"audit file {path} closed; the chain ends at sequence 2, mac {result.last_mac}"
    ]


async def test_empty_events_write_nothing(path: Path) -> None:
    async with started(path) as log:
        await log.record([])
        assert log.batches_written == 0
        assert log.position == ChainPosition(0, GENESIS)

    assert read_lines(path) == []


async def test_record_outside_open_raises(path: Path) -> None:
    log = FileAuditLog(AuditFile(path), AUDIT_KEY)
    with pytest.raises(AuditUnavailableError, match="is not open"):
        await log.record([make_event(1)])

    await log.start()
    await log.close()
    with pytest.raises(AuditUnavailableError, match="is not open"):
        await log.record([make_event(1)])


async def test_unencodable_event_fails_only_its_call(path: Path) -> None:
    bad = dataclasses.replace(make_event(1), reason="\ud800")
    async with started(path) as log:
        results = await asyncio.gather(
            log.record([bad]), log.record([make_event(2)]), return_exceptions=True
        )

    assert isinstance(results[0], AuditUnavailableError)
    assert results[1] is None
    result = verify_audit_file(path, AUDIT_KEY)
    assert result.ok
    assert result.records == 1


async def test_edited_tail_rejected_at_start(path: Path) -> None:
    await write_file(path, 3)
    lines = read_lines(path)
    lines[-1] = lines[-1].replace(b'"client":"backend"', b'"client":"intruder"')
    write_lines(path, lines)

    log = FileAuditLog(AuditFile(path), AUDIT_KEY)
    with pytest.raises(AuditUnavailableError) as caught:
        await log.start()

    message = str(caught.value)
    assert "does not verify under the audit key" in message
    assert "invalid mac" in message
    assert "vaultgate audit verify" in message
    assert read_lines(path) == lines


async def test_other_key_rejected_at_start(path: Path) -> None:
    await write_file(path, 1)

    log = FileAuditLog(AuditFile(path), OTHER_KEY)
    with pytest.raises(AuditUnavailableError, match="does not verify under the audit key"):
        await log.start()


async def test_incomplete_tail_rejected_with_fix(path: Path) -> None:
    await write_file(path, 2)
    lines = read_lines(path)
    good_size = len(b"".join(lines))
    write_lines(path, [*lines, b'{"action":"deto'])

    log = FileAuditLog(AuditFile(path), AUDIT_KEY)
    with pytest.raises(AuditUnavailableError) as caught:
        await log.start()
    assert "incomplete" in str(caught.value)
    assert f"truncate -s {good_size} {path}" in str(caught.value)

    os.truncate(path, good_size)
    async with started(path) as restarted:
        assert restarted.position.seq == 2


async def test_overlong_last_line_rejected(path: Path) -> None:
    write_lines(path, [b"x" * (MAX_LINE_BYTES + 10) + b"\n"])

    log = FileAuditLog(AuditFile(path), AUDIT_KEY)
    with pytest.raises(AuditUnavailableError, match="longer than"):
        await log.start()


async def test_long_file_tail_found(path: Path) -> None:
    # Enough records that the last line starts far before the final read chunk.
    await write_file(path, 200)

    async with started(path) as log:
        assert log.position.seq == 200


async def test_second_writer_rejected(path: Path) -> None:
    async with started(path) as first:
        second = FileAuditLog(AuditFile(path), AUDIT_KEY)
        with pytest.raises(AuditUnavailableError, match="locked by another writer"):
            await second.start()
        await first.record([make_event(1)])

    async with started(path) as third:
        assert third.position.seq == 1


async def test_unusable_directory_rejected(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the directory should be")

    log = FileAuditLog(AuditFile(tmp_path / "var" / "audit.jsonl"), AUDIT_KEY)
    with pytest.raises(AuditUnavailableError, match="cannot open audit file"):
        await log.start()


async def test_readable_by_others_warns(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await write_file(path, 1)
    os.chmod(path, 0o644)

    with caplog.at_level(logging.WARNING, logger="gateway.audit"):
        async with started(path):
            pass

    assert any("chmod 600" in record.getMessage() for record in caplog.records)


async def test_fsync_always_syncs_each_batch(path: Path) -> None:
    async with started(path, fsync="always") as log:
        await log.record([make_event(1)])
        assert log.file.fsyncs == 1
        await log.record([make_event(2)])
        assert log.file.fsyncs == 2

    assert log.file.fsyncs == 2


async def test_fsync_interval_defers_to_close(path: Path) -> None:
    async with started(path, fsync="interval", interval=LONG_INTERVAL) as log:
        await log.record([make_event(1)])
        await log.record([make_event(2)])
        assert log.file.fsyncs == 0

    assert log.file.fsyncs == 1


async def test_fsync_interval_syncs_in_background(path: Path) -> None:
    async with started(path, fsync="interval", interval=0.01) as log:
        await log.record([make_event(1)])
        # Waits up to 10 s for the background task, without asserting how long it takes.
        for _ in range(1000):
            if log.file.fsyncs:
                break
            await asyncio.sleep(0.01)
        synced = log.file.fsyncs
        assert synced >= 1

    # Nothing new was written, so close() had nothing to fsync.
    assert log.file.fsyncs == synced


def test_invalid_fsync_mode_raises(path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        AuditFile(path, fsync="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("fsync", ["always", "interval"])
async def test_write_failure_raises_and_recovers(path: Path, fsync: str) -> None:
    async with started(path, fsync=fsync) as log:
        await log.record([make_event(1)])
        before = read_lines(path)

        with file_attribute(path, "i"):
            with pytest.raises(AuditUnavailableError, match="cannot write audit file"):
                await log.record([make_event(2)])
            assert log.position.seq == 1
            assert read_lines(path) == before

        # Nothing of the failed batch reached the file, so the chain goes on from record 1.
        await log.record([make_event(3)])

    result = verify_audit_file(path, AUDIT_KEY)
    assert result.ok
    assert result.records == 2
    assert fingerprints(read_lines(path)) == [1, 3]


async def test_append_only_attribute_allows_writing(path: Path) -> None:
    await write_file(path, 1)

    with file_attribute(path, "a"):
        async with started(path, fsync="always") as log:
            await log.record([make_event(2)])

    assert verify_audit_file(path, AUDIT_KEY).records == 2
