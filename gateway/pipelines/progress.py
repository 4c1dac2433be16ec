"""A one-line progress display on a terminal: rows, rows/s, MB/s and, when known, percent."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

REFRESH_SECONDS: Final = 0.5


class Progress:
    """Rewrites one line of ``stream`` at most every half second; silent unless it is a TTY."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._shown = 0.0
        self.rows = 0
        self.bytes = 0
        self.total_bytes: int | None = None
        self.name = ""

    def start_file(self, name: str, total_bytes: int | None) -> None:
        self.name = name
        self.total_bytes = total_bytes

    def advance(self, rows: int, bytes_read: int) -> None:
        self.rows += rows
        self.bytes += bytes_read
        now = time.monotonic()
        if self._enabled and now - self._shown >= REFRESH_SECONDS:
            self._shown = now
            self._stream.write("\r" + self.line(now) + "\x1b[K")
            self._stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        text = (
            f"{self.name}: {self.rows:,} rows, {self.rows / elapsed:,.0f} rows/s, "
            f"{self.bytes / elapsed / 1e6:.1f} MB/s"
        )
        if self.total_bytes:
            text += f", {min(100.0, 100 * self.bytes / self.total_bytes):.0f}%"
        return text

    def finish(self) -> None:
        if self._enabled:
            self._stream.write("\r" + self.line(time.monotonic()) + "\x1b[K\n")
            self._stream.flush()
