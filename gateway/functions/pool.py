"""A pool of function worker processes, separate from the gateway process.

Each worker is a fresh Python interpreter (``gateway.functions.worker``) started with a clean
environment, so none of the gateway's secrets (``VAULTGATE_KEYS``, client keys, store
passwords) reach it, and it shares no memory with the gateway. It confines itself before any
function runs (``gateway.functions.sandbox``). A call that passes ``functions.timeout`` kills
its worker. A worker that crashes, runs out of memory or breaks the protocol is replaced by a
new one in the background.

The gateway reads what a worker writes with the same strict JSON parser as a client's body and
never unpickles or evaluates it, because the worker runs operator code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import Config, Limits
from gateway.engine.bodies import dump_json, parse_json
from gateway.engine.routing import Connection
from gateway.errors import (
    ConfigError,
    ForbiddenError,
    FunctionFailedError,
    FunctionTimeoutError,
    MessageError,
)
from gateway.functions.config import FunctionsConfig

logger = logging.getLogger("gateway.functions")

type VaultHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Handles one vault request of a running function; returns ``{"result": ...}`` or an error."""

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 2.0
_STDERR_LINES_KEPT = 20
_RESTART_DELAY = 1.0
# The protocol wraps a message in at most this many levels of objects.
_PROTOCOL_DEPTH = 4
_CLEAN_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class WorkerBrokenError(Exception):
    """The worker died or wrote something outside the protocol; it must be replaced."""


@dataclass(slots=True)
class Reply:
    """A worker's response to one call: the returned message, or an error description."""

    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(eq=False)
class _Worker:
    process: asyncio.subprocess.Process
    limits: Limits
    stderr_tail: list[str] = field(default_factory=list)
    stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await self.process.stdout.readline()
        except ValueError as exc:
            raise WorkerBrokenError(
                f"wrote a line longer than the protocol limit (about 4 times "
                f"limits.max_body_bytes): {exc}"
            ) from None
        if not line:
            raise WorkerBrokenError(self._exit_description())
        try:
            message = parse_json(line, max_depth=self.limits.max_json_depth + _PROTOCOL_DEPTH)
        except MessageError as exc:
            raise WorkerBrokenError(f"wrote output that is not valid: {exc.message}") from None
        if not isinstance(message, dict):
            raise WorkerBrokenError("wrote output that is not a protocol message")
        return message

    async def write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(dump_json(message) + b"\n")
            await self.process.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise WorkerBrokenError(self._exit_description()) from exc

    async def call(self, request: dict[str, Any], vault: VaultHandler) -> Reply:
        await self.write(request)
        while True:
            message = await self.read()
            if message.get("id") != request["id"]:
                raise WorkerBrokenError("responded to another call than the one it was sent")
            if "vault" in message:
                vault_request = message["vault"]
                if not isinstance(vault_request, dict):
                    raise WorkerBrokenError("sent a vault request that is not an object")
                answer = await vault(vault_request)
                await self.write({"id": request["id"], **answer})
                continue
            if "error" in message:
                error = message["error"]
                return Reply(error=error if isinstance(error, dict) else {"kind": "invalid"})
            return Reply(result=message.get("result"))

    def _exit_description(self) -> str:
        code = self.process.returncode
        if code is None:
            return "closed its output"
        if code < 0:
            return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def wait_stopped(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), _STOP_TIMEOUT)
        self.kill()
        await self.process.wait()
        if self.stderr_task is not None:
            await self.stderr_task


