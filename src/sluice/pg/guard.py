"""The state check: what opaque SQL left in a session, asked of the server itself.

Recognising statements by their keywords is an optimisation, never the only
guard. When a client's borrow ran SQL whose effects the classifier cannot see
(a DO block, a user's function, a statement it does not know: `Effect.opaque`),
the proxy runs `CHECK_SQL` on the connection once the transaction has ended,
before anyone else can borrow it, and reads the answer with `read_check`:

- state the client still expects (a session advisory lock, a temporary object,
  LISTEN, an SQL prepared statement, a cursor WITH HOLD, another role, an
  untracked setting set for the session) pins the client to the connection;
- tracked settings (search_path, TimeZone, ...) become the client's tracked
  values, so they follow it to other connections as a SET of its own would;
- otherwise the connection goes back to the pool.

The check runs as the session's user with the session's settings, so it names
every relation, function and operator with its schema (a search_path or a
temporary object cannot change what it reads), and it lifts the client's
statement_timeout for its own transaction after reading it.

Reading pg_settings costs the server about a millisecond (it renders all of
its ~350 rows), ten times a small transaction. So the check comes in two
steps. The quick one, two statements prepared once per connection, reads the
flags above and every settable setting's value with `current_setting()`
(~0.1 ms). If the values are the ones this connection had the last time a
precise check explained them (`QuickMemory`: the untracked settings as they
were when nobody had set any, the tracked ones per set of tracked statements
the connection holds), no borrow set anything and nothing needs adopting. Any
other value, or a quick check that failed, is explained by the precise check
(CHECK_SQL, pg_settings' `source`), whose answer the quick one then learns.
A setting set to the value it already had is not seen as set: it changes
nothing a client can read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, Protocol, TypeAlias

from sluice.errors import ProtocolError
from sluice.pg.settings import set_config_statement
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg.messages import parse_data_row
from sluice.wire.pg.sql import TRACKED, Change, ChangeKind, Effect

if TYPE_CHECKING:
    from sluice.pg.settings import SessionSettings

_EQ: Final = "OPERATOR(pg_catalog.=)"
_NE: Final = "OPERATOR(pg_catalog.<>)"


def _if_exists(name: str, query: str) -> str:
    return f"CASE WHEN EXISTS ({query}) THEN '{name}' END"


# Temporary objects, looked for (InitPlans run on first use) only once the session
# has a temporary schema; the schema alone ('tempschema') stays after they are gone.
_NS: Final = "pg_catalog.pg_my_temp_schema()"
_TEMP: Final = (
    f"CASE WHEN {_NS} {_EQ} 0 THEN NULL WHEN "
    f"EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace {_EQ} {_NS}) "
    f"OR EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.pronamespace {_EQ} {_NS}) "
    f"OR EXISTS (SELECT FROM pg_catalog.pg_type y WHERE y.typnamespace {_EQ} {_NS}) "
    "THEN 'temp' ELSE 'tempschema' END"
)
_FLAGS: Final = ", ".join(
    (
        _if_exists(
            "lock",
            f"SELECT FROM pg_catalog.pg_locks l WHERE l.locktype {_EQ} 'advisory' "
            f"AND l.pid {_EQ} pg_catalog.pg_backend_pid()",
        ),
        _TEMP,
        _if_exists("listen", "SELECT FROM pg_catalog.pg_listening_channels()"),
        _if_exists("prepared", "SELECT FROM pg_catalog.pg_prepared_statements s WHERE s.from_sql"),
        _if_exists("cursor", "SELECT FROM pg_catalog.pg_cursors c WHERE c.is_holdable"),
    )
)
# One row of what is left ('flags', the kinds found, current_user, session_user), then
# one row per setting set for the session ('setting', name, value, value after RESET).
_STATE: Final = (
    f"SELECT 'flags', pg_catalog.concat_ws(',', {_FLAGS}), "
    "CURRENT_USER::pg_catalog.text, SESSION_USER::pg_catalog.text "
    "UNION ALL SELECT 'setting', s.name, s.setting, s.reset_val FROM pg_catalog.pg_settings s "
    f"WHERE s.source {_EQ} 'session'"
)
# One query string: the session's statement_timeout, then no timeout for the check.
CHECK_SQL: Final = f"SHOW statement_timeout; SET LOCAL statement_timeout = 0; {_STATE}"
_CHECK_MESSAGE: Final = m.query(CHECK_SQL)

# The quick check: the session's statement_timeout (lifted until the Sync), then the
# flags, the users and the values of the tracked and of every other settable setting.
_QUICK_TIMEOUT_SQL: Final = (
    "SELECT pg_catalog.current_setting('statement_timeout'), "
    "pg_catalog.set_config('statement_timeout', '0', true)"
)
_QUICK_NAMES: Final = (b"sluice_check_timeout", b"sluice_check_state")
# The settable settings the check reads (those a session can change), by name.
NAMES_SQL: Final = (
    "SELECT s.name FROM pg_catalog.pg_settings s "
    "WHERE s.context OPERATOR(pg_catalog.=) ANY ('{user,superuser}') ORDER BY s.name"
)
_TRACKED_ORDER: Final = tuple(sorted(TRACKED - {"statement_timeout"}))


def quick_state_sql(rows: list[bytes]) -> bytes:
    """The quick check's second statement for connections whose settable settings are
    NAMES_SQL's `rows`; tracked settings are read apart from the others."""
    names = [_text(parse_data_row(row)[0]) for row in rows]

    def values(chosen: Iterable[str]) -> str:
        calls = ", ".join(f"pg_catalog.current_setting({_literal(n)}, true)" for n in chosen)
        return f"ARRAY[{calls}]::pg_catalog.text[]::pg_catalog.text"

    untracked = [name for name in names if name.lower() not in TRACKED]
    return (
        f"SELECT pg_catalog.concat_ws(',', {_FLAGS}), CURRENT_USER::pg_catalog.text, "
        f"SESSION_USER::pg_catalog.text, {values(_TRACKED_ORDER)}, {values(untracked)}"
    ).encode()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_QUICK_PREPARE: Final = b"".join(m.close_statement(name) for name in _QUICK_NAMES) + m.parse(
    _QUICK_NAMES[0], _QUICK_TIMEOUT_SQL.encode() + b"\x00\x00\x00"
)
_QUICK_RUN: Final = (
    b"".join(
        m.message(b"B", b"\x00" + name + b"\x00" + b"\x00\x00\x00\x00\x00\x00")
        + m.message(b"E", b"\x00\x00\x00\x00\x00")
        for name in _QUICK_NAMES
    )
    + m.SYNC
)
_DISCARD_SEQUENCES: Final = m.query("DISCARD SEQUENCES")
# A session keeps its temporary schema after DISCARD ALL: later clients would see it
# (pg_my_temp_schema(), the notices of DROP TABLE IF EXISTS pg_temp.x), so such a
# connection is closed rather than lent again.
TEMP_SCHEMA: Final = "a client had a temporary schema on it, which no reset removes"
HAS_TEMP_SCHEMA_SQL: Final = f"SELECT {_NS} {_NE} 0"
# Settings only (for a connection's baseline after the pool's init_query).
SETTINGS_SQL: Final = (
    "SELECT 'setting', s.name, s.setting, s.reset_val FROM pg_catalog.pg_settings s "
    f"WHERE s.source {_EQ} 'session'"
)

