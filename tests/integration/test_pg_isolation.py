"""No client ever sees another client's session state or transaction.

Pools of one or two connections make every client take a connection another
client just used. Each test runs a scenario through the proxy and compares it
with what the same clients see connected directly to the server:

- an extended-protocol transaction a client leaves without its Sync is never
  lent to the next client;
- session state left by code the classifier cannot read (DO blocks, functions,
  set_config with a computed is_local, CREATE TABLE pg_temp.x, quoted calls)
  either pins its client (and is gone once it leaves) or, for tracked
  settings, follows its client to other connections and nobody else;
- protocol-level prepared statements are not shared by clients whose settings
  give the same text another meaning;
- DEALLOCATE of a client's own statements works and does not pin;
- lastval() never answers with another client's value.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import errors

from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn
from rawpg import Message, RawClient
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.wire.pg import messages as m

pytestmark = pytest.mark.timeout(120)

StartSluice = Callable[..., SluiceProcess]
Conn = psycopg.Connection[tuple[Any, ...]]
PID = "select pg_backend_pid()"

SETUP = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iso_reader') THEN
    CREATE ROLE iso_reader NOLOGIN;
  END IF;
END $$;
GRANT iso_reader TO app;
CREATE TABLE IF NOT EXISTS iso_secret (x int);
INSERT INTO iso_secret SELECT 42 WHERE NOT EXISTS (SELECT FROM iso_secret);
ALTER TABLE iso_secret ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS iso_only ON iso_secret;
CREATE POLICY iso_only ON iso_secret USING (current_user = 'iso_reader');
GRANT SELECT ON iso_secret TO app, iso_reader;
CREATE TABLE IF NOT EXISTS iso_rows (v text);
GRANT ALL ON iso_rows TO app;
CREATE TABLE IF NOT EXISTS iso_serial (id serial PRIMARY KEY, v text);
GRANT ALL ON iso_serial TO app;
GRANT ALL ON SEQUENCE iso_serial_id_seq TO app;
CREATE SCHEMA IF NOT EXISTS iso_a AUTHORIZATION app;
CREATE SCHEMA IF NOT EXISTS iso_b AUTHORIZATION app;
CREATE TABLE IF NOT EXISTS iso_a.t (a int);
CREATE TABLE IF NOT EXISTS iso_b.t (a text);
GRANT ALL ON iso_a.t, iso_b.t TO app;
INSERT INTO iso_a.t SELECT 1 WHERE NOT EXISTS (SELECT FROM iso_a.t);
INSERT INTO iso_b.t SELECT 'b' WHERE NOT EXISTS (SELECT FROM iso_b.t);
CREATE OR REPLACE FUNCTION iso_set_timeout() RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN PERFORM set_config('statement_timeout', '4321', false); END $$;
CREATE OR REPLACE FUNCTION iso_tenant() RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN PERFORM set_config('iso.tenant', '7', false); END $$;
CREATE OR REPLACE FUNCTION iso_lock(k bigint) RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_advisory_lock(k); END $$;
CREATE OR REPLACE FUNCTION iso_lock_if(k bigint, take boolean) RETURNS void
  LANGUAGE plpgsql AS $$ BEGIN IF take THEN PERFORM pg_advisory_lock(k); END IF; END $$;
"""


@pytest.fixture(scope="module")
def objects(pg: PgCluster) -> PgCluster:
    """Roles, tables and functions the scenarios use (created once, idempotently).

    iso_secret's row is visible to the role iso_reader only (a row policy: app is a
    member of iso_reader, so a plain privilege would be inherited)."""
    pg.psql(SETUP, db=APP_DB)
    return pg


def direct(pg: PgCluster, **kwargs: Any) -> Conn:
    return psycopg.connect(pg.dsn(APP_USER, APP_PASSWORD, APP_DB), autocommit=True, **kwargs)


def proxied(proc: SluiceProcess, **kwargs: Any) -> Conn:
    return psycopg.connect(dsn(proc), autocommit=True, **kwargs)


