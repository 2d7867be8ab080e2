"""The state check's reading, and the DEALLOCATE answers, on exact bytes.

`read_check` turns the DataRows of CHECK_SQL into a pin reason and the tracked
settings the session holds; `ClientStatements.deallocate` answers a client's
DEALLOCATE as the server would answer it directly.
"""

from __future__ import annotations

import re

import pytest

from sluice.errors import ProtocolError
from sluice.pg.guard import (
    CHECK_SQL,
    CUSTOM,
    NO_GUARD,
    RECHECK,
    SEQUENCES,
    BorrowGuard,
    Finding,
    QuickMemory,
    quick_state_sql,
    read_baseline,
    read_check,
    read_quick,
)
from sluice.pg.server import ServerConn
from sluice.pg.settings import SessionSettings
from sluice.pg.statements import ClientStatements, StatementNames
from sluice.session.empty import SharedDict
from sluice.session.frontend import is_variable_set
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg.responses import Prepared
from sluice.wire.pg.sql import Effect

LOGIN = "app"


def row(*values: str | None) -> bytes:
    """A DataRow body."""
    return m.data_row(list(values))[5:]


def check_rows(
    *settings: bytes, flags: str = "", user: str = LOGIN, show: str = "0", reset: str = "0"
) -> list[bytes]:
    """CHECK_SQL's answer: SHOW's row, the flags row, then `settings` (and the check's
    own statement_timeout, which pg_settings shows as set for the session)."""
    timeout = row("setting", "statement_timeout", "0", reset)
    return [row(show), row("flags", flags, user, LOGIN), *settings, timeout]


def setting(name: str, value: str) -> bytes:
    return row("setting", name, value, "")


def set_config(name: str, value: str) -> bytes:
    return f"SELECT pg_catalog.set_config('{name}', E'{value}', false)".encode()


def quick_rows(untracked: str = "{4MB}", tracked: str = "{UTC}", flags: str = "") -> list[bytes]:
    """The quick check's answer: statement_timeout's row, then the state row."""
    return [row("0", "0"), row(flags, LOGIN, LOGIN, tracked, untracked)]


def quick_server() -> ServerConn:
    server = ServerConn("p", 1 << 20)
    server.login_user = LOGIN
    return server


def test_quick_check_trusts_only_values_a_precise_check_explained() -> None:
    server = quick_server()
    assert read_quick(quick_rows(), server) is RECHECK  # nothing learned yet
    server.quick.learn(server.params, Finding())  # the precise check found nothing set
    assert read_quick(quick_rows(), server) == Finding(settings=None)
    assert read_quick(quick_rows(untracked="{8MB}"), server) is RECHECK
    assert read_quick(quick_rows(tracked="{Asia/Tokyo}"), server) is RECHECK
    server.params = {"timezone": b"SET timezone = 'Asia/Tokyo'"}  # another set of statements
    assert read_quick(quick_rows(), server) is RECHECK
    server.params_dirty = True  # what the connection holds is unknown
    server.quick.learn(None, Finding())
    assert read_quick(quick_rows(), server) is RECHECK


def test_quick_check_never_learns_values_a_session_set() -> None:
    server = quick_server()
    read_quick(quick_rows(untracked="{8MB}"), server)
    server.quick.learn(server.params, Finding(pin="SET work_mem", untracked=True))
    assert read_quick(quick_rows(untracked="{8MB}"), server) is RECHECK


def test_quick_check_pins_for_flags_once_settings_are_known() -> None:
    server = quick_server()
    read_quick(quick_rows(flags="lock"), server)
    server.quick.learn(server.params, Finding())
    assert read_quick(quick_rows(flags="lock"), server).pin.startswith("session advisory lock")


def test_quick_memory_is_bounded() -> None:
    memory = QuickMemory()
    for n in range(QuickMemory.LIMIT * 3):
        memory.pending = (b"t", b"u")
        memory.learn({"search_path": b"%d" % n}, Finding())
    assert len(memory.tracked) <= QuickMemory.LIMIT


def test_quick_state_sql_reads_untracked_settings_apart() -> None:
    sql = quick_state_sql([row("work_mem"), row("search_path"), row("it's")]).decode()
    untracked = sql.rsplit("ARRAY[", 1)[1]
    assert "'work_mem'" in untracked and "'it''s'" in untracked
    assert "search_path" not in untracked


def test_check_sql_names_every_object_with_its_schema() -> None:
    """A search_path or a temporary object of the client cannot change what it reads."""
    body = CHECK_SQL.split("; ", 2)[2]
    assert re.findall(r"(?<!pg_catalog\.)\bpg_(?!catalog\b)\w+", body) == []
    assert re.search(r"\s(?:=|<>)\s", body) is None  # operators go through pg_catalog too


