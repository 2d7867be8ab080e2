"""Fixtures shared by all tests: the session PostgreSQL server and the `integration` marker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, OTHER_PASSWORD, OTHER_USER
from sluice.devtools.pgcluster import PgCluster

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs throwaway PostgreSQL servers (binaries required)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration, so `-m 'not integration'` runs the rest."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """A started throwaway server with roles app/other and database appdb (owned by app)."""
    with PgCluster() as cluster:
        cluster.create_user(APP_USER, APP_PASSWORD)
        cluster.create_user(OTHER_USER, OTHER_PASSWORD)
        cluster.create_database(APP_DB, owner=APP_USER)
        yield cluster
