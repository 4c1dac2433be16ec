"""Log set-up: line batches cut for pipes that several gateway workers share."""

from __future__ import annotations

import io
import json
import logging

from gateway.logs import PIPE_BUF, BatchingStreamHandler, JsonFormatter, _line_chunks


def test_chunks_keep_whole_lines_under_limit() -> None:
    lines = [f"line {number} " + "x" * 90 for number in range(200)]

    chunks = _line_chunks(lines, PIPE_BUF)

    assert len(chunks) > 1
    assert all(len(chunk.encode()) <= PIPE_BUF for chunk in chunks)
    assert all(chunk.endswith("\n") for chunk in chunks)
    assert "".join(chunks) == "\n".join(lines) + "\n"


def test_chunks_give_long_line_its_own() -> None:
    long_line = "y" * (PIPE_BUF * 2)

    chunks = _line_chunks(["short", long_line, "after"], PIPE_BUF)

    assert chunks == ["short\n", long_line + "\n", "after\n"]


def test_batching_handler_writes_each_chunk() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, flush_interval=60)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for number in range(100):
            handler.emit(
                logging.makeLogRecord({"msg": f"record {number} " + "z" * 100, "levelno": 20})
            )
        handler.flush()
    finally:
        handler.close()

    assert stream.getvalue().splitlines() == [f"record {n} " + "z" * 100 for n in range(100)]


def test_json_lines_name_worker() -> None:
    record = logging.makeLogRecord({"msg": "ready", "levelname": "INFO", "name": "gateway"})

    assert json.loads(JsonFormatter(worker=2).format(record))["worker"] == 2
    assert "worker" not in json.loads(JsonFormatter().format(record))