def test_nothing_left() -> None:
    assert read_check(check_rows(), LOGIN) == Finding()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("lock", "session advisory lock"),
        ("temp", "temporary object"),
        ("listen", "LISTEN"),
        ("prepared", "PREPARE"),
        ("cursor", "cursor WITH HOLD"),
    ],
)
def test_state_pins(kind: str, reason: str) -> None:
    found = read_check(check_rows(flags=kind), LOGIN)
    assert found.pin == reason + " (left by opaque SQL)"
    assert not is_variable_set(found.pin)
    assert read_check(check_rows(flags=f"{kind},listen", user="iso"), LOGIN).pin == found.pin


def test_role_change_pins() -> None:
    found = read_check(check_rows(user="iso"), LOGIN)
    assert found.pin == "role changed (left by opaque SQL)"
    assert not is_variable_set(found.pin)  # never shared, whatever exclude_variable_sets says
    session = [row("0"), row("flags", "", "iso", "iso")]  # SET SESSION AUTHORIZATION
    assert read_check(session, LOGIN).pin == found.pin


def test_tracked_settings_are_read_not_pinned() -> None:
    rows = check_rows(
        setting("search_path", "iso_a, public"),
        setting("DateStyle", "SQL, DMY"),
        setting("application_name", "it's"),
    )
    assert read_check(rows, LOGIN) == Finding(
        settings={
            "search_path": set_config("search_path", "iso_a, public"),
            "datestyle": set_config("datestyle", "SQL, DMY"),
            "application_name": set_config("application_name", "it\\'s"),
        }
    )


def test_untracked_setting_pins_unless_the_pool_set_it() -> None:
    rows = check_rows(setting("work_mem", "7168"))
    found = read_check(rows, LOGIN)
    assert found.pin == "SET work_mem (left by opaque SQL)"
    assert is_variable_set(found.pin)  # exclude_variable_sets applies to it as to a SET
    baseline = read_baseline([setting("work_mem", "7168")])
    assert read_check(rows, LOGIN, baseline) == Finding()
    assert read_check(check_rows(setting("work_mem", "8192")), LOGIN, baseline).pin


def test_custom_setting_pins_and_marks_the_connection() -> None:
    """A placeholder variable outlives every reset: the connection must not be lent again."""
    found = read_check(check_rows(setting("myapp.tenant", "7")), LOGIN)
    assert (found.pin, found.custom) == ("SET myapp.tenant (left by opaque SQL)", "myapp.tenant")
    baseline = read_baseline([setting("my.flag", "on")])  # the pool's init_query set it
    assert read_check(check_rows(setting("my.flag", "on")), LOGIN, baseline) == Finding()


@pytest.mark.parametrize(
    ("show", "reset", "settings"),
    [
        ("0", "0", {}),
        ("5s", "5000", {}),  # what RESET gives: not the session's own
        ("5s", "0", {"statement_timeout": set_config("statement_timeout", "5s")}),
        ("2min", "0", {"statement_timeout": set_config("statement_timeout", "2min")}),
        ("0", "1000", {"statement_timeout": set_config("statement_timeout", "0")}),
    ],
)
def test_statement_timeout_read_before_the_check_lifts_it(
    show: str, reset: str, settings: dict[str, bytes]
) -> None:
    # (pg_settings would show the check's own SET LOCAL: SHOW's value is the session's)
    assert read_check(check_rows(show=show, reset=reset), LOGIN).settings == settings


@pytest.mark.parametrize(
    "rows",
    [[], [row("0"), b"\x00\x03\x00\x00\x00\x09lock"], [row("0"), row("flags", "", LOGIN)]],
)
def test_malformed_answers_are_a_protocol_error(rows: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        read_check(rows, LOGIN)


@pytest.mark.parametrize(
    ("body", "values"),
    [
        (b"\x00\x00", []),
        (row("a", None, ""), [b"a", None, b""]),
        (b"\x00\x01\x00\x00\x00\x03abc", [b"abc"]),
    ],
)
def test_parse_data_row(body: bytes, values: list[bytes | None]) -> None:
    assert m.parse_data_row(body) == values


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00",
        b"\x00\x01\x00\x00",  # a length cut short
        b"\x00\x01\x00\x00\x00\x05abc",  # a value longer than the message
        b"\x00\x02\xff\xff\xff\xff",  # a second column missing
    ],
)
def test_parse_data_row_checks_lengths(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        m.parse_data_row(body)


# ---- DEALLOCATE


IDLE, IN_TXN, FAILED = ord("I"), ord("T"), ord("E")


def statements(*names: bytes) -> ClientStatements:
    stmts = ClientStatements(StatementNames(), 100, BorrowGuard(1))
    entry = (b"sluice_1", b"select 1\x00\x00\x00", 0, Prepared(0), b"")
    stmts.by_name = dict.fromkeys(names, entry)
    return stmts


def replies(data: bytes | None) -> list[tuple[bytes, str]]:
    assert data is not None
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos + 1 : pos + 5], "big")
        kind, body = data[pos : pos + 1], data[pos + 5 : pos + 1 + size]
        detail = m.parse_error_fields(body)["C"] if kind == b"E" else body.rstrip(b"\x00")
        out.append((kind, detail if isinstance(detail, str) else detail.decode()))
        pos += 1 + size
    return out


