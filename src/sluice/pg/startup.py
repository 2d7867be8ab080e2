"""A client's startup settings: read from its startup packet, checked by the server once.

PostgreSQL applies the startup parameters (and the `-c name=value` /
`--name=value` switches of `options`) when a session starts, and refuses the
login if one is invalid. Sluice's pooled connections started long ago, so it
asks the server itself: each (name, value) not seen before for the pool's
database and user is tried with `set_config(name, value, true)` on a pooled
connection, a change local to that query's transaction and gone when it ends.
A refusal becomes the client's FATAL login error, with the server's SQLSTATE
and message; an acceptance gives the value as the server shows it (`SQL, DMY`
for `SQL,DMY`), which the greeting reports and the replay sets. Checked pairs
are kept in a bounded cache per proxy, so clients that log in with the same
settings every time (`pgbench -C`) cost no round trip after the first.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from sluice.errors import ClientError, ServerError
from sluice.pg.settings import literal

if TYPE_CHECKING:
    from sluice.pg.pgpool import PgPool

log = logging.getLogger("sluice.pool")

_NOT_SETTINGS = frozenset({"user", "database", "replication", "options"})
_PROBE_TIMEOUT = 10.0
_CACHE_SIZE = 4096


class StartupRefused(ClientError):
    """A startup setting the server (or PostgreSQL's own option syntax) does not accept."""

    def __init__(self, sqlstate: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail


def split_options(options: str) -> list[str]:
    """The words of `options` as PostgreSQL splits them: spaces separate, a backslash
    makes the next character literal (`\\ ` a space, `\\\\` a backslash)."""
    words: list[str] = []
    word: list[str] | None = None
    escaped = False
    for char in options:
        if char.isspace() and not escaped:
            if word is not None:
                words.append("".join(word))
            word = None
            continue
        word = word if word is not None else []
        if char == "\\" and not escaped:
            escaped = True
        else:
            word.append(char)
            escaped = False
    if word is not None:
        words.append("".join(word))
    return words


def option_settings(options: str) -> list[tuple[str, str]]:
    """The settings of `-c name=value`, `-cname=value` and `--name=value` switches."""
    words = split_options(options)
    pairs = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            i += 1
            pairs.append(_long_option(words[i], "-c"))
        elif word.startswith("-c") and len(word) > 2:
            pairs.append(_long_option(word[2:], "-c"))
        elif word.startswith("--") and len(word) > 2:
            pairs.append(_long_option(word[2:], "--"))
        elif word.startswith("-"):
            raise StartupRefused(
                "0A000", f'startup option "{word}" is not supported by the proxy; use -c name=value'
            )
        else:
            raise StartupRefused(
                "42601", f'invalid command-line argument for server process: "{word}"'
            )
        i += 1
    return pairs


def _long_option(arg: str, switch: str) -> tuple[str, str]:
    """`name=value` as PostgreSQL reads it: dashes in the name are underscores."""
    name, sep, value = arg.partition("=")
    if not sep:
        raise StartupRefused("42601", f"{switch} {name} requires a value")
    return name.replace("-", "_"), value


def startup_settings(params: dict[str, str]) -> dict[str, str]:
    """Settings (lower-case name -> value) from `options` first, then from the other
    parameters, which win, as PostgreSQL applies them."""
    settings = {name.lower(): value for name, value in option_settings(params.get("options", ""))}
    for name, value in params.items():
        if name not in _NOT_SETTINGS and not name.startswith("_pq_."):
            settings[name.lower()] = value
    return settings


def probe_sql(settings: dict[str, str]) -> bytes:
    """A query that sets each setting locally and returns its shown value, hex-encoded
    UTF-8 (so the answer reads the same whatever client_encoding it sets)."""
    columns = [
        b"pg_catalog.encode(pg_catalog.convert_to(pg_catalog.set_config(%s, %s, true),"
        b" 'UTF8'), 'hex')" % (literal(name), literal(value))
        for name, value in settings.items()
    ]
    # the pooled connection may hold another client's statement_timeout; a partial
    # DateStyle would keep the other half of the connection's, not of a fresh one's
    head = b"SET LOCAL statement_timeout = 0; "
    if "datestyle" in settings:
        head += b"SET LOCAL datestyle TO DEFAULT; "
    return head + b"SELECT " + b", ".join(columns)


class VerifiedSettings:
    """Startup settings the server accepted, with their shown values: a bounded LRU."""

    __slots__ = ("_known", "max_entries")

    def __init__(self, max_entries: int = _CACHE_SIZE) -> None:
        self.max_entries = max_entries
        self._known: OrderedDict[tuple[str, str, str, str], str] = OrderedDict()

    def lookup(
        self, database: str, user: str, settings: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(shown values of the known settings, the settings still to check)."""
        shown: dict[str, str] = {}
        missing: dict[str, str] = {}
        for name, value in settings.items():
            key = (database, user, name, value)
            found = self._known.get(key)
            if found is None:
                missing[name] = value
            else:
                self._known.move_to_end(key)
                shown[name] = found
        return shown, missing

    def remember(
        self, database: str, user: str, settings: dict[str, str], shown: dict[str, str]
    ) -> None:
        for name, value in settings.items():
            self._known[(database, user, name, value)] = shown[name]
        while len(self._known) > self.max_entries:
            self._known.popitem(last=False)


async def verify(pool: PgPool, cache: VerifiedSettings, settings: dict[str, str]) -> dict[str, str]:
    """The shown value of each startup setting; StartupRefused if the server refuses one."""
    shown, missing = cache.lookup(pool.database, pool.user, settings)
    if missing:
        checked = await _probe(pool, missing)
        cache.remember(pool.database, pool.user, missing, checked)
        shown.update(checked)
    return shown


async def _probe(pool: PgPool, settings: dict[str, str]) -> dict[str, str]:
    log.info("pool %s: checking startup settings %s", pool.name, ", ".join(settings))
    server = await pool.pool.acquire()
    reusable = False
    try:
        row, error = await server.probe(probe_sql(settings), _PROBE_TIMEOUT)
        reusable = True
    except TimeoutError:
        raise ServerError("the database did not answer the check of startup settings") from None
    finally:
        custom = next((name for name in settings if "." in name), "")
        if reusable and not custom:
            pool.pool.release(server)
        else:
            # a failed check leaves the connection unknown; a custom one leaves a placeholder
            why = f"the check of startup setting {custom} left a placeholder variable"
            server.close(why if custom else "the check of a client's startup settings failed")
            pool.pool.forget(server)
    if error:
        raise StartupRefused(error.get("C", "22023"), error.get("M", ""), error.get("D", ""))
    if len(row) != len(settings) or any(value is None for value in row):
        raise ServerError("unexpected answer to the check of startup settings")
    values = (bytes.fromhex((value or b"").decode("ascii")).decode() for value in row)
    return dict(zip(settings, values, strict=True))
