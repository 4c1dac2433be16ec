from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

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
    async with aiohttp.ClientSession(auto_decompress=False, trust_env=False) as session:
        yield session


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "gateway"
    directory.mkdir()
    return directory
