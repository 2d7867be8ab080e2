"""The compressed protocol (CLIENT_COMPRESS) between clients and Sluice.

Sluice offers compression and speaks it with the clients that ask for it; its
connections to the server stay uncompressed. mysql-connector's pure-Python
client switches to compressed packets after the login whether or not the
server offered it, so before Sluice offered it that client hung on its first
query. Small and large results (a value over 16 MB spans several compressed
packets), statements the client compresses, server-side prepared statements, a
transaction and an error all go through; the mariadb command-line client with
--compress too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

import mysql.connector
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, mysql_kwargs
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(180)

Start = Callable[..., SluiceProcess]
BIG = 20 * 1024 * 1024


def _connect(proc: SluiceProcess, use_pure: bool) -> Any:
    return mysql.connector.connect(
        **mysql_kwargs(proc),
        use_pure=use_pure,
        compress=True,
        ssl_disabled=True,
        autocommit=True,
        connection_timeout=10,
        read_timeout=30,
    )


def _one(cur: Any, sql: str, args: Any = None) -> Any:
    cur.execute(sql, args)
    return cur.fetchone()


@pytest.mark.parametrize("use_pure", [True, False], ids=["pure", "cext"])
def test_mysql_connector_compressed(
    start_mysql_proxy: Start, mariadb: MariaDbCluster, use_pure: bool
) -> None:
    if not use_pure and not mysql.connector.HAVE_CEXT:
        pytest.fail("mysql-connector-python's C extension is not installed")
    mariadb.sql(f"DROP TABLE IF EXISTS {APP_DB}.zipped; CREATE TABLE {APP_DB}.zipped (v longtext)")
    proc = start_mysql_proxy(pool={"max_connections": 1})
    conn = _connect(proc, use_pure)
    try:
        cur = conn.cursor()
        assert _one(cur, "select 1 + 1, database()") == (2, APP_DB)
        text = "compressible " * 10_000
        cur.execute("insert into zipped values (%s)", (text,))
        assert _one(cur, "select v, length(v) from zipped") == (text, len(text))
        assert _one(cur, "select repeat('z', %s)", (3_000_000,)) == ("z" * 3_000_000,)
        noise = os.urandom(2000).hex()  # zlib cannot shrink it much
        assert _one(cur, "select %s", (noise,)) == (noise,)
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("select * from no_such_table")
        assert info.value.errno == 1146
        conn.start_transaction()
        cur.execute("insert into zipped values ('in a transaction')")
        conn.rollback()
        assert _one(cur, "select count(*) from zipped") == (1,)
        prepared = conn.cursor(prepared=True)
        assert _one(prepared, "select concat(?, ?)", ("a" * 60, "b")) == ("a" * 60 + "b",)
        prepared.close()
        cur.close()
    finally:
        conn.close()
        mariadb.sql(f"DROP TABLE IF EXISTS {APP_DB}.zipped")


def test_a_value_over_16mb_compressed(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1})
    conn = _connect(proc, use_pure=True)
    try:
        cur = conn.cursor()
        assert _one(cur, "select length(repeat('q', %s))", (BIG,)) == (BIG,)
        assert _one(cur, "select repeat('q', %s), 'after'", (BIG,)) == ("q" * BIG, "after")
        assert _one(cur, "select 'next'") == ("next",)
    finally:
        conn.close()


def test_mariadb_cli_compress(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy()
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    cmd = [
        "mariadb",
        "-h",
        host,
        "-P",
        port,
        "-u",
        APP_USER,
        f"-p{APP_PASSWORD}",
        "--skip-ssl",
        "--compress",
        "--batch",
        "--skip-column-names",
        "-e",
        "select length(repeat('c', 100000)), 'ok'; show session status like 'Compression'",
        APP_DB,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # the server's own status is of Sluice's (uncompressed) connection
    assert done.stdout == "100000\tok\nCompression\tOFF\n"
