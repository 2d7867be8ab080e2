"""The SQL and names Sluice makes up: settings sync SQL, startup settings, statement names.

The sync SQL is sent to a server as is and startup values become SQL literals,
so the exact text matters: tables of (input, exact SQL). (`SyncPlan.build`
and `startup_setting` moved from pg/statements.py to pg/settings.py as
`sync_sql` and `startup_setting`.)
"""

from __future__ import annotations

import pytest

from sluice.pg.settings import startup_setting, sync_sql
from sluice.pg.statements import StatementNames
from sluice.wire.pg.sql import classify, split_statements

SP = "SET search_path = a, b"
TZ_UTC = "SET timezone = 'UTC'"
TZ_PARIS = "SET timezone = 'Europe/Paris'"
JIT = "SET jit = off"
INIT = "SET application_name = 'init'"

SYNCS: list[tuple[dict[str, str], dict[str, str], bool, str, str]] = [
    ({}, {}, False, "", ""),
    ({"search_path": SP}, {"search_path": SP}, False, "", ""),
    ({"search_path": SP}, {}, False, "", SP),
    ({"timezone": TZ_UTC}, {"timezone": TZ_PARIS}, False, "", TZ_UTC),
    ({}, {"timezone": TZ_UTC}, False, "", "RESET timezone"),
    ({"jit": JIT}, {"timezone": TZ_UTC, "jit": JIT}, False, "", "RESET timezone"),
    ({"search_path": SP, "jit": JIT}, {}, False, "", f"{SP}; {JIT}"),
    ({"timezone": TZ_UTC, "jit": JIT}, {"timezone": TZ_UTC}, False, "", JIT),
    # the init query runs only after a RESET ALL (a new connection ran it already)
    ({"jit": JIT}, {}, False, INIT, JIT),
    # dirty: what the server holds is unknown: reset everything and replay it all
    ({}, {}, True, "", "RESET ALL"),
    ({"jit": JIT}, {"jit": JIT}, True, "", f"RESET ALL; {JIT}"),
    ({}, {"jit": JIT}, True, "", "RESET ALL"),
    ({"jit": JIT}, {"jit": JIT}, True, INIT, f"RESET ALL; {INIT}; {JIT}"),
]


@pytest.mark.parametrize(("want", "have", "dirty", "init", "sql"), SYNCS)
def test_sync_sql(
    want: dict[str, str], have: dict[str, str], dirty: bool, init: str, sql: str
) -> None:
    assert sync_sql(want, have, dirty, init) == sql


def test_sync_sql_resets_and_sets_together() -> None:
    sql = sync_sql(
        {"search_path": SP, "jit": JIT},
        {"search_path": "SET search_path = c", "timezone": TZ_UTC, "datestyle": "x", "jit": JIT},
        False,
        "",
    )
    parts = sql.split("; ")
    assert sorted(parts[:2]) == ["RESET datestyle", "RESET timezone"]
    assert parts[2:] == [SP]


def test_sync_sql_does_not_change_its_inputs() -> None:
    want, have = {"jit": JIT}, {"timezone": TZ_UTC}
    sync_sql(want, have, True, INIT)
    assert (want, have) == ({"jit": JIT}, {"timezone": TZ_UTC})


def test_sync_sql_is_not_itself_pinning() -> None:
    """The replayed SQL must not pin the client or look like new settings."""
    tz = startup_setting("TimeZone", "UTC")
    assert tz is not None
    sql = sync_sql({"search_path": SP, tz[0]: tz[1]}, {"jit": JIT}, True, "")
    effect = classify(sql)
    assert effect.pin == ""
    assert effect.reset_all


STARTUP_SETTINGS: list[tuple[str, str, tuple[str, str] | None]] = [
    (
        "application_name",
        "psql",
        ("application_name", "SELECT pg_catalog.set_config('application_name', E'psql', false)"),
    ),
    (
        "TimeZone",
        "Europe/Paris",
        ("timezone", "SELECT pg_catalog.set_config('timezone', E'Europe/Paris', false)"),
    ),
    (
        "search_path",
        '"$user", public',
        ("search_path", "SELECT pg_catalog.set_config('search_path', E'\"$user\", public', false)"),
    ),
    (
        "application_name",
        "it's",
        ("application_name", "SELECT pg_catalog.set_config('application_name', E'it\\'s', false)"),
    ),
    (
        "application_name",
        "a\\'; DROP TABLE t; --",
        (
            "application_name",
            "SELECT pg_catalog.set_config('application_name', "
            "E'a\\\\\\'; DROP TABLE t; --', false)",
        ),
    ),
    (
        "application_name",
        "",
        ("application_name", "SELECT pg_catalog.set_config('application_name', E'', false)"),
    ),
    (
        "myapp.tenant",
        "7",
        ("myapp.tenant", "SELECT pg_catalog.set_config('myapp.tenant', E'7', false)"),
    ),
    # names that could not be written safely in SQL
    ("work_mem'; DROP TABLE t; --", "1", None),
    ("a b", "1", None),
    ("a-b", "1", None),
    ("1abc", "1", None),
    ('"quoted"', "1", None),
    ("", "1", None),
    ("name\n", "1", None),
    ("caf\u00e9", "1", None),
]


@pytest.mark.parametrize(("name", "value", "expected"), STARTUP_SETTINGS)
def test_startup_setting(name: str, value: str, expected: tuple[str, str] | None) -> None:
    assert startup_setting(name, value) == expected


@pytest.mark.parametrize(
    "value", ["it's", "a\\", "a\\'", "'; SET role = admin; --", "\\\\''\\", "x; LISTEN y"]
)
def test_startup_value_stays_one_constant(value: str) -> None:
    """However the value is quoted, the statement stays one statement with no effect."""
    setting = startup_setting("application_name", value)
    assert setting is not None
    assert split_statements(setting[1]) == [setting[1]]
    assert classify(setting[1] + "; LISTEN z").pin == "LISTEN"  # and what follows is seen
    assert classify(setting[1]).pin == ""


def test_statement_names_dedup() -> None:
    names = StatementNames()
    a = b"SELECT $1\x00\x00\x01\x00\x00\x00\x17"
    b = b"SELECT $1\x00\x00\x01\x00\x00\x00\x19"  # same text, other parameter type
    c = b"SELECT 2\x00\x00\x00"
    assert names.name_for(a) == b"sluice_1"
    assert names.name_for(b) == b"sluice_2"
    assert names.name_for(a) == b"sluice_1"
    assert names.name_for(c) == b"sluice_3"
    assert names.name_for(b) == b"sluice_2"


def test_statement_names_are_per_registry() -> None:
    body = b"SELECT 1\x00\x00\x00"
    first, second = StatementNames(), StatementNames()
    second.name_for(b"other\x00\x00\x00")
    assert first.name_for(body) == b"sluice_1"
    assert second.name_for(body) == b"sluice_2"
