"""Shared test helpers and the fixed credentials of the session PostgreSQL and MariaDB servers.

Importable as `helpers` from any test module: tests/ has no __init__.py, so
pytest puts this directory on sys.path when it loads tests/conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from sluice.dbserver.launcher import free_port
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess

__all__ = [
    "APP_DB",
    "APP_PASSWORD",
    "APP_USER",
    "NATIVE_PASSWORD",
    "NATIVE_USER",
    "OTHER_PASSWORD",
    "OTHER_USER",
    "PeakWatch",
    "dsn",
    "free_port",
    "mysql_kwargs",
    "mysql_proxy_config",
    "proxy_config",
    "wait_for",
]

APP_USER = "app"
APP_PASSWORD = "app-secret-1"
APP_DB = "appdb"
OTHER_USER = "other"
OTHER_PASSWORD = "other-secret-2"
NATIVE_USER = "native"  # MariaDB only: created explicitly with mysql_native_password
NATIVE_PASSWORD = "native-secret-3"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def proxy_config(pg: PgCluster, port: int, **overrides: Any) -> dict[str, Any]:
    """A proxy in front of `pg` with users app and other, overridable key by key.

    `pool`, `target` and `users` given in `overrides` replace the defaults whole
    if they are lists, and update them if they are dicts.
    """
    proxy: dict[str, Any] = {
        "name": "pg",
        "listen": f"127.0.0.1:{port}",
        "target": {"host": pg.host, "port": pg.port},
        "pool": {"max_connections": 10, "borrow_timeout": 10},
        "users": [
            {"name": APP_USER, "password": APP_PASSWORD},
            {"name": OTHER_USER, "password": OTHER_PASSWORD},
        ],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(proxy.get(key), dict):
            proxy[key] = {**proxy[key], **value}
        else:
            proxy[key] = value
    return proxy


def dsn(
    proc: SluiceProcess,
    user: str = APP_USER,
    password: str = APP_PASSWORD,
    dbname: str = APP_DB,
    **extra: str,
) -> str:
    """A libpq DSN for the first proxy of `proc`."""
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    parts = {
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "dbname": dbname,
        "sslmode": "disable",
        **extra,
    }
    return " ".join(f"{k}={v}" for k, v in parts.items())


def mysql_proxy_config(mariadb: MariaDbCluster, port: int, **overrides: Any) -> dict[str, Any]:
    """A MySQL proxy in front of `mariadb` with users app and other (see proxy_config)."""
    proxy = proxy_config(mariadb, port, **overrides)  # type: ignore[arg-type]
    proxy["engine"] = "mysql"
    proxy["name"] = overrides.get("name", "my")
    if "target" not in overrides or "port" not in overrides["target"]:
        proxy["target"] = {**proxy["target"], "port": mariadb.port}
    return proxy


def mysql_kwargs(
    proc: SluiceProcess,
    user: str = APP_USER,
    password: str = APP_PASSWORD,
    database: str | None = APP_DB,
) -> dict[str, Any]:
    """Keyword arguments for pymysql.connect / mysql.connector.connect to the first proxy."""
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    kwargs: dict[str, Any] = {"host": host, "port": int(port), "user": user, "password": password}
    if database:
        kwargs["database"] = database
    return kwargs


class PeakWatch:
    """Polls `count()` in a thread while clients run; `peak` is the largest value seen,
    so a limit exceeded for a moment is caught."""

    def __init__(self, count: Callable[[], int], interval: float = 0.005) -> None:
        self._count = count
        self._interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._count())
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
