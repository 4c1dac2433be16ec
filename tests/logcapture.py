"""A pytest plugin that keeps every log line the suite produces, for the leak check.

All records of every logger, at every level, go to ``.test-logs/suite.log`` under the project
root; tests that run the gateway as a subprocess append its stderr to files in the same folder.
``test_no_sensitive_value_in_logs`` runs last and searches all of them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

LOG_DIR = Path(__file__).resolve().parents[1] / ".test-logs"
SUITE_LOG = LOG_DIR / "suite.log"

# Values the suite sends through the gateway that must never appear in a log line.
SENSITIVE_VALUES: set[str] = set()


def remember_sensitive(*values: str) -> None:
    SENSITIVE_VALUES.update(value for value in values if value)


def subprocess_log_path(name: str) -> Path:
    LOG_DIR.mkdir(exist_ok=True)
    return LOG_DIR / f"{name}.log"


def pytest_sessionstart(session: pytest.Session) -> None:
    LOG_DIR.mkdir(exist_ok=True)
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    handler = logging.FileHandler(SUITE_LOG, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests marked ``runs_last`` to the end, so they see every other test's logs."""
    last = [item for item in items if item.get_closest_marker("runs_last")]
    for item in last:
        items.remove(item)
        items.append(item)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "runs_last: run after every other test of the session")
