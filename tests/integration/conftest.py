"""Integration tests need PostgreSQL server binaries: without them they fail, never skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.devtools.pgcluster import PgBinariesNotFound, find_bin_dir


@pytest.fixture(scope="session", autouse=True)
def postgres_bin_dir() -> Path:
    """The PostgreSQL bin directory; fails every integration test loudly if there is none."""
    try:
        return find_bin_dir()
    except PgBinariesNotFound as exc:
        pytest.fail(f"{exc}. Integration tests do not skip: CI installs them.", pytrace=False)
