"""Logging set-up: named loggers under ``gateway``, as text lines or JSON objects on stderr.

The loggers are ``gateway.access`` (one line per request), ``gateway.proxy`` (rejections and
relay faults), ``gateway.store``, ``gateway.keys``, ``gateway.config``, ``gateway.audit`` (the
audit log's start, end of chain at stop, and write failures) and ``gateway.server``.
No code path logs a field value, a token or a key.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import TextIO

from gateway.config.model import LoggingConfig


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
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
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
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


def configure_logging(config: LoggingConfig) -> None:
    handler = BatchingStreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(config.level)
    # aiohttp's own access log would repeat gateway.access without the route.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
