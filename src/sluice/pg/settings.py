"""A client's session settings, kept so they can follow it from connection to connection.

Each tracked setting is stored as the SQL statement that recreates it, a
statement the server has accepted already: the client's own `SET` text byte for
byte, or `set_config(...)` with the value the server showed for a startup
setting when the client logged in (see `sluice.pg.startup`). A backend
connection keeps the same kind of map of what it has been given;
`replay_queries` is the difference, wrapped in BEGIN ... COMMIT so that if it
fails anyway the transaction is left aborted and whatever the client sent
behind it fails too instead of running without its settings.

A `SET`/`RESET` a client sends is only pending until its transaction ends,
with savepoint semantics (ROLLBACK TO drops what came after the savepoint): it
is applied to both maps when the connection goes idle, dropped if the
transaction rolled back, and when an error makes the outcome unknown the
connection is marked dirty (the next borrow resets it and replays everything).

`RESET name`, `SET name TO DEFAULT`, RESET ALL and DISCARD ALL give the
server's value for the *pooled connection's* start, not the client's: right
after such a request the client session restores the client's startup values
(`restore`), and records that restore as SETs in the same transaction.
"""

from __future__ import annotations

import re
from typing import Final

from sluice.session.empty import SharedDict, SharedEmptyDict, SharedEmptyList
from sluice.wire.pg.sql import Change, ChangeKind

SET: Final = ChangeKind.SET
RESET: Final = ChangeKind.RESET
RESET_ALL: Final = ChangeKind.RESET_ALL
SAVEPOINT: Final = ChangeKind.SAVEPOINT
ROLLBACK_TO: Final = ChangeKind.ROLLBACK_TO
RELEASE: Final = ChangeKind.RELEASE
_SHOWN_VALUE: Final = re.compile(rb"(?:\bto\b|=|\bzone\b|\bnames\b)\s*(.*)$", re.IGNORECASE | re.S)
_ENCODING: Final = "client_encoding"
_PLAIN_NAME: Final = re.compile(r"[a-z_][a-z0-9_.]*")
# Settings whose SET values PostgreSQL quotes as identifiers (its GUC_LIST_QUOTE ones).
_LIST_QUOTE: Final = frozenset(
    """
    search_path temp_tablespaces local_preload_libraries session_preload_libraries
    shared_preload_libraries unix_socket_directories
    """.split()  # noqa: SIM905 (a table of words reads best as text)
)
_LIST_ELEMENT: Final = re.compile(r'(?:"((?:[^"]|"")*)"|([^",\s]+))(?:, |$)')
_SAFE_IDENT: Final = re.compile(r"[a-z_][a-z0-9_]*")
# Keywords that quote_identifier quotes (all but the unreserved ones, PostgreSQL 15 to 17).
_QUOTED_KEYWORDS: Final = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary
    bit boolean both case cast char character check coalesce collate collation column
    concurrently constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user dec decimal default
    deferrable desc distinct do else end except exists extract false fetch float for
    foreign freeze from full grant greatest group grouping having ilike in initially inner
    inout int integer intersect interval into is isnull join json json_array
    json_arrayagg json_exists json_object json_objectagg json_query json_scalar
    json_serialize json_table json_value lateral leading least left like limit localtime
    localtimestamp merge_action national natural nchar none normalize not notnull null
    nullif numeric offset on only or order out outer overlaps overlay placing position
    precision primary real references returning right row select session_user setof
    similar smallint some substring symmetric system_user table tablesample then time
    timestamp to trailing treat trim true union unique user using values varchar variadic
    verbose when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest
    xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
    """.split()  # noqa: SIM905
)


def set_config_statement(name: str, value: str) -> bytes:
    """`SELECT set_config(name, value, false)`, pure ASCII whatever the value holds.

    Non-ASCII characters are written as Unicode escapes, so the statement reads
    the same whatever client_encoding the connection has when it runs.
    """
    quoted = b"'%s'" % name.encode() if _PLAIN_NAME.fullmatch(name) else literal(name)
    return b"SELECT pg_catalog.set_config(%s, %s, false)" % (quoted, literal(value))


def set_statement(name: str, value: str) -> bytes:
    """A statement that gives `name` the value `value` without taking a snapshot.

    A restore runs inside the client's transaction, where a SELECT would take the
    transaction's snapshot (REPEATABLE READ would see the database as of the restore)
    and make a later SET TRANSACTION fail ("must be called before any query"). A SET
    takes none. PostgreSQL quotes each value of a GUC_LIST_QUOTE setting as an
    identifier, so such a value is set that way only when every element is spelled as
    that quoting spells it; anything else, and custom (dotted) settings, which an
    extension may define as such lists, fall back to `set_config_statement`.
    """
    if "." in name or not _PLAIN_NAME.fullmatch(name):
        return set_config_statement(name, value)
    if name not in _LIST_QUOTE:
        return b"SET %s TO %s" % (quote_name(name), literal(value))
    elements = _identifier_list(value)
    if not elements or ", ".join(_quote_ident(e) for e in elements) != value:
        return set_config_statement(name, value)
    return b"SET %s TO %s" % (quote_name(name), b", ".join(literal(e) for e in elements))


def _identifier_list(value: str) -> list[str] | None:
    """The elements of a comma-separated list of identifiers, unquoted; None if the text
    is not one."""
    elements = []
    pos = 0
    while pos < len(value):
        match = _LIST_ELEMENT.match(value, pos)
        if match is None:
            return None
        quoted, bare = match.group(1), match.group(2)
        elements.append(quoted.replace('""', '"') if quoted is not None else bare)
        pos = match.end()
    return elements


def _quote_ident(word: str) -> str:
    """`word` as PostgreSQL's quote_identifier spells it."""
    if _SAFE_IDENT.fullmatch(word) and word not in _QUOTED_KEYWORDS:
        return word
    return '"' + word.replace('"', '""') + '"'


