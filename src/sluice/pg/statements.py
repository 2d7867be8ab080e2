"""Protocol-level prepared statements and session settings across pooled connections.

A client's named statement (Parse "s1") must work on whichever connection it
borrows next. Each distinct (query text, parameter types, settings the server
reads while parsing it) gets one server-side name from the `StatementNames`
registry, shared by every client, so a thousand short-lived clients preparing
the same query prepare it once per backend connection. The settings are part of
the key because the same text means another thing under another search_path
(another table), DateStyle or TimeZone (another constant): clients whose
settings differ never share a server-side statement. On each message that
names a statement:

- Parse: remember client name -> (server name, body, schema generation) and
  what running the statement does to the session (`runs`: noted at each Bind,
  when it runs, not when it is parsed); if
  the borrowed connection already has the server name, prepared since the
  last schema change, answer ParseComplete ourselves (PARSE_FAKE), else send
  the Parse under the server name (closing a stale one first: CLOSE_SKIP);
- Bind / Describe: rewrite the name; if the connection lacks the statement, or
  has one prepared before the client's Parse and a schema change between,
  inject its Parse first (PARSE_SKIP, its reply swallowed); and make sure the
  statement it runs has the result type the client's own Parse gave (below);
- Close of a statement: forget the client name and answer CloseComplete
  ourselves (CLOSE_FAKE); the connection keeps the statement for others;
- a Query that is only `DEALLOCATE name` or `DEALLOCATE ALL`: the client means
  its own names, which the server does not know, so the proxy answers it
  (`deallocate`) without pinning the client.

Each connection keeps at most `max_prepared` statements (LRU); the oldest is
closed (CLOSE_SKIP) to make room.

Schema changes: directly, a client's Parse plans the query against the schema
as it is now, and a client that the server told its statement is stale (0A000
`cached plan must not change result type`; asyncpg's InvalidCachedStatementError)
recovers by preparing it again. A server-side statement prepared before an ALTER
TABLE is not what a new Parse would give (Describe reports the old types, Bind
fails with 0A000 again), so `StatementNames.generation` counts the schema changes
seen: DDL a client sends (counted when sent and again when its transaction has
ended, when other connections can see it) and a 0A000 from the server (DDL made
elsewhere). A Parse only reuses a statement of the current generation.

A client's statement that moves to a connection that lacks it is parsed again
there, against the schema of the moment. Directly, the server plans the client's
statement again after a schema change, with the parameter types its Parse gave
(inferred or not), and refuses to run it with another result type than that
Parse gave (0A000); a client that encodes parameters and decodes rows by the
types its Describe reported relies on both. So each statement the proxy prepares
is described too (DESCRIBE_CHECK: `Prepared.params` and `.shape`), each client
name remembers the statement its Parse made or reused (`origin`), and a Bind or
Describe that would run another statement compares them:

- other parameter types: the client's statement is the text with its own types
  given explicitly (another server-side statement, `_typed`), as the server
  would plan it again;
- the same result type: the message goes on; another: it is refused as the
  server would refuse it (STALE: the client gets 0A000, the server fails the
  message, so the transaction aborts and the server skips to the Sync as
  directly);
- not yet known: the message waits (`bind` and `describe` return False) until
  the connection has answered the Describe (`tracker.described`).

Settings are the other half of moving a client: see `sluice.pg.settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from sluice.pg.guard import NO_GUARD
from sluice.session.empty import SharedEmptyDict
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg.messages import nul_at, read_cstr
from sluice.wire.pg.responses import Prepared
from sluice.wire.pg.sql import (
    NO_EFFECT,
    Effect,
    classify_bytes,
    classify_statement,
    savepoint_changes,
)

if TYPE_CHECKING:
    from sluice.pg.guard import BorrowGuard
    from sluice.pg.server import ServerConn
    from sluice.pg.settings import SessionSettings


class StatementClient(Protocol):
    """What a client's statements need of its session (`ClientSession`)."""

    @property
    def settings(self) -> SessionSettings: ...

    def note_effect(self, effect: Effect, sql: bytes, tracker: r.ResponseTracker) -> None:
        """Track what running `sql`, of `effect`, does to the session."""

    def transport_write(self, data: bytes) -> None: ...

    def own_statements(self) -> ClientStatements:
        """The client's statements, its own (made now if it had the shared empty ones)."""


_FAILED: Final = ord("E")
_IDLE: Final = ord("I")
# Settings the server reads while parsing a statement: they are part of what it means.
_MEANING: Final[tuple[str, ...]] = (
    "search_path", "datestyle", "timezone", "intervalstyle", "standard_conforming_strings",
    "timezone_abbreviations", "client_encoding",
)  # fmt: skip
_ABORTED: Final = m.error_response(
    "25P02", "current transaction is aborted, commands ignored until end of transaction block"
)


