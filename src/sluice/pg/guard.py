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
statement_timeout for its own transaction after reading it (`SHOW` first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sluice.errors import ProtocolError
from sluice.pg.settings import set_config_statement
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg.messages import parse_data_row
from sluice.wire.pg.sql import TRACKED, Change, ChangeKind, Effect

if TYPE_CHECKING:
    from sluice.pg.server import ServerConn
    from sluice.pg.settings import SessionSettings

_EQ = "OPERATOR(pg_catalog.=)"
_NE = "OPERATOR(pg_catalog.<>)"


def _if_exists(name: str, query: str) -> str:
    return f"CASE WHEN EXISTS ({query}) THEN '{name}' END"


# Temporary objects, looked for (InitPlans run on first use) only once the session
# has a temporary schema; the schema alone ('tempschema') stays after they are gone.
_NS = "pg_catalog.pg_my_temp_schema()"
_TEMP = (
    f"CASE WHEN {_NS} {_EQ} 0 THEN NULL WHEN "
    f"EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace {_EQ} {_NS}) "
    f"OR EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.pronamespace {_EQ} {_NS}) "
    f"OR EXISTS (SELECT FROM pg_catalog.pg_type y WHERE y.typnamespace {_EQ} {_NS}) "
    "THEN 'temp' ELSE 'tempschema' END"
)
_FLAGS = ", ".join(
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
_STATE = (
    f"SELECT 'flags', pg_catalog.concat_ws(',', {_FLAGS}), "
    "CURRENT_USER::pg_catalog.text, SESSION_USER::pg_catalog.text "
    "UNION ALL SELECT 'setting', s.name, s.setting, s.reset_val FROM pg_catalog.pg_settings s "
    f"WHERE s.source {_EQ} 'session'"
)
# One query string: the session's statement_timeout, then no timeout for the check.
CHECK_SQL = f"SHOW statement_timeout; SET LOCAL statement_timeout = 0; {_STATE}"
_CHECK_MESSAGE = m.query(CHECK_SQL)
_DISCARD_SEQUENCES = m.query("DISCARD SEQUENCES")
# A session keeps its temporary schema after DISCARD ALL: later clients would see it
# (pg_my_temp_schema(), the notices of DROP TABLE IF EXISTS pg_temp.x), so such a
# connection is closed rather than lent again.
TEMP_SCHEMA = "a client had a temporary schema on it, which no reset removes"
HAS_TEMP_SCHEMA_SQL = f"SELECT {_NS} {_NE} 0"
# Settings only (for a connection's baseline after the pool's init_query).
SETTINGS_SQL = (
    "SELECT 'setting', s.name, s.setting, s.reset_val FROM pg_catalog.pg_settings s "
    f"WHERE s.source {_EQ} 'session'"
)

_FOUND = {
    "lock": "session advisory lock",
    "temp": "temporary object",
    "listen": "LISTEN",
    "prepared": "PREPARE",
    "cursor": "cursor WITH HOLD",
}
_LEFT_BY = " (left by opaque SQL)"
_DURATION = re.compile(r"(-?\d+)\s*(ms|s|min|h|d)?")
_MS = {None: 1, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}

Baseline = frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Finding:
    """What the check found: a pin reason ("" if none) and the tracked settings' values."""

    pin: str = ""
    # every tracked setting the session holds, as a statement that sets it again;
    # a tracked setting missing here is not set for the session (RESET)
    settings: dict[str, bytes] = field(default_factory=dict)
    custom: str = ""  # a custom (dotted) setting the session holds: never lend it again
    temp_schema: bool = False  # the session has a temporary schema: never lend it again


def read_check(rows: list[bytes], login_user: str, baseline: Baseline = frozenset()) -> Finding:
    """Read CHECK_SQL's DataRow bodies (SHOW's row first)."""
    if not rows:
        raise ProtocolError("the state check returned no rows")
    timeout = _text(parse_data_row(rows[0])[0])
    pin = ""
    settings: dict[str, bytes] = {}
    custom = ""
    temp_schema = False
    for body in rows[1:]:
        values = [_text(v) for v in parse_data_row(body)]
        if len(values) != 4:
            raise ProtocolError("unexpected row from the state check")
        kind, name, value, other = values
        if kind == "flags":
            flags = [flag for flag in name.split(",") if flag]
            temp_schema = "temp" in flags or "tempschema" in flags
            found = [_FOUND.get(flag, "session state") for flag in flags if flag != "tempschema"]
            pin = pin or (found[0] + _LEFT_BY if found else _role_changed(value, other, login_user))
        elif name == "statement_timeout":  # pg_settings shows the check's own SET LOCAL
            if _milliseconds(timeout) != _milliseconds(other):  # (`other`: after RESET)
                settings[name] = set_config_statement(name, timeout)
        else:
            pin = pin or _setting(name, value, baseline, settings)
            if "." in name and (name, value) not in baseline:
                custom = custom or name
    return Finding(pin, settings, custom, temp_schema)


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
SEQUENCES = 1  # nextval() state: what lastval()/currval() answer
CUSTOM = 2  # custom settings (placeholder variables pg_settings does not show)


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

    __slots__ = ("left", "left_on", "opaque", "serial")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.opaque = False
        self.left = 0
        self.left_on: ServerConn | None = None  # the connection holding what we left last

    def note(self, effect: Effect) -> None:
        """SQL of this borrow (a Query, a Parse, the Bind of a statement parsed earlier)."""
        if effect.writes:
            self.left |= SEQUENCES
        if effect.opaque:
            self.opaque = True
            self.left |= CUSTOM

    def on_attach(self, server: ServerConn) -> bytes:
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

    def on_detach(self, server: ServerConn) -> None:
        """The borrow ends (released, or the client left): the connection holds what it left
        (anything another borrower left was cleared when this borrow began)."""
        server.leftover |= self.left
        server.leftover_of = self.serial
        self.left_on = server
        self.left = 0

    def start_check(self, server: ServerConn) -> None:
        tracker = server.tracker
        tracker.check_rows, tracker.check_failed = [], False
        tracker.push(r.QUERY_CHECK)
        server.write(_CHECK_MESSAGE)

    @staticmethod
    def finish_check(server: ServerConn) -> Finding | None:
        """The check's answer; None if it failed (the connection must then be closed)."""
        tracker = server.tracker
        rows, failed = tracker.check_rows, tracker.check_failed
        tracker.check_rows, tracker.check_failed = [], False
        if failed:
            return None
        try:
            return read_check(rows, server.login_user, server.baseline)
        except ProtocolError:
            return None


def adopt_settings(found: dict[str, bytes], settings: SessionSettings, server: ServerConn) -> None:
    """Tracked settings as the check found them become the client's and the connection's:
    a value set for the session as a SET of the client's, one no longer set as a RESET."""
    params = server.params
    for name in TRACKED:
        stmt = found.get(name)
        if stmt is not None:
            if params.get(name) != stmt:
                settings.adopt(Change(ChangeKind.SET, name, stmt), params)
        elif name in params and name not in settings.at_default:
            settings.adopt(Change(ChangeKind.RESET, name), params)
