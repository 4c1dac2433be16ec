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


def configure_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
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
