"""MySQL classify(): which SQL pins a client, which settings are tracked, what is ignored.

Tables of (SQL, expected Effect). A pin that is missed leaks session state to
another client; a pin that is not needed costs a backend connection; both are
bugs, so both directions are tested.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings

from fuzzing import examples, sqlish
from sluice.mysql.client import wait_seconds
from sluice.wire.mysql import sql as mysql_sql
from sluice.wire.mysql.sql import (
    ALIASES,
    NO_EFFECT,
    TRACKED,
    Effect,
    classify,
    classify_bytes,
    split_statements,
)

Sets = tuple[tuple[str, str], ...]

PINS: list[tuple[str, str]] = [
    # user variables: assigned by SET, :=, INTO, CALL ... OUT, GET DIAGNOSTICS
    ("SET @x = 1", "user variable"),
    ("set @x := 1", "user variable"),
    ("SET @x=1", "user variable"),
    ("SET@x=1", "user variable"),
    ("SET @`my var` = 'a'", "user variable"),
    ("SET @'x' = 1", "user variable"),
    ('SET @"x" = 1', "user variable"),
    ("SET SESSION @x = 1", "user variable"),
    ("SELECT 1 INTO @x", "user variable"),
    ("select a, b from t where id = 1 into @a, @b", "user variable"),
    ("SELECT c INTO @x FROM t WHERE id = 1", "user variable"),
    ("SELECT c INTO\n@x FROM t", "user variable"),
    ("SELECT 1 INTO @`x`", "user variable"),
    ("SELECT @rownum := @rownum + 1 AS n FROM t", "user variable"),
    ("select @n:=1", "user variable"),
    ("SELECT @'q' := 2", "user variable"),
    ("UPDATE t SET a = (@x := a + 1) WHERE id = 1", "user variable"),
    ("DO @x := 1", "user variable"),
    ("CALL p(@out)", "user variable"),
    ("GET DIAGNOSTICS @n = NUMBER", "GET DIAGNOSTICS"),
    # temporary tables
    ("CREATE TEMPORARY TABLE t (a int)", "temporary table"),
    ("create temporary table if not exists t select 1", "temporary table"),
    ("CREATE OR REPLACE TEMPORARY TABLE t (a int)", "temporary table"),
    ("CREATE TEMPORARY SEQUENCE s", "temporary table"),
    # locks
    ("LOCK TABLES t READ", "LOCK TABLES"),
    ("lock table t write, u read", "LOCK TABLES"),
    ("LOCK INSTANCE FOR BACKUP", "LOCK INSTANCE"),
    ("FLUSH TABLES WITH READ LOCK", "FLUSH TABLES WITH READ LOCK"),
    ("flush tables t1, t2 with  read lock", "FLUSH TABLES WITH READ LOCK"),
    ("FLUSH NO_WRITE_TO_BINLOG TABLES WITH READ LOCK", "FLUSH TABLES WITH READ LOCK"),
    ("FLUSH TABLES t FOR EXPORT", "FLUSH TABLES FOR EXPORT"),
    ("SELECT GET_LOCK('a', 10)", "GET_LOCK"),
    ("select get_lock ('a', 10)", "GET_LOCK"),
    ("DO GET_LOCK('x', 0)", "GET_LOCK"),
    ("SELECT `GET_LOCK`('a', 1)", "GET_LOCK"),
    ("UPDATE t SET a = 1 WHERE GET_LOCK('k', 0)", "GET_LOCK"),
    # results kept for the next statement
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", "SQL_CALC_FOUND_ROWS"),
    ("UPDATE seq SET id = LAST_INSERT_ID(id + 1)", "LAST_INSERT_ID(expr)"),
    ("select last_insert_id( 5 )", "LAST_INSERT_ID(expr)"),
    # SQL-level prepared statements
    ("PREPARE s FROM 'SELECT 1'", "PREPARE"),
    ("prepare s from @sql", "PREPARE"),
    ("EXECUTE s", "EXECUTE"),
    ("EXECUTE s USING @a, @b", "EXECUTE"),
    ("EXECUTE IMMEDIATE 'SELECT 1'", "EXECUTE"),
    ("DEALLOCATE PREPARE s", "DEALLOCATE PREPARE"),
    ("DROP PREPARE s", "DEALLOCATE PREPARE"),
    # session variables that are not tracked
    ("SET SESSION sql_log_bin = 0", "SET sql_log_bin"),
    ("SET sql_log_bin=0", "SET sql_log_bin"),
    ("SET optimizer_switch = 'index_merge=off'", "SET optimizer_switch"),
    ("SET @@session.sql_log_bin = 0", "SET sql_log_bin"),
    ("set @@local.profiling = 1", "SET profiling"),
    ("SET @@profiling = 1", "SET profiling"),
    ("SET LOCAL max_heap_table_size = 1", "SET max_heap_table_size"),
    ("SET `SQL_LOG_BIN` = 0", "SET sql_log_bin"),
    ("SET big_tables := 1", "SET big_tables"),
    ("SET mycomponent.var = 1", "SET mycomponent.var"),
    ("SET GLOBAL max_connections = 10, SESSION sql_log_bin = 0", "SET sql_log_bin"),
    # tracked variables whose value depends on this session
    ("SET sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')", "SET sql_mode from a variable"),
    ("SET time_zone = @old_tz", "SET time_zone from a variable"),
    ("SET @@session.autocommit = @@session.autocommit", "SET autocommit from a variable"),
    # other session state
    ("HANDLER t OPEN", "HANDLER OPEN"),
    ("handler db.t open as h", "HANDLER OPEN"),
    ("XA START 'x'", "XA START"),
    ("xa begin 'x'", "XA START"),
    ("SET ROLE admin", "SET ROLE"),
    ("SET RESOURCE GROUP rg", "SET RESOURCE GROUP"),
    ("BEGIN NOT ATOMIC SELECT 1; END", "compound statement"),
    ("BACKUP STAGE START", "BACKUP STAGE"),
    ("backup lock t", "BACKUP LOCK"),
    # procedures may leave anything in the session; sequences remember their last value
    ("CALL p(1)", "CALL"),
    ("call db.p()", "CALL"),
    ("SELECT NEXTVAL(s)", "sequence value"),
    ("select next value for s", "sequence value"),
    ("INSERT INTO t VALUES (NEXT VALUE FOR s)", "sequence value"),
    ("SELECT SETVAL(s, 10)", "sequence value"),
    # the next transaction's characteristics, unless it starts in the same text
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION"),
    ("set transaction read only", "SET TRANSACTION"),
    # statements behind comments, and in executable comments
    ("/* c */ SET @x = 1", "user variable"),
    ("# c\nSET @x = 1", "user variable"),
    ("-- c\nLOCK TABLES t READ", "LOCK TABLES"),
    ("/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE */", "user variable"),
    ("/*M!100101 SET @x = 1 */", "user variable"),
    ("/*!40101 SET sql_log_bin = 0 */;", "SET sql_log_bin"),
    ("SELECT 1 /*!, GET_LOCK('a', 1) */", "GET_LOCK"),
    ("SET STATEMENT max_statement_time = 1 FOR SELECT GET_LOCK('a', 1)", "GET_LOCK"),
    ("SET STATEMENT max_statement_time = 1 FOR LOCK TABLES t READ", "LOCK TABLES"),
]


@pytest.mark.parametrize(("sql", "reason"), PINS)
def test_pins(sql: str, reason: str) -> None:
    effect = classify(sql)
    assert (effect.pin, effect.sets, effect.schema) == (reason, (), None)


# What may change the current role (MariaDB keeps it across COM_RESET_CONNECTION).
ROLES = ["SET ROLE admin", "set role none", "CALL p()", "EXECUTE s", "EXECUTE IMMEDIATE 'x'"]
ROLES += ["BEGIN NOT ATOMIC SELECT 1; END", "SELECT 1; SET ROLE r"]


@pytest.mark.parametrize("sql", ROLES)
def test_role_changes(sql: str) -> None:
    assert classify(sql).role


@pytest.mark.parametrize("sql", ["SET @x = 1", "PREPARE s FROM 'x'", "SET DEFAULT ROLE r"])
def test_no_role_change(sql: str) -> None:
    assert not classify(sql).role


# Opaque statements: the connection is reset before another client borrows it.
TAINTS: list[tuple[str, Effect]] = [
    ("DO tr_func()", Effect(taint="DO statement")),
    ("do sleep(0)", Effect(taint="DO statement")),
    ("DO @x := 1", Effect(pin="user variable", taint="DO statement")),
    ("DO GET_LOCK('x', 0)", Effect(pin="GET_LOCK", taint="DO statement")),
    ("INSTALL SONAME 'x'", Effect(taint="INSTALL statement")),
    ("BINLOG 'xyz'", Effect(taint="BINLOG statement")),
    ("SIGNAL SQLSTATE '45000'", Effect(taint="SIGNAL statement")),
    ("SELECT 1; frobnicate", Effect(taint="FROBNICATE statement")),
]


@pytest.mark.parametrize(("sql", "effect"), TAINTS)
def test_taints(sql: str, effect: Effect) -> None:
    assert classify(sql) == effect
    assert classify_bytes(sql.encode()) == effect


# Known statements that leave nothing: no taint (and most no effect at all).
KNOWN = ["SHOW TABLES", "show variables like 'x'", "(SELECT 1) UNION (SELECT 2)", "HELP 'x'"]
KNOWN += ["KILL 5", "XA END 'x'", "UNLOCK TABLES", "DROP TABLE t", "FLUSH PRIVILEGES"]


@pytest.mark.parametrize("sql", KNOWN)
def test_known_statements_do_not_taint(sql: str) -> None:
    assert classify(sql) == NO_EFFECT


# Reads of what the client's previous statement left: only the text's first statement.
# They pin too: a client that reads them once reads them again.
def read(what: str, kinds: int) -> Effect:
    """A read of `what` (which pins for it) of the results of `kinds`."""
    return Effect(reads=what, pin=what, read_kinds=kinds)


DIAGNOSTICS, RC = "GET DIAGNOSTICS", "ROW_COUNT()"
ROWS, FOUND, DIAG = mysql_sql.ROW_COUNT, mysql_sql.FOUND_ROWS, mysql_sql.DIAGNOSTICS
READS: list[tuple[str, Effect]] = [
    ("SELECT ROW_COUNT()", read(RC, ROWS)),
    ("select row_count ( ) > 0", read(RC, ROWS)),
    ("SELECT FOUND_ROWS()", read("FOUND_ROWS()", FOUND)),
    ("select found_rows ( )", read("FOUND_ROWS()", FOUND)),
    ("SELECT @@warning_count", read("@@warning_count", DIAG)),
    ("select @@session.ERROR_COUNT", read("@@error_count", DIAG)),
    ("SELECT @@last_gtid", read("@@last_gtid", mysql_sql.LAST_GTID)),
    ("SHOW WARNINGS", read("SHOW WARNINGS", DIAG)),
    ("show errors limit 1", read("SHOW ERRORS", DIAG)),
    ("SHOW COUNT(*) WARNINGS", read("SHOW COUNT(*)", DIAG)),
    ("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT", read(DIAGNOSTICS, DIAG | ROWS)),
    ("get current diagnostics @n = number", read(DIAGNOSTICS, DIAG | ROWS)),
    ("SET STATEMENT max_statement_time=1 FOR SELECT ROW_COUNT()", read(RC, ROWS)),
    ("SELECT ROW_COUNT(); SELECT 1", read(RC, ROWS)),
    # every kind read, named by the first
    ("SELECT ROW_COUNT(), @@warning_count", read(RC, ROWS | DIAG)),
    ("SELECT @@error_count, FOUND_ROWS()", read("FOUND_ROWS()", FOUND | DIAG)),
    # an earlier statement of the same text is the one read, when it certainly set it
    ("UPDATE t SET a = 1; SELECT ROW_COUNT()", NO_EFFECT),
    ("SELECT * FROM t; SHOW WARNINGS", NO_EFFECT),
    ("INSERT INTO t VALUES (1); SELECT @@warning_count", NO_EFFECT),
    ("SELECT a FROM (SELECT 1 a) d; SHOW ERRORS", NO_EFFECT),
    ("SELECT 1; SELECT FOUND_ROWS()", NO_EFFECT),
    # ... and not when it may have left it as the statement before had it
    ("SAVEPOINT sp; SHOW WARNINGS", read("SHOW WARNINGS", DIAG)),
    ("SELECT 1; SHOW WARNINGS", read("SHOW WARNINGS", DIAG)),
    ("SELECT 1 FROM DUAL; SHOW WARNINGS", read("SHOW WARNINGS", DIAG)),
    ("SELECT TRIM(LEADING 'x' FROM 'xy'); SHOW WARNINGS", read("SHOW WARNINGS", DIAG)),
    ("UPDATE t SET a = 1; SELECT FOUND_ROWS()", read("FOUND_ROWS()", FOUND)),
    ("GET DIAGNOSTICS @n = NUMBER; SELECT ROW_COUNT()",
     Effect(reads=DIAGNOSTICS, pin=DIAGNOSTICS, read_kinds=DIAG | ROWS)),
    ("SELECT 1; SELECT ROW_COUNT(), @@warning_count", read("@@warning_count", DIAG)),
    # not reads
    ("SELECT 'row_count()'", NO_EFFECT),
    ("SELECT @@global.warning_count", NO_EFFECT),
    ("SELECT my_row_count(1)", NO_EFFECT),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "effect"), READS)
def test_reads_of_the_previous_statement(sql: str, effect: Effect) -> None:
    assert classify(sql) == effect
    assert classify_bytes(sql.encode()) == effect


NAMES = (("names", "SET NAMES utf8mb4"),)
TRACKED_SETS: list[tuple[str, Sets]] = [
    ("SET NAMES utf8mb4", NAMES),
    ("  SET NAMES utf8mb4 ;", NAMES),
    ("set names utf8", (("names", "SET names utf8"),)),
    (
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
        (("names", "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'"),),
    ),
    ("SET NAMES DEFAULT", (("names", "SET NAMES DEFAULT"),)),
    ("SET CHARACTER SET utf8", (("charset", "SET CHARACTER SET utf8"),)),
    ("set character  set 'latin1'", (("charset", "SET character  set 'latin1'"),)),
    ("SET CHARSET latin1", (("charset", "SET CHARSET latin1"),)),
    ("SET autocommit=0", (("autocommit", "SET SESSION autocommit = 0"),)),
    ("SET AUTOCOMMIT = 1", (("autocommit", "SET SESSION autocommit = 1"),)),
    ("SET autocommit = ON", (("autocommit", "SET SESSION autocommit = ON"),)),
    (
        "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'",
        (("sql_mode", "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'"),),
    ),
    ("SET @@session.sql_mode = ''", (("sql_mode", "SET SESSION sql_mode = ''"),)),
    ("SET @@SESSION.time_zone = '+00:00'", (("time_zone", "SET SESSION time_zone = '+00:00'"),)),
    ("SET @@time_zone := 'UTC'", (("time_zone", "SET SESSION time_zone = 'UTC'"),)),
    ("SET @@local.wait_timeout = 10", (("wait_timeout", "SET SESSION wait_timeout = 10"),)),
    ("SET LOCAL wait_timeout = 28800", (("wait_timeout", "SET SESSION wait_timeout = 28800"),)),
    ("set time_zone := 'Europe/Paris'", (("time_zone", "SET SESSION time_zone = 'Europe/Paris'"),)),
    ("SET `sql_mode` = 'ANSI'", (("sql_mode", "SET SESSION sql_mode = 'ANSI'"),)),
    ("SET @@session.`sql_mode` = 'ANSI'", (("sql_mode", "SET SESSION sql_mode = 'ANSI'"),)),
    (
        "SET tx_isolation = 'READ-COMMITTED'",
        (("transaction_isolation", "SET SESSION tx_isolation = 'READ-COMMITTED'"),),
    ),
    (
        "SET SESSION tx_read_only = 1",
        (("transaction_read_only", "SET SESSION tx_read_only = 1"),),
    ),
    (
        "SET transaction_isolation = 'SERIALIZABLE'",
        (("transaction_isolation", "SET SESSION transaction_isolation = 'SERIALIZABLE'"),),
    ),
    (
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        (
            (
                "transaction_isolation",
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            ),
        ),
    ),
    (
        "set session transaction read only",
        (("transaction_read_only", "SET SESSION TRANSACTION read only"),),
    ),
    (
        "SET SESSION TRANSACTION READ WRITE, ISOLATION LEVEL SERIALIZABLE",
        (
            ("transaction_read_only", "SET SESSION TRANSACTION READ WRITE"),
            ("transaction_isolation", "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        ),
    ),
    ("SET sql_mode = DEFAULT", (("sql_mode", "SET SESSION sql_mode = DEFAULT"),)),
    ("SET sql_mode = 'a;b'", (("sql_mode", "SET SESSION sql_mode = 'a;b'"),)),
    ("SET sql_mode = 'x' -- c", (("sql_mode", "SET SESSION sql_mode = 'x'"),)),
    ("SET sql_mode = 'x' /* c */", (("sql_mode", "SET SESSION sql_mode = 'x'"),)),
    ("SET sql_mode = 'x' # c", (("sql_mode", "SET SESSION sql_mode = 'x'"),)),
    ("SET sql_mode = '@x'", (("sql_mode", "SET SESSION sql_mode = '@x'"),)),
    ("SET time_zone = 'caf\u00e9'", (("time_zone", "SET SESSION time_zone = 'caf\u00e9'"),)),
    (
        "SET character_set_results = NULL",
        (("character_set_results", "SET SESSION character_set_results = NULL"),),
    ),
    (
        "SET sql_mode = CONCAT('A', 'B'), autocommit = 1",
        (
            ("sql_mode", "SET SESSION sql_mode = CONCAT('A', 'B')"),
            ("autocommit", "SET SESSION autocommit = 1"),
        ),
    ),
    (
        "SET autocommit=1, sql_mode = 'A,B', time_zone = '+00:00'",
        (
            ("autocommit", "SET SESSION autocommit = 1"),
            ("sql_mode", "SET SESSION sql_mode = 'A,B'"),
            ("time_zone", "SET SESSION time_zone = '+00:00'"),
        ),
    ),
    (
        "SET sql_mode = @@global.sql_mode",
        (("sql_mode", "SET SESSION sql_mode = @@global.sql_mode"),),
    ),
    ("/*!40101 SET NAMES utf8mb4 */", NAMES),
    ("/*!40103 SET TIME_ZONE='+00:00' */", (("time_zone", "SET SESSION time_zone = '+00:00'"),)),
    ("SET NAMES utf8mb4, autocommit = 0", (*NAMES, ("autocommit", "SET SESSION autocommit = 0"))),
    # a scope keyword holds for the assignments after it; @@name is always the session's
    (
        "SET SESSION sql_mode = '', GLOBAL max_connections = 10, wait_timeout = 5",
        (("sql_mode", "SET SESSION sql_mode = ''"),),
    ),
    (
        "SET GLOBAL max_connections = 10, SESSION wait_timeout = 5",
        (("wait_timeout", "SET SESSION wait_timeout = 5"),),
    ),
    (
        "SET GLOBAL max_connections = 10, @@wait_timeout = 5",
        (("wait_timeout", "SET SESSION wait_timeout = 5"),),
    ),
]


@pytest.mark.parametrize(("sql", "sets"), TRACKED_SETS)
def test_tracked_sets(sql: str, sets: Sets) -> None:
    assert classify(sql) == Effect(sets=sets)


def test_every_tracked_variable_is_tracked() -> None:
    for name in TRACKED - {"names", "charset"}:
        replay = ((name, f"SET SESSION {name} = 1"),)
        assert classify(f"SET {name} = 1") == Effect(sets=replay)
        assert classify(f"SET {name.upper()}=1") == Effect(sets=replay)
        assert classify(f"SET @@session.{name} := 1") == Effect(sets=replay)
        assert classify(f"SET SESSION {name} = 1") == Effect(sets=replay)
        assert classify(f"SET GLOBAL {name} = 1") == NO_EFFECT
        assert classify(f"SET @@global.{name} = 1") == NO_EFFECT
    for alias, name in ALIASES.items():
        assert name in TRACKED and alias not in TRACKED
        assert classify(f"SET {alias} = 1") == Effect(sets=((name, f"SET SESSION {alias} = 1"),))


def test_mixed_assignments_pin_and_track() -> None:
    """An untracked assignment pins; the tracked ones around it are still recorded."""
    assert classify("SET sql_mode = '', sql_log_bin = 0, time_zone = 'UTC'") == Effect(
        pin="SET sql_log_bin",
        sets=(
            ("sql_mode", "SET SESSION sql_mode = ''"),
            ("time_zone", "SET SESSION time_zone = 'UTC'"),
        ),
    )
    assert classify("SET @a = 1, NAMES utf8mb4") == Effect(pin="user variable", sets=NAMES)


SCHEMAS: list[tuple[str, str]] = [
    ("USE db", "db"),
    ("use `my db`", "my db"),
    ("USE `a``b`", "a`b"),
    ("USE `x;y`", "x;y"),
    ("USE db;", "db"),
    ("  use\tdb  ", "db"),
    ('USE "db"', "db"),
    ("/* c */ USE db", "db"),
    ("use db -- comment", "db"),
    ("USE db1; SELECT 1; USE db2", "db2"),
]


@pytest.mark.parametrize(("sql", "schema"), SCHEMAS)
def test_use(sql: str, schema: str) -> None:
    assert classify(sql) == Effect(schema=schema)


NO_EFFECTS: list[str] = [
    "SELECT 1",
    "SELECT c FROM sbtest1 WHERE id=123",
    "UPDATE t SET a=1 WHERE id=2",
    "update t set a := 1",
    "INSERT INTO t SET a = 1",
    "INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)",
    "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE b := 2",
    "INSERT INTO t SELECT * FROM u",
    "BEGIN",
    "begin work",
    "COMMIT",
    "ROLLBACK",
    "START TRANSACTION",
    "start transaction read only",
    "SELECT @x",
    "SELECT * FROM t WHERE a = @x",
    "SELECT @@version",
    "select @@session.tx_isolation, @@autocommit",
    "SET GLOBAL max_connections = 100",
    "SET @@global.sql_mode = ''",
    "SET PERSIST max_connections = 10",
    "set persist_only innodb_log_file_size = 1",
    "SET @@persist.max_connections = 10",
    "SET @@persist_only.max_connections = 10",
    "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET PASSWORD = 'x'",
    "SET PASSWORD FOR u = 'x'",
    "SET DEFAULT ROLE ALL TO u",
    "SET STATEMENT max_statement_time=1 FOR SELECT 1",
    "UNLOCK TABLES",
    "DROP TEMPORARY TABLE t",
    "DROP TABLE t",
    "CREATE TABLE t (a int)",
    "CREATE TABLE temporary (a int)",
    "create table temporary_data (a int)",
    "SELECT LAST_INSERT_ID()",
    "select last_insert_id( )",
    "SELECT RELEASE_LOCK('a')",
    "SELECT IS_FREE_LOCK('a')",
    "SELECT my_get_lock(1)",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "SELECT * FROM t FOR UPDATE SKIP LOCKED",
    "FLUSH TABLES",
    "FLUSH PRIVILEGES",
    "HANDLER t READ FIRST",
    "HANDLER t CLOSE",
    "XA END 'x'",
    "XA COMMIT 'x'",
    "SELECT 1 INTO OUTFILE '/tmp/x'",
    "SHOW VARIABLES LIKE 'sql_mode'",
    "SELECT 1 /*+ SET_VAR(sort_buffer_size = 16M) */",
    "",
    ";",
    "  ;  ",
    "SELECT 1;",
    "SELECT 1;\n",
    # keywords inside strings, identifiers and comments
    "SELECT 'SET @x = 1'",
    "select 'a;b'",
    'SELECT "SET @x=1; LOCK TABLES t READ"',
    "SELECT 'get_lock(1)', 'found_rows()'",
    "SELECT 'x' AS `get_lock(`",
    "SELECT `@x:=1` FROM t",
    "select `a;b`, `@` from t",
    "select `x INTO @y` from t",
    "SELECT 'it''s; SET @x = 1'",
    "SELECT 'a\\\\'",
    "SELECT 'it\\'s'",
    "SELECT 1 -- ; SET @x = 1",
    "SELECT 1 # ; SET @x = 1",
    "SELECT 1 /* ; SET @x = 1 */",
    "SELECT 1 /* SET @x = 1 */; /* LOCK TABLES t READ */",
    "select ';'; select 'SET @x=1'",
    "SELECT 1 INTO @@x",
]


@pytest.mark.parametrize("sql", NO_EFFECTS)
def test_no_effect(sql: str) -> None:
    assert classify(sql) == NO_EFFECT


MULTI: list[tuple[str, Effect]] = [
    ("SELECT 1; SET @x = 1", Effect(pin="user variable")),
    ("SET NAMES utf8mb4; SET @x = 1", Effect(pin="user variable", sets=NAMES)),
    ("LOCK TABLES t READ; PREPARE s FROM 'x'", Effect(pin="LOCK TABLES")),  # first reason kept
    (
        "SET autocommit=0; SET sql_mode=''",
        Effect(
            sets=(
                ("autocommit", "SET SESSION autocommit = 0"),
                ("sql_mode", "SET SESSION sql_mode = ''"),
            )
        ),
    ),
    ("USE db; SET NAMES utf8mb4", Effect(sets=NAMES, schema="db")),
    # SET TRANSACTION is spent by a transaction started in the same text
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; START TRANSACTION; SELECT 1", NO_EFFECT),
    ("SET TRANSACTION READ ONLY; BEGIN", NO_EFFECT),
    ("START TRANSACTION; SET TRANSACTION READ ONLY", Effect(pin="SET TRANSACTION")),
    ("BEGIN NOT ATOMIC SET @x = 1; END", Effect(pin="compound statement", role=True)),
    # what mysqldump writes at the top of a dump
    (
        "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n"
        "/*!50503 SET NAMES utf8mb4 */;\n"
        "/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n"
        "/*!40103 SET TIME_ZONE='+00:00' */;\n"
        "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n"
        "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n",
        Effect(
            pin="user variable",
            sets=(
                *NAMES,
                ("time_zone", "SET SESSION time_zone = '+00:00'"),
                ("unique_checks", "SET SESSION unique_checks = 0"),
                ("sql_mode", "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'"),
            ),
        ),
    ),
    # quoting: a statement hidden behind a misread constant would leak its SET
    ("SELECT ';'; SET @x = 1", Effect(pin="user variable")),
    ("SELECT `a;b`; SET sql_mode = ''", Effect(sets=(("sql_mode", "SET SESSION sql_mode = ''"),))),
    ("SELECT `a``;b`; SET @x = 1", Effect(pin="user variable")),
    ("SELECT 'it''s;'; SET @x = 1", Effect(pin="user variable")),
    ('SELECT "a"";b"; SET @x = 1', Effect(pin="user variable")),
    ("SELECT 'a\\\\'; SET @x = 1", Effect(pin="user variable")),
    # without escapes the text has a statement that starts with a quote: unknown
    ("SELECT 'it\\'s;'; SET @x = 1", Effect(pin="user variable", taint="unknown statement")),
    ("SELECT 1--1; SET @x = 1", Effect(pin="user variable")),
    ("SELECT 1 --; SET @x = 1", Effect(pin="user variable")),
    ("SELECT 1 --\t; SET @x = 1", NO_EFFECT),
    ("SELECT 1 /*! ; SET @x = 1 */", Effect(pin="user variable")),
    ("SELECT 2*/*c*/3; SET @x = 1", Effect(pin="user variable")),
    # with NO_BACKSLASH_ESCAPES this is two statements; which mode is on is not known here
    ('SELECT "a\\"; SET @x = 1"', Effect(pin="backslash quoting")),
    ("SELECT 'it\\'s; SET @x = 1'", Effect(pin="backslash quoting")),
    ("SELECT 'it\\'s'; SELECT 1", NO_EFFECT),
]


@pytest.mark.parametrize(("sql", "effect"), MULTI)
def test_multi_statement(sql: str, effect: Effect) -> None:
    assert classify(sql) == effect


SPLITS: list[tuple[str, list[str]]] = [
    ("", []),
    ("   ", []),
    (";;;", []),
    ("a;b", ["a", "b"]),
    ("select 1;", ["select 1"]),
    ("select ';'; x", ["select ';'", "x"]),
    ("select 'it''s;'", ["select 'it''s;'"]),
    ("select 'it\\'s;'; x", ["select 'it\\'s;'", "x"]),
    ("select 'a\\\\'; x", ["select 'a\\\\'", "x"]),
    ('select "a\\";b"; x', ['select "a\\";b"', "x"]),
    ('select "a"";b"; x', ['select "a"";b"', "x"]),
    ("select `a;b`; x", ["select `a;b`", "x"]),
    ("select `a``;b`; x", ["select `a``;b`", "x"]),
    ("select `a\\`; x", ["select `a\\`", "x"]),  # no escapes in identifiers
    ("select 1 # c ; d\n; x", ["select 1", "x"]),
    ("select 1 -- c ; d\n; x", ["select 1", "x"]),
    ("select 1--1; x", ["select 1--1", "x"]),
    ("select 1 --\x01; x", ["select 1"]),
    ("select 1 --", ["select 1"]),
    ("select 1 /* a ; b */; x", ["select 1", "x"]),
    ("/* a /* b */ select 1", ["select 1"]),  # comments do not nest
    ("select 1 /* unterminated ; x", ["select 1"]),
    ("select 'unterminated; x", ["select 'unterminated; x"]),
    ("select 'a\\", ["select 'a\\"]),
    ("/*!40101 SET NAMES utf8 */;", ["SET NAMES utf8"]),
    ("/*!40101 SET a=1; SET b=2 */", ["SET a=1", "SET b=2"]),
    ("/*M!100101 SET x=1 */", ["SET x=1"]),
    ("/*! SET x=1 */", ["SET x=1"]),
    ("/*!50001 CREATE VIEW v AS SELECT '*/' */", ["CREATE VIEW v AS SELECT '*/'"]),
    ("select 2*/*c*/3", ["select 2* 3"]),
    ("a/**/b", ["a b"]),
]


@pytest.mark.parametrize(("sql", "parts"), SPLITS)
def test_split_statements(sql: str, parts: list[str]) -> None:
    assert split_statements(sql) == parts


def test_split_without_backslash_escapes() -> None:
    assert split_statements("select 'a\\'; x", backslash_escapes=False) == ["select 'a\\'", "x"]
    assert split_statements('select "a\\"; x', backslash_escapes=False) == ['select "a\\"', "x"]


ORDINARY: list[bytes] = [
    b"SELECT c FROM sbtest1 WHERE id=123",
    b"UPDATE t SET a=1 WHERE id=2",
    b"SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
    b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
    b"SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 1 AND 100",
    b"UPDATE sbtest1 SET k=k+1 WHERE id=5",
    b"UPDATE sbtest1 SET c='12-34' WHERE id=5",
    b"DELETE FROM sbtest1 WHERE id=5",
    b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (5, 5, '1-2', '3-4')",
    b"BEGIN",
    b"COMMIT",
    b"SELECT @@version_comment LIMIT 1",
    b"SELECT LAST_INSERT_ID()",
    b"select 1;",
    b"  SELECT 1 ;\n",
]


def _full_classifications() -> int:
    """How often the full classifier was asked (texts this short all go through its cache;
    the compiled build calls it directly, so it is counted, not replaced)."""
    info = mysql_sql._classify_cached.cache_info()
    return info.hits + info.misses


@pytest.mark.parametrize("sql", ORDINARY)
def test_ordinary_queries_are_not_parsed(sql: bytes) -> None:
    """The byte-level pre-check answers for ordinary queries: no decoding, no parsing."""
    before = _full_classifications()
    assert classify_bytes(sql) is NO_EFFECT
    assert classify(sql.decode()) is NO_EFFECT
    assert _full_classifications() == before


def test_effectful_queries_are_parsed() -> None:
    before = _full_classifications()
    for sql in ("SET @x=1", "  set names utf8", "select 1; select 2", "SELECT 1 INTO @x"):
        classify_bytes(sql.encode())
    assert _full_classifications() == before + 4


def test_bytes_keep_every_byte() -> None:
    """A value that is not UTF-8 survives: encode the statement back with surrogateescape."""
    raw = b"SET time_zone = '\xff\xfe'"
    ((name, statement),) = classify_bytes(raw).sets
    assert name == "time_zone"
    assert statement.encode("utf-8", "surrogateescape") == b"SET SESSION time_zone = '\xff\xfe'"


def test_long_statements() -> None:
    """Bulk statements (many constants, some with keywords) classify like short ones."""
    values = ",".join(
        f'({i}, \'set @x = {i}; lock tables t read\', "it\\"s")' for i in range(20000)
    )
    insert = f"INSERT INTO t VALUES {values} ON DUPLICATE KEY UPDATE b = VALUES(b)"
    assert len(insert) > 800_000
    assert classify(insert) == NO_EFFECT
    assert classify(insert + "; SET @x = 1") == Effect(pin="user variable")
    assert classify(insert.replace("VALUES(b)", "GET_LOCK('a', 1)")) == Effect(pin="GET_LOCK")
    assert len(split_statements(insert + ";" + insert)) == 2


CORPUS = (
    [sql for sql, _ in PINS]
    + [sql for sql, _ in TRACKED_SETS]
    + [sql for sql, _ in SCHEMAS]
    + NO_EFFECTS
    + [sql for sql, _ in MULTI]
    + [sql for sql, _ in SPLITS]
    + [sql.decode() for sql in ORDINARY]
    + [
        "\n\tSET sql_mode = '';",
        "select 1;\nset @x = 1",
        "SELECT 1 INTO\t@x",
        "SELECT 'caf\u00e9' INTO @x",
        "SET time_zone = 'caf\u00e9'; SET @y = 2",
    ]
)


@pytest.mark.parametrize("sql", CORPUS)
def test_byte_precheck_agrees_with_full_classification(sql: str) -> None:
    """The pre-check on raw bytes may skip parsing only where parsing finds nothing."""
    assert classify_bytes(sql.encode()) == classify(sql)
    assert mysql_sql._classify_slow(sql) == classify(sql)


@pytest.mark.parametrize("sql", ["SELECT 1; SELECT 2", "SELECT 'SET @x = 1'", "UNLOCK TABLES"])
def test_parsed_texts_without_effect_return_the_shared_object(sql: str) -> None:
    assert classify(sql) is NO_EFFECT
    assert classify_bytes(sql.encode()) is NO_EFFECT


@pytest.mark.parametrize(
    ("sql", "seconds"),
    [
        ("SET SESSION wait_timeout = 1", 1.0),
        ("set @@session.wait_timeout=600", 600.0),
        ("SET wait_timeout = '30'", 30.0),
        ("SET SESSION wait_timeout = DEFAULT", 0.0),
        ("SET SESSION wait_timeout = 2 * 60", 0.0),
    ],
)
def test_wait_timeout_seconds(sql: str, seconds: float) -> None:
    """The idle limit a session sets for itself, which Sluice applies while it holds no
    connection (0: none of its own)."""
    (key, stmt), *_ = classify(sql).sets
    assert key == "wait_timeout"
    assert wait_seconds(stmt) == seconds


# Statements built from SQL-ish fragments: the words the pre-check looks for (and words
# that merely contain them or start like them), user and system variables, constants
# with escapes, comments (executable ones too), semicolons, odd white space and
# non-ASCII text, in mixed case.
_LEADS = (
    "select", "insert", "update", "delete", "replace", "begin", "commit", "rollback",
    "start", "with", "values", "table", "create", "alter", "truncate", "explain",
    "describe", "desc", "savepoint", "release", "unlock", "analyze", "optimize", "rename",
    "grant", "revoke", "check", "repair", "load", "set", "use", "show", "call", "do",
    "lock", "flush", "handler", "get", "xa", "prepare", "execute", "(", "selectx",
    "desc_", "check$", "load1", "checksum", "selecté",
)  # fmt: skip
_FRAGMENTS = (
    "t", "a", "x.y", "`t`", "`get_lock`", "from", "dual", "where", "into", "@x", "@",
    "@@warning_count", "@@session.last_gtid", "@@global.x", ":=", ":", "=", "into @x",
    "into\t@x", "intox @y", "temporary", "temp", "get_lock(", "get_lock", "found_rows()",
    "row_count()", "sql_calc_found_rows", "nextval(s)", "next value for s", "nexts",
    "setval", "last_insert_id()", "last_insert_id(5)", "last_insert_id ( x )",
    "last_insert_id", "_count", "_gtid", "'1'", "'a\\'b'", "'a''b'", '"x"', '"a\\"b"',
    "'#'", "'--'", "`a``b`", "#c\n", "# c", "-- c\n", "--x", "1--1", "/* c */", "/*",
    "*/", "/*!50000 set @x = 1 */", "/*M! x */", "(", ")", ",", "*", ".", ";", "; ",
    "; set @x = 1", "; select 1", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0",
    "é", "\u2028", "1", "42", "_x", "$x", "for update", "lock in share mode",
)  # fmt: skip
_BLANKS = ("", " ", "  ", "\n", "\t", "\x0c", "\u00a0")


@settings(max_examples=examples(3000), deadline=None, database=None)
@given(sqlish(_LEADS, _FRAGMENTS, _BLANKS))
@example("selectx 1")
@example("SELECT 1 INTO @x")
@example("select last_insert_id(1)")
@example("select 1 -- c\n")
@example("select * from t where a = 1 for update")
def test_byte_precheck_agrees_on_generated_statements(sql: str) -> None:
    """The fast answers of the pre-checks (on bytes, and on text) are the full
    classification's, whatever the text; the compiled build's loops find what the
    interpreted one's regular expressions do."""
    full = mysql_sql._classify_slow(sql)
    assert classify_bytes(sql.encode()) == full
    assert classify(sql) == full
    low = sql.encode().lower()
    assert mysql_sql._has_trigger(low) == (mysql_sql._TRIGGER_BYTES.search(low) is not None)
    here = mysql_sql._ANCHORED.found_in_here(low, mysql_sql._trigger_ends)
    assert here == mysql_sql._has_trigger(low)  # (the C loop, where the build has it)
    plain = mysql_sql._first_word(low) in mysql_sql._PLAIN_BYTES
    assert plain == (mysql_sql._PLAIN_START.match(low) is not None)
