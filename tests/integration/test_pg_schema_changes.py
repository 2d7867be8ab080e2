"""Statements prepared before a schema change: a new Parse plans the query as it is now.

Sluice shares one server-side statement per query text on each pooled connection
and answers a Parse of a text the connection already has itself. After an ALTER
TABLE or ALTER TYPE such a statement is stale: the server refuses to run it (0A000
`cached plan must not change result type`) or it describes the old types. asyncpg
recovers from both by preparing the statement again, which works directly only if
that new Parse reaches the server. Each scenario (the cases of asyncpg's own
test_cache_invalidation) runs directly and through Sluice, in both pool modes and
with the DDL sent through Sluice or straight to the server, and must see the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from asyncpg.exceptions import InternalClientError

from helpers import APP_DB, APP_PASSWORD, APP_USER
from rawpg import RawClient
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.wire.pg import messages as m

pytestmark = pytest.mark.timeout(180)

StartSluice = Callable[..., SluiceProcess]
Connect = Callable[[], Awaitable[asyncpg.Connection]]
Scenario = Callable[[int, Connect, list[Any]], Awaitable[None]]


def _port(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


async def _connect(port: int) -> asyncpg.Connection:
    return await asyncpg.connect(**_args(port))


def _args(port: int) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "user": APP_USER,
        "password": APP_PASSWORD,
        "database": APP_DB,
        "ssl": False,
        "timeout": 30,
    }


async def _outcome(seen: list[Any], work: Awaitable[Any]) -> None:
    """Record a result, or the class of the error it raised."""
    try:
        found = await work
    except (asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError) as exc:
        seen.append(type(exc).__name__)
    else:
        seen.append(tuple(found) if found is not None else None)


async def _row(con: asyncpg.Connection, sql: str = "SELECT * FROM sc_tab") -> Any:
    row = await con.fetchrow(sql)
    return tuple(tuple(v) if isinstance(v, asyncpg.Record) else v for v in row)


async def silent(port: int, ddl: Connect, seen: list[Any]) -> None:
    """The second fetch re-prepares after the server refused the stale plan."""
    con, other = await _connect(port), await ddl()
    await con.execute("CREATE TABLE sc_tab(a int, b int); INSERT INTO sc_tab VALUES (1, 2)")
    await _outcome(seen, _row(con))
    await other.execute("ALTER TABLE sc_tab ALTER COLUMN b SET DATA TYPE text")
    await _outcome(seen, _row(con))
    await _outcome(seen, _row(con))
    await con.close()
    await other.close()


async def in_transaction(port: int, ddl: Connect, seen: list[Any]) -> None:
    """Inside a transaction the stale plan is an error; after it, a new Parse works."""
    con, other = await _connect(port), await ddl()
    await con.execute("CREATE TABLE sc_tab(a int, b int); INSERT INTO sc_tab VALUES (1, 2)")
    await _outcome(seen, _row(con))
    await other.execute("ALTER TABLE sc_tab ALTER COLUMN b SET DATA TYPE text")
    try:
        async with con.transaction():
            await _outcome(seen, _row(con))
    except asyncpg.PostgresError as exc:
        seen.append(f"transaction: {type(exc).__name__}")
    await _outcome(seen, _row(con))
    await con.close()
    await other.close()


async def in_pool(port: int, ddl: Connect, seen: list[Any]) -> None:
    """Two pooled clients hold the statement; after the change the first re-prepares
    (and asyncpg's pool tells the second to), the second then works in a transaction."""
    con, other = await _connect(port), await ddl()
    await con.execute("CREATE TABLE sc_tab(a int, b int); INSERT INTO sc_tab VALUES (1, 2)")
    async with asyncpg.create_pool(**_args(port), min_size=2, max_size=2) as pool:
        con1, con2 = await pool.acquire(), await pool.acquire()
        try:
            await _outcome(seen, _row(con1))
            await _outcome(seen, _row(con2))
            await other.execute("ALTER TABLE sc_tab ALTER COLUMN b SET DATA TYPE text")
            await _outcome(seen, _row(con1))
            async with con2.transaction():
                await _outcome(seen, _row(con2))
        finally:  # else an error above hides behind Pool.close(), which waits for them
            await pool.release(con1, timeout=10)
            await pool.release(con2, timeout=10)
    await con.close()
    await other.close()


async def type_in_transaction(port: int, ddl: Connect, seen: list[Any]) -> None:
    """A composite type gains an attribute inside a transaction, which then rolls back."""
    con = await _connect(port)
    await con.execute(
        "CREATE TYPE sc_typ AS (x int, y int); CREATE TABLE sc_tab(a int, b sc_typ);"
        " INSERT INTO sc_tab VALUES (1, (2, 3))"
    )
    await _outcome(seen, _row(con))
    try:
        async with con.transaction():
            await con.execute("ALTER TYPE sc_typ ADD ATTRIBUTE c text")
            await _outcome(seen, _row(con))
            await _outcome(seen, _row(con))
            raise UserWarning  # roll back
    except UserWarning:
        pass
    await _outcome(seen, _row(con))
    await _outcome(seen, _row(con))
    await con.close()


async def parameter_types(port: int, ddl: Connect, seen: list[Any]) -> None:
    """A new Parse infers the parameter's type from the column as it is now."""
    con = await _connect(port)
    await con.execute("CREATE TABLE sc_tab(a int, b date)")
    insert = "INSERT INTO sc_tab VALUES (1, $1)"
    statement = await con.prepare(insert)
    seen.append([t.name for t in statement.get_parameters()])
    # (asyncpg's prepare leaves its implicit transaction open: DDL elsewhere would wait)
    await con.execute("ALTER TABLE sc_tab ALTER COLUMN b SET DATA TYPE time USING null")
    statement = await con.prepare(insert)
    seen.append([t.name for t in statement.get_parameters()])
    await con.close()


SCENARIOS: dict[str, Scenario] = {
    "silent": silent,
    "in_transaction": in_transaction,
    "in_pool": in_pool,
    "type_in_transaction": type_in_transaction,
    "parameter_types": parameter_types,
}


async def _run(scenario: Scenario, port: int, ddl: Connect) -> list[Any]:
    seen: list[Any] = []
    try:
        await scenario(port, ddl, seen)
    finally:
        cleanup = await _connect(port)
        await cleanup.execute("DROP TABLE IF EXISTS sc_tab; DROP TYPE IF EXISTS sc_typ")
        await cleanup.close()
    return seen


# DDL made elsewhere (straight to the server) is noticed when the server refuses a
# statement; a changed parameter type that no statement failed on cannot be.
DDL_ELSEWHERE = ("silent", "in_transaction", "in_pool")
CASES = [
    (name, mode, ddl)
    for name in SCENARIOS
    for mode in ("transaction", "session")
    for ddl in ("ddl-through-sluice", "ddl-direct")
    if ddl == "ddl-through-sluice" or name in DDL_ELSEWHERE
]


@pytest.mark.parametrize(("name", "mode", "ddl"), CASES)
def test_new_parse_after_schema_change(
    start_sluice: StartSluice, pg: PgCluster, name: str, mode: str, ddl: str
) -> None:
    scenario = SCENARIOS[name]

    def ddl_on(port: int) -> Connect:
        return lambda: _connect(port)

    want = asyncio.run(_run(scenario, pg.port, ddl_on(pg.port)))
    proc = start_sluice(pool={"mode": mode, "max_connections": 6})
    port = _port(proc)
    # a statement prepared by an earlier client waits on the pooled connections
    asyncio.run(_run(scenario, port, ddl_on(port)))
    got = asyncio.run(_run(scenario, port, ddl_on(pg.port if ddl == "ddl-direct" else port)))
    assert got == want


@pytest.mark.parametrize("pinned", [False, True], ids=["idle", "being-reset"])
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_drop_database_its_clients_left(
    start_sluice: StartSluice, pg: PgCluster, mode: str, pinned: bool
) -> None:
    """Sluice's pooled connections to a database are not sessions a client can see: DROP
    DATABASE right after its clients have left succeeds, as directly, whether their
    connections are idle in the pool or still being reset (a pinned client's)."""
    proc = start_sluice(pool={"mode": mode, "max_connections": 4})
    port = _port(proc)
    name = f"sc_dropme_{mode}_{int(pinned)}"

    async def run() -> str:
        pg.create_database(name, owner=APP_USER)
        user = await asyncpg.connect(**{**_args(port), "database": name})
        await user.execute("SET work_mem = '8MB'" if pinned else "SELECT 1")
        dropper = await _connect(port)
        try:
            await user.close()  # its server connection stays in Sluice's pool (reset first)
            return str(await dropper.execute(f"DROP DATABASE {name}"))
        finally:
            await dropper.close()

    assert asyncio.run(run()) == "DROP DATABASE"
    assert pg.psql(f"select count(*) from pg_database where datname = '{name}'") == "0"


class Moved:
    """A statement a client prepared, run again after a schema change on a pooled connection
    it was never prepared on (directly: in the client's own session, which plans it again
    with the parameter types its Parse gave and refuses another result type, 0A000)."""

    def __init__(
        self, sql: str, change: str, args: tuple[Any, ...] = (), *, fresh: bool = False,
        in_transaction: bool = False,
    ) -> None:  # fmt: skip
        self.sql, self.change, self.args = sql, change, args
        self.fresh = fresh  # another client prepares the text after the change, first
        self.in_transaction = in_transaction  # the second run is in a transaction block

    async def __call__(self, port: int, ddl: Connect, seen: list[Any]) -> None:
        con, holder, other = await _connect(port), await _connect(port), await ddl()
        try:
            await con.execute("CREATE TABLE sc_tab(a int, b int); INSERT INTO sc_tab VALUES (1, 2)")
            statement = await con.prepare(self.sql)
            await _outcome(seen, statement.fetchrow(*self.args))
            # the connection just returned is lent next: `holder` keeps it in a transaction
            await holder.execute("BEGIN")
            await other.execute(self.change)
            if self.fresh:  # prepares the text on the connection lent next
                fresh = await _connect(port)
                await _outcome(seen, fresh.fetchrow(self.sql, *self.args))
                await fresh.close()
            if self.in_transaction:
                async with con.transaction():
                    await _outcome(seen, statement.fetchrow(*self.args))
                    await _outcome(seen, con.fetchrow("SELECT 1"))
            else:
                await _outcome(seen, statement.fetchrow(*self.args))
            await holder.execute("COMMIT")
            await _outcome(seen, con.fetchrow("SELECT count(*) FROM sc_tab"))  # writes made
        finally:
            for connection in (con, holder, other):
                await connection.close()


_TO_TEXT = "ALTER TABLE sc_tab ALTER COLUMN b SET DATA TYPE text"
MOVED = {
    "result type changed": Moved("SELECT * FROM sc_tab", _TO_TEXT),
    "result type changed, the text prepared since": Moved(
        "SELECT * FROM sc_tab", _TO_TEXT, fresh=True
    ),
    "result type changed, in a transaction": Moved(
        "SELECT * FROM sc_tab", _TO_TEXT, in_transaction=True
    ),
    "a write returning rows": Moved("INSERT INTO sc_tab VALUES (3, 4) RETURNING *", _TO_TEXT),
    "result type kept": Moved("SELECT a, b FROM sc_tab", "ALTER TABLE sc_tab ADD COLUMN c int"),
    # the client encodes $1 as the int4 its Parse was told; a new Parse would infer int8
    "parameter type inferred otherwise now": Moved(
        "INSERT INTO sc_tab VALUES (5, $1) RETURNING a",
        "ALTER TABLE sc_tab ALTER COLUMN b SET DATA TYPE bigint",
        (6,),
        fresh=True,
    ),
}


@pytest.mark.parametrize("ddl", ["ddl-through-sluice", "ddl-direct"])
@pytest.mark.parametrize("case", list(MOVED))
def test_statement_run_on_a_connection_it_was_never_prepared_on(
    start_sluice: StartSluice, pg: PgCluster, case: str, ddl: str
) -> None:
    scenario = MOVED[case]
    want = asyncio.run(_run(scenario, pg.port, lambda: _connect(pg.port)))
    proc = start_sluice(pool={"mode": "transaction", "max_connections": 6})
    port = _port(proc)
    other = pg.port if ddl == "ddl-direct" else port
    got = asyncio.run(_run(scenario, port, lambda: _connect(other)))
    assert got == want


def _replies(client: RawClient, data: bytes) -> list[tuple[str, str]]:
    """Send `data` (ending in a Sync); each reply as its type and, for an error, its
    SQLSTATE, message and routine (what drivers tell a stale plan by)."""
    client.send(data)
    seen = []
    for kind, body in client.read_until_ready():
        if kind == b"E":
            fields = m.parse_error_fields(body)
            seen.append(("E", f"{fields['C']} {fields['M']} {fields.get('R', '')}"))
        else:
            seen.append((kind.decode(), body.hex() if kind in b"tZ" else ""))
    return seen


def _describe_moved(port: int, ddl_port: int) -> list[list[tuple[str, str]]]:
    """Describe and Bind of a statement on a connection it was never prepared on, after
    a change of its result type, on a bare socket: every reply, in order."""
    con, holder, other = RawClient(port), RawClient(port), RawClient(ddl_port)
    for client in (con, holder, other):
        client.login()
    statement = m.parse(b"s1", b"SELECT * FROM sc_tab WHERE a = $1\x00\x00\x00")
    describe = m.describe_statement(b"s1")
    bind = m.message(b"B", b"\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00")
    execute = m.message(b"E", b"\x00\x00\x00\x00\x00")
    try:
        con.query("CREATE TABLE sc_tab(a int, b int); INSERT INTO sc_tab VALUES (1, 2)")
        seen = [_replies(con, statement + describe + m.SYNC)]
        holder.query("BEGIN")  # keeps the connection just returned
        other.query("ALTER TABLE sc_tab ALTER COLUMN b SET DATA TYPE text")
        seen.append(_replies(con, describe + m.SYNC))
        seen.append(_replies(con, describe + bind + execute + m.SYNC))
        seen.append(_replies(con, bind + execute + m.SYNC))
        holder.query("COMMIT")
        con.query("DROP TABLE sc_tab")
    finally:
        for client in (con, holder, other):
            client.close()
    return seen


@pytest.mark.parametrize("ddl", ["ddl-through-sluice", "ddl-direct"])
def test_describe_of_a_statement_moved_after_a_change(
    start_sluice: StartSluice, pg: PgCluster, ddl: str
) -> None:
    """A Describe gets the parameters, then the server's 0A000 (as from RevalidateCachedQuery),
    and the error aborts what follows up to the Sync."""
    want = _describe_moved(pg.port, pg.port)
    proc = start_sluice(pool={"mode": "transaction", "max_connections": 6})
    port = _port(proc)
    got = _describe_moved(port, pg.port if ddl == "ddl-direct" else port)
    assert got == want
    assert got[1][1][0] == "E" and got[1][1][1].startswith("0A000")


def test_client_leaving_while_its_bind_waits_for_a_describe(
    start_sluice: StartSluice, pg: PgCluster
) -> None:
    """A client that sends a Bind the proxy holds (its statement is being prepared on the
    lent connection) and leaves: the connection is cleaned up and lent again; nothing
    the client sent half-way runs."""
    proc = start_sluice(pool={"mode": "transaction", "max_connections": 2})
    port = _port(proc)
    con, holder = RawClient(port), RawClient(port)
    for client in (con, holder):
        client.login()
    con.query("CREATE TABLE sc_tab(a int, b int)")
    insert = m.parse(b"s1", b"INSERT INTO sc_tab VALUES (1, 2) RETURNING *\x00\x00\x00")
    _replies(con, insert + m.describe_statement(b"s1") + m.SYNC)
    holder.query("BEGIN")  # the connection just returned: con's statement moves
    bind = m.message(b"B", b"\x00s1\x00\x00\x00\x00\x00\x00\x00")
    con.send(bind + m.message(b"E", b"\x00\x00\x00\x00\x00"))  # no Sync: then it leaves
    con.close()
    holder.query("COMMIT")
    others = [RawClient(port) for _ in range(3)]
    try:
        for other in others:
            other.login()
            assert other.query("SELECT count(*) FROM sc_tab")[1] == (
                b"D",
                b"\x00\x01\x00\x00\x00\x010",
            )
        others[0].query("DROP TABLE sc_tab")
    finally:
        for client in (holder, *others):
            client.close()


def _discarded_after_an_error(port: int) -> list[list[tuple[str, str]]]:
    """A named Parse and a Close the server discards after an error (before the Sync):
    the statement named in the Parse does not exist, the one closed still does."""
    con = RawClient(port)
    con.login()
    select = m.parse(b"s1", b"SELECT 1\x00\x00\x00")

    def bind(name: bytes) -> bytes:
        return m.message(b"B", b"\x00" + name + b"\x00\x00\x00\x00\x00\x00\x00")

    execute = m.message(b"E", b"\x00\x00\x00\x00\x00")
    fail = m.parse(b"", b"SELECT 1/0\x00\x00\x00") + bind(b"") + execute + m.FLUSH
    try:
        seen = [_replies(con, select + m.SYNC)]
        con.send(fail)
        kinds = [con.read()]
        while kinds[-1] is not None and kinds[-1][0] != b"E":  # reported before the Sync
            kinds.append(con.read())
        close = m.message(b"C", b"Ss1\x00")
        seen.append(_replies(con, m.parse(b"s2", b"SELECT 2\x00\x00\x00") + close + m.SYNC))
        seen.append(_replies(con, bind(b"s2") + execute + m.SYNC))
        seen.append(_replies(con, bind(b"s1") + execute + m.SYNC))
    finally:
        con.close()
    return seen


def test_statements_the_server_discards_after_an_error(
    start_sluice: StartSluice, pg: PgCluster
) -> None:
    want = _discarded_after_an_error(pg.port)
    proc = start_sluice(pool={"mode": "transaction", "max_connections": 2})
    assert _discarded_after_an_error(_port(proc)) == want
