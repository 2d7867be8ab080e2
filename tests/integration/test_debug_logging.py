"""`debug_logging`: each statement real clients send is logged, redacted, and never a secret.

psycopg (simple and extended protocol) and PyMySQL (text and binary protocol)
send ordinary statements, statements carrying a secret, and statements that
pin; the proxy's log must show the ordinary ones as sent, the secret ones with
their literals hidden, the pin reasons, and no secret anywhere. With the key
off (the default) no statement is logged.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pymysql

from helpers import OTHER_PASSWORD, OTHER_USER, dsn, mysql_kwargs, wait_for
from sluice.devtools.runner import SluiceProcess

SECRET = "Zq9-hidden-Secret"
STATEMENT_LINE = "sluice.statements: proxy "


def statement_lines(proc: SluiceProcess) -> list[str]:
    return [line for line in proc.log_text().splitlines() if STATEMENT_LINE in line]


def test_postgres_statements_and_pins_are_logged_without_secrets(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice(debug_logging=True)
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        conn.execute("SELECT 'visible-marker-1'")
        conn.execute(f"SELECT length('{SECRET}') AS password_length")
        conn.execute("SELECT %s::text AS extended_marker", (SECRET,))  # Parse + Bind
        conn.execute("PREPARE pinned_marker AS SELECT 1")  # pins the client
    with psycopg.connect(dsn(proc, user=OTHER_USER, password=OTHER_PASSWORD)) as conn:
        conn.execute("SELECT 'visible-marker-2'")
    assert wait_for(lambda: any("visible-marker-2" in x for x in statement_lines(proc)))
    lines = statement_lines(proc)
    assert any("proxy pg client 127.0.0.1:" in x and "user=app: SELECT 'visible-marker-1'" in x
               for x in lines)  # fmt: skip
    assert any("user=other: SELECT 'visible-marker-2'" in x for x in lines)
    assert any("SELECT length('***') AS password_length" in x for x in lines)
    assert any("SELECT $1::text AS extended_marker" in x for x in lines)  # the parameter is not
    assert any("PREPARE pinned_marker AS SELECT 1" in x for x in lines)
    log = proc.log_text()
    assert "pinned to its connection: PREPARE" in log
    assert SECRET not in log


def test_mysql_statements_are_logged_without_secrets(
    start_mysql_proxy: Callable[..., SluiceProcess],
) -> None:
    proc = start_mysql_proxy(debug_logging=True)
    conn = pymysql.connect(**mysql_kwargs(proc), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 'visible-marker-3'")
            cur.execute(f"SELECT LENGTH('{SECRET}') AS password_length")
            cur.execute(f"SET @token = '{SECRET}'")  # pins: a user variable
    finally:
        conn.close()
    assert wait_for(lambda: any("password_length" in x for x in statement_lines(proc)))
    lines = statement_lines(proc)
    assert any("proxy my client 127.0.0.1:" in x and "user=app: SELECT 'visible-marker-3'" in x
               for x in lines)  # fmt: skip
    assert any("SELECT LENGTH('***') AS password_length" in x for x in lines)
    assert any("SET @token = '***'" in x for x in lines)
    log = proc.log_text()
    assert "pinned to its connection: user variable" in log
    assert SECRET not in log


def test_statements_are_not_logged_by_default(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice()
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        conn.execute("SELECT 'visible-marker-4'")
        conn.execute("PREPARE pinned_marker AS SELECT 1")
    assert wait_for(lambda: "pinned to its connection: PREPARE" in proc.log_text())
    assert statement_lines(proc) == [] and "visible-marker-4" not in proc.log_text()
