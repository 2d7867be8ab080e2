"""Protocol-level prepared statements and session settings across pooled connections.

A client's named statement (Parse "s1") must work on whichever connection it
borrows next. Each distinct (query text, parameter types) gets one server-side
name from the `StatementNames` registry, shared by every client, so a thousand
short-lived clients preparing the same query prepare it once per backend
connection. On each message that names a statement:

- Parse: remember client name -> (server name, body); if the borrowed
  connection already has the server name, answer ParseComplete ourselves
  (PARSE_FAKE), else send the Parse under the server name;
- Bind / Describe: rewrite the name; if the connection lacks the statement,
  inject its Parse first (PARSE_SKIP, its reply swallowed);
- Close of a statement: forget the client name and answer CloseComplete
  ourselves (CLOSE_FAKE); the connection keeps the statement for others.

Each connection keeps at most `max_prepared` statements (LRU); the oldest is
closed (CLOSE_SKIP) to make room.

Settings are the other half of moving a client: see `sluice.pg.settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg.messages import read_cstr

if TYPE_CHECKING:
    from sluice.pg.client import ClientSession
    from sluice.pg.server import ServerConn


class StatementNames:
    """Server-side names for distinct statements, shared by all clients of a proxy process."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[bytes, bytes] = {}

    def name_for(self, body: bytes) -> bytes:
        name = self._names.get(body)
        if name is None:
            name = b"sluice_%d" % (len(self._names) + 1)
            self._names[body] = name
        return name


class ClientStatements:
    """One client's named statements, mapped onto server-side names."""

    __slots__ = ("by_name", "max_prepared", "names")

    def __init__(self, names: StatementNames, max_prepared: int) -> None:
        self.names = names
        self.max_prepared = max_prepared
        self.by_name: dict[bytes, tuple[bytes, bytes]] = {}

    def clear(self) -> None:
        self.by_name.clear()

    def parse(
        self, msg: bytes, server: ServerConn, out: list[bytes], client: ClientSession
    ) -> None:
        body = memoryview(msg)[5:].tobytes()
        name, pos = read_cstr(body, 0)
        rest = body[pos:]
        end = rest.find(b"\x00")
        client.note_sql(rest[:end] if end >= 0 else rest, server.tracker)
        tracker = server.tracker
        if not name or self.max_prepared == 0:
            tracker.push_parse(r.PARSE, b"")
            out.append(msg)
            return
        server_name = self.names.name_for(rest)
        self.by_name[name] = (server_name, rest)
        if server_name in tracker.prepared:
            _touch(tracker.prepared, server_name)
            tracker.push(r.PARSE_FAKE)
            _answer_now(tracker, client)
        else:
            self._prepare(server, server_name, rest, out, r.PARSE)

    def bind(self, msg: bytes, server: ServerConn, out: list[bytes]) -> None:
        body = msg[5:]
        _, pos = read_cstr(body, 0)
        stmt, after = read_cstr(body, pos)
        entry = self.by_name.get(stmt) if stmt else None
        if entry is not None:
            self._ensure(server, entry, out)
            msg = m.message(b"B", body[:pos] + entry[0] + b"\x00" + body[after:])
        server.tracker.push(r.BIND)
        out.append(msg)

    def describe(self, msg: bytes, server: ServerConn, out: list[bytes]) -> None:
        if msg[5] == ord("P"):
            server.tracker.push(r.DESCRIBE_PORTAL)
            out.append(msg)
            return
        stmt, _ = read_cstr(msg, 6)
        entry = self.by_name.get(stmt) if stmt else None
        if entry is not None:
            self._ensure(server, entry, out)
            msg = m.message(b"D", b"S" + entry[0] + b"\x00")
        server.tracker.push(r.DESCRIBE_STMT)
        out.append(msg)

    def close(
        self, msg: bytes, server: ServerConn, out: list[bytes], client: ClientSession
    ) -> None:
        stmt, _ = read_cstr(msg, 6)
        if msg[5] == ord("S") and stmt in self.by_name:
            del self.by_name[stmt]
            server.tracker.push(r.CLOSE_FAKE)
            _answer_now(server.tracker, client)
            return
        server.tracker.push(r.CLOSE)
        out.append(msg)

    def _ensure(self, server: ServerConn, entry: tuple[bytes, bytes], out: list[bytes]) -> None:
        server_name, rest = entry
        prepared = server.tracker.prepared
        if server_name in prepared:
            _touch(prepared, server_name)
        else:
            self._prepare(server, server_name, rest, out, r.PARSE_SKIP)

    def _prepare(
        self, server: ServerConn, server_name: bytes, rest: bytes, out: list[bytes], kind: int
    ) -> None:
        tracker = server.tracker
        # (no eviction while the server skips to a Sync: it would discard the Close)
        if len(tracker.prepared) >= self.max_prepared and not tracker.awaiting_sync:
            oldest = next(iter(tracker.prepared))
            del tracker.prepared[oldest]
            out.append(m.close_statement(oldest))
            tracker.push(r.CLOSE_SKIP)
        tracker.prepared[server_name] = None
        tracker.push_parse(kind, server_name)
        out.append(m.parse(server_name, rest))


def _touch(prepared: dict[bytes, None], name: bytes) -> None:
    del prepared[name]
    prepared[name] = None


def _answer_now(tracker: r.ResponseTracker, client: ClientSession) -> None:
    """A made-up reply with nothing outstanding before it goes to the client at once."""
    if len(tracker.queue) == 1:
        client.transport_write(tracker.flush_fakes())