_FOUND: Final = {
    "lock": "session advisory lock",
    "temp": "temporary object",
    "listen": "LISTEN",
    "prepared": "PREPARE",
    "cursor": "cursor WITH HOLD",
}
_LEFT_BY: Final = " (left by opaque SQL)"
_DURATION: Final = re.compile(r"(-?\d+)\s*(ms|s|min|h|d)?")
_MS: Final = {None: 1, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}

Baseline: TypeAlias = frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Finding:
    """What the check found: a pin reason ("" if none) and the tracked settings' values."""

    pin: str = ""
    # every tracked setting the session holds, as a statement that sets it again;
    # a tracked setting missing here is not set for the session (RESET); None: the
    # tracked settings are as the proxy has them (nothing to adopt)
    settings: dict[str, bytes] | None = field(default_factory=dict)
    custom: str = ""  # a custom (dotted) setting the session holds: never lend it again
    temp_schema: bool = False  # the session has a temporary schema: never lend it again
    untracked: bool = False  # an untracked setting is set for the session


RECHECK: Final = Finding(pin="the quick state check could not tell")  # ask the precise check


def read_check(rows: list[bytes], login_user: str, baseline: Baseline = frozenset()) -> Finding:
    """Read CHECK_SQL's DataRow bodies (SHOW's row first)."""
    if not rows:
        raise ProtocolError("the state check returned no rows")
    timeout = _text(parse_data_row(rows[0])[0])
    pin = ""
    settings: dict[str, bytes] = {}
    custom = ""
    temp_schema = False
    untracked = False
    for body in rows[1:]:
        values = [_text(v) for v in parse_data_row(body)]
        if len(values) != 4:
            raise ProtocolError("unexpected row from the state check")
        kind, name, value, other = values
        if kind == "flags":
            flag_pin, temp_schema = _flags(name, value, other, login_user)
            pin = pin or flag_pin
        elif name == "statement_timeout":  # pg_settings shows the check's own SET LOCAL
            if _milliseconds(timeout) != _milliseconds(other):  # (`other`: after RESET)
                settings[name] = set_config_statement(name, timeout)
        else:
            found = _setting(name, value, baseline, settings)
            untracked = untracked or bool(found)
            pin = pin or found
            if "." in name and (name, value) not in baseline:
                custom = custom or name
    return Finding(pin, settings, custom, temp_schema, untracked)


