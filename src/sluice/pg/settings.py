"""A client's session settings, kept so they can follow it from connection to connection.

Each tracked setting is stored as the SQL statement that recreates it: a
client's own `SET name = value` verbatim, or `set_config(...)` for a value that
came in the startup packet (parsed by the server exactly as a startup value
would be, so `search_path=a,b` stays two schemas). A backend connection keeps
the same kind of map of what it has been given; `sync_sql` is the difference.

A `SET`/`RESET` a client sends is only pending until its transaction ends:
it is applied to both maps when the connection goes idle, dropped if the
transaction rolled back, and when an error makes the outcome unknown the
connection is marked dirty (the next borrow resets it and replays everything).
`RESET name` and `SET name TO DEFAULT` restore the client's startup value,
as PostgreSQL does.
"""

from __future__ import annotations

import re

from sluice.wire.pg.sql import Effect

_SAFE_NAME = re.compile(r"[a-z_][a-z0-9_.]*")


def startup_setting(name: str, value: str) -> tuple[str, str] | None:
    """A startup parameter as (name, statement that sets it), or None for an unsafe name."""
    key = name.lower()
    if not _SAFE_NAME.fullmatch(key):
        return None
    literal = "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return key, f"SELECT pg_catalog.set_config('{key}', {literal}, false)"


def sync_sql(want: dict[str, str], have: dict[str, str], dirty: bool, init_query: str) -> str:
    """SQL that turns a connection holding `have` into one holding `want`."""
    parts = []
    if dirty:
        parts.append("RESET ALL")
        if init_query:
            parts.append(init_query)
        have = {}
    parts += [f"RESET {name}" for name in have.keys() - want.keys()]
    parts += [stmt for name, stmt in want.items() if have.get(name) != stmt]
    return "; ".join(parts)


class SessionSettings:
    """Tracked settings of one client: from its startup packet, then its SET/RESET."""

    __slots__ = ("errors_at_start", "params", "pending", "pending_reset_all", "startup")

    def __init__(self) -> None:
        self.startup: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.pending: list[tuple[str, str | None]] = []
        self.pending_reset_all = False
        self.errors_at_start = 0

    def set_startup(self, name: str, stmt: str) -> None:
        self.startup[name] = stmt
        self.params[name] = stmt

    @property
    def has_pending(self) -> bool:
        return bool(self.pending) or self.pending_reset_all

    def note(self, effect: Effect, errors: int) -> None:
        """Remember the SET/RESET of a statement just sent; `errors` is the server's count."""
        if not self.has_pending:
            self.errors_at_start = errors
        if effect.reset_all:
            self.pending_reset_all = True
            self.pending.clear()
        for name, value in effect.sets:
            self.pending.append((name, None if value is None else f"SET {name} = {value}"))
        self.pending.extend(effect.calls)

    def commit(self, server_params: dict[str, str], errors: int, rolled_back: bool) -> bool:
        """Apply what is pending once the transaction ended; False if the server is now unknown."""
        pending, reset_all = self.pending, self.pending_reset_all
        self.pending, self.pending_reset_all = [], False
        if errors != self.errors_at_start:
            return False
        if rolled_back:
            return True  # the server undid them too
        if reset_all:
            self.params = dict(self.startup)
            server_params.clear()
        for name, stmt in pending:
            if stmt is None:
                server_params.pop(name, None)
                self._restore(name)
            else:
                server_params[name] = stmt
                self.params[name] = stmt
        return True

    def shown(self, name: str) -> str:
        """The value of a setting as a person reads it (for SHOW CLIENTS), best effort."""
        stmt = self.params.get(name, "")
        if stmt.startswith("SELECT"):
            literal = stmt.split(", ", 1)[1].rsplit(", false)", 1)[0]
            return literal[2:-1].replace("\\'", "'").replace("\\\\", "\\")
        return stmt.partition(" = ")[2].strip("'")

    def _restore(self, name: str) -> None:
        if name in self.startup:
            self.params[name] = self.startup[name]
        else:
            self.params.pop(name, None)
