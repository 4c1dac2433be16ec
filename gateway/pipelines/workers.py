"""Worker processes that parse, transform and serialize partitions, and their results in order.

Each worker opens its own store connection, key ring and token cache from ``VaultSettings``.
With one worker, the main process does the work itself and nothing is pickled.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.util
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.log import AuditLog
from gateway.audit.writer import open_audit_log
from gateway.config.model import KeysConfig
from gateway.pipelines.access import PipelineAccess
from gateway.pipelines.fileformat import FileFormat
from gateway.pipelines.records import PartitionStats, RecordAdapter, Reject
from gateway.pipelines.tokenizer import VaultTokenizer
from gateway.pipelines.transform import Plan, transform_partition
from gateway.store import open_store
from gateway.tokens.keys import load_key_ring
from gateway.tokens.vault import Vault

PARTITIONS_IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """The store and key settings a worker opens its own vault with; picklable."""

    store_url: str
    store_timeout: float
    base_dir: Path
    keys: KeysConfig
    access: PipelineAccess | None = None
    """The client, policy and audit settings; None only in tests of the transform itself."""


@dataclass(frozen=True, slots=True)
class Task:
    file_format: FileFormat
    adapter: RecordAdapter
    plan: Plan
    partition: bytes


@dataclass(frozen=True, slots=True)
class TaskResult:
    data: bytes
    rejects: list[Reject]
    stats: PartitionStats
    store_items: int


class Workers:
    """The processes that transform partitions, or the main process alone for one worker."""

    def __init__(self, settings: VaultSettings, count: int) -> None:
        self._settings = settings
        self._count = count
        self._executor: ProcessPoolExecutor | None = None
        self._store_items = 0

    def __enter__(self) -> Workers:
        if self._count > 1:
            self._executor = ProcessPoolExecutor(
                max_workers=self._count,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self._settings,),
            )
        else:
            _start_worker(self._settings)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        else:
            _stop_worker()

    def store_items(self) -> int:
        return self._store_items

    def map_ordered(self, tasks: Iterator[Task]) -> Iterator[TaskResult]:
        """Yield the result of each task in task order, with a bounded number in flight."""
        if self._executor is None:
            for task in tasks:
                result = _process(task)
                self._store_items += result.store_items
                yield result
            return

        in_flight: deque[Future[TaskResult]] = deque()
        limit = self._count * PARTITIONS_IN_FLIGHT_PER_WORKER
        try:
            for task in tasks:
                in_flight.append(self._executor.submit(_process, task))
                if len(in_flight) >= limit:
                    result = in_flight.popleft().result()
                    self._store_items += result.store_items
                    yield result
            while in_flight:
                result = in_flight.popleft().result()
                self._store_items += result.store_items
                yield result
        finally:
            for future in in_flight:
                future.cancel()


@dataclass
class _WorkerState:
    loop: asyncio.AbstractEventLoop
    tokenizer: VaultTokenizer
    close: Any
    audit: AuditLog | None = None


_state: _WorkerState | None = None


def _start_worker(settings: VaultSettings) -> None:
    """Open this process's store, key ring and tokenizer.

    A worker process never closes its store: every write has completed when its task returns,
    and the process exit closes the connections. (An exit handler cannot close a SQLite store,
    whose close needs threads that interpreter shutdown no longer starts.)
    """
    global _state
    loop = asyncio.new_event_loop()
    key_ring = load_key_ring(settings.keys, base_dir=settings.base_dir, warn_development=False)
    store = open_store(
        settings.store_url, timeout=settings.store_timeout, base_dir=settings.base_dir
    )
    audit = None
    if settings.access is not None:
        audit = loop.run_until_complete(
            open_audit_log(
                settings.access.worker_audit_config(),
                key_ring.audit_key,
                redis_timeout=settings.store_timeout,
            )
        )
    tokenizer = VaultTokenizer(Vault(store, key_ring), loop, access=settings.access, audit=audit)
    _state = _WorkerState(loop, tokenizer, store.close, audit)
    if audit is not None and multiprocessing.parent_process() is not None:
        # A pool worker ends without _stop_worker; this closes its audit file (and ends the
        # file's fsync task) when multiprocessing shuts the worker down.
        multiprocessing.util.Finalize(None, _close_audit, args=(loop, audit), exitpriority=10)


def _stop_worker() -> None:
    global _state
    if _state is None:
        return
    state, _state = _state, None
    if state.audit is not None:
        state.loop.run_until_complete(state.audit.close())
    state.loop.run_until_complete(state.close())
    state.loop.close()


def _close_audit(loop: asyncio.AbstractEventLoop, audit: AuditLog) -> None:
    if not loop.is_closed():
        loop.run_until_complete(audit.close())


def _process(task: Task) -> TaskResult:
    """Parse, transform and serialize one partition in this process."""
    assert _state is not None, "the worker was not started"
    before = _state.tokenizer.store_items
    rows = task.file_format.parse(task.partition)
    result = transform_partition(rows, task.adapter, task.plan, _state.tokenizer)
    data = task.file_format.serialize(result.records)
    return TaskResult(data, result.rejects, result.stats, _state.tokenizer.store_items - before)