def _flags(flags_text: str, current: str, session: str, login_user: str) -> tuple[str, bool]:
    """The pin reason for what the flags and the users say, and whether a temporary
    schema exists."""
    flags = [flag for flag in flags_text.split(",") if flag]
    temp_schema = "temp" in flags or "tempschema" in flags
    found = [_FOUND.get(flag, "session state") for flag in flags if flag != "tempschema"]
    pin = found[0] + _LEFT_BY if found else _role_changed(current, session, login_user)
    return pin, temp_schema


class QuickMemory:
    """What one connection's settings read as, learned from precise checks.

    `untracked`: the other settings' values when no session had set any of them.
    `tracked`: the tracked settings' values (with the session's statement_timeout)
    for each set of tracked statements the connection held at the time.
    `pending`: the values the last quick check read, kept until the precise check
    that follows explains them.
    """

    __slots__ = ("pending", "tracked", "untracked")
    LIMIT: ClassVar[int] = 32  # sets of tracked statements remembered per connection

    def __init__(self) -> None:
        self.untracked: bytes | None = None
        self.tracked: dict[frozenset[tuple[str, bytes]], bytes] = {}
        self.pending: tuple[bytes, bytes] | None = None

    def knows(self, params: dict[str, bytes] | None, tracked: bytes, untracked: bytes) -> bool:
        """True if these values are the ones explained before: nothing was set."""
        if params is None or untracked != self.untracked:
            return False
        return self.tracked.get(frozenset(params.items())) == tracked

    def learn(self, params: dict[str, bytes] | None, found: Finding) -> None:
        """The precise check explained the values the quick check read (`pending`);
        `params`: the tracked statements the connection holds now (None: unknown)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        tracked, untracked = pending
        if not found.untracked and not found.custom:
            self.untracked = untracked
        if params is not None:
            if len(self.tracked) >= self.LIMIT:
                self.tracked.clear()
            self.tracked[frozenset(params.items())] = tracked


class GuardedConn(Protocol):
    """What the checks and the guard read and keep on a connection (`ServerConn`)."""

    tracker: r.ResponseTracker
    params: dict[str, bytes]  # tracked settings as the connection has them
    params_dirty: bool  # unknown: the replay starts with RESET ALL
    login_user: str
    baseline: Baseline  # untracked settings of the pool's init_query
    quick_sql: bytes  # the quick check's statement ("" if not set up)
    quick: QuickMemory
    leftover: int  # what its borrowers may have left unseen (SEQUENCES, CUSTOM)
    leftover_of: int  # the serial of the borrower that left it

    def write(self, data: bytes) -> None: ...

    def own_params(self) -> dict[str, bytes]:
        """`params` as a map of the connection's own, to be changed in place."""


