"""Throwaway servers for the command-line tools (`fuzz`, `replay`), outside pytest.

pytest builds the same targets on its session servers (tests/conftest.py); here each
engine gets its own PostgreSQL or MariaDB cluster, stopped and removed on exit.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgCluster

from .my_client import MyTarget
from .pg_client import PgTarget
from .target import Target

USER = "app"
DATABASE = "appdb"


@contextmanager
def target(engine: str) -> Iterator[Target]:
    """A started server of `engine` with a login and database, as a differential target."""
    password = secrets.token_urlsafe(12)
    if engine == "pg":
        with PgCluster() as pg:
            pg.create_user(USER, password)
            pg.create_database(DATABASE, owner=USER)
            yield PgTarget(pg, USER, password, DATABASE)
        return
    if engine == "mysql":
        with MariaDbCluster() as db:
            db.create_user(USER, password, plugin=None)
            db.create_database(DATABASE, owner=USER)
            yield MyTarget(db, USER, password, DATABASE)
        return
    raise ValueError(f"unknown engine {engine!r}")