def literal(text: str) -> bytes:
    """An E'' string constant for `text`, in ASCII."""
    out = []
    for char in text:
        code = ord(char)
        if char in "'\\":
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return b"E'" + "".join(out).encode("ascii") + b"'"


def quote_name(name: str) -> bytes:
    """A setting name as SQL: each dotted part a quoted identifier."""
    parts = ('"' + part.replace('"', '""') + '"' for part in name.split("."))
    return ".".join(parts).encode("latin-1", errors="replace")


def replay_queries(
    want: dict[str, bytes], have: dict[str, bytes], dirty: bool, init_query: str
) -> list[bytes]:
    """The query texts that turn a connection holding `have` into one holding `want`.

    The server reads a whole query text in the client_encoding it has when the
    text arrives, so a change of client_encoding goes first, in a query of its
    own, when anything after it holds non-ASCII bytes.
    """
    head: list[bytes] = []
    if dirty:
        head = [b"RESET ALL"] + ([init_query.encode()] if init_query else [])
        have = {}
    resets = {name: b"RESET " + quote_name(name) for name in have.keys() - want.keys()}
    sets = {name: stmt for name, stmt in want.items() if have.get(name) != stmt}
    changes = resets | sets
    if not changes and not head:
        return []
    encoding = changes.pop(_ENCODING, None)
    rest = list(changes.values())
    if encoding is not None and not all(stmt.isascii() for stmt in rest):
        return [b"; ".join([b"BEGIN", *head, encoding]), b"; ".join([*rest, b"COMMIT"])]
    first = [encoding] if encoding is not None else []
    return [b"; ".join([b"BEGIN", *head, *first, *rest, b"COMMIT"])]


# Shared by every client until it has startup settings of its own (most have none): only
# `set_startup` writes these maps, and it gives the client its own first. Sets of names at
# their defaults are shared by the clients that have the same (a few per application).
_NO_STARTUP: Final[dict[str, bytes]] = SharedEmptyDict()
_NONE_AT_DEFAULT: Final[frozenset[str]] = frozenset()
# Shared by every client outside a transaction that changes settings: `note` and `restore`
# add to a list of the client's own.
_NO_CHANGES: Final[list[Change]] = SharedEmptyList()
_AT_DEFAULT_SETS: Final[dict[frozenset[str], frozenset[str]]] = {}
_AT_DEFAULT_SETS_MAX: Final = 256


