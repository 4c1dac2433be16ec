"""The supervising process of ``vaultgate run --workers N``.

It binds the listeners, forks the workers (worker 1 first and alone, so that a first start
creates the development key file, the store's key-check record and the forward proxy's CA only
once), and then waits for signals. SIGTERM and SIGINT stop every worker gracefully, and a second
one kills them. SIGHUP reaches every worker, which reloads its keys and routes. A worker that
exits on its own is replaced after a back-off. When a worker fails before it is ready at
start-up, the supervisor stops the others and exits with status 1.

The supervisor forks from a single thread and runs no event loop: every worker starts from a
clean copy and creates its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.errors import ConfigError, KeyMaterialError
from gateway.logs import configure_logging
from gateway.supervisor.sockets import ListenerSockets, bind_listeners, bound_address
from gateway.supervisor.worker import READY, run_worker
from gateway.tokens.keys import load_key_ring

logger = logging.getLogger("gateway.supervisor")

RESTART_DELAY_FIRST = 0.5
"""Seconds before the first replacement of a worker that died. Each further death in a row
doubles it."""
RESTART_DELAY_MAX = 30.0
STABLE_SECONDS = 30.0
"""A worker that ran this long before it died starts the back-off again at the first delay."""
STOP_TIMEOUT = 90.0
"""Seconds that workers get to finish after SIGTERM before they are killed. aiohttp gives
requests in flight up to 60 s."""
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
_CLEAN_STOPS = (0, -signal.SIGTERM, -signal.SIGINT)
"""Exit codes of a worker that stopped as asked: a worker still starting dies of the signal."""


@dataclass
class WorkerProcess:
    index: int
    pid: int
    ready_fd: int | None
    """The read end of the readiness pipe, until the worker reports ready or exits."""
    started: float
    ready: bool = False
    reload_pending: bool = False
    """A SIGHUP arrived before the worker could handle it, so it gets one once it is ready."""


class Supervisor:
    """The workers of one ``vaultgate run --workers N`` and the signals that steer them."""

    def __init__(self, config: Config, sockets: ListenerSockets, count: int) -> None:
        self.config = config
        self.sockets = sockets
        self.count = count
        self.workers: dict[int, WorkerProcess] = {}
        """Running workers by process id."""
        self._failures: dict[int, int] = {}
        """Deaths in a row of each worker index, for the back-off."""
        self._restarts: dict[int, float] = {}
        """Worker indexes waiting for a replacement, with the monotonic time it is due."""
        self._starting = True
        self._stopping = False
        self._kill_now = False
        self._exit_status = 0
        self._failed_start: str | None = None
        self._selector = selectors.PollSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._parent_pid = os.getpid()

    def run(self) -> int:
        """Start the workers and supervise them until a stop signal; return the exit status."""
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        previous = {signum: signal.signal(signum, _note_signal) for signum in _HANDLED}
        try:
            started = self._start_workers()
            if started:
                self._starting = False
                logger.info(
                    "%d workers ready; SIGTERM or SIGINT stops them and SIGHUP reloads their keys "
                    "and routes",
                    self.count,
                )
                self._wait_until(lambda: self._stopping)
            self._stop_workers()
        finally:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._close()

        if self._failed_start is not None:
            logger.error("not started: %s", self._failed_start)
            return 1
        logger.info("stopped")
        return self._exit_status

    def _start_workers(self) -> bool:
        """Start worker 1, then the others; return False when stopped or failed before ready."""
        self._spawn(1)
        if not self._wait_until(self._all_ready):
            return False
        for index in range(2, self.count + 1):
            self._spawn(index)
        return self._wait_until(self._all_ready)

    def _all_ready(self) -> bool:
        return all(worker.ready for worker in self.workers.values())

    def _wait_until(self, condition: Callable[[], bool]) -> bool:
        """Handle events until ``condition`` holds, and return True, or False when a stop or a
        failure comes first."""
        while True:
            # A failure counts first: a worker that died is no longer in ``workers``, so
            # "every worker is ready" can hold because it is gone.
            if self._stopping or self._failed_start is not None:
                return False
            if condition():
                return True
            self._poll(self._next_timeout())

    def _next_timeout(self) -> float | None:
        if not self._restarts:
            return None
        return max(0.0, min(self._restarts.values()) - time.monotonic())

    def _poll(self, timeout: float | None) -> None:
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wake_read:
                self._handle_signals()
            else:
                self._read_ready(key.data)
        self._start_due_replacements()

    def _handle_signals(self) -> None:
        try:
            received = os.read(self._wake_read, 512)
        except BlockingIOError:
            return
        for signum in received:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._request_stop(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                self._reload()
        # SIGCHLD may be merged with another, so reap on every wake-up.
        self._reap()

    def _request_stop(self, name: str) -> None:
        if self._stopping:
            logger.warning("%s again: killing the workers without waiting", name)
            self._kill_now = True
            return
        logger.info("%s received: stopping %d workers", name, len(self.workers))
        self._stopping = True

    def _reload(self) -> None:
        logger.info("SIGHUP received: forwarding it to %d workers", len(self.workers))
        self._reload_config()
        for worker in self.workers.values():
            if worker.ready:
                _signal_worker(worker, signal.SIGHUP)
            else:
                worker.reload_pending = True

    def _reload_config(self) -> None:
        """Keep the configuration on disk for workers started later, when it is reloadable."""
        try:
            config = load_config(self.config.source)
        except ConfigError:
            logger.error(
                "the configuration on disk is invalid, so replacement workers start with the "
                "one loaded before (the workers log each problem)"
            )
            return
        if config.policy != self.config.policy:
            logger.error(
                "clients, classes or roles changed, which needs a restart, so replacement "
                "workers start with the configuration loaded before"
            )
            return
        running = self.config.listen
        if dataclasses.replace(config.listen, workers=running.workers) != running:
            logger.warning("the listen section changed, but listeners change only on a restart")
        self.config = dataclasses.replace(config, listen=running)

    def _read_ready(self, worker: WorkerProcess) -> None:
        if worker.ready_fd is None:
            return  # Reaped earlier in the same poll, which closed the pipe.
        data = os.read(worker.ready_fd, 1)
        self._close_ready_fd(worker)
        if data != READY:
            return  # The worker exits before it is ready; its SIGCHLD follows.
        worker.ready = True
        if worker.reload_pending:
            worker.reload_pending = False
            _signal_worker(worker, signal.SIGHUP)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._close_ready_fd(worker)
                self._on_exit(worker, os.waitstatus_to_exitcode(status))

    def _on_exit(self, worker: WorkerProcess, code: int) -> None:
        ended = _describe_exit(code)
        if self._stopping:
            log = logger.info if code in _CLEAN_STOPS else logger.error
            log("worker %d (pid %d) %s", worker.index, worker.pid, ended)
            if code not in _CLEAN_STOPS:
                self._exit_status = 1
            return
        if self._starting and not worker.ready:
            self._failed_start = (
                f"worker {worker.index} (pid {worker.pid}) {ended} before it was ready; its "
                "error is logged above"
            )
            return

        uptime = time.monotonic() - worker.started
        failures = 1 if uptime >= STABLE_SECONDS else self._failures.get(worker.index, 0) + 1
        self._failures[worker.index] = failures
        delay = min(RESTART_DELAY_MAX, RESTART_DELAY_FIRST * 2 ** (failures - 1))
        logger.error(
            "worker %d (pid %d) %s after %.1f s; starting a replacement in %.1f s "
            "(death %d in a row)",
            worker.index,
            worker.pid,
            ended,
            uptime,
            delay,
            failures,
        )
        self._restarts[worker.index] = time.monotonic() + delay

    def _start_due_replacements(self) -> None:
        if self._stopping:
            self._restarts.clear()
            return
        now = time.monotonic()
        for index, due in sorted(self._restarts.items()):
            if due <= now:
                del self._restarts[index]
                self._spawn(index)

    def _stop_workers(self) -> None:
        """Send SIGTERM to every worker and wait for them, killing those that take too long."""
        self._stopping = True
        self._restarts.clear()
        for worker in self.workers.values():
            _signal_worker(worker, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.workers and not self._kill_now:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error(
                    "%d workers still run %.0f s after SIGTERM, so they are killed",
                    len(self.workers),
                    STOP_TIMEOUT,
                )
                break
            self._poll(remaining)
        for worker in self.workers.values():
            _signal_worker(worker, signal.SIGKILL)
        while self.workers:
            pid, status = os.waitpid(-1, 0)
            ended = self.workers.pop(pid, None)
            if ended is not None:
                self._close_ready_fd(ended)
                self._on_exit(ended, os.waitstatus_to_exitcode(status))

    def _spawn(self, index: int) -> None:
        ready_read, ready_write = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(ready_read)
            os.close(ready_write)
            raise
        if pid == 0:
            self._run_child(index, ready_read, ready_write, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_write)
        worker = WorkerProcess(index, pid, ready_read, time.monotonic())
        self.workers[pid] = worker
        self._selector.register(ready_read, selectors.EVENT_READ, worker)
        logger.info("started worker %d with pid %d", index, pid)

    def _run_child(self, index: int, ready_read: int, ready_write: int, mask: set[int]) -> NoReturn:
        """Turn this forked child into worker ``index`` and exit with its status."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            # Until the gateway's own handler is in place a SIGHUP would end the worker; the
            # supervisor sends it again once the worker reports ready.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(ready_read)
            self._close_inherited()
            code = run_worker(self.config, self.sockets, index, ready_write, self._parent_pid)
        except BaseException:
            logger.exception("worker %d failed unexpectedly", index)
        finally:
            logging.shutdown()
            os._exit(code)

    def _close_inherited(self) -> None:
        """Close, in a forked child, the supervisor's own pipes and selector."""
        for worker in self.workers.values():
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _close_ready_fd(self, worker: WorkerProcess) -> None:
        if worker.ready_fd is None:
            return
        self._selector.unregister(worker.ready_fd)
        os.close(worker.ready_fd)
        worker.ready_fd = None

    def _close(self) -> None:
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self.sockets.close()