def test_deallocate_all_forgets_every_name() -> None:
    stmts = statements(b"s1", b"s2")
    reply = stmts.deallocate(None, IN_TXN, pinned=False)
    assert replies(reply) == [(b"C", "DEALLOCATE ALL"), (b"Z", "T")]
    assert stmts.by_name == {}


def test_deallocate_one_name() -> None:
    stmts = statements(b"s1", b"s2")
    ok = [(b"C", "DEALLOCATE"), (b"Z", "I")]
    assert replies(stmts.deallocate(b"s1", IDLE, pinned=False)) == ok
    assert list(stmts.by_name) == [b"s2"]
    missing = [(b"E", "26000"), (b"Z", "I")]
    assert replies(stmts.deallocate(b"s1", IDLE, pinned=False)) == missing


def test_deallocate_in_a_failed_transaction_changes_nothing() -> None:
    stmts = statements(b"s1")
    aborted = [(b"E", "25P02"), (b"Z", "E")]
    for name in (None, b"s1", b"nope"):
        assert replies(stmts.deallocate(name, FAILED, pinned=True)) == aborted
    assert list(stmts.by_name) == [b"s1"]


def test_pinned_client_leaves_other_names_to_the_server() -> None:
    stmts = statements(b"s1")
    assert stmts.deallocate(None, IDLE, pinned=True) is None  # SQL PREPAREs must go too
    assert stmts.deallocate(b"sql_prepared", IDLE, pinned=True) is None
    assert replies(stmts.deallocate(b"s1", IDLE, pinned=True))[0] == (b"C", "DEALLOCATE")


def test_answer_deallocate_reads_the_query() -> None:
    stmts = statements(b"_pg3_0")
    assert stmts.answer_deallocate(m.query("SELECT 1"), None, pinned=False) is None
    assert stmts.answer_deallocate(m.query("DEALLOCATE x; SELECT 1"), None, False) is None
    reply = stmts.answer_deallocate(m.query("deallocate _PG3_0"), None, pinned=False)
    assert replies(reply) == [(b"C", "DEALLOCATE"), (b"Z", "I")]


def test_bind_of_an_opaque_statement_marks_its_borrow() -> None:
    """A named statement runs whenever it is bound, not only in the borrow that parsed it
    (nor when it is parsed); not when the server discards the Bind after an error."""
    stmts = ClientStatements(StatementNames(), 100, BorrowGuard(1))
    client = Client(stmts)
    server = ServerConn("pool", 1 << 20)
    out: list[bytes] = []
    stmts.parse(m.parse(b"s1", b"select f($1)\x00\x00\x00"), server, out, client)
    assert not client.guard.opaque and list(stmts.runs) == [b"s1"]
    bind = m.message(b"B", b"\x00s1\x00" + b"\x00\x00" * 3)
    server.tracker.awaiting_sync = True
    stmts.bind(bind, server, out, client)
    assert not client.guard.opaque
    server.tracker.awaiting_sync = False
    stmts.bind(bind, server, out, client)
    assert client.guard.opaque and client.guard.left == SEQUENCES | CUSTOM
    assert out[-1].startswith(b"B") and b"sluice_1" in out[-1]
    assert stmts.deallocate(b"s1", IDLE, pinned=False) is not None
    assert stmts.runs == {}


def test_what_a_borrow_left_is_cleared_for_anyone_else() -> None:
    """lastval() state and custom settings no check can list: kept for the client that left
    them while it is their latest, cleared before anyone else's borrow."""
    a, b = BorrowGuard(1), BorrowGuard(2)
    x, y = ServerConn("pool", 1 << 20), ServerConn("pool", 1 << 20)
    a.note(Effect(writes=True))
    a.on_detach(x)
    assert (x.leftover, x.leftover_of) == (SEQUENCES, 1)
    assert a.on_attach(x) == b"" and x.leftover == SEQUENCES  # its own, and its latest
    assert b.on_attach(x) == m.query("DISCARD SEQUENCES")
    assert x.leftover == 0 and list(x.tracker.queue) == [r.QUERY_SKIP] and not x.params_dirty
    a.note(Effect(opaque=True, writes=True))
    a.on_detach(y)
    assert y.leftover == SEQUENCES | CUSTOM
    x.leftover, x.leftover_of = SEQUENCES, 1  # an older state of A's
    assert a.on_attach(x) == m.query("DISCARD SEQUENCES")  # its newer one is on y
    assert b.on_attach(y) == m.query("DISCARD SEQUENCES") and y.params_dirty  # RESET ALL
    b.on_detach(y)  # left nothing
    assert (y.leftover, y.leftover_of) == (0, 2)