def read_quick(rows: list[bytes], server: GuardedConn) -> Finding:
    """Read the quick check's two DataRows; RECHECK unless every setting reads as the
    connection's memory says it should."""
    if len(rows) != 2:
        raise ProtocolError("the quick state check returned an unexpected answer")
    first, second = parse_data_row(rows[0]), parse_data_row(rows[1])
    if len(first) != 2 or len(second) != 5:
        raise ProtocolError("unexpected row from the quick state check")
    flags, current, session, tracked, untracked = second
    tracked_values = (first[0] or b"") + b"\x00" + (tracked or b"")
    untracked_values = untracked or b""
    memory = server.quick
    params = None if server.params_dirty else server.params
    if not memory.knows(params, tracked_values, untracked_values):
        memory.pending = (tracked_values, untracked_values)
        return RECHECK
    pin, temp_schema = _flags(_text(flags), _text(current), _text(session), server.login_user)
    return Finding(pin, None, "", temp_schema)


def read_baseline(rows: list[bytes]) -> Baseline:
    """The untracked settings a connection holds from the pool's init_query (SETTINGS_SQL)."""
    found = (parse_data_row(body) for body in rows)
    return frozenset((_text(row[1]), _text(row[2])) for row in found if len(row) == 4)


def _setting(name: str, value: str, baseline: Baseline, settings: dict[str, bytes]) -> str:
    key = name.lower()
    if key in TRACKED:
        settings[key] = set_config_statement(key, value)
        return ""
    if (name, value) in baseline:
        return ""
    return f"SET {key}{_LEFT_BY}"


def _role_changed(current: str, session: str, login_user: str) -> str:
    if current == session == login_user:
        return ""
    return "role changed" + _LEFT_BY


def _milliseconds(value: str) -> int | None:
    match = _DURATION.fullmatch(value.strip())
    return int(match.group(1)) * _MS[match.group(2)] if match else None


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


# What a borrow may leave on its connection that no check can list.
SEQUENCES: Final = 1  # nextval() state: what lastval()/currval() answer
CUSTOM: Final = 2  # custom settings (placeholder variables pg_settings does not show)