class StatementNames:
    """Server-side names for distinct statements, shared by all clients of a proxy process,
    and the generation of the schema (how many schema changes were seen).

    The registry is bounded (`max_count` statements, `max_bytes` of their text, least
    recently prepared first out), so clients preparing ever new texts cannot grow it
    without end. A name is never given twice: a text seen again after it was dropped
    gets a new name, so a connection still holding the old one (closed in its turn by
    its own LRU) can never run another text under it.
    """

    __slots__ = ("_bytes", "_names", "_next", "_none", "generation", "max_bytes", "max_count")

    def __init__(self, max_count: int = 20_000, max_bytes: int = 32 << 20) -> None:
        self._names: dict[bytes, bytes] = {}
        self._none: dict[int, ClientStatements] = {}  # `none_prepared`, by max_prepared
        self._next = 0
        self._bytes = 0
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.generation = 0

    def __len__(self) -> int:
        return len(self._names)

    def none_prepared(self, max_prepared: int) -> ClientStatements:
        """The statements of every client (of a proxy allowing `max_prepared`) that has
        prepared none yet: one object they share, until a client's first named Parse gives
        it statements of its own (`ClientStatements.parse`)."""
        shared = self._none.get(max_prepared)
        if shared is None:
            shared = self._none[max_prepared] = ClientStatements(self, max_prepared, NO_GUARD)
        return shared

    def schema_changed(self) -> None:
        """Statements prepared until now may be stale: a Parse must reach the server."""
        self.generation += 1

    def name_for(self, body: bytes) -> bytes:
        names = self._names
        name = names.pop(body, None)
        if name is None:
            self._next += 1
            name = b"sluice_%d" % self._next
            self._bytes += len(body)
            while names and (len(names) >= self.max_count or self._bytes > self.max_bytes):
                self._bytes -= len(next(iter(names)))
                del names[next(iter(names))]
        names[body] = name  # (most recently prepared last)
        return name


# client name -> (server name, the Parse's body after the name, schema generation when the
# client parsed it, the statement its Parse made or reused on the connection it was sent on,
# the `statement_context` it was parsed in)
Entry: TypeAlias = tuple[bytes, bytes, int, Prepared, bytes]
# Shared by every client until it prepares a named statement (many never do): only `parse`
# adds to these maps, and it gives the client its own first.
_NO_STATEMENTS: Final[dict[bytes, Entry]] = SharedEmptyDict()
_NONE_RUN: Final[dict[bytes, Effect]] = SharedEmptyDict()