class FunctionPool:
    """Runs one operator function module in ``config.workers`` worker processes."""

    def __init__(self, config: FunctionsConfig, limits: Limits, module: str) -> None:
        self._config = config
        self._limits = limits
        self._module = module
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._call_ids = 0
        self._calls_in_flight = 0
        self._quiet = asyncio.Event()
        self._stopping = False

    @property
    def config(self) -> FunctionsConfig:
        return self._config

    async def start(self) -> None:
        """Start every worker; raise ``ConfigError`` when a module fails to load or a worker
        fails to start, after stopping the ones that did."""
        results = await asyncio.gather(
            *(self._start_worker() for _ in range(self._config.workers)), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]
        readies = [result for result in results if not isinstance(result, BaseException)]
        worker, ready = readies[0]
        self._log_confinement(ready)
        load_errors = ready.get("load_errors") or {}
        if load_errors:
            await self.stop()
            directory = self._config.directory
            raise ConfigError.single(
                str(directory),
                None,
                "; ".join(
                    f"function module {name} failed to load: {reason}"
                    for name, reason in sorted(load_errors.items())
                ),
            )
        for worker, _ in readies:
            self._idle.put_nowait(worker)

    async def _start_worker(self) -> tuple[_Worker, dict[str, Any]]:
        # Room for a body of max_body_bytes as base64 inside JSON, with escapes.
        line_limit = 4 * self._limits.max_body_bytes + 1024 * 1024
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-B",
            "-m",
            "gateway.functions.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(_CLEAN_ENVIRONMENT),
            cwd="/",
            limit=line_limit,
        )
        worker = _Worker(process, self._limits)
        worker.stderr_task = asyncio.create_task(self._log_stderr(worker))
        self._workers.add(worker)
        setup = {
            "dir": str(self._config.directory),
            # Only this pool's module: no other function's code shares the process.
            "modules": {self._module: self._config.modules[self._module].path.name},
            "memory_limit": self._config.memory_limit,
        }
        try:
            await worker.write(setup)
            async with asyncio.timeout(_START_TIMEOUT):
                ready = await worker.read()
        except (WorkerBrokenError, TimeoutError) as exc:
            worker.kill()
            await worker.wait_stopped()
            self._workers.discard(worker)
            tail = " | ".join(worker.stderr_tail[-3:])
            raise ConfigError.single(
                str(self._config.directory), None, f"function worker failed to start: {exc} {tail}"
            ) from None
        return worker, ready

    def _log_confinement(self, ready: dict[str, Any]) -> None:
        abi = ready.get("landlock_abi", 0)
        logger.info(
            "function %s: workers started: %d, Landlock ABI %s, user id %s, memory limit %d bytes",
            self._module,
            self._config.workers,
            abi,
            ready.get("user"),
            self._config.memory_limit,
        )
        if not abi:
            logger.warning(
                "this kernel has no Landlock, so functions can read every file that their "
                "user (%s) can read; run the gateway as root, so that workers run as nobody, or "
                "on Linux 5.13 or newer",
                ready.get("user"),
            )

    async def _log_stderr(self, worker: _Worker) -> None:
        assert worker.process.stderr is not None
        async for raw in worker.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()[:500]
            worker.stderr_tail = [*worker.stderr_tail[-_STDERR_LINES_KEPT:], line]
            # NOTE: this is what functions print, which may include values they handle; it is
            # logged at DEBUG only for that reason.
            logger.debug("function worker %d: %s", worker.pid, line)

    async def call(
        self, name: str, message: dict[str, Any], args: dict[str, Any], vault: VaultHandler
    ) -> Any:
        """Run function ``name`` on a message and return what it returned, unchecked.

        Raises ``FunctionTimeoutError`` after ``functions.timeout`` (waiting for a free worker
        and the function's vault requests count too), ``FunctionFailedError`` for a function
        that raised, ran out of memory or crashed, and ``ForbiddenError`` when the function
        failed because its role was denied a vault request. An error a vault request raised
        (such as ``StoreUnavailableError``) is raised as it is.
        """
        self._call_ids += 1
        request = {"id": self._call_ids, "name": name, "message": message, "args": args}
        self._calls_in_flight += 1
        self._quiet.clear()
        try:
            return await self._call(request, vault)
        finally:
            self._calls_in_flight -= 1
            if not self._calls_in_flight:
                self._quiet.set()

    async def _call(self, request: dict[str, Any], vault: VaultHandler) -> Any:
        name = request["name"]
        timeout = self._config.timeout
        worker: _Worker | None = None
        try:
            async with asyncio.timeout(timeout):
                worker = await self._idle.get()
                reply = await worker.call(request, vault)
        except TimeoutError:
            if worker is None:
                raise FunctionTimeoutError(
                    f"function {name} found no free worker within {timeout:g} s "
                    "(functions.timeout); raise functions.workers"
                ) from None
            self._replace(worker, "it passed the time limit")
            raise FunctionTimeoutError(
                f"function {name} did not finish within {timeout:g} s (functions.timeout)"
            ) from None
        except WorkerBrokenError as exc:
            assert worker is not None
            self._replace(worker, str(exc))
            raise FunctionFailedError(f"function {name} failed: its worker {exc}") from None
        except BaseException:
            # A cancelled request or a vault error leaves the worker in the middle of a call.
            if worker is not None:
                self._replace(worker, "its call was abandoned")
            raise

        if reply.error is not None and reply.error.get("kind") == "memory":
            self._replace(worker, "it ran out of memory")
        else:
            self._idle.put_nowait(worker)
        if reply.error is not None:
            raise _call_error(name, reply.error, self._config.memory_limit)
        return reply.result

    def _replace(self, worker: _Worker, reason: str) -> None:
        logger.warning("replacing function worker %d: %s", worker.pid, reason)
        worker.kill()
        self._background(self._retire(worker))
        if not self._stopping:
            self._background(self._restart())

    async def _retire(self, worker: _Worker) -> None:
        await worker.wait_stopped()
        self._workers.discard(worker)

    async def _restart(self) -> None:
        while not self._stopping:
            try:
                worker, _ = await self._start_worker()
            except ConfigError as error:
                logger.error("%s; retrying in %g s", error, _RESTART_DELAY)
                await asyncio.sleep(_RESTART_DELAY)
                continue
            if self._stopping:
                worker.kill()
                await self._retire(worker)
            else:
                self._idle.put_nowait(worker)
            return

    def _background(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, *, grace: float = 0.0) -> None:
        """Stop every worker; with ``grace``, first wait that long for calls in flight."""
        if grace > 0 and self._calls_in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), grace)
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for worker in list(self._workers):
            if worker.process.stdin is not None:
                worker.process.stdin.close()
        await asyncio.gather(*(worker.wait_stopped() for worker in list(self._workers)))
        self._workers.clear()
        logger.info("function %s: workers stopped", self._module)


