"""Settings that follow a client: the replay SQL, savepoints, restores, startup settings.

The replay SQL is sent to a server as is and startup values become SQL
literals, so the exact text matters: tables of (input, exact SQL). The
`SessionSettings` cases are sequences of what a client sent and what the
tracked maps must hold once its transaction ended.
"""

from __future__ import annotations

import pytest

from sluice.pg.settings import (
    UNTOUCHED,
    SessionSettings,
    for_startup,
    literal,
    replay_queries,
    set_config_statement,
    set_statement,
)
from sluice.pg.startup import (
    StartupRefused,
    VerifiedSettings,
    option_settings,
    probe_sql,
    split_options,
    startup_settings,
)
from sluice.wire.pg.sql import ChangeKind, classify, savepoint_changes, split_statements

SP = b"SET search_path = a, b"
TZ_UTC = b"SET timezone = 'UTC'"
TZ_PARIS = b"SET timezone = 'Europe/Paris'"
JIT = b"SET jit = off"
ENC = b"SET client_encoding = 'LATIN1'"
INIT = "SET application_name = 'init'"

Maps = dict[str, bytes]
REPLAYS: list[tuple[Maps, Maps, bool, str, list[bytes]]] = [
    ({}, {}, False, "", []),
    ({"search_path": SP}, {"search_path": SP}, False, "", []),
    ({"search_path": SP}, {}, False, "", [b"BEGIN; " + SP + b"; COMMIT"]),
    ({"timezone": TZ_UTC}, {"timezone": TZ_PARIS}, False, "", [b"BEGIN; " + TZ_UTC + b"; COMMIT"]),
    ({}, {"timezone": TZ_UTC}, False, "", [b'BEGIN; RESET "timezone"; COMMIT']),
    ({}, {"my.x": TZ_UTC}, False, "", [b'BEGIN; RESET "my"."x"; COMMIT']),
    ({"search_path": SP, "jit": JIT}, {}, False, "", [b"BEGIN; " + SP + b"; " + JIT + b"; COMMIT"]),
    # the init query runs only after a RESET ALL (a new connection ran it already)
    ({"jit": JIT}, {}, False, INIT, [b"BEGIN; " + JIT + b"; COMMIT"]),
    # dirty: what the server holds is unknown: reset everything and replay it all
    ({}, {}, True, "", [b"BEGIN; RESET ALL; COMMIT"]),
    (
        {"jit": JIT},
        {"jit": JIT},
        True,
        INIT,
        [b"BEGIN; RESET ALL; " + INIT.encode() + b"; " + JIT + b"; COMMIT"],
    ),
    # client_encoding first; in a query of its own when what follows is not ASCII
    (
        {"jit": JIT, "client_encoding": ENC},
        {},
        False,
        "",
        [b"BEGIN; " + ENC + b"; " + JIT + b"; COMMIT"],
    ),
    (
        {"search_path": b"SET search_path = '\xe9'", "client_encoding": ENC},
        {},
        True,
        "",
        [b"BEGIN; RESET ALL; " + ENC, b"SET search_path = '\xe9'; COMMIT"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("want", "have", "dirty", "init", "queries"), REPLAYS)
def test_replay_queries(
    want: Maps, have: Maps, dirty: bool, init: str, queries: list[bytes]
) -> None:
    assert replay_queries(want, have, dirty, init) == queries


def test_replay_does_not_change_its_inputs() -> None:
    want, have = {"jit": JIT}, {"timezone": TZ_UTC}
    replay_queries(want, have, True, INIT)
    assert (want, have) == ({"jit": JIT}, {"timezone": TZ_UTC})


def test_replay_is_not_itself_pinning() -> None:
    """The replayed SQL must not pin the client (the changes it shows are not the client's)."""
    tz = set_config_statement("timezone", "UTC")
    [sql] = replay_queries({"search_path": SP, "timezone": tz}, {"jit": JIT}, True, "")
    assert classify(sql.decode("latin-1")).pin == ""


LITERALS: list[tuple[str, bytes]] = [
    ("psql", b"E'psql'"),
    ("it's", b"E'it\\'s'"),
    ("a\\'; DROP TABLE t; --", b"E'a\\\\\\'; DROP TABLE t; --'"),
    ("", b"E''"),
    ("caf\u00e9", b"E'caf\\u00e9'"),
    ("\U0001f600", b"E'\\U0001f600'"),
    ("tab\there", b"E'tab\\u0009here'"),
]


@pytest.mark.parametrize(("text", "sql"), LITERALS)
def test_literal(text: str, sql: bytes) -> None:
    assert literal(text) == sql


@pytest.mark.parametrize(
    "value", ["it's", "a\\", "a\\'", "'; SET role = admin; --", "\\\\''\\", "x; LISTEN y", "\u00e9"]
)
def test_startup_statement_stays_one_statement(value: str) -> None:
    """However the value is quoted, the statement is one ASCII statement with no effect."""
    stmt = set_config_statement("application_name", value)
    assert stmt.isascii()
    text = stmt.decode()
    assert split_statements(text) == [text]
    assert classify(text + "; LISTEN z").pin == "LISTEN"  # and what follows is seen
    assert classify(text).pin == ""


# ---- SessionSettings ----

SET, RESET, RESET_ALL = ChangeKind.SET, ChangeKind.RESET, ChangeKind.RESET_ALL


def tracked(
    startup: dict[str, str] | None = None, at_default: tuple[str, ...] = ()
) -> SessionSettings:
    settings = SessionSettings()
    for name, value in (startup or {}).items():
        settings.set_startup(name, value, name in at_default)
    return settings


def send(settings: SessionSettings, *texts: str) -> None:
    for text in texts:
        effect = classify(text)
        changes = effect.changes or savepoint_changes(text.encode())
        settings.note(changes, errors=0)


SAVEPOINT_RUNS: list[tuple[list[str], dict[str, bytes]]] = [
    (["SET jit = on"], {"jit": b"SET jit = on"}),
    (["SET jit = on", "SAVEPOINT a", "SET jit = off", "ROLLBACK TO a"], {"jit": b"SET jit = on"}),
    (["SAVEPOINT a", "SET jit = on", "ROLLBACK TO SAVEPOINT a"], {}),
    (["SET jit = on", "SAVEPOINT A", "SET jit = off", "rollback to a"], {"jit": b"SET jit = on"}),
    (["SET jit = on", 'SAVEPOINT "A"', "SET jit = off", "ROLLBACK TO a"], {}),  # "a" is older
    (["SET jit = on", "SAVEPOINT a", "SET jit = off", "RELEASE a"], {"jit": b"SET jit = off"}),
    (
        ["SET jit = on", "SAVEPOINT a", "SAVEPOINT b", "SET jit = off", "RELEASE b",
         "ROLLBACK TO a"],
        {"jit": b"SET jit = on"},
    ),
    (
        ["SET jit = on", "SAVEPOINT a", "SET jit = off", "SAVEPOINT a", "SET jit = on",
         "ROLLBACK TO a", "RELEASE a", "ROLLBACK TO a"],
        {"jit": b"SET jit = on"},
    ),
    (["SET jit = on", "SAVEPOINT x; SET jit = off; ROLLBACK TO x"], {"jit": b"SET jit = on"}),
    (["SET jit = on", "SAVEPOINT s", "RESET ALL", "ROLLBACK TO s"], {"jit": b"SET jit = on"}),
    (["SET jit = on", "SAVEPOINT s", "SET jit = off", "ROLLBACK AND CHAIN"], {}),
]  # fmt: skip


@pytest.mark.parametrize(("texts", "params"), SAVEPOINT_RUNS)
def test_savepoints_undo_pending_changes(texts: list[str], params: dict[str, bytes]) -> None:
    settings = tracked()
    send(settings, *texts)
    server: dict[str, bytes] = {}
    assert settings.commit(server, errors=0, rolled_back=False)
    assert settings.params == params
    assert server == params
    assert settings.savepoints is None and not settings.pending


def test_rolled_back_transaction_changes_nothing() -> None:
    settings = tracked()
    send(settings, "SET jit = on")
    assert settings.commit({}, errors=0, rolled_back=True)
    assert settings.params == {}


def test_an_error_leaves_the_server_unknown() -> None:
    settings = tracked()
    settings.note(classify("SET jit = on").changes, errors=3)
    assert not settings.commit({}, errors=4, rolled_back=False)
    assert settings.params == {}


START = {"timezone": "Asia/Tokyo", "datestyle": "ISO, MDY", "search_path": "a"}


def test_restore_after_reset_all() -> None:
    settings = tracked(START, at_default=("datestyle",))
    send(settings, "SET timezone = 'UTC'", "RESET ALL")
    plan = settings.restore()
    assert plan is not None
    names, sql = plan
    assert names == ["timezone", "search_path"]  # datestyle: a fresh connection has it
    assert sql == b"SET \"timezone\" TO E'Asia/Tokyo'; SET \"search_path\" TO E'a'"  # no snapshot
    server: dict[str, bytes] = {}
    assert settings.commit(server, errors=0, rolled_back=False)
    assert settings.params == settings.startup
    assert server == settings.startup  # restored, or equal to a fresh connection's


def test_restore_only_what_stays_reset() -> None:
    settings = tracked(START)
    send(settings, "RESET ALL; SET timezone = 'UTC'; RESET search_path; SET search_path = b")
    plan = settings.restore()
    assert plan is not None and plan[0] == ["datestyle"]
    send(settings, "RESET jit")  # no startup value: a fresh connection's is the client's
    assert settings.restore() is None
    send(settings, "SET timezone TO DEFAULT")
    plan = settings.restore()
    assert plan is not None and plan[0] == ["timezone"]
    send(settings, "RESET datestyle", "SET datestyle = 'German'")
    assert settings.restore() is None


def test_restore_is_undone_with_its_savepoint() -> None:
    settings = tracked(START)
    send(settings, "SET timezone = 'UTC'", "SAVEPOINT s", "RESET timezone")
    assert settings.restore() is not None
    send(settings, "ROLLBACK TO s")
    server: dict[str, bytes] = {}
    assert settings.commit(server, errors=0, rolled_back=False)
    assert settings.params["timezone"] == b"SET timezone = 'UTC'"


SET_STATEMENTS = [
    ("timezone", "Asia/Tokyo", b"SET \"timezone\" TO E'Asia/Tokyo'"),
    ("datestyle", "SQL, DMY", b"SET \"datestyle\" TO E'SQL, DMY'"),  # a list, not quoted
    ("application_name", "caf\u00e9", b"SET \"application_name\" TO E'caf\\u00e9'"),
    ("search_path", '"$user", public', b"SET \"search_path\" TO E'$user', E'public'"),
    ("search_path", '"user", x', b"SET \"search_path\" TO E'user', E'x'"),
    ("search_path", '"a, b"', b"SET \"search_path\" TO E'a, b'"),
    # spellings a SET cannot give (it quotes each element as quote_identifier would)
    ("search_path", "a,b", b"SELECT pg_catalog.set_config('search_path', E'a,b', false)"),
    ("search_path", "Foo", b"SELECT pg_catalog.set_config('search_path', E'Foo', false)"),
    ("search_path", "user", b"SELECT pg_catalog.set_config('search_path', E'user', false)"),
    (
        "search_path",
        '"public"',
        b"SELECT pg_catalog.set_config('search_path', E'\"public\"', false)",
    ),
    ("search_path", "", b"SELECT pg_catalog.set_config('search_path', E'', false)"),
    ("myapp.x", "start", b"SELECT pg_catalog.set_config('myapp.x', E'start', false)"),
]


@pytest.mark.parametrize(("name", "value", "sql"), SET_STATEMENTS)
def test_set_statement(name: str, value: str, sql: bytes) -> None:
    assert set_statement(name, value) == sql


def test_shown_values() -> None:
    settings = tracked({"application_name": "caf\u00e9"})
    assert settings.shown("application_name") == "caf\u00e9"
    send(settings, "SET application_name = 'other app'")
    settings.commit({}, errors=0, rolled_back=False)
    assert settings.shown("application_name") == "other app"
    assert settings.shown("timezone") == ""


# ---- startup settings ----

SPLITS: list[tuple[str, list[str]]] = [
    ("", []),
    ("   ", []),
    ("-c a=b", ["-c", "a=b"]),
    ("  -c  a=b  ", ["-c", "a=b"]),
    ("-c application_name=my\\ app", ["-c", "application_name=my app"]),
    ("-c a=b\\\\ -c c=d", ["-c", "a=b\\", "-c", "c=d"]),
    ("-c a=\\\\\\ x", ["-c", "a=\\ x"]),
    ("-c\ta=b\n-c c=d", ["-c", "a=b", "-c", "c=d"]),
]


@pytest.mark.parametrize(("options", "words"), SPLITS)
def test_split_options(options: str, words: list[str]) -> None:
    assert split_options(options) == words


OPTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("-c statement_timeout=3000", [("statement_timeout", "3000")]),
    ("-cstatement_timeout=3000", [("statement_timeout", "3000")]),
    ("--statement-timeout=3000", [("statement_timeout", "3000")]),
    ("--TimeZone=UTC -c DateStyle=SQL,DMY", [("TimeZone", "UTC"), ("DateStyle", "SQL,DMY")]),
    ("-c search_path=a,b -c x.y=1=2", [("search_path", "a,b"), ("x.y", "1=2")]),
    ("-c application_name=a\\ b", [("application_name", "a b")]),
    ("-c a=", [("a", "")]),
]  # fmt: skip


@pytest.mark.parametrize(("options", "pairs"), OPTIONS)
def test_option_settings(options: str, pairs: list[tuple[str, str]]) -> None:
    assert option_settings(options) == pairs


@pytest.mark.parametrize(
    ("options", "sqlstate"), [("-c a", "42601"), ("--a", "42601"), ("-e", "0A000"), ("x", "42601")]
)
def test_options_refused(options: str, sqlstate: str) -> None:
    with pytest.raises(StartupRefused) as info:
        option_settings(options)
    assert info.value.sqlstate == sqlstate


def test_startup_parameters_win_over_options() -> None:
    params = {
        "user": "u",
        "database": "d",
        "options": "-c TimeZone=UTC -c jit=off",
        "TimeZone": "Asia/Tokyo",
        "_pq_.ext": "1",
    }
    assert startup_settings(params) == {"timezone": "Asia/Tokyo", "jit": "off"}


def test_probe_sql() -> None:
    assert probe_sql({"jit": "off"}) == (
        b"SET LOCAL statement_timeout = 0; SELECT pg_catalog.encode(pg_catalog.convert_to("
        b"pg_catalog.set_config(E'jit', E'off', true), 'UTF8'), 'hex')"
    )
    both = probe_sql({"datestyle": "DMY", "timezone": "UTC"})
    assert both.startswith(b"SET LOCAL statement_timeout = 0; SET LOCAL datestyle TO DEFAULT; ")
    assert both.count(b"set_config(") == 2


def test_verified_settings_are_bounded() -> None:
    cache = VerifiedSettings(max_entries=3)
    cache.remember("db", "u", {"a": "1", "b": "2"}, {"a": "one", "b": "two"})
    assert cache.lookup("db", "u", {"a": "1", "b": "3"}) == ({"a": "one"}, {"b": "3"})
    assert cache.lookup("db", "other", {"a": "1"}) == ({}, {"a": "1"})
    cache.remember("db", "u", {"c": "3", "d": "4"}, {"c": "3", "d": "4"})
    known, missing = cache.lookup("db", "u", {"a": "1", "b": "2", "c": "3", "d": "4"})
    assert set(known) == {"a", "c", "d"}  # "a" was used last, "b" went first
    assert missing == {"b": "2"}


def test_clients_share_only_what_none_of_them_fills() -> None:
    """An idle client's settings hold shared empty containers; the first write makes its own,
    never touching the other clients'."""
    idle, other, busy = tracked(), tracked(), tracked(START, at_default=("datestyle",))
    assert idle.startup is other.startup and idle.pending is other.pending
    send(busy, "SET jit = on", "RESET ALL")
    assert busy.restore() is not None
    assert idle.startup == idle.restores == {} and not idle.pending and not idle.at_default
    assert busy.startup is not idle.startup and busy.pending is not idle.pending
    assert busy.at_default is tracked(START, at_default=("datestyle",)).at_default  # shared
    assert busy.commit({}, errors=0, rolled_back=False)
    assert busy.pending is idle.pending  # back to the shared one
    with pytest.raises(TypeError):
        idle.startup["jit"] = b"SET jit = on"
    with pytest.raises(TypeError):
        idle.pending.append(classify("SET jit = on").changes[0])


def test_clients_without_settings_share_untouched_ones() -> None:
    """A client with no startup settings that has changed none shares `UNTOUCHED` (an idle
    client costs less): it reads as a fresh client's settings, and its map refuses writes."""
    fresh = SessionSettings()
    fields = (
        "params", "startup", "restores", "at_default", "custom_startup", "pending",
        "savepoints", "resets_noted", "errors_at_start",
    )  # fmt: skip
    assert [getattr(UNTOUCHED, f) for f in fields] == [getattr(fresh, f) for f in fields]
    assert not UNTOUCHED.has_pending and UNTOUCHED.shown("application_name") == ""
    assert replay_queries(UNTOUCHED.params, {}, False, "") == []
    with pytest.raises(TypeError):
        UNTOUCHED.params["jit"] = b"SET jit = on"


def test_clients_with_the_same_startup_settings_share_them_until_a_change() -> None:
    """Clients that logged in with the same startup settings share one SessionSettings (an
    idle psql costs less); a change is made on a copy of the client's own."""
    psql = (("application_name", "psql", False), ("client_encoding", "UTF8", True))
    shared = for_startup(psql)
    assert for_startup(psql) is shared and for_startup(psql[:1]) is not shared
    assert for_startup(()) is UNTOUCHED and shared.shared and UNTOUCHED.shared
    alone = tracked({"application_name": "psql", "client_encoding": "UTF8"}, ("client_encoding",))
    fields = ("params", "startup", "restores", "at_default", "custom_startup", "pending")
    assert [getattr(shared, f) for f in fields] == [getattr(alone, f) for f in fields]
    assert shared.shown("application_name") == "psql" and not alone.shared
    for change in (
        lambda: shared.params.update(jit=b"SET jit = on"),
        lambda: shared.params.pop("application_name"),
        lambda: shared.startup.clear(),
        lambda: shared.set_startup("jit", "on", False),
    ):
        with pytest.raises(TypeError):
            change()
    own = shared.copy()
    send(own, "SET jit = on", "RESET application_name")
    assert own.commit({}, errors=0, rolled_back=False)
    assert own.params == {**alone.params, "jit": b"SET jit = on"} and not own.shared
    assert shared.params == alone.params and for_startup(psql) is shared
    send(own, "RESET ALL")
    own.commit({}, errors=0, rolled_back=False)
    assert own.params == alone.params  # back to its startup values, which stay shared
