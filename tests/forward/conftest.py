from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.forward.certificates import TestCa
from tests.upstream import RecordingUpstream


@pytest.fixture
def test_ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path / "test-ca")


@pytest.fixture
async def stripe_standin(test_ca: TestCa) -> AsyncIterator[RecordingUpstream]:
    """A local HTTPS server with a certificate for api.stripe.com from the test CA."""
    server = RecordingUpstream(test_ca.issue("api.stripe.com").server_context())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def adyen_standin(test_ca: TestCa) -> AsyncIterator[RecordingUpstream]:
    """A local HTTPS server with a certificate for checkout-test.adyen.com from the test CA."""
    server = RecordingUpstream(test_ca.issue("checkout-test.adyen.com").server_context())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    """A plain-HTTP stand-in that connections reach through an http:// upstream override."""
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "gateway"
    directory.mkdir()
    return directory