def _note_signal(signum: int, frame: object) -> None:
    """Do nothing: ``signal.set_wakeup_fd`` writes the signal number to the wake-up pipe."""


def _signal_worker(worker: WorkerProcess, signum: signal.Signals) -> None:
    # A worker that has exited already is reaped on its SIGCHLD.
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker.pid, signum)


def _describe_exit(code: int) -> str:
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def run_workers(config: Config, count: int) -> int:
    """Run ``count`` gateway workers under a supervisor in this process; return the exit status.

    Checks the key source and binds the listeners before any worker starts, so that a missing
    key or a port in use ends the command with one error and no worker to clean up.
    """
    configure_logging(config.logging, batching=False)
    try:
        load_key_ring(config.keys, base_dir=config.source.parent)
    except KeyMaterialError as error:
        logger.error("not started: %s", error)
        return 1
    try:
        sockets = bind_listeners(config.listen)
    except OSError as error:
        logger.error(
            "not started: %s; stop the other process or change listen.reverse or listen.admin "
            "(VAULTGATE_LISTEN, VAULTGATE_ADMIN_LISTEN in config.example.yaml)",
            error.strerror or error,
        )
        return 1
    logger.info(
        "supervisor (pid %d) starting %d workers on %s",
        os.getpid(),
        count,
        ", ".join(str(bound_address(group)) for group in (sockets.reverse, sockets.admin) if group),
    )
    return Supervisor(config, sockets, count).run()
