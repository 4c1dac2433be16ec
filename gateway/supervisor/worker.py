"""One gateway worker: the code that a forked child runs until it stops, then exits with.

A worker runs a whole gateway, with its own store connections, vault, audit chain and event
loop, on the listening sockets that it inherited from the supervisor. Once it accepts
connections, it writes one byte to its readiness pipe, which the supervisor reads.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import signal

from gateway.config.model import Config
from gateway.errors import (
    AuditUnavailableError,
    ConfigError,
    KeyMaterialError,
    StoreUnavailableError,
)
from gateway.logs import configure_logging
from gateway.server import Gateway, serve
from gateway.supervisor.sockets import ListenerSockets

logger = logging.getLogger("gateway.server")

FORWARD_WORKER = 1
"""The worker that runs the forward listener. mitmproxy keeps its state in module globals and
binds its own socket, so one worker serves it instead of all."""
READY = b"R"
_PR_SET_PDEATHSIG = 1
"""The ``prctl`` option of Linux that sends a signal to this process when its parent dies."""


def worker_config(config: Config, index: int) -> Config:
    """Return the configuration of worker ``index``: the same, with its own audit chain."""
    return dataclasses.replace(config, audit=config.audit.for_worker(index))


def run_worker(
    config: Config, sockets: ListenerSockets, index: int, ready_fd: int, parent_pid: int
) -> int:
    """Run worker ``index`` in this forked child until SIGTERM or SIGINT; return the exit status.

    The caller has reset the signal handlers that the supervisor installed and ignores SIGHUP
    until the gateway installs its own handler.
    """
    configure_logging(config.logging, worker=index)
    _stop_with_parent(parent_pid)

    def report_ready(gateway: Gateway) -> None:
        logger.info("ready, pid %d", os.getpid())
        os.write(ready_fd, READY)
        os.close(ready_fd)

    try:
        asyncio.run(
            serve(
                worker_config(config, index),
                sockets=sockets,
                serve_forward=index == FORWARD_WORKER,
                on_ready=report_ready,
            )
        )
    except (KeyMaterialError, StoreUnavailableError, AuditUnavailableError, ConfigError) as error:
        logger.error("not started: %s", error)
        return 1
    except OSError as error:
        logger.error(
            "not started: cannot listen: %s; stop the other process or change listen.forward",
            error,
        )
        return 1
    return 0


def _stop_with_parent(parent_pid: int) -> None:
    """Ask Linux to send SIGTERM to this worker when the supervisor dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning(
            "prctl(PR_SET_PDEATHSIG) failed (errno %d), so this worker keeps running if the "
            "supervisor is killed",
            ctypes.get_errno(),
        )
    if os.getppid() != parent_pid:
        # The supervisor died before prctl took effect.
        os.kill(os.getpid(), signal.SIGTERM)
