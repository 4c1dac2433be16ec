"""Logging set-up: named loggers under ``gateway``, as text lines or JSON objects on stderr.

The loggers are ``gateway.access`` (one line per request), ``gateway.proxy`` (rejections and
relay faults), ``gateway.store``, ``gateway.keys``, ``gateway.config``, ``gateway.audit`` (the
audit log's start, end of chain at stop, and write failures), ``gateway.server`` and
``gateway.supervisor`` (workers started, stopped and replaced under ``listen.workers``).
A worker's lines carry ``[worker N]`` before the message, or ``"worker": N`` in JSON.
No code path logs a field value, a token or a key.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import TextIO

from gateway.config.model import LoggingConfig

PIPE_BUF = 4096
"""Bytes that one write to a pipe delivers whole on Linux, even with other processes writing."""


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes lines in batches instead of one system call per line.

    Lines of WARNING and above are written at once, with everything buffered before them.
    Others wait at most ``flush_interval`` seconds, or until ``capacity`` lines are waiting.
    Under load this turns hundreds of access-log writes a second into a few.
    """

    def __init__(self, stream: TextIO, *, flush_interval: float = 0.2, capacity: int = 512) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._capacity = capacity
        self._stopped = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, args=(flush_interval,), name="log-flusher", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        # handle() holds self.lock while it calls emit, so the list is not shared unguarded.
        self._lines.append(line)
        if record.levelno >= logging.WARNING or len(self._lines) >= self._capacity:
            self.flush()

    def flush(self) -> None:
        with self.lock or _NO_LOCK:
            if not self._lines:
                return
            chunks = _line_chunks(self._lines, PIPE_BUF)
            self._lines.clear()
            try:
                # Gateway workers share stderr, and a write of at most PIPE_BUF bytes reaches a
                # pipe whole, so their lines do not interleave mid-line.
                for chunk in chunks:
                    self.stream.write(chunk)
                    self.stream.flush()
            except (OSError, ValueError):
                # The stream is closed or broken; there is nowhere left to report it.
                pass

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _flush_periodically(self, interval: float) -> None:
        while not self._stopped.wait(interval):
            self.flush()


_NO_LOCK = threading.RLock()


def _line_chunks(lines: list[str], limit: int) -> list[str]:
    """Join lines into texts of at most ``limit`` UTF-8 bytes each, unless one line is longer."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode()) + 1
        if current and size + length > limit:
            chunks.append("\n".join(current) + "\n")
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        chunks.append("\n".join(current) + "\n")
    return chunks


def configure_logging(
    config: LoggingConfig, *, batching: bool = True, worker: int | None = None
) -> None:
    """Send every logger's records to stderr in the configured format.

    ``batching`` off writes each line at once and starts no thread, which a process that forks
    needs. ``worker`` puts a gateway worker's number in each line.
    """
    handler: logging.StreamHandler[TextIO]
    handler = BatchingStreamHandler(sys.stderr) if batching else logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        prefix = f"[worker {worker}] " if worker is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s: {prefix}%(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(config.level)
    # aiohttp's own access log would repeat gateway.access without the route.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
