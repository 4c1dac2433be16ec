from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from gateway.audit.log import AuditLog
from gateway.audit.records import ChainPosition
from gateway.audit.stream import AuditStream, RedisStreamAuditLog
from gateway.audit.verify import verify_lines
from gateway.audit.writer import AuditFile, FileAuditLog, MultiAuditLog, open_audit_log
from gateway.config.audit import AuditConfig
from gateway.errors import AuditUnavailableError
from tests.audit.conftest import AUDIT_KEY, OTHER_KEY, make_event, make_records, read_lines
from tests.redis_server import RedisServer

TIMEOUT = 5.0
DOWN_TIMEOUT = 0.5
"""Redis timeout in seconds for tests that stop the server."""


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> str:
    return f"audit:{request.node.name}"


def new_stream(server: RedisServer, name: str, *, max_length: int = 1000) -> AuditStream:
    return AuditStream(server.url, name, max_length=max_length, timeout=TIMEOUT)


@contextlib.asynccontextmanager
async def started(log: AuditLog) -> AsyncIterator[AuditLog]:
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def stream_lines(server: RedisServer, name: str) -> list[bytes]:
    """Return the ``record`` field of every entry with a newline, checking its ``seq`` field."""
    with redis.Redis.from_url(server.url) as client:
        entries = client.xrange(name)
    lines = []
    for _, fields in entries:
        line = fields[b"record"] + b"\n"
        assert fields[b"seq"] == str(json.loads(line)["seq"]).encode()
        lines.append(line)
    return lines


async def test_stream_log_appends_verifiable_records(
    redis_server: RedisServer, stream_name: str
) -> None:
    log = RedisStreamAuditLog(new_stream(redis_server, stream_name), AUDIT_KEY)
    async with started(log):
        await log.record([make_event(1), make_event(2)])
        await log.record([make_event(3)])
        position = log.position

    lines = stream_lines(redis_server, stream_name)
    result = verify_lines(lines, AUDIT_KEY)
    assert result.ok
    assert result.records == 3
    assert position == ChainPosition(3, result.last_mac)
    with redis.Redis.from_url(redis_server.url) as client:
        seqs = [fields[b"seq"] for _, fields in client.xrange(stream_name)]
    assert seqs == [b"1", b"2", b"3"]


async def test_stream_chain_continues_after_restart(
    redis_server: RedisServer, stream_name: str
) -> None:
    async with started(
        RedisStreamAuditLog(new_stream(redis_server, stream_name), AUDIT_KEY)
    ) as log:
        await log.record([make_event(1), make_event(2)])

    async with started(
        RedisStreamAuditLog(new_stream(redis_server, stream_name), AUDIT_KEY)
    ) as log:
        assert log.position.seq == 2
        await log.record([make_event(3)])

    result = verify_lines(stream_lines(redis_server, stream_name), AUDIT_KEY)
    assert result.ok
    assert result.last_seq == 3


async def test_stream_tampered_tail_rejected(redis_server: RedisServer, stream_name: str) -> None:
    forged = make_records(1, key=OTHER_KEY)[0]
    with redis.Redis.from_url(redis_server.url) as client:
        client.xadd(stream_name, {"seq": "1", "record": forged.line.rstrip(b"\n")})

    log = RedisStreamAuditLog(new_stream(redis_server, stream_name), AUDIT_KEY)
    with pytest.raises(AuditUnavailableError, match="does not verify under the audit key"):
        await log.start()


async def test_stream_mismatched_seq_field_rejected(
    redis_server: RedisServer, stream_name: str
) -> None:
    record = make_records(1)[0]
    with redis.Redis.from_url(redis_server.url) as client:
        client.xadd(stream_name, {"seq": "9", "record": record.line.rstrip(b"\n")})

    log = RedisStreamAuditLog(new_stream(redis_server, stream_name), AUDIT_KEY)
    with pytest.raises(AuditUnavailableError, match="seq field"):
        await log.start()


async def test_stream_second_writer_detected(redis_server: RedisServer, stream_name: str) -> None:
    first = RedisStreamAuditLog(new_stream(redis_server, stream_name), AUDIT_KEY)
    second = RedisStreamAuditLog(new_stream(redis_server, stream_name), AUDIT_KEY)
    async with started(first), started(second):
        await first.record([make_event(1)])

        with pytest.raises(AuditUnavailableError, match="another process writes to the stream"):
            await second.record([make_event(2)])
        # The failed append re-reads the stream's end, so the second log then joins the chain.
        await second.record([make_event(3)])
        assert second.position.seq == 2

    result = verify_lines(stream_lines(redis_server, stream_name), AUDIT_KEY)
    assert result.ok
    assert result.records == 2


