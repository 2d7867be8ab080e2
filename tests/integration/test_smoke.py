"""The proxy relays a query from psycopg to the database and back, from the address it is
told to connect from."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pymysql

from helpers import dsn, mysql_kwargs
from sluice.devtools.runner import SluiceProcess


def test_select_through_proxy(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice()
    with psycopg.connect(dsn(proc)) as conn:
        assert conn.execute("select current_user, 40 + 2").fetchone() == ("app", 42)


def test_database_connections_leave_from_the_configured_source_address(
    start_sluice: Callable[..., SluiceProcess],
    start_mysql_proxy: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice(target={"source_address": "127.0.0.7"})
    with psycopg.connect(dsn(proc)) as conn:
        assert conn.execute("SELECT host(inet_client_addr())").fetchone() == ("127.0.0.7",)
    my = start_mysql_proxy(target={"source_address": "127.0.0.8"})
    with pymysql.connect(**mysql_kwargs(my)) as conn, conn.cursor() as cur:
        cur.execute("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        (host,) = cur.fetchone()
    assert host.rpartition(":")[0] == "127.0.0.8"