def _shared(names: frozenset[str]) -> frozenset[str]:
    found = _AT_DEFAULT_SETS.get(names)
    if found is not None:
        return found
    if len(_AT_DEFAULT_SETS) < _AT_DEFAULT_SETS_MAX:
        _AT_DEFAULT_SETS[names] = names
    return names


class SessionSettings:
    """Tracked settings of one client: from its startup packet, then its SET/RESET."""

    __slots__ = (
        "at_default",
        "custom_startup",
        "errors_at_start",
        "params",
        "pending",
        "resets_noted",
        "restores",
        "savepoints",
        "shared",
        "startup",
    )

    def __init__(self) -> None:
        self.startup = _NO_STARTUP  # name -> set_config statement
        self.restores = _NO_STARTUP  # name -> the same as a SET (`set_statement`)
        self.at_default = _NONE_AT_DEFAULT  # equal to a fresh connection's
        self.custom_startup = ""  # a custom (dotted) setting among the startup ones
        self.params: dict[str, bytes] = {}  # what the client has once pending is settled
        self.pending = _NO_CHANGES  # SET, RESET, RESET ALL of the open transaction
        self.savepoints: list[tuple[str, int]] | None = None  # (name, len(pending) then)
        self.resets_noted = False  # the request being sent reset something
        self.errors_at_start = 0
        self.shared = False  # by clients alike, read only: a client changes its own `copy`

    def copy(self) -> SessionSettings:
        """Settings of a client's own, as these (shared ones) are: its startup settings,
        which never change, are still shared; what it changes is its own."""
        own = SessionSettings()
        own.startup, own.restores = self.startup, self.restores
        own.at_default, own.custom_startup = self.at_default, self.custom_startup
        own.params = dict(self.params)
        return own

    def set_startup(self, name: str, shown: str, at_default: bool) -> None:
        """A startup setting the server accepted; `shown` is its value as the server shows it
        (only while the settings are made: `for_startup`)."""
        stmt = set_config_statement(name, shown)
        if self.startup is _NO_STARTUP:
            self.startup, self.restores = {}, {}
        self.startup[name] = self.params[name] = stmt
        self.restores[name] = set_statement(name, shown)
        if at_default:
            self.at_default = _shared(self.at_default | {name})
        if "." in name:
            self.custom_startup = name

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)

    # ---- while a transaction runs ----

    def note(self, changes: tuple[Change, ...], errors: int) -> None:
        """Remember the changes of a statement just sent; `errors` is the server's count."""
        for change in changes:
            kind = change.kind
            if kind is SAVEPOINT:
                if self.pending:  # one made before any change needs no mark: it undoes all
                    self.savepoints = self.savepoints or []
                    self.savepoints.append((change.name, len(self.pending)))
            elif kind is ROLLBACK_TO:
                self._rollback_to(change.name)
            elif kind is RELEASE:
                self._release(change.name)
            else:
                if not self.pending:
                    self.errors_at_start = errors
                    self.pending = []
                self.pending.append(change)
                self.resets_noted = self.resets_noted or kind is not SET

    def _rollback_to(self, name: str) -> None:
        """ROLLBACK TO undoes what came after the savepoint; the savepoint stays."""
        savepoints = self.savepoints or []
        at = self._find(savepoints, name)
        mark = savepoints[at][1] if at >= 0 else 0  # unknown: made before any change
        del savepoints[at + 1 :]
        del self.pending[mark:]
        if not self.pending:
            self.savepoints = None

    def _release(self, name: str) -> None:
        """RELEASE forgets the savepoint and every one made after it."""
        savepoints = self.savepoints or []
        del savepoints[max(self._find(savepoints, name), 0) :]

    @staticmethod
    def _find(savepoints: list[tuple[str, int]], name: str) -> int:
        for i in range(len(savepoints) - 1, -1, -1):
            if savepoints[i][0] == name:
                return i
        return -1

    def restore(self) -> tuple[list[str], bytes] | None:
        """After a request that reset settings: the startup settings to set again (the
        server gave them a fresh connection's value) and the query that does it."""
        self.resets_noted = False
        names = self._unrestored()
        if not names:
            return None
        self.pending = [*self.pending, *(Change(SET, name, self.startup[name]) for name in names)]
        return names, b"; ".join(self.restores[name] for name in names)

    def _unrestored(self) -> list[str]:
        """Startup settings whose last pending change is a reset to a different value."""
        seen: set[str] = set()
        names: list[str] = []
        for change in reversed(self.pending):
            if change.kind is RESET_ALL:
                names += [n for n in self.startup if n not in seen and n not in self.at_default]
                break
            if change.name in seen:
                continue
            seen.add(change.name)
            restorable = change.name in self.startup and change.name not in self.at_default
            if change.kind is RESET and restorable:
                names.append(change.name)
        return names

    # ---- when it ends ----

    def commit(self, server_params: dict[str, bytes], errors: int, rolled_back: bool) -> bool:
        """Apply what is pending once the transaction ended; False if the server is now unknown."""
        pending = self.pending
        self.pending = _NO_CHANGES
        self.savepoints = None
        self.resets_noted = False
        if errors != self.errors_at_start:
            return False
        if rolled_back:
            return True  # the server undid them too
        for change in pending:
            self._apply(change, server_params)
        return True

    def adopt(self, change: Change, server_params: dict[str, bytes]) -> None:
        """A tracked setting as the proxy's state check found it after SQL it could not
        read (a DO block, a function): a SET or RESET that has already happened."""
        self._apply(change, server_params)

    def _apply(self, change: Change, server_params: dict[str, bytes]) -> None:
        name = change.name
        if change.kind is SET:
            server_params[name] = self.params[name] = change.stmt
        elif change.kind is RESET:
            server_params.pop(name, None)
            self.params.pop(name, None)
            self._back_to_startup(name, server_params)
        else:
            server_params.clear()
            self.params = {}
            for startup_name in self.startup:
                self._back_to_startup(startup_name, server_params)

    def _back_to_startup(self, name: str, server_params: dict[str, bytes]) -> None:
        """After a reset the client has its startup value; so has the server, if equal."""
        stmt = self.startup.get(name)
        if stmt is not None:
            self.params[name] = stmt
            if name in self.at_default:
                server_params[name] = stmt

    def shown(self, name: str) -> str:
        """The value of a setting as a person reads it (for SHOW CLIENTS), best effort."""
        stmt = self.params.get(name, b"")
        if stmt and stmt == self.startup.get(name):  # the E'' literal of set_config_statement
            return stmt[stmt.rindex(b", E'") + 4 : -len(b"', false)")].decode("unicode_escape")
        match = _SHOWN_VALUE.search(stmt)
        return match.group(1).decode("latin-1").strip().strip("'") if match else ""


