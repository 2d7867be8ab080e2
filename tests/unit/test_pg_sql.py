"""classify(): which SQL pins a client, which settings are tracked, what is ignored.

Tables of (SQL, expected Effect). A pin that is missed leaks session state to
another client; a pin that is not needed costs a backend connection; both are
bugs, so both directions are tested. The same holds for opaque SQL (a missed
one skips the state check, a needless one costs a round trip) and for writes.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings

from fuzzing import examples, sqlish
from sluice.wire.anchors import Anchors
from sluice.wire.pg import sql as pg_sql
from sluice.wire.pg.sql import (
    NO_EFFECT,
    TRACKED,
    Change,
    ChangeKind,
    Effect,
    classify,
    classify_bytes,
    classify_statement,
    fold_identifier,
    savepoint_changes,
    split_statements,
)

SET, RESET, RESET_ALL = ChangeKind.SET, ChangeKind.RESET, ChangeKind.RESET_ALL
SAVEPOINT, ROLLBACK_TO, RELEASE = ChangeKind.SAVEPOINT, ChangeKind.ROLLBACK_TO, ChangeKind.RELEASE


def sets(*pairs: tuple[str, str | None]) -> tuple[Change, ...]:
    """Changes from (name, statement text): None for a RESET."""
    return tuple(
        Change(RESET, name) if stmt is None else Change(SET, name, stmt.encode("latin-1"))
        for name, stmt in pairs
    )

PINS: list[tuple[str, str]] = [
    ("PREPARE p AS SELECT 1", "PREPARE"),
    ("prepare p (int) as select $1", "PREPARE"),
    ("EXECUTE p", "EXECUTE"),
    ("execute p(1)", "EXECUTE"),
    ("DEALLOCATE p; SELECT 1", "DEALLOCATE"),
    ("DEALLOCATE", "DEALLOCATE"),
    ("DEALLOCATE a b", "DEALLOCATE"),
    ("CREATE TABLE pg_temp.t (a int)", "temporary object"),
    ('create table "pg_temp".t (a int)', "temporary object"),
    ("CREATE UNLOGGED TABLE IF NOT EXISTS pg_temp.t (a int)", "temporary object"),
    ("create table pg_temp_3.t as select 1", "temporary object"),
    ("CREATE VIEW pg_temp.v AS SELECT 1", "temporary object"),
    (
        "create or replace function pg_temp.f() returns int as 'select 1' language sql",
        "temporary object",
    ),
    ("create sequence pg_temp.s", "temporary object"),
    ("SELECT 1 INTO pg_temp.t", "temporary object"),
    ("select * into table pg_temp.t from x", "temporary object"),
    ("CREATE TEMP TABLE t (a int)", "temporary object"),
    ("create temporary table t (a int)", "temporary object"),
    ("CREATE GLOBAL TEMPORARY TABLE t (a int)", "temporary object"),
    ("create local temp table t as select 1", "temporary object"),
    ("CREATE TEMPORARY SEQUENCE s", "temporary object"),
    ("create temp view v as select 1", "temporary object"),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "temporary object"),
    ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", "temporary object"),
    ("select * into temp t from x", "temporary object"),
    ("SELECT a, b INTO TEMPORARY TABLE t FROM x", "temporary object"),
    ("with q as (select 1) select * into temp t from q", "temporary object"),
    ("LISTEN chan", "LISTEN"),
    ('listen "Chan"', "LISTEN"),
    ("SELECT pg_advisory_lock(1)", "session advisory lock"),
    ("select pg_advisory_lock_shared(1, 2)", "session advisory lock"),
    ("SELECT pg_try_advisory_lock(42)", "session advisory lock"),
    ("select pg_try_advisory_lock_shared (1)", "session advisory lock"),
    ("select pg_catalog.pg_advisory_lock(1)", "session advisory lock"),
    ("UPDATE t SET a = 1 WHERE pg_try_advisory_lock(id)", "session advisory lock"),
    ('select "pg_advisory_lock"(4250)', "session advisory lock"),
    ('select pg_catalog."pg_try_advisory_lock"(1)', "session advisory lock"),
    ('SELECT "pg_catalog" . "pg_advisory_lock_shared" (1)', "session advisory lock"),
    ("select PG_ADVISORY_LOCK(1)", "session advisory lock"),
    ("select x from t where pg_advisory_lock(1) is not null", "session advisory lock"),
    ("select setseed(0.5)", "setseed()"),
    ("select set_config('work_mem', '1MB', false)", "set_config() for the session"),
    ("SELECT set_config('search_path', 'a', false), 1", "set_config() for the session"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "cursor WITH HOLD"),
    ("declare c no scroll cursor with  hold for select 1", "cursor WITH HOLD"),
    ("LOAD 'auto_explain'", "LOAD"),
    ("SET work_mem = '64MB'", "SET work_mem"),
    ("set enable_seqscan to off", "SET enable_seqscan"),
    ("SET myapp.user_id = '42'", "SET myapp.user_id"),
    ("SET SESSION work_mem TO '1MB'", "SET work_mem"),
    ("SET ROLE admin", "SET ROLE"),
    ("set role none", "SET ROLE"),
    ("SET SESSION ROLE admin", "SET ROLE"),
    ("SET SESSION AUTHORIZATION bob", "SET SESSION AUTHORIZATION"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "SET SESSION CHARACTERISTICS"),
    ("DISCARD TEMP", "DISCARD"),
    ("/* leading comment */ PREPARE p AS SELECT 1", "PREPARE"),
    ("-- comment\nLISTEN x", "LISTEN"),
]


@pytest.mark.parametrize(("sql", "reason"), PINS)
def test_pins(sql: str, reason: str) -> None:
    effect = classify(sql)
    assert effect.pin == reason
    assert effect.changes == ()


DROPS: list[tuple[str, str]] = [
    ("DISCARD ALL", "DISCARD"),
    ("discard all", "DISCARD"),
    ("DEALLOCATE ALL; SELECT 1", "DEALLOCATE"),
    ("select 1; deallocate prepare all", "DEALLOCATE"),
]


@pytest.mark.parametrize(("sql", "reason"), DROPS)
def test_statement_drops(sql: str, reason: str) -> None:
    effect = classify(sql)
    assert (effect.pin, effect.drops_statements) == (reason, True)
    # DISCARD ALL resets every setting too
    assert effect.changes == ((Change(RESET_ALL),) if reason == "DISCARD" else ())


@pytest.mark.parametrize("sql", ["DISCARD PLANS", "DEALLOCATE p", 'deallocate "all"'])
def test_no_drop(sql: str) -> None:
    assert not classify(sql).drops_statements


# A Query that is one DEALLOCATE: the proxy answers it for the client's own names.
LONE_DEALLOCATES: list[tuple[str, str]] = [
    ("DEALLOCATE ALL", ""),
    ("deallocate prepare all", ""),
    ("DEALLOCATE ALL;", ""),
    ("DEALLOCATE p", "p"),
    ("deallocate prepare P", "p"),
    ('DEALLOCATE "P"', "P"),
    ('deallocate "all"', "all"),
    ("DEALLOCATE _pg3_0", "_pg3_0"),
    ("/* c */ DEALLOCATE s1 -- c", "s1"),
]


@pytest.mark.parametrize(("sql", "name"), LONE_DEALLOCATES)
def test_lone_deallocate(sql: str, name: str) -> None:
    assert classify(sql) == Effect(deallocate=name)


TRACKED_SETS: list[tuple[str, tuple[tuple[str, str | None], ...]]] = [
    ("SET search_path TO a, b", (("search_path", "SET search_path TO a, b"),)),
    ('set search_path = "$user", public', (("search_path", 'set search_path = "$user", public'),)),
    ("set TimeZone = 'UTC'", (("timezone", "set TimeZone = 'UTC'"),)),
    ("SET \"TimeZone\" TO 'UTC'", (("timezone", "SET \"TimeZone\" TO 'UTC'"),)),
    ("SET SESSION DateStyle TO ISO", (("datestyle", "SET SESSION DateStyle TO ISO"),)),
    ("SET TIME ZONE 'Europe/Paris'", (("timezone", "SET TIME ZONE 'Europe/Paris'"),)),
    # the client's own text is replayed, whatever syntax it uses
    (
        "SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE",
        (("timezone", "SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE"),),
    ),
    ("SET TIME ZONE LOCAL", (("timezone", None),)),
    ("SET TIME ZONE DEFAULT", (("timezone", None),)),
    ("SET NAMES 'UTF8'", (("client_encoding", "SET NAMES 'UTF8'"),)),
    ("SET NAMES DEFAULT", (("client_encoding", None),)),
    ("SET statement_timeout TO DEFAULT", (("statement_timeout", None),)),
    ("set search_path = default", (("search_path", None),)),
    ("SET application_name = 'a;b'", (("application_name", "SET application_name = 'a;b'"),)),
    ("SET extra_float_digits = 3 -- x", (("extra_float_digits", "SET extra_float_digits = 3"),)),
    ("SET jit = off /* comment */", (("jit", "SET jit = off"),)),
    ("RESET search_path", (("search_path", None),)),
    ("reset TimeZone", (("timezone", None),)),
    ("RESET TIME ZONE", (("timezone", None),)),
    # any name: a startup value of the client's may need restoring; a RESET never pins
    ("RESET work_mem", (("work_mem", None),)),
    ("SET work_mem TO DEFAULT", (("work_mem", None),)),
    ("set session enable_seqscan = default", (("enable_seqscan", None),)),
    (
        "SET search_path TO a; SET TimeZone = 'UTC'",
        (("search_path", "SET search_path TO a"), ("timezone", "SET TimeZone = 'UTC'")),
    ),
    (
        "select set_config('search_path', 'a', false)",
        (("search_path", "select set_config('search_path', 'a', false)"),),
    ),
]


@pytest.mark.parametrize(("sql", "pairs"), TRACKED_SETS)
def test_tracked_sets(sql: str, pairs: tuple[tuple[str, str | None], ...]) -> None:
    assert classify(sql) == Effect(changes=sets(*pairs))


def test_every_tracked_name_is_tracked() -> None:
    for name in TRACKED:
        assert classify(f"SET {name} TO 'v'") == Effect(changes=sets((name, f"SET {name} TO 'v'")))
        upper = f"SET {name.upper()} = 'v'"
        assert classify(upper) == Effect(changes=sets((name, upper)))
        assert classify(f"RESET {name}") == Effect(changes=sets((name, None)))


def test_set_from_current_changes_nothing() -> None:
    assert classify("SET timezone FROM CURRENT") == NO_EFFECT


def test_reset_all_keeps_its_place() -> None:
    assert classify("RESET ALL") == Effect(changes=(Change(RESET_ALL),))
    assert classify("SET jit = on; RESET ALL; SET jit = off") == Effect(
        changes=(*sets(("jit", "SET jit = on")), Change(RESET_ALL), *sets(("jit", "SET jit = off")))
    )


SAVEPOINTS: list[tuple[str, tuple[Change, ...]]] = [
    ("SAVEPOINT a", (Change(SAVEPOINT, "a"),)),
    ("savepoint Foo", (Change(SAVEPOINT, "foo"),)),
    ('SAVEPOINT "Foo"', (Change(SAVEPOINT, "Foo"),)),
    ('SAVEPOINT "a""b"', (Change(SAVEPOINT, 'a"b'),)),
    ("ROLLBACK TO a", (Change(ROLLBACK_TO, "a"),)),
    ("rollback to savepoint A", (Change(ROLLBACK_TO, "a"),)),
    ("ROLLBACK WORK TO SAVEPOINT a", (Change(ROLLBACK_TO, "a"),)),
    ("ROLLBACK TRANSACTION TO a", (Change(ROLLBACK_TO, "a"),)),
    ("RELEASE a", (Change(RELEASE, "a"),)),
    ("RELEASE SAVEPOINT \"_pg3_1\"", (Change(RELEASE, "_pg3_1"),)),
    ("ROLLBACK", ()),
    ("ROLLBACK AND CHAIN", (Change(ROLLBACK_TO),)),
    ("abort work and chain", (Change(ROLLBACK_TO),)),
    ("ROLLBACK AND NO CHAIN", ()),
    ("ROLLBACK PREPARED 'x'", ()),
    ("SELECT 'savepoint a'", ()),
    (
        "SAVEPOINT s; SET jit = off; ROLLBACK TO s",
        (Change(SAVEPOINT, "s"), *sets(("jit", "SET jit = off")), Change(ROLLBACK_TO, "s")),
    ),
]


@pytest.mark.parametrize(("sql", "changes"), SAVEPOINTS)
def test_savepoints(sql: str, changes: tuple[Change, ...]) -> None:
    """A text that changes settings reports its savepoint commands in order with them; the
    others are read by `savepoint_changes` (only while some settings are pending)."""
    assert savepoint_changes(sql.encode()) == tuple(c for c in changes if c.kind >= SAVEPOINT)
    with_settings = any(c.kind < SAVEPOINT for c in changes)
    assert classify(sql).changes == (changes if with_settings else ())


def test_identifiers_fold_as_postgresql_folds_them() -> None:
    assert fold_identifier("ABC") == "abc"
    assert fold_identifier('"ABC"') == "ABC"
    assert fold_identifier("x" * 70) == "x" * 63
    # UTF-8 bytes (as latin-1 text) are neither lower-cased nor cut inside a character
    e_acute = "\u00c3\u0089"  # UTF-8 of É read as latin-1
    assert fold_identifier(e_acute) == e_acute
    assert fold_identifier("x" * 62 + e_acute) == "x" * 62


CUSTOM: list[tuple[str, str]] = [
    ("SET myapp.user_id = 42", "myapp.user_id"),
    ("set session myapp.x to 'a'", "myapp.x"),
    ("SET LOCAL myapp.role = 'admin'", "myapp.role"),
    ("RESET myapp.other", "myapp.other"),
    ('SET "my"."x" = 1', "my"),
    ("SELECT set_config('request.jwt.claims', $1, true)", "set_config()"),
    ("select pg_catalog.set_config( 'a.b', 'c', false)", "set_config()"),
    ("SELECT set_config($1, $2, true)", "set_config()"),
    ("SELECT set_config('jit', 'on', true), set_config('x.y', '1', true)", "set_config()"),
    ("SELECT set_config('search_path', 'a', false)", ""),
    ("SELECT set_config('jit', 'off', true)", ""),
    ("SELECT 'set_config(''a.b'', 1, true)'", ""),
    ("SELECT current_setting('myapp.x', true)", ""),
    ("SET work_mem = '1MB'", ""),
]


@pytest.mark.parametrize(("sql", "name"), CUSTOM)
def test_custom_settings(sql: str, name: str) -> None:
    assert classify(sql).custom == name


NO_EFFECTS: list[str] = [
    "SELECT 1",
    "select * from t where a = $1",
    "SELECT * FROM t OFFSET 10",
    "SET LOCAL search_path TO a",
    "set local work_mem = '1GB'",
    "SET LOCAL ROLE admin",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "set transaction read only",
    "SET CONSTRAINTS ALL DEFERRED",
    "set constraints c1, c2 immediate",
    "PREPARE TRANSACTION 'tx1'",
    "COMMIT PREPARED 'tx1'",
    "SELECT pg_advisory_xact_lock(1)",
    "select pg_try_advisory_xact_lock_shared(1)",
    "select pg_advisory_unlock(1)",
    "DECLARE c CURSOR FOR SELECT 1",
    "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
    "SELECT 1 INTO temp_results",
    "SELECT * INTO t FROM x",
    "UNLISTEN chan",
    "ALTER ROLE app SET search_path = a",
    "ALTER DATABASE d SET work_mem = '1MB'",
    "",
    ";",
    "  ;  ",
    # keywords inside string constants, comments, dollar quotes and identifiers
    "SELECT 'SET work_mem = 1'",
    "select 'prepare x as select 1; listen y'",
    "SELECT 'pg_advisory_lock(1)'",
    "select $$pg_advisory_lock(1)$$",
    "select $fn$ select pg_try_advisory_lock(1) $fn$",
    "SELECT 'x into temp y' FROM t",
    "select $$ into temp y $$",
    "DECLARE c CURSOR FOR SELECT 'with hold'",
    "select 1 -- set work_mem = 1\n",
    "select 1 /* ; LISTEN x */",
    "select 1; /* PREPARE p AS SELECT 1 */",
    'select "set" from t',
    "select $$; set work_mem = 1; $$",
    "select ';'; select 'listen'",
    "SELECT E'it\\'s; LISTEN x'",
    "select e'\\' pg_advisory_lock(1) '",
    "select E'\\\\', 'pg_advisory_lock(1)'",
    # calls of known built-ins, and parentheses that are not calls
    "select count(*) from t",
    "SELECT lower(a), coalesce(b, 1) FROM t WHERE id IN (1, 2) AND NOT (c OR d)",
    "select * from generate_series(1, 3) g(i)",
    "select * from generate_series(1, 3) as g(i)",
    "select * from tbl as t(a, b)",
    "select x::numeric(10, 2), y::pg_catalog.varchar(3) from t",
    "select cast(x as varchar(10)), cast(y as character varying(3))",
    "select row_number() over (partition by a order by b) from t",
    "select count(*) filter (where a) from t",
    "SELECT EXISTS (SELECT 1) AND a = ANY (ARRAY[1]) FROM t",
    "select a from t where (a, b) in ((1, 2)) order by (a)",
    "with t(a) as (select 1) select a from t",
    "with recursive t(n) as (values (1)) select n from t",
    "select a from t join (select 1) s on (true) join u using (id)",
    "select json_build_object('a', 1), jsonb_agg(x) within group (order by y) from t",
    'select "pg_catalog"."lower"(\'X\'), pg_catalog.now(), "now"()',
    "select pg_advisory_xact_lock(1), pg_try_advisory_xact_lock(2), pg_advisory_unlock(3)",
    "select lastval(), currval('s')",
    "select set_config('statement_timeout', '1s', true)",
    "select x from t tablesample bernoulli (10) repeatable (1)",
    "select 'myfunc(1)', $$ do_it(1) $$, $f$ call p() $f$",
    "select 1 -- myfunc(1)\n",
    "select 1 /* myfunc(1) */",
    "SELECT E'f(\\'x)'",
    "select extract(epoch from now()), substring(a from 1 for 2), trim(both 'x' from b)",
    "ALTER ROLE app SET search_path = a",
    # no column default runs: what lastval() answers stays as it was
    "UPDATE t SET a = 1",
    "update settings set value = 'x' where name = 'reset'",
    "update t set a = 'default'",
    "DELETE FROM t",
    "EXPLAIN ANALYZE UPDATE t SET a = 1",
    "with x as (delete from t returning *) select * from x",
    "TRUNCATE t",
    "SHOW search_path",
    "FETCH 10 FROM c",
    "CLOSE c",
    "NOTIFY chan, 'x'",
]

# May advance a sequence: lastval()/currval() answers belong to this client afterwards.
WRITES: list[str] = [
    "INSERT INTO t VALUES (1)",
    "insert into t (a, b) values (1, 2) returning id",
    "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2",
    "INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    "COPY t FROM STDIN",
    "UPDATE t SET a = DEFAULT",
    "with x as (insert into t values (1) returning *) select * from x",
    "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
    "select nextval('s')",
    "SELECT pg_catalog.setval('s', 10)",
    "update t set a = nextval('s')",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes(sql: str) -> None:
    assert classify(sql) == Effect(writes=True)


# Opaque: the classifier cannot tell what they leave in the session.
OPAQUE: list[str] = [
    "DO $$ BEGIN PERFORM set_config('role', 'other', false); END $$",
    "do language plpgsql 'begin null; end'",
    "CALL p()",
    "call s.p(1)",
    "select myfunc(1)",
    "SELECT * FROM t WHERE id = my_check(1)",
    "select public.lower(a) from t",
    'select s."f"(1)',
    'select "my func"(1)',
    'select "Lower"(a)',
    'select pg_catalog."PG_SLEEP"(1)',
    'select "in"(1)',
    "select cube(1)",
    "select x from t join lateral f(t.a) on true",
    "select set_config('role', 'other', 1=0)",
    "select set_config('a.b', 'x', is_local)",
    "select set_config('search_path', 'a', 'false')",
    "select set_config('search_path', 'a', false), myfunc()",
    "REFRESH MATERIALIZED VIEW v",
    "CREATE TABLE t (a int)",
    "CREATE TABLE temp (a int)",
    "create table temp_data (a int)",
    "CREATE VIEW temporary_v AS SELECT 1",
    "CREATE UNLOGGED TABLE t (a int)",
    "create function f() returns int as $$ select 1 $$ language sql",
    "IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y",
    "SECURITY LABEL ON TABLE t IS 'x'",
    "select 1; do $$ begin end $$",
]


@pytest.mark.parametrize("sql", OPAQUE)
def test_opaque(sql: str) -> None:
    effect = classify(sql)
    assert effect.opaque and effect.writes
    assert effect.pin == ("set_config() for the session" if "false)," in sql else "")


@pytest.mark.parametrize("sql", NO_EFFECTS)
def test_no_effect(sql: str) -> None:
    assert classify(sql) == NO_EFFECT


SCHEMA_CHANGES = [
    ("DROP TABLE t", True),
    ("alter table t alter column b set data type text", True),
    ("ALTER TYPE typ ADD ATTRIBUTE c text", True),
    ("CREATE TYPE typ AS (x int)", True),
    ("select 1; do $$ begin execute 'drop table t'; end $$", True),
    ("ALTER ROLE app SET search_path = a", False),
    ("CREATE INDEX ON t (a)", False),
    ("create unique index i on t (a)", False),
    ("DROP DATABASE d", False),
    ("select * from t", False),
]


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("DROP DATABASE d", "d"),
        ('drop database if exists "My DB"', "My DB"),
        ("DROP DATABASE Shop WITH (FORCE)", "shop"),
        ("DROP TABLE d", ""),
    ],
)
def test_dropped_database(sql: str, name: str) -> None:
    """Sluice closes its idle connections to a database a client drops."""
    assert classify(sql).dropped_database == name


@pytest.mark.parametrize(("sql", "changes"), SCHEMA_CHANGES)
def test_schema_changes(sql: str, changes: bool) -> None:
    """DDL, after which statements parsed before may not be what a new Parse gives."""
    assert classify(sql).schema is changes


MULTI: list[tuple[str, Effect]] = [
    ("SELECT 1; LISTEN x", Effect(pin="LISTEN")),
    ("LISTEN x; PREPARE p AS SELECT 1", Effect(pin="LISTEN")),  # the first reason is kept
    (
        "SET search_path TO a; SET work_mem = 1",
        Effect(pin="SET work_mem", changes=sets(("search_path", "SET search_path TO a"))),
    ),
    ("BEGIN; SET LOCAL jit = off; SELECT 1; COMMIT", NO_EFFECT),
    ("select 1; set jit = off; select 2", Effect(changes=sets(("jit", "set jit = off")))),
    (
        "SET jit = on; DISCARD ALL",
        Effect(
            pin="DISCARD",
            changes=(*sets(("jit", "SET jit = on")), Change(RESET_ALL)),
            drops_statements=True,
        ),
    ),
    ("select 'a;b'; RESET search_path", Effect(changes=sets(("search_path", None)))),
    # a statement hidden behind a constant the scanner misread would leak its SET
    ("SELECT E'\\''; SET work_mem = 1", Effect(pin="SET work_mem")),
    ("SELECT E'\\\\'; LISTEN x", Effect(pin="LISTEN")),
    ("SELECT 1 AS a$b$; LISTEN x", Effect(pin="LISTEN")),
    ("SELECT 1 AS col$1; SET jit = off", Effect(changes=sets(("jit", "SET jit = off")))),
]


@pytest.mark.parametrize(("sql", "effect"), MULTI)
def test_multi_statement(sql: str, effect: Effect) -> None:
    assert classify(sql) == effect


def test_set_value_kept_byte_for_byte() -> None:
    # the value is replayed verbatim: latin-1 decoding keeps every byte
    raw = "SET application_name = 'caf\u00c3\u00a9 x'"  # UTF-8 bytes of "café" read as latin-1
    assert classify(raw).changes == sets(("application_name", raw))
    assert classify(raw).changes[0].stmt == "SET application_name = 'café x'".encode()


SPLITS: list[tuple[str, list[str]]] = [
    ("", []),
    ("   ", []),
    (";;;", []),
    ("a;b", ["a", "b"]),
    ("select 1;", ["select 1"]),
    ("select ';'; set x=1", ["select ';'", "set x=1"]),
    ("select 'it''s;'", ["select 'it''s;'"]),
    ('select "a;b"', ['select "a;b"']),
    ('select "a"";b"; x', ['select "a"";b"', "x"]),
    ("select $$;$$; select 1", ["select $$;$$", "select 1"]),
    ("select $tag$ ; $ $tag$; x", ["select $tag$ ; $ $tag$", "x"]),
    ("select $a$ $b$ ; $b$ $a$; x", ["select $a$ $b$ ; $b$ $a$", "x"]),
    ("select $1; select $2", ["select $1", "select $2"]),
    ("select 1 -- ; comment\n; select 2", ["select 1", "select 2"]),
    ("select 1 -- trailing", ["select 1"]),
    ("/* a /* nested ; */ ; */ select 1", ["select 1"]),
    ("select 1 /* unterminated ; x", ["select 1"]),
    ("select 'unterminated; x", ["select 'unterminated; x"]),
    ("select $$ unterminated; x", ["select $$ unterminated; x"]),
    ("a/**/b", ["a b"]),
    # E'' strings take backslash escapes; plain ones do not
    ("select E'a\\';b'; c", ["select E'a\\';b'", "c"]),
    ("select e'\\\\'; c", ["select e'\\\\'", "c"]),
    ("select E'\\''; c", ["select E'\\''", "c"]),
    ("select E'a''b;'; c", ["select E'a''b;'", "c"]),
    ("select 'a\\'; c", ["select 'a\\'", "c"]),
    ("select typee'x;'; c", ["select typee'x;'", "c"]),
    ("select E'unterminated\\", ["select E'unterminated\\"]),
    # `$` inside an identifier does not start a dollar quote
    ("select 1 as a$b$; c", ["select 1 as a$b$", "c"]),
    ("select x_$tag$ ; c", ["select x_$tag$", "c"]),
    ("select ($tag$;$tag$); c", ["select ($tag$;$tag$)", "c"]),
    ("select $$a$$$$b;$$; c", ["select $$a$$$$b;$$", "c"]),
    ("select 1 - -1; select 2/2", ["select 1 - -1", "select 2/2"]),
]


@pytest.mark.parametrize(("sql", "parts"), SPLITS)
def test_split_statements(sql: str, parts: list[str]) -> None:
    assert split_statements(sql) == parts


def test_long_statements() -> None:
    """Bulk statements (many parameters and constants) classify like short ones."""
    values = ",".join(f"(${i}, 'set {i}; listen x')" for i in range(1, 20001))
    upsert = f"INSERT INTO t VALUES {values} ON CONFLICT (a) DO UPDATE SET b = excluded.b"
    assert len(upsert) > 400_000
    assert classify(upsert) == Effect(writes=True)
    assert classify(upsert + "; LISTEN chan") == Effect(pin="LISTEN", writes=True)
    assert classify(upsert.replace("excluded.b", "my_func(1)")).opaque
    assert classify(upsert.replace("excluded.b", "pg_advisory_lock(1)")).pin == (
        "session advisory lock"
    )
    assert len(split_statements(upsert + ";" + upsert)) == 2


CORPUS = (
    [sql for sql, _ in PINS]
    + [sql for sql, _ in DROPS]
    + [sql for sql, _ in TRACKED_SETS]
    + NO_EFFECTS
    + WRITES
    + OPAQUE
    + [sql for sql, _ in LONE_DEALLOCATES]
    + [sql for sql, _ in MULTI]
    + [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
        "UPDATE t SET a = 1 WHERE b = 2;",
        "\n\tSET timezone = 'UTC';",
        "select 1;\nset jit = off",
        "/* a */ SET work_mem = '1MB'",
        "select set_config('jit', 'on', false)",
        # the fast path for texts with literals inlined: only known words before '('
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        "VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP);",
        "UPDATE pgbench_accounts SET abalance = abalance + -4 WHERE aid = 5;",
        "insert into t values (my_func(1))",
        "insert into s.t as x (a) values (now())",
        "update t set a = lower('X') where b in (1, 2)",
        "update t set a = f(1)",
        "delete from t where pg_catalog.abs(a) > 1",
        "select x.lower (a) from x",
        "select lower (a), count (*) from t",
        "select 'lower(' || f(1)",
        "select $$ f( $$",
        'select "lower"(a)',
        "SELECT 1 FROM t WHERE x = ANY($1)",
        "select cube(1)",
    ]
)


@pytest.mark.parametrize("sql", CORPUS)
def test_byte_precheck_agrees_with_full_classification(sql: str) -> None:
    """The pre-check on raw bytes may skip parsing only where parsing finds nothing."""
    assert classify_bytes(sql.encode("latin-1", errors="replace")) == classify(sql)


# Statements built from SQL-ish fragments: the words the pre-check looks for (and words
# that merely contain them), calls of known and unknown functions, constants, quoted
# names, comments, semicolons, odd whitespace and non-ASCII bytes, in mixed case.
_LEADS = (
    "select", "show", "begin", "commit", "rollback", "end", "start", "fetch", "move",
    "close", "savepoint", "release", "values", "table", "update", "delete", "insert",
    "with", "set", "reset", "prepare", "execute", "deallocate", "discard", "listen",
    "load", "create", "do", "call", "copy", "declare", "explain", "merge", "(",
    "selectx", "end_", "table$", "values.x", "update1", "inserts", "deleted", "showé",
)  # fmt: skip
_FRAGMENTS = (
    "t", "a", "x.y", "pg_temp.t", '"T"', '"a""b"', "from", "where", "into", "as", "copy",
    "temp", "temporary", "template", "with hold", "hold", "holder", "set", "config",
    "set_config", "pg_catalog.set_config", "default", "defaults", "nextval", "lower",
    "now", "count", "abs", "f", "my_func", "pg_catalog.abs", "x.lower", "advisory",
    "pg_advisory_lock", "listen", "load", "upload", "prepare", "execute", "deallocate",
    "discard", "on", "in", "any", "values", "'1'", "'a''b'", "'('", "E'\\''", "e'x",
    "$$x$$", "$t$ f( $t$", "$1", "$", "(", ")", ",", "=", "*", ".", ";", "; ", "--c\n",
    "-- set x = 1\n", "/* c */", "/*", "*/", "-", "/", " ", "\t", "\n", "\r", "\x0b",
    "\x0c", "\x85", "\xa0", "\xe9", "\xff", "1", "42", "_x", "x$1",
    # whole phrases, so the rarer combinations come up too
    "; set jit = off", "; select 1", "into temp t", "into t (a)", "as t (a)", "copy t (a)",
    "with hold", "x.lower(a)", "f(1)", "lower (a)", "count(*)", "pg_advisory_lock(1)",
    "set_config('a', 'b', false)", "nextval('s')", "1(2)", "$1(2)", ".f(1)", "x.(1)",
    "s .f(1)", "s . lower(1)", "f\x85(1)", "lower\xa0(1)", "f--\n(1)", "f/**/(1)",
    '"f"(1)', "= default", "\xe9(1)", "e'x'(1)", "x'1' (1)", "$$x$$(1)",
)  # fmt: skip
_BLANKS = ("", " ", "  ", "\n", "\t", "\x0c", "\x85", "\x0b", "\r", "\xa0")


@settings(max_examples=examples(3000), deadline=None, database=None)
@given(sqlish(_LEADS, _FRAGMENTS, _BLANKS))
@example("selectx 1")
@example("update1 set a = 1")
@example("SELECT 1 FROM t WHERE a IN (SELECT hold FROM u)")
@example("select f--\n(1)")
@example("select * into temp t from u")
@example("select s .f(1)")
def test_byte_precheck_agrees_on_generated_statements(sql: str) -> None:
    """The fast answers of the pre-check are the full classification's, whatever the text;
    the compiled build's loops find what the interpreted one's regular expressions do."""
    assert classify_bytes(sql.encode("latin-1")) == classify(sql)
    for _ in range(2):  # the first time classified, then from the statement cache
        assert classify_statement(sql.encode("latin-1")) == classify(sql)
    low = sql.encode("latin-1").lower()
    assert pg_sql._has_trigger(low) == (pg_sql._TRIGGER_BYTES.search(low) is not None)
    assert pg_sql._ANCHORED.found_in_here(low) == pg_sql._has_trigger(low)  # (C loop or not)
    assert pg_sql._first_word(low) == pg_sql._first_word_re(low)
    raw = sql.encode("latin-1")
    if pg_sql.QUICK is not None:  # the C pre-check decides every text without a parenthesis
        answer = _quick_in_c(raw)
        assert answer == (-1 if b"(" in raw else pg_sql._quick(raw))


def _quick_in_c(raw: bytes) -> int:
    assert pg_sql.QUICK is not None
    return pg_sql.QUICK(
        raw, pg_sql._CLASSES, pg_sql._ANCHORED_TABLE, pg_sql._ANCHORED_WORDS, pg_sql._READS,
        pg_sql._PLAIN_CHANGES, pg_sql._DEFAULT_WORDS,
    )  # fmt: skip


def test_c_precheck_answers_as_the_python_one() -> None:
    """The C pre-check (built with the compiled package): its answers on plain texts, the
    texts it leaves to the Python one, and what it refuses to be handed."""
    if pg_sql.QUICK is None:
        pytest.skip("the C pre-check is built with the compiled package")
    cases = {
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 7;": pg_sql.QUICK_NONE,
        b"  \tUPDATE t SET a = 1 WHERE b = 2": pg_sql.QUICK_NONE,
        b"update t set a = default": pg_sql.QUICK_FULL,
        b"INSERT INTO t VALUES ($1)": -1,  # a parenthesis: the Python pre-check's
        b"insert into t select 1": pg_sql.QUICK_WRITES,
        b"select 1; select 2": pg_sql.QUICK_FULL,
        b"select 1 ;; \r\n": pg_sql.QUICK_NONE,
        b"SET search_path = a": pg_sql.QUICK_FULL,
        b"select * from t -- c": pg_sql.QUICK_FULL,
        b"LISTEN x": pg_sql.QUICK_FULL,
        b"selectx 1": pg_sql.QUICK_FULL,
        b"": pg_sql.QUICK_FULL,
        b"select " + b"1 " * 4096: -1,  # longer than its buffer
    }
    for text, answer in cases.items():
        assert _quick_in_c(text) == answer, text
        assert answer == -1 or pg_sql._quick(text) == answer, text
    quick = pg_sql.QUICK
    good = (pg_sql._CLASSES, pg_sql._ANCHORED_TABLE, pg_sql._ANCHORED_WORDS, pg_sql._READS,
            pg_sql._PLAIN_CHANGES, pg_sql._DEFAULT_WORDS)  # fmt: skip
    for bad in [("select 1", *good), (b"x", b"short", *good[1:]),
                (b"x", *good[:4], ("update",), good[5]), (b"x", *good[:5])]:  # fmt: skip
        with pytest.raises(TypeError):
            quick(*bad)


def test_statement_cache_keeps_effects_by_text_and_stays_bounded() -> None:
    """A Parse text seen before is not classified again; the cache holds at most
    `_STATEMENTS_MAX` texts (the oldest go first) and no text longer than `_CACHE_MAX_LEN`."""
    pg_sql._STATEMENTS.clear()
    text = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
    effect = classify_statement(text)
    assert effect is NO_EFFECT
    assert list(pg_sql._STATEMENTS.items()) == [(text, effect)]
    set_effect = classify_statement(b"SET search_path = a")
    assert set_effect.changes and classify_statement(b"SET search_path = a") is set_effect
    for n in range(pg_sql._STATEMENTS_MAX + 10):
        classify_statement(b"SELECT %d" % n)
    assert len(pg_sql._STATEMENTS) == pg_sql._STATEMENTS_MAX
    assert text not in pg_sql._STATEMENTS and b"SELECT 10" in pg_sql._STATEMENTS
    long_text = b"SELECT " + b"1, " * pg_sql._CACHE_MAX_LEN + b"1"
    assert classify_statement(long_text) is NO_EFFECT
    assert long_text not in pg_sql._STATEMENTS


def test_anchor_loop_in_c_refuses_what_is_not_its_tables() -> None:
    """The C loop (built with the compiled package) checks what it is handed."""
    found_in = pytest.importorskip("sluice.wire._anchors").found_in
    table = pg_sql._ANCHORED._group
    words = pg_sql._ANCHORED._words
    assert found_in(b"listen x", table, words, None) is True
    assert found_in(b"select 1", table, words, None) is False
    for bad in [("text", table, words, None), (b"x", b"short", words, None),
                (b"listen", table, [], None), (b"l", table, ((b"l",),), None)]:  # fmt: skip
        with pytest.raises((TypeError, ValueError)):
            found_in(*bad)
    with pytest.raises(ValueError):
        found_in(b"l", bytes([1]) * 256, (), None)  # a group the words lack
    with pytest.raises(ZeroDivisionError):  # the accept callback's error comes through
        found_in(b"listen", table, words, lambda *_: 1 / 0)


def test_anchor_loop_in_c_reads_each_words_tuple_once_and_right() -> None:
    """The C loop keeps the few word tuples it is handed, read into C arrays: more tuples
    than it keeps, a tuple freed and another made in its place, and an `accept` callback
    that itself searches with other tuples (taking the searched one's place) all find
    what the loop in Python finds."""
    found_in = pytest.importorskip("sluice.wire._anchors").found_in

    def anchors(*words: bytes) -> Anchors:
        return Anchors(tuple((word, 0) for word in words))

    texts = [b"alpha beta", b"gamma", b"beta", b"delta alpha", b""]
    for round_ in range(3):
        for n in range(40):  # more than the C loop keeps
            made = anchors(b"alpha", b"gamma%d" % n if n % 2 else b"gamma")
            for text in texts:
                want = made.found_in_here(text)
                assert found_in(text, made.table, made.words, None) is want, (round_, n, text)
            del made  # its address may come back with another tuple
    outer = anchors(b"beta", b"delta")
    others = [anchors(b"x%d" % n) for n in range(40)]
    seen: list[tuple[bytes, int]] = []

    def accept(text: bytes, word: bytes, start: int) -> bool:
        for other in others:  # pushes `outer` out of what the C loop keeps
            assert found_in(text, other.table, other.words, None) is False
        seen.append((word, start))
        return word == b"delta"

    assert found_in(b"beta beta delta", outer.table, outer.words, accept) is True
    assert seen == [(b"beta", 0), (b"beta", 5), (b"delta", 10)]
