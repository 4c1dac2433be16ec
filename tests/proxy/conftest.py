from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import BACKEND_KEY
from tests.upstream import RecordingUpstream


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # auto_decompress off: tests look at the exact bytes the gateway sent.
    # X-Pay-Key authenticates the test client on the "pay" connections of these tests.
    headers = {"X-Pay-Key": BACKEND_KEY}
    async with aiohttp.ClientSession(
        auto_decompress=False, trust_env=False, headers=headers
    ) as session:
        yield session


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "gateway"
    directory.mkdir()
    return directory
