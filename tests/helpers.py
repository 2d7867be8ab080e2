"""Shared test helpers and the fixed credentials of the session PostgreSQL server.

Importable as `helpers` from any test module: tests/ has no __init__.py, so
pytest puts this directory on sys.path when it loads tests/conftest.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sluice.devtools.pgcluster import free_port

__all__ = [
    "APP_DB",
    "APP_PASSWORD",
    "APP_USER",
    "OTHER_PASSWORD",
    "OTHER_USER",
    "free_port",
    "wait_for",
]

APP_USER = "app"
APP_PASSWORD = "app-secret-1"
APP_DB = "appdb"
OTHER_USER = "other"
OTHER_PASSWORD = "other-secret-2"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
