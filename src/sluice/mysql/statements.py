"""Binary-protocol prepared statements across pooled connections, without pinning.

A client's statement ids are Sluice's own: `ClientStatements` maps each to the
statement's SQL, its parameter count and the parameter types last bound. Each
backend connection keeps `ServerStatements`: SQL -> the server's statement id
and the whole STMT_PREPARE reply, so a second client preparing the same SQL on
that connection is answered from the cache, and a client executing on a
connection that never saw its statement gets it prepared there first (the
EXECUTE waits for that reply, since it must carry the new id). An EXECUTE that
does not re-send its parameter types gets them added for a connection that
has not had them. A statement closed by a client stays prepared on the
connection for others; each connection keeps at most `max_prepared`
statements and closes the least recently used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from sluice.wire.mysql import commands as cmd


@dataclass(slots=True)
class ClientStmt:
    sql: bytes
    num_params: int
    num_columns: int
    types: bytes = b""  # 2 bytes per parameter, as last bound by the client


@dataclass(slots=True)
class ServerStmt:
    stmt_id: int
    reply: list[bytes]  # the STMT_PREPARE reply payloads, as the server sent them
    types_bound: bool = False


@dataclass(slots=True)
class ServerStatements:
    """One backend connection's prepared statements, least recently used first."""

    by_sql: OrderedDict[bytes, ServerStmt] = field(default_factory=OrderedDict)

    def get(self, sql: bytes) -> ServerStmt | None:
        stmt = self.by_sql.get(sql)
        if stmt is not None:
            self.by_sql.move_to_end(sql)
        return stmt

    def add(self, sql: bytes, stmt: ServerStmt, limit: int) -> list[int]:
        """Keep `stmt`; return the ids of statements to close to stay within `limit`."""
        old = self.by_sql.pop(sql, None)
        self.by_sql[sql] = stmt
        evicted = [old.stmt_id] if old is not None and old.stmt_id != stmt.stmt_id else []
        while len(self.by_sql) > max(limit, 1):
            evicted.append(self.by_sql.popitem(last=False)[1].stmt_id)
        return evicted

    def clear(self) -> None:
        self.by_sql.clear()


class ClientStatements:
    """One client's statements, under ids Sluice issued."""

    __slots__ = ("_next", "by_id")

    def __init__(self) -> None:
        self.by_id: dict[int, ClientStmt] = {}
        self._next = 1

    def add(self, sql: bytes, num_params: int, num_columns: int) -> int:
        sid = self._next
        self._next += 1
        self.by_id[sid] = ClientStmt(sql, num_params, num_columns)
        return sid

    def clear(self) -> None:
        self.by_id.clear()


def reply_for_client(reply: list[bytes], client_id: int) -> list[bytes]:
    """A cached STMT_PREPARE reply with the client's statement id in its first packet."""
    return [cmd.with_stmt_id(reply[0], client_id), *reply[1:]]


def execute_for_server(payload: bytes, stmt: ClientStmt, server: ServerStmt) -> bytes:
    """Rewrite a client's EXECUTE for `server`: its id, and the types it has not had."""
    head = cmd.parse_execute(payload, stmt.num_params)
    if head.new_params_bound:
        stmt.types = head.types
    elif stmt.num_params and not server.types_bound and stmt.types:
        payload = cmd.bind_types(payload, stmt.num_params, stmt.types)
    if stmt.num_params and (head.new_params_bound or stmt.types):
        server.types_bound = True
    return cmd.with_stmt_id(payload, server.stmt_id)