async def test_stream_trimmed_near_max_length(redis_server: RedisServer, stream_name: str) -> None:
    log = RedisStreamAuditLog(new_stream(redis_server, stream_name, max_length=10), AUDIT_KEY)
    async with started(log):
        for batch in range(50):
            await log.record([make_event(10 * batch + n) for n in range(10)])

    with redis.Redis.from_url(redis_server.url) as client:
        length = client.xlen(stream_name)
    # MAXLEN ~ trims whole internal nodes (stream-node-max-entries, 100 in Redis 7.0), so more remain.
    assert 10 <= length < 500


async def test_stream_unreachable_at_start(private_redis_server: RedisServer) -> None:
    private_redis_server.stop()
    stream = AuditStream(private_redis_server.url, "audit", max_length=100, timeout=DOWN_TIMEOUT)

    log = RedisStreamAuditLog(stream, AUDIT_KEY)
    with pytest.raises(AuditUnavailableError, match="cannot read audit stream audit"):
        await log.start()


async def test_stream_failure_raises_then_recovers(private_redis_server: RedisServer) -> None:
    stream = AuditStream(private_redis_server.url, "audit", max_length=100, timeout=DOWN_TIMEOUT)
    async with started(RedisStreamAuditLog(stream, AUDIT_KEY)) as log:
        await log.record([make_event(1)])

        private_redis_server.stop()
        with pytest.raises(AuditUnavailableError, match="cannot append to audit stream audit"):
            await log.record([make_event(2)])
        private_redis_server.start()

        await log.record([make_event(3)])
        assert log.position.seq == 2

    result = verify_lines(stream_lines(private_redis_server, "audit"), AUDIT_KEY)
    assert result.ok
    assert result.records == 2


async def test_multi_log_copies_file_records(
    redis_server: RedisServer, stream_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    log = MultiAuditLog(AuditFile(path), new_stream(redis_server, stream_name), AUDIT_KEY)
    async with started(log):
        await log.record([make_event(1), make_event(2)])
        await log.record([make_event(3)])

    file_lines = read_lines(path)
    assert stream_lines(redis_server, stream_name) == file_lines
    assert verify_lines(file_lines, AUDIT_KEY).records == 3


async def test_multi_log_resends_after_stream_failure(
    private_redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    stream = AuditStream(private_redis_server.url, "audit", max_length=100, timeout=DOWN_TIMEOUT)
    async with started(MultiAuditLog(AuditFile(path), stream, AUDIT_KEY)) as log:
        await log.record([make_event(1)])

        private_redis_server.stop()
        with pytest.raises(AuditUnavailableError, match="cannot append to audit stream audit"):
            await log.record([make_event(2)])
        # The file has the record, so the chain goes on after it.
        assert log.position.seq == 2
        private_redis_server.start()

        await log.record([make_event(3)])

    file_lines = read_lines(path)
    assert len(file_lines) == 3
    assert stream_lines(private_redis_server, "audit") == file_lines


async def test_multi_log_needs_redis_at_start(
    private_redis_server: RedisServer, tmp_path: Path
) -> None:
    private_redis_server.stop()
    path = tmp_path / "audit.jsonl"
    stream = AuditStream(private_redis_server.url, "audit", max_length=100, timeout=DOWN_TIMEOUT)

    log = MultiAuditLog(AuditFile(path), stream, AUDIT_KEY)
    with pytest.raises(AuditUnavailableError, match="cannot reach the Redis server"):
        await log.start()

    # The failed start left the file unlocked.
    async with started(FileAuditLog(AuditFile(path), AUDIT_KEY)):
        pass


@pytest.mark.parametrize(
    ("with_file", "with_stream", "expected"),
    [
        pytest.param(True, False, FileAuditLog, id="file"),
        pytest.param(False, True, RedisStreamAuditLog, id="stream"),
        pytest.param(True, True, MultiAuditLog, id="both"),
    ],
)
async def test_open_audit_log_builds_configured_log(
    redis_server: RedisServer,
    stream_name: str,
    tmp_path: Path,
    with_file: bool,
    with_stream: bool,
    expected: type[AuditLog],
) -> None:
    config = AuditConfig(
        file=tmp_path / "audit.jsonl" if with_file else None,
        fsync="always",
        redis_stream=stream_name if with_stream else None,
        redis_url=redis_server.url,
    )

    log = await open_audit_log(config, AUDIT_KEY, redis_timeout=TIMEOUT)

    assert isinstance(log, expected)
    await log.record([make_event(1)])
    await log.close()
    assert ("audit.jsonl" in os.listdir(tmp_path)) == with_file


async def test_open_audit_log_disabled_returns_none(tmp_path: Path) -> None:
    config = AuditConfig(enabled=False, file=tmp_path / "audit.jsonl")

    assert await open_audit_log(config, AUDIT_KEY, redis_timeout=TIMEOUT) is None
    assert os.listdir(tmp_path) == []
