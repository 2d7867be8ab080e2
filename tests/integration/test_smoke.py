"""The proxy relays a query from psycopg to the database and back."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from helpers import dsn
from sluice.devtools.runner import SluiceProcess


def test_select_through_proxy(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice()
    with psycopg.connect(dsn(proc)) as conn:
        assert conn.execute("select current_user, 40 + 2").fetchone() == ("app", 42)