def test_an_unknown_name_inside_a_transaction_goes_to_the_server() -> None:
    # the server's 26000 aborts the transaction; a made-up one would leave it open
    stmts = statements(b"s1")
    assert stmts.deallocate(b"p1", IN_TXN, pinned=False) is None
    assert replies(stmts.deallocate(b"s1", IN_TXN, pinned=False))[0] == (b"C", "DEALLOCATE")


def test_clients_that_prepare_nothing_share_empty_maps() -> None:
    """Maps no client has filled are shared (an idle client costs less); writing to one
    fails instead of reaching every other client."""
    a, b = statements(), ClientStatements(StatementNames(), 100, BorrowGuard(2))
    c = ClientStatements(StatementNames(), 100, BorrowGuard(3))
    assert b.by_name is c.by_name and b.runs is c.runs and a.by_name is not b.by_name
    b.clear()
    assert b.runs.pop(b"s1", None) is None
    with pytest.raises(TypeError):
        b.by_name[b"s1"] = (b"sluice_1", b"select 1\x00\x00\x00", 0)
    with pytest.raises(TypeError):
        c.runs[b"s1"] = Effect(opaque=True)
    assert b.by_name == c.runs == {}


class Client:
    """What a client's statements ask of its session (`StatementClient`), as it does it."""

    def __init__(self, statements: ClientStatements) -> None:
        self.statements = statements
        self.settings = SessionSettings()
        self.guard = BorrowGuard(7)
        self.written: list[bytes] = []

    def note_effect(self, effect: Effect, sql: bytes, tracker: r.ResponseTracker) -> None:
        self.guard.note(effect)

    def transport_write(self, data: bytes) -> None:
        self.written.append(data)

    def own_statements(self) -> ClientStatements:
        if self.statements.guard is NO_GUARD:
            self.statements = ClientStatements(self.statements.names, 100, self.guard)
        return self.statements


def test_clients_share_their_statements_until_a_named_parse() -> None:
    """Clients that have prepared no named statement share one object (an idle client costs
    less); the first named Parse gives the client its own, and the shared one stays empty."""
    names = StatementNames()
    shared = names.none_prepared(100)
    assert names.none_prepared(100) is shared and names.none_prepared(0) is not shared
    a, b = Client(shared), Client(shared)
    server = ServerConn("pool", 1 << 20)
    out: list[bytes] = []
    shared.parse(m.parse(b"", b"select 1\x00\x00\x00"), server, out, a)  # unnamed: nothing kept
    assert a.statements is shared and out[-1] == m.parse(b"", b"select 1\x00\x00\x00")
    shared.parse(m.parse(b"s1", b"select nextval('q')\x00\x00\x00"), server, out, a)
    own = a.statements
    assert own is not shared and own.guard is a.guard and list(own.by_name) == [b"s1"]
    assert list(own.runs) == [b"s1"] and out[-2:] == [
        m.parse(b"sluice_1", b"select nextval('q')\x00\x00\x00"),
        m.describe_statement(b"sluice_1"),  # the proxy learns its types
    ]
    assert shared.by_name == shared.runs == {} and b.statements is shared
    own.parse(m.parse(b"s2", b"select 2\x00\x00\x00"), server, out, a)
    assert a.statements is own and list(own.by_name) == [b"s1", b"s2"]
    assert shared.deallocate(None, IDLE, pinned=False) is not None  # DEALLOCATE ALL: none
    assert shared.by_name == {} and list(own.by_name) == [b"s1", b"s2"]


def test_a_connection_copies_the_clients_shared_settings_before_changing_them() -> None:
    """A connection synced to clients' shared, read-only settings holds that very map (a
    borrow compares by identity); anything that changes the connection's copy first."""
    shared = SharedDict({"timezone": b"SET timezone = 'UTC'"})
    server = ServerConn("pool", 1 << 20)
    server.params, server.params_shared = shared, True
    own = server.own_params()
    own["timezone"] = b"SET timezone = 'Asia/Tokyo'"
    assert shared == {"timezone": b"SET timezone = 'UTC'"} and server.params is own
    assert not server.params_shared and server.own_params() is own
