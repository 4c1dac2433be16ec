"""The ``audit`` section: where audit records go and how soon they reach the disk.

::

    audit:
      file: var/audit-${HOSTNAME}.jsonl   # one file per gateway process; false for none
      fsync: interval                      # or always: fsync before each record call returns
      fsync_interval: 1s
      redis_stream: vaultgate:audit:${HOSTNAME}   # a copy in a Redis stream, also one per gateway
      redis_url: redis://127.0.0.1:6379/0  # default: store.url when the store is Redis
      stream_max_length: 100000
      enabled: true
"""

from __future__ import annotations

import dataclasses
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.config.fields import Section

DEFAULT_FILE: Final = Path("var/audit.jsonl")
PROCESS_LABELS: Final = ("worker", "pipeline")
"""The label prefixes of per-process files: ``worker-N`` for gateway workers, ``pipeline-PID``."""
FSYNC_MODES: Final = ("always", "interval")
REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")

_KEYS: Final = (
    "enabled",
    "file",
    "fsync",
    "fsync_interval",
    "redis_stream",
    "redis_url",
    "stream_max_length",
)


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Where audit records go.

    Each gateway process needs its own ``file`` and its own ``redis_stream``, because each
    continues the chain it finds at the end. A second writer of a file is rejected at start,
    and a second writer of a stream makes appends fail.
    """

    enabled: bool = True
    file: Path | None = DEFAULT_FILE
    """An absolute path after loading, or None for no file (then ``redis_stream`` is set)."""
    fsync: str = "interval"
    """``always``: fsync before ``record`` returns. ``interval``: fsync every ``fsync_interval``."""
    fsync_interval: float = 1.0
    """Seconds between fsync calls with ``fsync: interval``: how much a power loss can lose."""
    redis_stream: str | None = None
    """The key of a Redis stream that receives the same records, or None."""
    redis_url: str | None = None
    stream_max_length: int = 100_000
    """Entries the stream keeps, trimmed approximately (``XADD ... MAXLEN ~``).

    An estimate of the memory: 100000 entries of short records took 49 MB in Redis 7.0.
    """

    def for_worker(self, index: int) -> AuditConfig:
        """Return the settings of gateway worker ``index`` of several that share this config.

        Each worker writes its own chain: ``audit.worker-2.jsonl`` beside ``audit.jsonl`` and
        stream ``NAME:worker-2``. The name depends on the index, not the process id, so a worker
        that replaces one that died continues that worker's chain.
        """
        label = f"worker-{index}"
        return dataclasses.replace(
            self,
            file=process_file(self.file, label) if self.file is not None else None,
            redis_stream=f"{self.redis_stream}:{label}" if self.redis_stream else None,
        )


def process_file(path: Path, label: str) -> Path:
    """Return the audit file of one of several processes: ``audit.LABEL.jsonl`` beside ``path``."""
    return path.with_name(f"{path.stem}.{label}{path.suffix}")


def existing_audit_files(path: Path) -> list[Path]:
    """Return ``path`` and the gateway worker and pipeline files beside it that exist, sorted."""
    found = [path] if path.is_file() else []
    for label in PROCESS_LABELS:
        found += sorted(path.parent.glob(f"{glob.escape(path.stem)}.{label}-*{path.suffix}"))
    return found


def read_audit(
    section: Section | None, base_dir: Path, *, store_url: str | None = None
) -> AuditConfig:
    """Read the ``audit`` section, recording each mistake as a problem of ``section``.

    A relative ``file`` is resolved against ``base_dir``. ``redis_url`` defaults to
    ``store_url`` when that is a Redis URL.
    """
    default_redis_url = store_url if store_url and store_url.startswith(REDIS_SCHEMES) else None
    if section is None:
        return AuditConfig(file=base_dir / DEFAULT_FILE, redis_url=default_redis_url)
    section.check_keys(_KEYS)
    defaults = AuditConfig()

    enabled = section.boolean("enabled", defaults.enabled)
    file = _file(section, base_dir)
    fsync = _fsync(section)
    fsync_interval = (
        section.duration("fsync_interval", defaults.fsync_interval) or defaults.fsync_interval
    )
    redis_stream = section.string("redis_stream") or None
    redis_url = _redis_url(section) or default_redis_url
    stream_max_length = section.integer("stream_max_length", defaults.stream_max_length, minimum=1)

    if enabled and file is None and redis_stream is None:
        section.problem(
            None,
            "audit has neither a file nor a redis_stream, so no audit record can be written",
            "set audit.file, or set audit.enabled to false to turn the audit trail off",
        )
    if redis_stream is not None and redis_url is None:
        section.problem(
            "redis_stream",
            "audit.redis_stream needs a Redis server, but audit.redis_url is not set and "
            "store.url is not a Redis URL",
            "set audit.redis_url, for example redis://127.0.0.1:6379/0",
        )
    return AuditConfig(
        enabled=enabled,
        file=file,
        fsync=fsync,
        fsync_interval=fsync_interval,
        redis_stream=redis_stream,
        redis_url=redis_url,
        stream_max_length=stream_max_length,
    )


def _file(section: Section, base_dir: Path) -> Path | None:
    if "file" not in section.mapping:
        return base_dir / DEFAULT_FILE
    value = section.raw("file")
    # `file: false`, `file: null` and an empty value (such as ${AUDIT_FILE:-}) turn the file off.
    if value is None or value is False or (isinstance(value, str) and not value.strip()):
        return None
    if value is True:
        section.problem("file", "audit.file must be a path, or false for no file")
        return base_dir / DEFAULT_FILE
    text = section.string("file")
    if text is None:
        return base_dir / DEFAULT_FILE
    path = Path(text)
    return path if path.is_absolute() else base_dir / path


def _fsync(section: Section) -> str:
    mode = (section.string("fsync", "interval") or "interval").strip().lower()
    if mode not in FSYNC_MODES:
        section.problem("fsync", f"audit.fsync {mode!r} is unknown", "use always or interval")
        return "interval"
    return mode


def _redis_url(section: Section) -> str | None:
    url = section.string("redis_url")
    if not url:
        return None
    if not url.startswith(REDIS_SCHEMES):
        # Only the scheme is shown, because the rest of the URL may contain a password.
        scheme = url.split(":", 1)[0]
        section.problem(
            "redis_url",
            f"audit.redis_url with scheme {scheme!r} is not a Redis URL",
            "use redis://host:6379/0, rediss://... or unix://...",
        )
        return None
    return url
