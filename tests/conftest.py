"""Fixtures shared by all tests: session PostgreSQL and MariaDB servers; the integration mark."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    NATIVE_PASSWORD,
    NATIVE_USER,
    OTHER_PASSWORD,
    OTHER_USER,
)
from sluice.dbserver.mariadb import MariaDbBinariesNotFound, MariaDbCluster, find_binaries
from sluice.dbserver.postgres import PgCluster

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs throwaway PostgreSQL/MariaDB servers (binaries required)"
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


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDbCluster]:
    """A started throwaway MariaDB with users app, other and native, and database appdb.

    app and other use `IDENTIFIED BY` (MariaDB's default plugin, mysql_native_password);
    native names mysql_native_password explicitly. app owns appdb (all privileges);
    other and native may use it too. Missing binaries fail the test, never skip it.
    """
    try:
        find_binaries()
    except MariaDbBinariesNotFound as exc:
        pytest.fail(f"{exc}. Integration tests do not skip: CI installs them.", pytrace=False)
    with MariaDbCluster() as cluster:
        cluster.create_user(APP_USER, APP_PASSWORD, plugin=None)
        cluster.create_user(OTHER_USER, OTHER_PASSWORD, plugin=None)
        cluster.create_user(NATIVE_USER, NATIVE_PASSWORD, plugin="mysql_native_password")
        cluster.create_database(APP_DB, owner=APP_USER)
        for user in (OTHER_USER, NATIVE_USER):
            cluster.grant(user, database=APP_DB)
        yield cluster