def _untouched() -> SessionSettings:
    settings = SessionSettings()
    settings.params = SharedEmptyDict()
    settings.shared = True
    return settings


# The settings of every client that has no startup settings and has changed none (most
# idle clients): one object they share, read as a fresh one, never written: a client
# gets its own before its first change (`ClientSession.own_settings`). Its map refuses
# writes, as the shared empty ones do.
UNTOUCHED: Final = _untouched()
# The settings of clients that logged in with the same startup settings (a driver, an
# application: a few kinds per proxy) and have changed none, by those settings, shared
# as UNTOUCHED is; past `_BY_STARTUP_MAX` kinds, a new kind's clients have their own.
_BY_STARTUP: Final[dict[tuple[tuple[str, str, bool], ...], SessionSettings]] = {}
_BY_STARTUP_MAX: Final = 256


def for_startup(settings: tuple[tuple[str, str, bool], ...]) -> SessionSettings:
    """The settings of a client that logged in with `settings` (name, value as the server
    shows it, whether the pool's default already is that value): shared by the clients
    that logged in alike, until one of them changes one (it then has its own `copy`)."""
    if not settings:
        return UNTOUCHED
    found = _BY_STARTUP.get(settings)
    if found is not None:
        return found
    made = SessionSettings()
    for name, value, at_default in settings:
        made.set_startup(name, value, at_default)
    if len(_BY_STARTUP) < _BY_STARTUP_MAX:
        made.startup, made.restores = SharedDict(made.startup), SharedDict(made.restores)
        made.params = SharedDict(made.params)
        made.shared = True
        _BY_STARTUP[settings] = made
    return made
