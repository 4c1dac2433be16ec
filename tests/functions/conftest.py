"""Fixtures for function tests: a gateway with a functions folder of the test's own modules."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.server import Gateway
from tests.harness import BACKEND_KEY, start_gateway
from tests.upstream import RecordingUpstream

type StartFunctions = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {BACKEND_KEY}"}
    async with aiohttp.ClientSession(trust_env=False, headers=headers) as session:
        yield session


@pytest.fixture
async def start_with_functions(tmp_path: Path) -> AsyncIterator[StartFunctions]:
    """Start a gateway whose ``functions/`` folder contains the given modules (name to source)."""
    started: list[Gateway] = []

    async def start(
        modules: dict[str, str],
        routes: dict[str, str],
        *,
        functions: str = "{dir: functions, workers: 1, timeout: 1s, memory_limit: 256MiB}",
        **options: str,
    ) -> Gateway:
        directory = tmp_path / "gateway"
        (directory / "functions").mkdir(parents=True, exist_ok=True)
        for name, source in modules.items():
            (directory / "functions" / f"{name}.py").write_text(textwrap.dedent(source))
        gateway = await start_gateway(
            directory, routes, extra=f"functions: {functions}\n", **options
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()
