"""Integration tests need PostgreSQL server binaries: without them they fail, never skip."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import free_port, mysql_proxy_config, proxy_config
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgBinariesNotFound, PgCluster, find_bin_dir
from sluice.devtools.runner import SluiceProcess


@pytest.fixture(scope="session", autouse=True)
def postgres_bin_dir() -> Path:
    """The PostgreSQL bin directory; fails every integration test loudly if there is none."""
    try:
        return find_bin_dir()
    except PgBinariesNotFound as exc:
        pytest.fail(f"{exc}. Integration tests do not skip: CI installs them.", pytrace=False)


@pytest.fixture
def start_sluice(pg: PgCluster) -> Iterator[Callable[..., SluiceProcess]]:
    """Start `sluice proxy` in front of the session server: start_sluice(**proxy_overrides).

    Pass `glob={...}` for `[sluice]` keys. Every process started is stopped at the end;
    its log is printed when the test fails (pytest shows captured output).
    """
    started: list[SluiceProcess] = []

    def start(glob: dict[str, Any] | None = None, **overrides: Any) -> SluiceProcess:
        proc = SluiceProcess([proxy_config(pg, free_port(), **overrides)], glob=glob)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.stop()
        print(f"---- sluice log ({proc.workdir}) ----\n{proc.log_tail(80)}")


@pytest.fixture
def start_mysql_proxy(mariadb: MariaDbCluster) -> Iterator[Callable[..., SluiceProcess]]:
    """Start `sluice proxy` with a MySQL proxy in front of the session MariaDB."""
    started: list[SluiceProcess] = []

    def start(glob: dict[str, Any] | None = None, **overrides: Any) -> SluiceProcess:
        proc = SluiceProcess([mysql_proxy_config(mariadb, free_port(), **overrides)], glob=glob)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.stop()
        print(f"---- sluice log ({proc.workdir}) ----\n{proc.log_tail(80)}")
