"""Binary-protocol prepared statements across pooled connections, without pinning.

A client's statement ids are Sluice's own: `ClientStatements` maps each to the
statement's SQL, its parameter count and the parameter types last bound. Each
backend connection keeps `ServerStatements`: statement key -> the server's
statement id and the whole STMT_PREPARE reply, so a second client preparing the
same statement on that connection is answered from the cache, and a client
executing on a connection that never saw its statement gets it prepared there
first (the EXECUTE waits for that reply, since it must carry the new id). An
EXECUTE that does not re-send its parameter types gets them added for a
connection that has not had them. A statement closed by a client stays prepared
on the connection for others; each connection keeps at most `max_prepared`
statements and closes the least recently used.

What a statement means is fixed when it is prepared: its unqualified names (and
DATABASE()) belong to the default schema of that moment, its text is read with
that moment's sql_mode and character set. So the key is not the SQL alone but
(schema, the settings that change how a text reads, SQL): two clients with the
same text in different schemas never share a statement, and a statement prepared
again elsewhere is prepared under the schema it was first prepared in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from sluice.session.empty import SharedEmptyDict
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql.messages import build_eof, is_eof, parse_eof
from sluice.wire.mysql.packets import u32

# Tracked settings that change how a statement's text reads (see sql.TRACKED).
MEANING: Final = frozenset(
    (
        "sql_mode",
        "names",
        "charset",
        "character_set_client",
        "character_set_connection",
        "collation_connection",
    )
)

# The default schema, the MEANING settings' statements and the SQL, each after its
# length: one bytes object, whose hash Python keeps (a key is looked up per EXECUTE).
StmtKey: TypeAlias = bytes


def statement_key(schema: str, settings: dict[str, str], sql: bytes) -> StmtKey:
    """The key of `sql` prepared now, in `schema` with the client's `settings`."""
    return _key(schema, meaning(settings), sql)


def _key(schema: str, reading: tuple[str, ...], sql: bytes) -> StmtKey:
    parts = [p.encode("utf-8", "surrogateescape") for p in (schema, *reading)]
    return b"".join(b"%d:%s" % (len(p), p) for p in parts) + b"%d:" % len(reading) + sql


def meaning(settings: dict[str, str]) -> tuple[str, ...]:
    """The statements of the settings that change how a text reads, in replay order."""
    return tuple(stmt for name, stmt in settings.items() if name in MEANING)


@dataclass(slots=True)
class ClientStmt:
    sql: bytes
    schema: str  # the default schema when the client prepared it
    reading: tuple[str, ...]  # the MEANING settings then (see `meaning`)
    num_params: int = 0
    num_columns: int = 0
    reads: str = ""  # what of the previous statement it reads (see sql.Effect.reads)
    read_kinds: int = 0  # which results it reads (sql.Effect.read_kinds)
    writes: int = 0  # what its EXECUTE certainly leaves (results.query_writes)
    taint: str = ""  # why running it makes the connection unfit for others
    # the tracked variables it sets (sql.Effect.sets): each EXECUTE sets them
    sets: tuple[tuple[str, str], ...] = ()
    types: bytes = b""  # 2 bytes per parameter, as last bound by the client
    key: StmtKey = b""

    def __post_init__(self) -> None:
        self.key = _key(self.schema, self.reading, self.sql)


@dataclass(slots=True)
class ServerStmt:
    stmt_id: int
    reply: list[bytes]  # the STMT_PREPARE reply payloads, as the server sent them
    types_bound: bool = False
    id_bytes: bytes = b""  # `stmt_id` as commands carry it, made once (not per EXECUTE)

    def __post_init__(self) -> None:
        self.id_bytes = u32(self.stmt_id)


class ServerStatements:
    """One backend connection's prepared statements, least recently used first."""

    __slots__ = ("_newest", "by_key")

    def __init__(self) -> None:
        self.by_key: dict[StmtKey, ServerStmt] = {}  # in the order of their last use
        self._newest: StmtKey = b""  # the key used last (already at the end)

    def get(self, key: StmtKey) -> ServerStmt | None:
        by_key = self.by_key
        stmt = by_key.get(key)
        if stmt is not None and key != self._newest:  # (the same one again: nothing moves)
            del by_key[key]
            by_key[key] = stmt
            self._newest = key
        return stmt

    def add(self, key: StmtKey, stmt: ServerStmt, limit: int) -> list[int]:
        """Keep `stmt`; return the ids of statements to close to stay within `limit`."""
        by_key = self.by_key
        old = by_key.pop(key, None)
        by_key[key] = stmt
        self._newest = key
        evicted = [old.stmt_id] if old is not None and old.stmt_id != stmt.stmt_id else []
        while len(by_key) > max(limit, 1):
            evicted.append(by_key.pop(next(iter(by_key))).stmt_id)
        return evicted

    def clear(self) -> None:
        self.by_key.clear()
        self._newest = b""


class ClientStatements:
    """One client's statements, under ids Sluice issued."""

    __slots__ = ("_next", "by_id")

    def __init__(self) -> None:
        self.by_id = _NONE_PREPARED  # its own from the first statement it prepares
        self._next = 1

    def add(self, stmt: ClientStmt) -> int:
        sid = self._next
        self._next += 1
        if self.by_id is _NONE_PREPARED:
            self.by_id = {}
        self.by_id[sid] = stmt
        return sid

    def clear(self) -> None:
        self.by_id.clear()


# The statements of every client that has prepared none (most idle clients): shared, empty.
_NONE_PREPARED: Final[dict[int, ClientStmt]] = SharedEmptyDict()


def reply_for_client(reply: list[bytes], client_id: int, status: int) -> list[bytes]:
    """A cached STMT_PREPARE reply with the client's statement id in its first packet
    and the client's status flags in its EOF packets (they were another moment's)."""
    out = [cmd.with_stmt_id(reply[0], client_id)]
    for payload in reply[1:]:
        if is_eof(payload):
            payload = build_eof(status, parse_eof(payload)[0])
        out.append(payload)
    return out


def execute_for_server(payload: bytes, stmt: ClientStmt, server: ServerStmt) -> bytes:
    """Rewrite a client's EXECUTE for `server`: its id, and the types it has not had."""
    num_params = stmt.num_params
    values_at = cmd.execute_values_at(payload, num_params)
    if num_params:
        bound_at = 10 + (num_params + 7) // 8
        if payload[bound_at] == 1:  # new-params-bound: the types follow
            stmt.types = payload[bound_at + 1 : values_at]
        elif not server.types_bound and stmt.types:
            payload = cmd.bind_types(payload, num_params, stmt.types)
        if payload[bound_at] == 1 or stmt.types:
            server.types_bound = True
    return cmd.with_id_bytes(payload, server.id_bytes)
