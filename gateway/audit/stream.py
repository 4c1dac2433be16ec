"""Audit records in a Redis stream, alone or as a copy of an audit file.

Each record is one stream entry with two fields: ``seq`` (decimal) and ``record`` (the record's
line without its newline, the same bytes as in a file). Concatenating the ``record`` fields with
newlines therefore gives lines that ``verify_lines`` accepts, starting from wherever the stream
was last trimmed. ``XADD ... MAXLEN ~`` keeps about ``max_length`` entries: Redis trims whole
internal nodes, so the stream can hold somewhat more.

When the stream carries the chain alone, each append checks in the same Lua script that the
stream ends where the writer left it. A second process that writes to the stream then makes
the other's appends fail, instead of forking the chain unnoticed. Give each gateway its own
stream, as it has its own file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.audit.log import AuditLog
from gateway.audit.records import AuditRecord, ChainPosition, LineProblem, check_line
from gateway.errors import AuditUnavailableError
from gateway.secret import Secret

logger = logging.getLogger("gateway.audit")

# KEYS[1]: the stream. ARGV[1]: the approximate maximum length. ARGV[2]: the seq the stream's
# last entry must have, or "" to skip the check. ARGV[3...]: seq and record of each entry.
# Returns {1} after appending, or {0, last seq} without appending when the check fails.
_APPEND_SCRIPT: Final = """
if ARGV[2] ~= '' then
  local last_seq = '0'
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local fields = last[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'seq' then last_seq = fields[i + 1] end
    end
  end
  if last_seq ~= ARGV[2] then return {0, last_seq} end
end
for i = 3, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'seq', ARGV[i], 'record', ARGV[i + 1])
end
return {1}
"""


class AuditStream:
    """A Redis stream that audit records are appended to.

    ``timeout`` bounds connecting and each reply, in seconds. A failed command is retried once
    on a new connection, so the first append after a Redis restart succeeds. A retried append
    with the continuity check cannot be applied twice. Without the check (a copy of a file), a
    reply lost after the append succeeded can make the same records appear twice: readers
    should skip an entry whose ``seq`` they have seen.
    """

    def __init__(self, url: str, stream: str, *, max_length: int, timeout: float) -> None:
        self.stream = stream
        self.max_length = max_length
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries=1),
        )
        self._append_script = self._client.register_script(_APPEND_SCRIPT)

    async def check_reachable(self) -> None:
        """Raise ``AuditUnavailableError`` unless the Redis server replies."""
        try:
            await self._client.ping()
        except redis_errors.RedisError as exc:
            raise self._unavailable("cannot reach the Redis server of", exc) from exc

    async def read_end(self, key: Secret[bytes]) -> ChainPosition:
        """Return where the chain in the stream ends, after verifying its last record.

        Raises ``AuditUnavailableError`` when Redis cannot be reached or when the last entry
        does not verify under ``key``.
        """
        try:
            entries = await self._client.xrevrange(self.stream, "+", "-", count=1)
        except redis_errors.RedisError as exc:
            raise self._unavailable("cannot read", exc) from exc
        if not entries:
            return ChainPosition()

        entry_id, fields = _text(entries[0][0]), entries[0][1] or {}
        line = _field(fields, b"record") + b"\n"
        checked = check_line(line, key.reveal())
        if isinstance(checked, LineProblem):
            raise AuditUnavailableError(
                f"the last entry ({entry_id}) of audit stream {self.stream} does not "
                f"verify under the audit key ({checked.kind}: {checked.detail}). Appending "
                "would hide the change, so the stream is not used. Keep it as evidence and "
                "configure another audit.redis_stream, or use the key file that wrote it"
            )
        if _field(fields, b"seq") != str(checked.seq).encode():
            raise AuditUnavailableError(
                f"the last entry ({entry_id}) of audit stream {self.stream} has a seq field "
                f"that differs from its record's seq {checked.seq}, so it was not written by "
                "vaultgate. Keep the stream as evidence and configure another "
                "audit.redis_stream"
            )
        return ChainPosition(checked.seq, checked.mac)

    async def append(self, records: Sequence[AuditRecord], *, after_seq: int | None) -> None:
        """Append the records in one script call, trimming the stream to about ``max_length``.

        With ``after_seq``, append only if the stream's last entry has that seq (0 for an empty
        stream). Raises ``AuditUnavailableError`` when that check fails or Redis fails. Nothing
        was appended then, unless Redis appended and the reply was lost.
        """
        arguments: list[bytes | int | str] = [
            self.max_length,
            "" if after_seq is None else str(after_seq),
        ]
        for record in records:
            arguments += [record.seq, record.line.removesuffix(b"\n")]
        try:
            reply = await self._append_script(keys=[self.stream], args=arguments)
        except redis_errors.RedisError as exc:
            raise self._unavailable("cannot append to", exc) from exc

        if reply[0] != 1:
            last_seq = _text(reply[1])
            raise AuditUnavailableError(
                f"audit stream {self.stream} ends at sequence {last_seq}, not {after_seq} as "
                "this gateway wrote it: another process writes to the stream, or someone "
                "changed it. Give each gateway its own audit.redis_stream"
            )

    async def close(self) -> None:
        await self._client.aclose()

    def _unavailable(self, action: str, exc: redis_errors.RedisError) -> AuditUnavailableError:
        return AuditUnavailableError(f"{action} audit stream {self.stream}: {exc}")


class RedisStreamAuditLog(AuditLog):
    """An audit log kept in a Redis stream alone, which then carries the chain.

    At start the chain continues from the stream's last entry. After a failed append the next
    batch first reads the stream's end again, because an append whose reply was lost may have
    succeeded.
    """

    def __init__(self, stream: AuditStream, key: Secret[bytes]) -> None:
        super().__init__(key, description=f"audit stream {stream.stream}")
        self.stream = stream
        self._read_end_again = False

    async def _open(self) -> ChainPosition:
        return await self.stream.read_end(self._key)

    async def _prepare_batch(self) -> None:
        if not self._read_end_again:
            return
        before = self.position
        self._position = await self.stream.read_end(self._key)
        self._read_end_again = False
        if self._position != before:
            logger.warning(
                "%s: the stream ended at sequence %d instead of %d; the chain continues there",
                self.description,
                self._position.seq,
                before.seq,
            )

    async def _write(self, records: Sequence[AuditRecord]) -> None:
        try:
            await self.stream.append(records, after_seq=records[0].seq - 1)
        except AuditUnavailableError:
            self._read_end_again = True
            raise

    async def _close(self) -> None:
        await self.stream.close()


def _field(fields: Mapping[bytes | str, bytes | str], name: bytes) -> bytes:
    value = fields.get(name)
    return value if isinstance(value, bytes) else b""


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