class FunctionPools:
    """One ``FunctionPool`` per operator function module.

    A function's code never shares a process with another function's, because a module could
    otherwise patch the worker and read what another function, with another role, receives
    from the vault.
    """

    def __init__(self, config: FunctionsConfig, limits: Limits, modules: Sequence[str]) -> None:
        self._config = config
        self._pools = {name: FunctionPool(config, limits, name) for name in sorted(set(modules))}

    @property
    def config(self) -> FunctionsConfig:
        return self._config

    async def start(self) -> None:
        """Start every module's workers; on a failure, stop all of them and raise it."""
        results = await asyncio.gather(
            *(pool.start() for pool in self._pools.values()), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]

    async def call(
        self, name: str, message: dict[str, Any], args: dict[str, Any], vault: VaultHandler
    ) -> Any:
        """Run function ``name`` in its own module's workers; see ``FunctionPool.call``."""
        return await self._pools[name].call(name, message, args, vault)

    async def stop(self, *, grace: float = 0.0) -> None:
        await asyncio.gather(*(pool.stop(grace=grace) for pool in self._pools.values()))


def _call_error(name: str, error: dict[str, Any], memory_limit: int) -> MessageError:
    # Only kinds, exception type names and file:line positions travel here, never a message
    # text, because an exception's text may quote a value.
    kind = error.get("kind")
    if kind == "memory":
        return FunctionFailedError(
            f"function {name} ran out of memory (functions.memory_limit is {memory_limit} bytes)"
        )
    if kind == "raised":
        where = str(error.get("where") or "")
        logger.warning("function %s raised %s%s", name, error.get("type"), where)
        return FunctionFailedError(f"function {name} raised {error.get('type')}")
    if kind == "denied":
        return ForbiddenError(f"function {name} was denied a vault request: {error.get('reason')}")
    if kind == "load":
        return FunctionFailedError(f"function {name} failed to load: {error.get('reason')}")
    return FunctionFailedError(
        f"function {name} returned an invalid message: {error.get('reason', 'unknown reason')}"
    )


def worker_functions(connections: Sequence[Connection]) -> set[str]:
    """Return the operator functions (not built-in steps) that routes run."""
    return {
        step.name
        for connection in connections
        for route in connection.routes
        for step in (*route.request_functions, *route.response_functions)
        if step.compiled is None
    }


def uses_worker_functions(connections: Sequence[Connection]) -> bool:
    """Tell whether any route runs an operator function, which needs worker processes."""
    return bool(worker_functions(connections))


async def start_pool(config: Config) -> FunctionPools | None:
    """Start the workers that the configuration's routes need, or return None."""
    names = worker_functions(config.connections)
    if not names:
        return None
    pools = FunctionPools(config.functions, config.limits, sorted(names))
    await pools.start()
    return pools