class BorrowGuard:
    """What a client's borrows did that a later borrower must not inherit.

    `opaque`: this borrow ran SQL whose effects only the check can tell.
    `left`: what this borrow may leave unseen (SEQUENCES after anything that may
    call nextval(), CUSTOM after opaque SQL). A connection remembers what its
    borrowers left and whose it is (`ServerConn.leftover`, `leftover_of`); any
    other client borrowing it, or this one once what it left elsewhere is newer,
    gets it cleared first: `DISCARD SEQUENCES` (lastval() then answers its own
    value or "not yet defined in this session", 55000, never another client's)
    and a settings replay that starts with RESET ALL (which empties custom
    settings). A client that gets back the connection holding what it left
    keeps it, as it would directly.
    """

    __slots__ = ("left", "left_on", "opaque", "precise", "serial")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.opaque = False
        self.precise = False  # the running check is the precise one
        self.left = 0
        self.left_on: GuardedConn | None = None  # the connection holding what we left last

    def note(self, effect: Effect) -> None:
        """SQL of this borrow (a Query, a Parse, the Bind of a statement parsed earlier);
        only SQL that writes or is opaque changes anything."""
        if effect.writes:
            self.left |= SEQUENCES
        if effect.opaque:
            self.opaque = True
            self.left |= CUSTOM

    def on_attach(self, server: GuardedConn) -> bytes:
        """A query (its replies swallowed) to send before the client's first message, or b"";
        only called when the connection holds something a borrower left."""
        if server.leftover_of == self.serial and self.left_on is server:
            return b""
        kinds, server.leftover = server.leftover, 0
        if kinds & CUSTOM:
            server.params_dirty = True  # the replay starts with RESET ALL
        if not kinds & SEQUENCES:
            return b""
        server.tracker.push(r.QUERY_SKIP)
        return _DISCARD_SEQUENCES

    def on_detach(self, server: GuardedConn) -> None:
        """The borrow ends (released, or the client left): the connection holds what it left
        (anything another borrower left was cleared when this borrow began)."""
        server.leftover |= self.left
        server.leftover_of = self.serial
        self.left_on = server
        self.left = 0

    def start_check(self, server: GuardedConn) -> None:
        """Send the quick check, or the precise one after a quick one that could not tell
        (or where the quick one is not set up)."""
        tracker = server.tracker
        tracker.check_rows, tracker.check_failed = [], False
        tracker.push(r.QUERY_CHECK)
        self.precise = self.precise or not server.quick_sql
        if self.precise:
            server.write(_CHECK_MESSAGE)
        elif tracker.check_prepared:
            server.write(_QUICK_RUN)
        else:  # (Close first: a Parse over a name the connection kept would fail)
            tracker.check_prepared = True
            parse_state = m.parse(_QUICK_NAMES[1], server.quick_sql + b"\x00\x00\x00")
            server.write(_QUICK_PREPARE + parse_state + _QUICK_RUN)

    def finish_check(self, server: GuardedConn, settings: SessionSettings) -> Finding | None:
        """The check's answer, its tracked settings adopted; RECHECK: run start_check again
        (the precise check); None if it failed (the connection must then be closed)."""
        tracker = server.tracker
        rows, failed = tracker.check_rows, tracker.check_failed
        tracker.check_rows, tracker.check_failed = [], False
        precise, self.precise = self.precise, False
        if not precise:
            if failed:
                tracker.check_prepared = False  # (a DEALLOCATE ALL in opaque SQL, say)
                self.precise = True
                return RECHECK
            try:
                found = read_quick(rows, server)
            except ProtocolError:
                return None
            self.precise = found is RECHECK
            return found
        if failed:
            return None
        try:
            found = read_check(rows, server.login_user, server.baseline)
        except ProtocolError:
            return None
        if found.settings is not None:
            adopt_settings(found.settings, settings, server)
        server.quick.learn(None if server.params_dirty else server.params, found)
        return found


# The guard of every client whose SQL has given it nothing to note yet, and of the
# statements shared by clients that have prepared none (`StatementNames.none_prepared`):
# nothing is ever noted on it (`ClientSession.own_guard`).
NO_GUARD: Final = BorrowGuard(0)


def adopt_settings(found: dict[str, bytes], settings: SessionSettings, server: GuardedConn) -> None:
    """Tracked settings as the check found them become the client's and the connection's:
    a value set for the session as a SET of the client's, one no longer set as a RESET."""
    params = server.own_params()
    for name in TRACKED:
        stmt = found.get(name)
        if stmt is not None:
            if params.get(name) != stmt:
                settings.adopt(Change(ChangeKind.SET, name, stmt), params)
        elif name in params and name not in settings.at_default:
            settings.adopt(Change(ChangeKind.RESET, name), params)