class ClientStatements:
    """One client's named statements, mapped onto server-side names.

    Clients that have prepared none share one (`StatementNames.none_prepared`, its guard
    `NO_GUARD`): nothing is written to it, the first named Parse gives the client its own."""

    __slots__ = ("by_name", "guard", "max_prepared", "names", "runs")

    def __init__(self, names: StatementNames, max_prepared: int, guard: BorrowGuard) -> None:
        self.names = names
        self.max_prepared = max_prepared
        self.by_name = _NO_STATEMENTS
        # what running a statement does to the session (for those it does something to):
        # each Bind tells the session, whichever borrow parsed the statement
        self.runs = _NONE_RUN
        self.guard = guard

    def clear(self) -> None:
        self.by_name.clear()
        self.runs.clear()

    def _forget(self, name: bytes) -> None:
        del self.by_name[name]
        self.runs.pop(name, None)

    def parse(
        self, msg: bytes, server: ServerConn, out: list[bytes], client: StatementClient
    ) -> None:
        name, pos = read_cstr(msg, 5)
        end = nul_at(msg, pos)
        sql = msg[pos:end] if end >= 0 else msg[pos:]
        effect = classify_statement(sql)
        tracker = server.tracker
        if not name or self.max_prepared == 0:
            if not tracker.awaiting_sync:  # (else the server discards it)
                if name or effect.drops_statements:
                    # names pass through (the server binds them, unseen); whether statements
                    # are dropped is judged from the state before it was sent
                    client.note_effect(effect, sql, tracker)
                    effect = NO_EFFECT
                # noted when bound (while settings are pending, a savepoint text counts)
                runs = effect is not NO_EFFECT or client.settings.pending
                tracker.unnamed, tracker.unnamed_sql = (effect, sql) if runs else (None, b"")
            tracker.push_parse(r.PARSE, b"")
            out.append(msg)
            return
        if tracker.awaiting_sync:
            return  # the server discards it unread: no statement is made, as directly
        rest = msg[pos:]
        context = statement_context(client.settings)
        server_name = self.names.name_for(rest + b"\x00" + context)
        generation = self.names.generation
        own = self if self.guard is not NO_GUARD else client.own_statements()
        if own.by_name is _NO_STATEMENTS:
            own.by_name = {}
        if effect.drops_statements:  # judged from the state before it was sent, so noted now
            client.note_effect(effect, sql, tracker)
            if own.runs:
                own.runs.pop(name, None)
        elif effect is not NO_EFFECT or savepoint_changes(sql):
            if own.runs is _NONE_RUN:
                own.runs = {}
            own.runs[name] = effect
        elif own.runs:
            own.runs.pop(name, None)
        prepared = tracker.prepared
        made = prepared.get(server_name)
        if made is not None and made.generation >= generation:
            _touch(prepared, server_name)
            tracker.push(r.PARSE_FAKE)
            _answer_now(tracker, client)
        else:
            if made is not None:  # prepared before a schema change
                out.append(m.close_statement(server_name))
                tracker.push_close(server_name)
            made = self._prepare(server, server_name, rest, out, r.PARSE)
        own.by_name[name] = (server_name, rest, generation, made, context)

    def answer_deallocate(
        self, query: bytes, tracker: r.ResponseTracker | None, pinned: bool
    ) -> bytes | None:
        """The replies to the Query message `query` if it is one DEALLOCATE the proxy can
        answer now (`tracker`: of the borrowed connection, None if none is borrowed)."""
        if tracker is not None and (
            tracker.outstanding or tracker.awaiting_sync or tracker.unsynced
        ):
            return None  # replies to earlier requests are still due: the server orders them
        effect = classify_bytes(query[5:-1])
        if effect.deallocate is None:
            return None
        name = effect.deallocate.encode("latin-1") if effect.deallocate else None
        status = tracker.status if tracker is not None else _IDLE
        return self.deallocate(name, status, pinned)

    def deallocate(self, name: bytes | None, status: int, pinned: bool) -> bytes | None:
        """The replies to a Query that is one DEALLOCATE of `name` (None: ALL), as the
        server would give them with nothing else outstanding in transaction `status`; None
        when the server must see it (a pinned client may have used SQL PREPARE)."""
        if status == _FAILED:
            return _ABORTED + m.READY_FAILED  # the server would not run it either
        if name is None:
            if pinned:
                return None
            self.clear()
            tag = "DEALLOCATE ALL"
        elif name in self.by_name:
            self._forget(name)
            tag = "DEALLOCATE"
        elif pinned or (status != _IDLE and not name.startswith(b"sluice_")):
            return None  # the server's own 26000 also aborts the client's transaction
        else:
            text = f'prepared statement "{name.decode(errors="replace")}" does not exist'
            return m.error_response("26000", text) + m.ready_for_query(bytes((status,)))
        return m.command_complete(tag) + m.ready_for_query(bytes((status,)))

    def bind(
        self, msg: bytes, server: ServerConn, out: list[bytes], client: StatementClient
    ) -> bool:
        """Send the Bind `msg`; False if it must wait until the connection has described
        the statement (nothing of it sent: it is to be given again then)."""
        body = msg[5:]
        _, pos = read_cstr(body, 0)
        stmt, after = read_cstr(body, pos)
        entry = self.by_name.get(stmt) if stmt else None
        tracker = server.tracker
        if not stmt:
            if tracker.unnamed is not None and not tracker.awaiting_sync:
                client.note_effect(tracker.unnamed, tracker.unnamed_sql, tracker)
        elif entry is not None:
            name = self._ensure(server, stmt, entry, out)
            if name is None:
                return False
            msg = m.message(b"B", body[:pos] + name + b"\x00" + body[after:])
            if name == r.STALE_NAME:
                tracker.push_stale(r.STALE_ERROR)
                out.append(msg)
                return True
            effect = self.runs.get(stmt) if self.runs else None
            if effect is not None and not tracker.awaiting_sync:
                # it runs now, in this borrow, whichever parsed it
                client.note_effect(effect, _text(entry[1]), tracker)
        tracker.push(r.BIND)
        out.append(msg)
        return True

    def describe(self, msg: bytes, server: ServerConn, out: list[bytes]) -> bool:
        """Send the Describe `msg`; False if it must wait, as `bind`."""
        if msg[5] == ord("P"):
            server.tracker.push(r.DESCRIBE_PORTAL)
            out.append(msg)
            return True
        stmt, _ = read_cstr(msg, 6)
        entry = self.by_name.get(stmt) if stmt else None
        if entry is not None:
            name = self._ensure(server, stmt, entry, out)
            if name is None:
                return False
            msg = m.describe_statement(name)
            if name == r.STALE_NAME:  # (directly its parameters are described before the error)
                params = entry[3].params or b"\x00\x00"
                server.tracker.push_stale(m.message(b"t", params) + r.STALE_ERROR)
                out.append(msg)
                return True
        server.tracker.push(r.DESCRIBE_STMT)
        out.append(msg)
        return True

    def close(
        self, msg: bytes, server: ServerConn, out: list[bytes], client: StatementClient
    ) -> None:
        stmt, _ = read_cstr(msg, 6)
        if msg[5] == ord("S") and stmt in self.by_name:
            if server.tracker.awaiting_sync:
                return  # the server discards it unread: the statement stays, as directly
            self._forget(stmt)
            server.tracker.push(r.CLOSE_FAKE)
            _answer_now(server.tracker, client)
            return
        server.tracker.push(r.CLOSE)
        out.append(msg)

    def _ensure(
        self, server: ServerConn, stmt: bytes, entry: Entry, out: list[bytes]
    ) -> bytes | None:
        """Have the statement of client name `stmt` (`entry`) on `server`: the name a message
        naming it goes on under (`r.STALE_NAME`: one the server lacks, so that it fails as
        the stale statement would), or None if it must wait for the Describe (a Flush sent)."""
        server_name, rest, generation, origin, _ = entry
        tracker = server.tracker
        made = tracker.prepared.get(server_name)
        if made is not None and (made.generation >= generation or tracker.awaiting_sync):
            _touch(tracker.prepared, server_name)
        else:
            if made is not None:  # older than the client's own Parse, a schema change between
                out.append(m.close_statement(server_name))
                tracker.push_close(server_name)
            made = self._prepare(server, server_name, rest, out, r.PARSE_SKIP)
        if made is origin or tracker.awaiting_sync or origin.shape is None:
            return server_name  # (a Parse that failed or was discarded was never described)
        if made.shape is None:
            if not tracker.checks_due:
                return server_name  # (its Parse failed: the server skips the message anyway)
            out.append(m.FLUSH)  # the Describe's answer now, not at the client's Sync
            return None
        if made.params != origin.params:
            typed = self._typed(entry)
            if typed is not None:
                self.by_name[stmt] = typed
                return self._ensure(server, stmt, typed, out)
        return server_name if made.shape == origin.shape else r.STALE_NAME

    def _typed(self, entry: Entry) -> Entry | None:
        """`entry` as the text with the parameter types its Parse gave (`origin.params`)
        stated; None if it states them already."""
        server_name, rest, generation, origin, context = entry
        query_end = nul_at(rest, 0) + 1
        if origin.params is None or rest[query_end:] == origin.params:
            return None
        typed = rest[:query_end] + origin.params
        server_name = self.names.name_for(typed + b"\x00" + context)
        return (server_name, typed, generation, origin, context)

    def _prepare(
        self, server: ServerConn, server_name: bytes, rest: bytes, out: list[bytes], kind: int
    ) -> Prepared:
        tracker = server.tracker
        # (no eviction while the server skips to a Sync: it would discard the Close)
        if len(tracker.prepared) >= self.max_prepared and not tracker.awaiting_sync:
            oldest = next(iter(tracker.prepared))
            out.append(m.close_statement(oldest))
            tracker.push_close(oldest)
        out.append(m.parse(server_name, rest))
        out.append(m.describe_statement(server_name))  # (discarded with the Parse if it fails)
        return tracker.push_prepare(kind, server_name, self.names.generation)


def statement_context(settings: SessionSettings) -> bytes:
    """What, besides its text, decides what a statement a client parses means."""
    params = settings.params
    parts = [params.get(name, b"") for name in _MEANING]
    if settings.has_pending:  # SET in this transaction: the server parses with it
        parts.append(repr(settings.pending).encode())
    return b"\x00".join(parts)


def _text(rest: bytes) -> bytes:
    """The SQL of a Parse whose body after the statement name is `rest`."""
    end = nul_at(rest, 0)
    return rest[:end] if end >= 0 else rest


def _touch(prepared: dict[bytes, Prepared], name: bytes) -> None:
    prepared[name] = prepared.pop(name)


def _answer_now(tracker: r.ResponseTracker, client: StatementClient) -> None:
    """A made-up reply with nothing outstanding before it goes to the client at once."""
    if tracker.outstanding == 1:
        client.transport_write(tracker.flush_fakes())