def port_of(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


def scalar(conn: Conn, sql: str) -> Any:
    found = conn.execute(sql).fetchone()
    assert found is not None
    return found[0]


def pin_lines(proc: SluiceProcess) -> list[str]:
    return [line for line in proc.log_text().splitlines() if "pinned" in line]


@contextmanager
def hold_other(conn: Conn) -> Iterator[int]:
    """Keep `conn` inside a transaction (so it holds a backend); yield that backend's pid."""
    with conn.transaction():
        yield scalar(conn, PID)


# ---------------------------------------------------------------- 15: no Sync


BIND_UNNAMED = m.message(b"B", b"\x00\x00" + b"\x00\x00" * 3)
EXECUTE_ALL = m.message(b"E", b"\x00" + b"\x00\x00\x00\x00")
FLUSH = m.message(b"H")


def _insert_without_sync(port: int, value: str) -> RawClient:
    """Parse/Bind/Execute an INSERT and Flush, without a Sync; read the three replies."""
    client = RawClient(port)
    client.login()
    sql = f"insert into iso_rows values ('{value}')".encode()
    client.send(m.parse(b"", sql + b"\x00\x00\x00") + BIND_UNNAMED + EXECUTE_ALL + FLUSH)
    kinds = []
    for _ in range(3):
        msg = client.read()
        assert msg is not None
        kinds.append(msg[0])
    assert kinds == [b"1", b"2", b"C"]
    return client


def _count_rows(conn: Conn, value: str) -> int:
    return int(scalar(conn, f"select count(*) from iso_rows where v = '{value}'"))


def test_transaction_left_without_sync_is_not_lent(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    for port, conn_of, value in (
        (objects.port, lambda: direct(objects), "direct"),
        (port_of(proc), lambda: proxied(proc), "proxied"),
    ):
        _insert_without_sync(port, value).close()  # the client leaves inside its transaction
        with conn_of() as next_client:
            assert _count_rows(next_client, value) == 0
        with direct(objects) as check:
            assert _count_rows(check, value) == 0  # rolled back, not committed by anyone


def test_transaction_finished_by_its_sync_commits(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    client = _insert_without_sync(port_of(proc), "synced")
    client.send(m.SYNC)
    assert client.read_until_ready()[-1] == (b"Z", b"I")
    client.close()
    with proxied(proc) as other, direct(objects) as check:
        assert _count_rows(other, "synced") == _count_rows(check, "synced") == 1
        check.execute("delete from iso_rows where v = 'synced'")


# ---------------------------------------------------------------- 16, 10, 17: opaque SQL


@dataclass(frozen=True)
class Leftover:
    """SQL that leaves session state without saying so in its first words."""

    id: str
    setup: str  # run by client A outside a transaction
    probe: str  # what A keeps seeing, and other clients must not
    pin: str | None  # the pin reason logged; None: a tracked setting that follows A


LEFTOVERS = [
    Leftover(
        "DO set_config role",
        "DO $$ BEGIN PERFORM set_config('role', 'iso_reader', false); END $$",
        "select current_user::text || ' ' || (select count(*) from iso_secret)",
        "role changed",
    ),
    Leftover(
        "function calling set_config",
        "select iso_set_timeout()",
        "show statement_timeout",
        None,
    ),
    Leftover(
        "set_config with a computed is_local",
        "select set_config('statement_timeout', '1234', 1=0)",
        "show statement_timeout",
        None,
    ),
    Leftover(
        "DO SET search_path",
        "DO $$ BEGIN SET search_path = iso_a, public; END $$",
        "show search_path",
        None,
    ),
    Leftover(
        "DO SET statement_timeout",
        "DO $$ BEGIN SET statement_timeout = 2345; END $$",
        "show statement_timeout",
        None,
    ),
    Leftover(
        "DO SET ROLE",
        "DO $$ BEGIN SET ROLE iso_reader; END $$",
        "select current_user::text",
        "role changed",
    ),
    Leftover(
        "DO LISTEN",
        "DO $$ BEGIN LISTEN iso_chan; END $$",
        "select count(*) from pg_listening_channels()",
        "LISTEN",
    ),
    Leftover(
        "DO CREATE TEMP TABLE",
        "DO $$ BEGIN CREATE TEMP TABLE iso_tmp (a int); END $$",
        "select to_regclass('iso_tmp') is not null",
        "temporary object",
    ),
    Leftover(
        "DO SET work_mem",
        "DO $$ BEGIN SET work_mem = '7MB'; END $$",
        "show work_mem",
        "SET work_mem",
    ),
    Leftover(
        "DO PREPARE",
        "DO $$ BEGIN EXECUTE 'PREPARE iso_p AS SELECT 1'; END $$",
        "select count(*) from pg_prepared_statements where name = 'iso_p'",
        "PREPARE",
    ),
    Leftover(
        "CREATE TABLE pg_temp.x",
        "CREATE TABLE pg_temp.iso_tmp2 (a int)",
        "select to_regclass('pg_temp.iso_tmp2') is not null",
        "temporary object",
    ),
    Leftover(
        "quoted advisory lock",
        'select "pg_advisory_lock"(4250)',
        "select count(*) from pg_locks where locktype = 'advisory' and objid = 4250 "
        "and pid = pg_backend_pid()",
        "session advisory lock",
    ),
    Leftover(
        "advisory lock in a function",
        "select iso_lock(4251)",
        "select count(*) from pg_locks where locktype = 'advisory' and objid = 4251 "
        "and pid = pg_backend_pid()",
        "session advisory lock",
    ),
]


def _seen_directly(pg: PgCluster, case: Leftover) -> tuple[Any, Any]:
    """(what A sees after its setup, what another session sees), straight on the server."""
    with direct(pg) as a, direct(pg) as b:
        a.execute(case.setup)
        return scalar(a, case.probe), scalar(b, case.probe)


def _every_backend_sees(proc: SluiceProcess, probe: str) -> set[Any]:
    """`probe` on both connections of the pool (two clients inside transactions)."""
    with proxied(proc) as one, proxied(proc) as two, one.transaction(), two.transaction():
        assert scalar(one, PID) != scalar(two, PID)
        return {scalar(one, probe), scalar(two, probe)}


@pytest.mark.parametrize("case", LEFTOVERS, ids=[c.id for c in LEFTOVERS])
def test_state_left_by_opaque_sql(
    start_sluice: StartSluice, objects: PgCluster, case: Leftover
) -> None:
    a_sees, others_see = _seen_directly(objects, case)
    assert a_sees != others_see
    proc = start_sluice(pool={"max_connections": 2, "borrow_timeout": 20})
    with proxied(proc) as other:
        with proxied(proc) as a:
            _learn(a, other)  # later checks are the quick ones
            a.execute(case.setup)
            for _ in range(3):
                assert scalar(a, case.probe) == a_sees
                with hold_other(other):  # takes the connection A just used, if A let it go
                    assert scalar(other, case.probe) == others_see
                    assert scalar(a, case.probe) == a_sees
                    with a.transaction():
                        assert scalar(a, case.probe) == a_sees
        lines = pin_lines(proc)
        if case.pin is None:
            assert lines == []
        else:
            assert any(re.search("pinned.*" + re.escape(case.pin), x) for x in lines), lines
        assert _every_backend_sees(proc, case.probe) == {others_see}


NOOP = "DO $$ BEGIN END $$"


def _learn(a: Conn, other: Conn) -> None:
    """Opaque SQL on both connections of a pool of two, so that each has had a precise
    state check and the next ones are quick (guard.QuickMemory)."""
    for holder, runner in ((a, other), (other, a)):
        with hold_other(holder):
            for _ in range(2):
                runner.execute(NOOP)


def test_quick_check_sees_a_setting_changed_after_it_learned(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """After many quiet opaque transactions, the one that sets something is still seen:
    an untracked setting pins, a tracked one follows its client and nobody else."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 20})
    with proxied(proc) as a:
        for _ in range(5):
            a.execute(NOOP)
        a.execute("select iso_set_timeout()")
        assert scalar(a, "show statement_timeout") == "4321ms"
        with proxied(proc) as b:
            assert scalar(b, "show statement_timeout") == "0"
            for _ in range(3):
                b.execute(NOOP)
            b.execute("DO $$ BEGIN PERFORM set_config('work_mem', '7777kB', false); END $$")
            assert scalar(b, "show work_mem") == "7777kB"
        assert scalar(a, "show statement_timeout") == "4321ms"
        assert scalar(a, "show work_mem") != "7777kB"
    assert any("work_mem" in x for x in pin_lines(proc))


def test_quick_check_after_a_configuration_reload(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """A reload that changes a default changes what every session reads; that is not a
    client's state: nobody is pinned, and the check learns the new values."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 20})
    try:
        with proxied(proc) as a:
            a.execute(NOOP)
            a.execute(NOOP)
            objects.psql("ALTER SYSTEM SET work_mem = '5555kB'; SELECT pg_reload_conf()")
            # the postmaster passes the reload on to its backends in its own time (a direct
            # session may read the old value for a moment too): wait until it has
            deadline = time.monotonic() + 10
            while scalar(a, "show work_mem") != "5555kB" and time.monotonic() < deadline:
                time.sleep(0.05)
            for _ in range(3):
                a.execute(NOOP)
                assert scalar(a, "show work_mem") == "5555kB"
        assert pin_lines(proc) == []
    finally:
        objects.psql("ALTER SYSTEM RESET work_mem; SELECT pg_reload_conf()")


def test_quick_check_statements_dropped_by_opaque_sql(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """Opaque SQL that deallocates every statement drops the check's own: the next
    check falls back to the precise one and prepares them again."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 20})
    with proxied(proc) as a:
        a.execute(NOOP)
        a.execute("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$")
        for _ in range(3):
            a.execute(NOOP)
            assert scalar(a, "select 1") == 1
        with proxied(proc) as b:  # the connection was not lost or pinned
            assert scalar(b, "select 2") == 2
    assert pin_lines(proc) == []
    assert "state check after opaque SQL failed" not in proc.log_text()


def test_role_from_opaque_sql_never_reaches_the_next_client(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    with proxied(proc) as a:
        a.execute("DO $$ BEGIN PERFORM set_config('role', 'iso_reader', false); END $$")
        assert scalar(a, "select array_agg(x) from iso_secret") == [42]  # only iso_reader's
    with proxied(proc) as b:
        assert scalar(b, "select current_user") == APP_USER
        assert scalar(b, "select count(*) from iso_secret") == 0


def test_prepared_opaque_statement_checked_on_every_execution(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """A prepared statement's later executions are Bind/Execute only: still opaque."""
    proc = start_sluice(pool={"max_connections": 2, "borrow_timeout": 20})
    held = (
        "select count(*) from pg_locks where locktype = 'advisory' and objid = 4253 "
        "and pid = pg_backend_pid()"
    )
    with proxied(proc) as other:
        with proxied(proc) as a:
            for take in (False, False, True):
                a.execute("select iso_lock_if(4253, %s)", (take,), prepare=True)
            for _ in range(2):
                with hold_other(other):
                    assert scalar(other, held) == 0
                    assert scalar(a, held) == 1
        assert any("session advisory lock" in line for line in pin_lines(proc))
        assert _every_backend_sees(proc, held) == {0}


def test_custom_setting_from_opaque_sql_never_reaches_the_next_client(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """pg_settings does not list custom settings, so no check sees one a function set: the
    next client's borrow starts with RESET ALL. The client itself keeps its value while
    nobody else borrows its connection (as directly); documented: not on another one."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    tenant = "select current_setting('iso.tenant', true)"
    with direct(objects) as a, direct(objects) as b:
        a.execute("select iso_tenant()")
        assert (scalar(a, tenant), scalar(b, tenant)) == ("7", None)
    with proxied(proc) as a:
        a.execute("select iso_tenant()")
        assert scalar(a, tenant) == "7"
        with proxied(proc) as b:
            assert scalar(b, tenant) in ("", None)  # never A's "7" ("" : the placeholder)
            assert scalar(b, "show search_path") == scalar(a, "show search_path")
    assert pin_lines(proc) == []


@pytest.mark.parametrize(
    "setup",
    [
        "CREATE TEMP TABLE iso_t3 (a int)",
        "DO $$ BEGIN CREATE TEMP TABLE iso_t4 (a int); DROP TABLE iso_t4; END $$",
    ],
    ids=["pinned by CREATE TEMP", "opaque SQL that drops its table"],
)
def test_temporary_schema_never_reaches_the_next_client(
    start_sluice: StartSluice, objects: PgCluster, setup: str
) -> None:
    """DISCARD ALL drops temporary tables but not the session's temporary schema, which
    a later client would see (pg_my_temp_schema(), DROP TABLE IF EXISTS pg_temp.x)."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    fresh = "select pg_my_temp_schema() = 0"
    with direct(objects) as b:
        assert scalar(b, fresh) is True
    notices: list[str] = []
    for _ in range(2):
        with proxied(proc) as a:
            a.execute(setup)
        with proxied(proc) as b:
            assert scalar(b, fresh) is True
            b.add_notice_handler(lambda n: notices.append(n.message_primary or ""))
            b.execute("DROP TABLE IF EXISTS pg_temp.iso_none")
    assert notices == ['schema "pg_temp" does not exist, skipping'] * 2


def test_client_leaving_right_after_opaque_sql(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """The connection is reset, not lost, whether the client left during the check or after."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    lock = "select count(*) from pg_locks where locktype = 'advisory' and objid = 4252"
    with proxied(proc) as first:
        pid = scalar(first, PID)
    for _ in range(3):
        client = RawClient(port_of(proc))
        client.login()
        assert client.query("select iso_lock(4252)")[-1] == (b"Z", b"I")
        client.close()  # at once: the state check is likely still running
        with proxied(proc) as after:
            assert (scalar(after, PID), scalar(after, lock)) == (pid, 0)


# ---------------------------------------------------------------- 12: statements and settings


QUERIES = ("select a from t", "select '01/02/2003'::date")


def _prepared_rows(conn: Conn) -> list[Any]:
    return [conn.execute(q, prepare=True).fetchall() for q in QUERIES]


async def _asyncpg_rows(port: int, settings: dict[str, str]) -> list[Any]:
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=APP_USER,
        password=APP_PASSWORD,
        database=APP_DB,
        ssl=False,
        server_settings=settings,
    )
    try:
        return [[tuple(r) for r in await conn.fetch(q)] for q in QUERIES]
    finally:
        await conn.close()


def test_prepared_statements_follow_the_clients_settings(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """The same text under another search_path or DateStyle is another statement."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    a_opts = "-c search_path=iso_a -c DateStyle=ISO,MDY"
    b_opts = "-c search_path=iso_b -c DateStyle=ISO,DMY"
    b_settings = {"search_path": "iso_b", "DateStyle": "ISO, DMY"}
    with direct(objects, options=a_opts) as a, direct(objects, options=b_opts) as b:
        want_a, want_b = _prepared_rows(a), _prepared_rows(b)
    want_b_asyncpg = asyncio.run(_asyncpg_rows(objects.port, b_settings))
    assert want_a != want_b
    with proxied(proc, options=a_opts) as a:
        assert _prepared_rows(a) == want_a
        with proxied(proc, options=b_opts) as b:
            assert _prepared_rows(b) == want_b
        assert asyncio.run(_asyncpg_rows(port_of(proc), b_settings)) == want_b_asyncpg
        assert _prepared_rows(a) == want_a
    assert pin_lines(proc) == []


# ---------------------------------------------------------------- 13: DEALLOCATE


def test_psycopg_deallocate_all_does_not_pin(start_sluice: StartSluice) -> None:
    """psycopg 3 sends DEALLOCATE ALL after a ROLLBACK once it has prepared statements."""
    proc = start_sluice(pool={"max_connections": 2, "borrow_timeout": 3})
    with psycopg.connect(dsn(proc), prepare_threshold=0) as a:
        assert a.execute("select %s::int + 1", (1,)).fetchone() == (2,)
        a.rollback()  # ROLLBACK, then DEALLOCATE ALL
        with proxied(proc) as b, proxied(proc) as c, b.transaction(), c.transaction():
            assert scalar(b, PID) != scalar(c, PID)  # both connections: A kept none
        assert a.execute("select %s::int + 1", (2,)).fetchone() == (3,)
        a.commit()
    assert pin_lines(proc) == []


def _parse_sync(client: RawClient, name: bytes, sql: bytes) -> list[Message]:
    client.send(m.parse(name, sql + b"\x00\x00\x00") + m.SYNC)
    return client.read_until_ready()


def _bind_sync(client: RawClient, name: bytes) -> list[Message]:
    bind = m.message(b"B", b"\x00" + name + b"\x00" + b"\x00\x00" * 3)
    client.send(bind + EXECUTE_ALL + m.SYNC)
    return client.read_until_ready()


def _shape(messages: list[Message]) -> list[tuple[bytes, str]]:
    """Each message's type with its command tag or SQLSTATE (what must match directly)."""
    out = []
    for kind, body in messages:
        detail = ""
        if kind == b"C":
            detail = body.rstrip(b"\x00").decode()
        elif kind == b"E":
            detail = m.parse_error_fields(body)["C"]
        elif kind in (b"Z", b"D"):
            detail = body.decode(errors="replace")
        out.append((kind, detail))
    return out


def _deallocate_session(port: int) -> list[list[tuple[bytes, str]]]:
    seen = []
    owner, other = RawClient(port), RawClient(port)
    owner.login()
    other.login()
    seen.append(_shape(_parse_sync(owner, b"s1", b"select 1")))
    seen.append(_shape(_parse_sync(owner, b"s2", b"select 2")))
    seen.append(_shape(owner.query("DEALLOCATE s1")))
    seen.append(_shape(_bind_sync(owner, b"s1")))
    seen.append(_shape(owner.query("deallocate prepare S1")))
    seen.append(_shape(other.query("DEALLOCATE s2")))  # not the other client's statement
    seen.append(_shape(other.query("DEALLOCATE sluice_1")))  # nor the proxy's
    seen.append(_shape(_bind_sync(owner, b"s2")))
    seen.append(_shape(owner.query("BEGIN")))
    seen.append(_shape(owner.query("select 1/0")))
    seen.append(_shape(owner.query("DEALLOCATE ALL")))  # refused in a failed transaction
    seen.append(_shape(owner.query("ROLLBACK")))
    seen.append(_shape(_bind_sync(owner, b"s2")))
    seen.append(_shape(owner.query("DEALLOCATE ALL")))
    seen.append(_shape(_bind_sync(owner, b"s2")))
    owner.close()
    other.close()
    return seen


def test_deallocate_means_the_clients_own_statements(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    assert _deallocate_session(port_of(proc)) == _deallocate_session(objects.port)
    assert pin_lines(proc) == []


def _deallocate_in_transaction(port: int) -> list[list[tuple[bytes, str]]]:
    seen = []
    client = RawClient(port)
    client.login()
    seen.append(_shape(_parse_sync(client, b"s1", b"select 1")))
    for sql in ("DEALLOCATE s1", "DEALLOCATE ALL"):
        seen.append(_shape(client.query("BEGIN")))
        seen.append(_shape(client.query(sql)))
        seen.append(_shape(client.query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")))
        seen.append(_shape(client.query("ROLLBACK")))
    client.close()
    return seen


def test_deallocate_in_a_transaction_takes_its_snapshot(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """The proxy answers a DEALLOCATE of the client's own statements itself, but the
    transaction must go on as after the server's: its snapshot taken (SET TRANSACTION
    then fails with 25001)."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    through = _deallocate_in_transaction(port_of(proc))
    assert through == _deallocate_in_transaction(objects.port)
    assert (b"E", "25001") in through[3]
    assert pin_lines(proc) == []


def _failed_discard_session(port: int) -> list[list[tuple[bytes, str]]]:
    seen = []
    client = RawClient(port)
    client.login()
    seen.append(_shape(_parse_sync(client, b"s1", b"select 1")))
    for failing in (["BEGIN", "select 1/0", "DISCARD ALL"], ["BEGIN", "DISCARD ALL"]):
        seen += [_shape(client.query(sql)) for sql in failing]
        seen.append(_shape(client.query("ROLLBACK")))
        seen.append(_shape(_bind_sync(client, b"s1")))  # still there
    seen.append(_shape(client.query("DISCARD ALL; select 1")))  # a transaction block too
    seen.append(_shape(_bind_sync(client, b"s1")))
    seen.append(_shape(client.query("DISCARD ALL")))
    seen.append(_shape(_bind_sync(client, b"s1")))  # gone
    client.close()
    return seen


def test_failed_discard_all_keeps_the_clients_statements(
    start_sluice: StartSluice, objects: PgCluster
) -> None:
    """DISCARD ALL that the server refuses (in a failed transaction, inside a transaction
    block) drops nothing: the client's statements still work afterwards, as directly."""
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    assert _failed_discard_session(port_of(proc)) == _failed_discard_session(objects.port)


# ---------------------------------------------------------------- lastval()


def _insert(conn: Conn) -> int:
    return int(scalar(conn, "insert into iso_serial (v) values ('x') returning id"))


def test_lastval_is_never_another_clients(start_sluice: StartSluice, objects: PgCluster) -> None:
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 10})
    with proxied(proc) as a, proxied(proc) as b:
        with pytest.raises(errors.ObjectNotInPrerequisiteState):  # 55000, as directly
            b.execute("select lastval()")
        mine = _insert(a)
        assert scalar(a, "select lastval()") == mine  # nobody used the connection between
        theirs = _insert(b)
        assert theirs != mine
        with pytest.raises(errors.ObjectNotInPrerequisiteState):  # never `theirs`
            a.execute("select lastval()")
        with pytest.raises(errors.ObjectNotInPrerequisiteState):
            a.execute("select currval('iso_serial_id_seq')")
        with a.transaction():
            mine = _insert(a)
            assert scalar(a, "select lastval()") == mine
            assert scalar(a, "select currval('iso_serial_id_seq')") == mine
        with pytest.raises(errors.ObjectNotInPrerequisiteState):
            b.execute("select lastval()")  # its own value stayed behind: 55000, documented
    with direct(objects) as a, direct(objects) as b:
        mine = _insert(a)
        _insert(b)
        assert scalar(a, "select lastval()") == mine  # directly: A's own value
