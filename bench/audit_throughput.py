"""Measure how many audit records per second FileAuditLog writes, per fsync mode.

Usage: .venv/bin/python bench/audit_throughput.py [DIRECTORY]

Each run writes one-event record() calls to a new file in DIRECTORY (default: a temporary
directory, which is often tmpfs: pass a directory on the disk the gateway would use). It runs
one caller in sequence, then 100 concurrent callers, with fsync interval (1 s) and always.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from gateway.audit.events import AuditEvent, Outcome
from gateway.audit.verify import verify_audit_file
from gateway.audit.writer import AuditFile, FileAuditLog, FsyncMode
from gateway.secret import Secret

KEY = Secret(bytes(32))
EVENT = AuditEvent(
    action="detokenize",
    outcome=Outcome.ALLOWED,
    client="backend",
    connection="stripe",
    operation="create-payment-method",
    class_name="card.pan",
    token_fingerprint="5be2c81f0a9d3e47",  # noqa: S106, a fingerprint and not a secret
    view="plain",
)


async def run(path: Path, fsync: FsyncMode, callers: int, calls_per_caller: int) -> None:
    log = FileAuditLog(AuditFile(path, fsync=fsync, fsync_interval=1.0), KEY)
    await log.start()

    async def caller() -> None:
        for _ in range(calls_per_caller):
            await log.record([EVENT])

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    batches = log.batches_written
    await log.close()

    records = callers * calls_per_caller
    assert verify_audit_file(path, KEY).records == records
    print(
        f"fsync={fsync:8} callers={callers:3}  {records / elapsed:9.0f} records/s  "
        f"{records / batches:6.1f} records per write  ({records} records in {elapsed:.2f} s)"
    )


# Calls per run: fewer with fsync always, where each call of a lone caller waits for the disk.
RUNS: tuple[tuple[FsyncMode, int], ...] = (("interval", 20000), ("always", 500))


async def main(directory: Path) -> None:
    for fsync, calls in RUNS:
        await run(directory / f"{fsync}-1.jsonl", fsync, 1, calls)
        await run(directory / f"{fsync}-100.jsonl", fsync, 100, calls // 10)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(Path(tempfile.mkdtemp(dir=target))))
    else:
        with tempfile.TemporaryDirectory() as temporary:
            asyncio.run(main(Path(temporary)))
