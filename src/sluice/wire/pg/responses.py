"""The server's reply stream, matched message by message to what was asked.

A backend connection answers requests strictly in order. `ResponseTracker`
keeps the queue of outstanding requests (one entry per Parse, Bind, Describe,
Execute, Close, Sync, Query or FunctionCall sent) and walks the server's bytes
message by message to know which request each reply belongs to. That lets the
proxy:

- know when the connection is idle again (the ReadyForQuery that answers the
  last outstanding Sync or Query), so it can be returned to the pool;
- swallow replies to requests it injected itself (a Parse of a statement the
  client prepared on another connection, a `SET` that replays tracked session
  settings) and make up replies for requests it answered itself (a Parse of a
  statement the connection already has, a Close of a client statement);
- stream large rows (DataRow, CopyData) without buffering them whole;
- restore a client's startup settings right after a request of its that reset
  them (RESET, DISCARD ALL): the request's ParameterStatus for those names
  (the pooled connection's defaults) and its ReadyForQuery are held back, and
  the injected restore's ParameterStatus and ReadyForQuery go to the client in
  their place. If the request failed, it changed nothing, so the restore's
  reports are dropped too and the request's own go to the client (what the
  abort of its transaction undid); the client session then resynchronises
  the server;
- notice when an injected replay of settings fails (`replay_error`): the
  client session must not go on as if the connection had its settings;
- read the rows of the proxy's own state check (QUERY_CHECK, `check_rows`);
- remember that a FATAL error reached the client (`fatal`): the server closes
  the connection next, and the client already has its one reply;
- notice the server refusing a statement planned before a schema change
  (0A000, `cached plan must not change result type`: `stale_plan`), so the
  proxy stops answering Parse with statements prepared before it;
- learn the result type of each statement it prepares (a Describe after the
  Parse, DESCRIBE_CHECK: `Prepared.shape`), and refuse, as the server would, a
  client's statement that would run with another result type than it was
  parsed with (STALE: a Bind or Describe the server must fail, whose error is
  replaced by the 0A000 the client's own session would have given).

Extended-protocol requests run inside an implicit transaction that only a Sync
(or a simple Query) ends, so the connection is not idle while any of them were
sent after the last Sync (`unsynced`), even once every reply has arrived: a
client that sends Execute and Flush and then leaves must not hand its open
transaction to the next borrower.

After an ErrorResponse the server skips everything up to the next Sync, so the
queue drops those entries too. When the error comes before the client has sent
that Sync (the server reports it as soon as it happens), the connection is
`awaiting_sync`: not idle, whatever the queue says, and requests pushed until
the Sync are dropped at once, since the server discards them without a reply.
All rules for matching live in `_route` below.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from mypy_extensions import i64

from sluice.errors import ProtocolError
from sluice.wire.pg.messages import (
    CLOSE_COMPLETE,
    PARSE_COMPLETE,
    message,
    parse_error_fields,
)
from sluice.wire.pg.sql import Effect

# Request kinds (queue entries). Upper-case letters are forwarded requests whose
# replies go to the client; the others are the proxy's own.
PARSE: Final = ord("P")
BIND: Final = ord("B")
DESCRIBE_STMT: Final = ord("D")
DESCRIBE_PORTAL: Final = ord("d")
EXECUTE: Final = ord("E")
CLOSE: Final = ord("C")
SYNC: Final = ord("S")
QUERY: Final = ord("Q")
FUNCTION: Final = ord("F")
PARSE_SKIP: Final = ord("p")  # injected Parse: swallow its ParseComplete
PARSE_FAKE: Final = ord("f")  # answered by the proxy: make up a ParseComplete
CLOSE_SKIP: Final = ord("x")  # injected Close (statement evicted): swallow CloseComplete
CLOSE_FAKE: Final = ord("c")  # answered by the proxy: make up a CloseComplete
QUERY_SKIP: Final = ord("q")  # injected simple query: swallow everything up to ReadyForQuery
# A client's Query or Sync followed by a RESTORE: its ReadyForQuery is held back and
# its ParameterStatus for the restored names (`push_restoring`) dropped.
QUERY_RESTORING: Final = ord("r")
SYNC_RESTORING: Final = ord("s")
RESTORE: Final = ord("u")  # injected restore: ParameterStatus and ReadyForQuery go to the client
REPLAY: Final = ord("y")  # injected settings replay: swallowed; an error sets `replay_error`
QUERY_CHECK: Final = ord("k")  # injected simple query whose rows the proxy reads (`check_rows`)
# injected Describe of a statement the proxy prepared: its result type is kept (`Prepared.shape`)
DESCRIBE_CHECK: Final = ord("v")
# a client's Bind or Describe sent under a name the server does not have, so that it fails
# as the stale statement would have: the server's error is replaced by STALE_ERROR
STALE: Final = ord("o")
# the name it is sent under (the proxy's own names are `sluice_<n>`)
STALE_NAME: Final = b"sluice_stale_plan"
# (with the source file and routine the server names: drivers tell this error by them)
STALE_ERROR: Final = message(
    b"E",
    b"SERROR\x00VERROR\x00C0A000\x00Mcached plan must not change result type\x00"
    b"Fplancache.c\x00RRevalidateCachedQuery\x00\x00",
)

SPECIAL: Final = frozenset(
    (PARSE_SKIP, PARSE_FAKE, CLOSE_SKIP, CLOSE_FAKE, QUERY_SKIP, RESTORE, REPLAY, QUERY_CHECK)
).union((DESCRIBE_CHECK, STALE))
# never streamed to the client
_QUIET: Final = frozenset((QUERY_SKIP, REPLAY, RESTORE, QUERY_CHECK))
# nothing of a client's among them
_OWN_QUERIES: Final = frozenset((QUERY_SKIP, QUERY_CHECK))
# their ReadyForQuery is swallowed
_OWN_READY: Final = frozenset((QUERY_SKIP, REPLAY, QUERY_CHECK))
# Requests after which the server is inside an implicit transaction until a Sync.
_EXTENDED: Final = frozenset((PARSE, BIND, DESCRIBE_STMT, DESCRIBE_PORTAL, EXECUTE, CLOSE)).union(
    (PARSE_SKIP, PARSE_FAKE, CLOSE_SKIP, CLOSE_FAKE, DESCRIBE_CHECK, STALE)
)
_SYNCS: Final = frozenset((SYNC, SYNC_RESTORING))
_RESTORING: Final = frozenset((QUERY_RESTORING, SYNC_RESTORING))
_TO_CLIENT_ON_ERROR: Final = frozenset((QUERY, FUNCTION, SYNC, QUERY_RESTORING, SYNC_RESTORING))
_FAKES: Final = {PARSE_FAKE: PARSE_COMPLETE, CLOSE_FAKE: CLOSE_COMPLETE}
_ENDS_EXECUTE: Final = frozenset(b"CIs")
_ASYNC: Final = frozenset(b"NAS")
_STREAMED: Final = frozenset(b"Dd")
_M_DATA: Final = ord("D")
_M_READY: Final = ord("Z")
_M_ERROR: Final = ord("E")
_M_PARAM_DESC: Final = ord("t")
_M_ROW_DESC: Final = ord("T")
_M_NO_DATA: Final = ord("n")
_M_COMPLETE: Final = ord("C")
_M_PARAM: Final = ord("S")
_M_NOTIFY: Final = ord("A")
_IDLE: Final = ord("I")
_R: Final = ord("R")
_C: Final = ord("C")
# Replies that may change the tracker's state; any other reply to a Query or an
# Execute only passes along to the client.
_EVENTS: Final = frozenset(b"ZECIs")
_PASS_ALONG: Final = frozenset((QUERY, EXECUTE))


def _table(*groups: tuple[Iterable[int], int]) -> bytes:
    """A byte per message or request kind, holding the flags of the groups it is in."""
    table = bytearray(256)
    for kinds, flag in groups:
        for kind in kinds:
            table[kind] |= flag
    return bytes(table)


# The sets above as flags in one table per side, which the relay path reads per
# message: indexing bytes with an int is a C array read in the compiled build, where
# set membership hashes a boxed int.
_Q_QUIET: Final = 1
_Q_RESTORING: Final = 2
_Q_PASS_ALONG: Final = 4
_Q_FAKE: Final = 8
_Q_SPECIAL: Final = 16
_Q_EXTENDED: Final = 32
_Q_SYNC: Final = 64
_REQUEST: Final = _table(
    (_QUIET, _Q_QUIET),
    (_RESTORING, _Q_RESTORING),
    (_PASS_ALONG, _Q_PASS_ALONG),
    (_FAKES, _Q_FAKE),
    (SPECIAL, _Q_SPECIAL),
    (_EXTENDED, _Q_EXTENDED),
    (_SYNCS, _Q_SYNC),
)
_R_EVENT: Final = 1
_R_STREAMED: Final = 2
_R_ASYNC: Final = 4
_R_ENDS_EXECUTE: Final = 8
_REPLY: Final = _table(
    (_EVENTS, _R_EVENT),
    (_STREAMED, _R_STREAMED),
    (_ASYNC, _R_ASYNC),
    (_ENDS_EXECUTE, _R_ENDS_EXECUTE),
)
_COMPACT_AT: Final = 64  # popped entries kept at the queue's head before it is compacted


def _length(data: bytes, pos: i64) -> i64:
    """The length field of the message whose type byte is at `pos` (big-endian int32).

    (`i64`: the compiled build shifts and ors machine integers, not tagged Python ones.)"""
    b1: i64 = data[pos + 1]  # (i64 locals: no call per byte interpreted, as i64() is)
    b2: i64 = data[pos + 2]
    b3: i64 = data[pos + 3]
    b4: i64 = data[pos + 4]
    return b1 << 24 | b2 << 16 | b3 << 8 | b4


# error severities after which the server closes
_ENDS_SESSION: Final = frozenset(("FATAL", "PANIC"))
_STALE_PLAN: Final = "0A000"  # cached plan must not change result type (and other refusals)


class Prepared:
    """A statement the proxy prepared on a connection: the schema generation it was prepared
    in (`sluice.pg.statements.StatementNames.generation`) and, once its DESCRIBE_CHECK has
    answered, its parameter types and result type. The server fixes both when it parses
    a statement: after a schema change it plans it again with those parameter types, and
    runs it with that result type or refuses to (0A000)."""

    __slots__ = ("generation", "params", "shape")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        # unknown until described (or never: the Parse failed)
        self.params: bytes | None = None  # the ParameterDescription's body
        self.shape: bytes | None = None  # `result_shape` of its RowDescription, b"" if none


def result_shape(data: bytes, pos: int) -> bytes:
    """What of the RowDescription at `pos` the server compares to refuse a plan whose result
    type changed: each column's name, type, length and modifier (not the table and column
    it came from, nor its format)."""
    end = pos + 1 + _length(data, pos)
    at = pos + 7
    parts = [data[pos + 5 : at]]  # the column count
    while at < end:
        name_end = data.find(b"\x00", at, end) + 1
        if name_end == 0:
            break
        parts.append(data[at:name_end])
        parts.append(data[name_end + 6 : name_end + 16])  # type oid, typlen, typmod
        at = name_end + 18
    if at != end:
        raise ProtocolError("malformed RowDescription from server")
    return b"".join(parts)


def _taken(items: list[Any], head: i64) -> i64:
    """The head of `items`, a queue read by index from `head`, once one is taken: the list
    is emptied when all are taken, and cut when a long pipeline has taken half of it."""
    head += 1
    if head == len(items):
        items.clear()
        return 0
    if head >= _COMPACT_AT and head * 2 >= len(items):
        del items[:head]
        return 0
    return head


class ResponseTracker:
    """Outstanding requests of one backend connection and the routing of its replies."""

    __slots__ = (
        "_checks",
        "_ending_rollback",
        "_head",
        "_hidden",
        "_instead",
        "_names",
        "_names_head",
        "_partial",
        "_queue",
        "_request_failed",
        "_skip",
        "_stale",
        "awaiting_sync",
        "check_failed",
        "check_prepared",
        "check_rows",
        "described",
        "errors",
        "fatal",
        "max_size",
        "prepared",
        "replay_error",
        "rolled_back",
        "specials",
        "stale_plan",
        "status",
        "swallowed_errors",
        "unnamed",
        "unnamed_sql",
        "unsynced",
    )

    def __init__(self, max_size: int) -> None:
        # outstanding requests from `_head` on (a list read by index: the compiled build
        # reads it as a C array; popped entries are dropped when it empties or grows long)
        self._queue: list[int] = []
        self._head: i64 = 0
        # server names of PARSE, PARSE_SKIP and CLOSE_SKIP requests, in order, from
        # `_names_head` on (read by index as `_queue` is)
        self._names: list[bytes] = []
        self._names_head: i64 = 0
        # statements this connection has, in LRU order
        self.prepared: dict[bytes, Prepared] = {}
        self._checks: deque[Prepared] = deque()  # what the outstanding DESCRIBE_CHECKs describe
        self.described = False  # a DESCRIBE_CHECK was answered (the client may go on)
        self._instead = b""  # a reply the client gets in place of one swallowed
        self._stale: deque[bytes] = deque()  # what the client gets for each outstanding STALE
        self.specials = 0
        self.status = ord("I")
        self.errors = 0  # ErrorResponses forwarded since the counter was last reset
        self.swallowed_errors = 0
        self.rolled_back = False  # a ROLLBACK completed since the client last reset this
        self._ending_rollback = False
        self.max_size = max_size
        self._partial = b""
        self._skip: i64 = 0
        self.awaiting_sync = False  # an error emptied the queue; the server skips to a Sync
        self.replay_error: bytes | None = None  # ErrorResponse body of a failed REPLAY/RESTORE
        self._hidden: deque[frozenset[bytes]] = deque()  # names per *_RESTORING request
        self._request_failed = False  # the request before the next RESTORE got an error
        self.unsynced = False  # extended-protocol requests sent since the last Sync
        self.check_rows: list[bytes] = []  # DataRow bodies answering QUERY_CHECK
        self.check_failed = False  # a QUERY_CHECK got an ErrorResponse
        self.check_prepared = False  # the quick state check's statements are prepared
        self.fatal = False  # a FATAL or PANIC ErrorResponse went to the client
        self.stale_plan = False  # the server refused a plan made before a schema change
        # what running the unnamed statement last parsed here does to a session (None:
        # nothing), and its text: noted each time a client binds it
        self.unnamed: Effect | None = None
        self.unnamed_sql = b""

    def forget_statements(self) -> None:
        """The server dropped every prepared statement (DISCARD ALL, DEALLOCATE ALL)."""
        self.prepared.clear()
        self.check_prepared = False

    # ---- requests ----

    @property
    def queue(self) -> list[int]:
        """The outstanding requests, oldest first (a copy)."""
        return self._queue[self._head :]

    @property
    def parse_names(self) -> list[bytes]:
        """The server names of the outstanding PARSE, PARSE_SKIP and CLOSE_SKIP requests,
        oldest first (a copy)."""
        return self._names[self._names_head :]

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered in full."""
        return len(self._queue) - self._head

    def push(self, kind: int) -> None:
        if self.awaiting_sync:
            if kind != SYNC:
                return  # the server discards it unanswered (fakes are owed nothing either)
            self.awaiting_sync = False
        self._queue.append(kind)
        flags = _REQUEST[kind]
        self.unsynced = flags & _Q_EXTENDED != 0
        if flags & _Q_SPECIAL:
            self.specials += 1

    def push_parse(self, kind: int, server_name: bytes) -> None:
        if self.awaiting_sync:
            self.prepared.pop(server_name, None)  # discarded: the server never makes it
            return
        self.push(kind)
        self._names.append(server_name)

    def push_prepare(self, kind: int, server_name: bytes, generation: int) -> Prepared:
        """A Parse of `server_name` (PARSE or PARSE_SKIP) and the DESCRIBE_CHECK after it;
        the statement it makes (left out of `prepared` if the server will discard it)."""
        made = Prepared(generation)
        if self.awaiting_sync:
            self.prepared.pop(server_name, None)  # discarded: the server never makes it
            return made
        self.prepared[server_name] = made
        self.push(kind)
        self._names.append(server_name)
        self.push(DESCRIBE_CHECK)
        self._checks.append(made)
        return made

    def push_stale(self, reply: bytes) -> None:
        """A client's message sent so that the server fails it (STALE): the client gets
        `reply` in place of the server's error."""
        self.push(STALE)
        self._stale.append(reply)

    @property
    def checks_due(self) -> int:
        """DESCRIBE_CHECKs sent and not yet answered."""
        return len(self._checks)

    def push_close(self, server_name: bytes) -> None:
        """An injected Close of `server_name` (CLOSE_SKIP); never while `awaiting_sync`."""
        self.push(CLOSE_SKIP)
        self._names.append(server_name)
        del self.prepared[server_name]

    def push_restoring(self, kind: int, names: frozenset[bytes]) -> None:
        """A client's Query or Sync (QUERY_RESTORING, SYNC_RESTORING) and the RESTORE
        that follows it; `names` (lower case) are the settings the restore reports."""
        self.push(kind)
        self.push(RESTORE)
        self._hidden.append(names)

    @property
    def idle(self) -> bool:
        """No request outstanding and the last ReadyForQuery said: not in a transaction."""
        return (
            self._head == len(self._queue)
            and self.status == 73  # 'I'
            and not self.awaiting_sync
            and not self.unsynced
        )

    @property
    def idle_in_transaction(self) -> bool:
        """Nothing outstanding, yet a transaction is open (or an extended-protocol one
        awaits its Sync): the server waits for the client."""
        return self._head == len(self._queue) and not self.idle

    @property
    def settling(self) -> bool:
        """Idle but for the proxy's own queries, still running (e.g. a state check)."""
        queue = self._queue
        return (
            self._head < len(queue)
            and all(kind in _OWN_QUERIES for kind in queue[self._head :])
            and self.status == _IDLE
            and not self.awaiting_sync
        )

    def flush_fakes(self) -> bytes:
        """Replies the proxy owes the client now that nothing is outstanding before them."""
        out = b""
        queue = self._queue
        while self._head < len(queue) and _REQUEST[queue[self._head]] & _Q_FAKE:
            out += _FAKES[self._pop()]
        return out

    def _pop(self) -> int:
        kind = self._queue[self._head]
        self._head = _taken(self._queue, self._head)
        if _REQUEST[kind] & _Q_SPECIAL:
            self.specials -= 1
            if kind == DESCRIBE_CHECK:
                self._checks.popleft()
                self.described = True
            elif kind == STALE:
                self._stale.popleft()
        if kind == PARSE or kind == PARSE_SKIP or kind == CLOSE_SKIP:
            self._names_head = _taken(self._names, self._names_head)
        return kind

    # ---- replies ----

    def feed(self, data: bytes) -> bytes:
        """Route a chunk of the server's bytes; return the bytes to send to the client."""
        if self.replay_error is not None:
            return b""  # the session ends (the client session closes this connection)
        head = b""
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return data
            head, data = data[: self._skip], data[self._skip :]
            self._skip = 0
        if len(self._partial):  # (lengths: the truth of bytes is a call, compiled)
            data = self._partial + data
            self._partial = b""
        out = self._walk(data)
        return head + out if len(head) else out

    def _walk(self, data: bytes) -> bytes:
        pieces: list[bytes] | None = None
        mark: i64 = 0
        pos: i64 = 0
        n: i64 = len(data)
        queue = self._queue
        max_size = self.max_size
        while n - pos >= 5:
            kind = data[pos]
            reply = _REPLY[kind]
            end = pos + 1 + _length(data, pos)
            if end > n or end < pos + 5:
                if end < pos + 5 or (end - pos > max_size and not reply & _R_STREAMED):
                    raise ProtocolError(f"invalid message length from server (type {kind})")
                if (
                    reply & _R_STREAMED
                    and self._head < len(queue)
                    and not _REQUEST[queue[self._head]] & _Q_QUIET
                ):
                    self._skip = end - n  # stream the row, skip its remainder later
                    pos = n
                break
            if end - pos > max_size and not reply & _R_STREAMED:  # as if it came in pieces
                raise ProtocolError(f"invalid message length from server (type {kind})")
            request = _REQUEST[queue[self._head]] if self._head < len(queue) else 0
            if request & _Q_PASS_ALONG and not reply & _R_EVENT:
                pos = end  # the common case: rows and descriptions for the client
                continue
            if request & _Q_FAKE:
                pieces = pieces if pieces is not None else []
                pieces.append(data[mark:pos])
                pieces.append(self.flush_fakes())
                mark = pos
            if not self._route(kind, data, pos):
                pieces = pieces if pieces is not None else []
                pieces.append(data[mark:pos])
                mark = end
                if self._instead:
                    pieces.append(self._instead)
                    self._instead = b""
                if self.replay_error is not None:  # the session ends: nothing more for it
                    mark = pos = n = end
                    break
            pos = end
        if pos < n:
            self._partial = data[pos:]
        if pieces is None:
            out = data if pos == n else data[:pos]
        else:
            pieces.append(data[mark:pos])
            out = b"".join(pieces)
        if self._head < len(queue) and _REQUEST[queue[self._head]] & _Q_FAKE:
            fakes = self.flush_fakes()
            return out + fakes if fakes else out
        return out

    def _route(self, kind: int, data: bytes, pos: i64) -> bool:
        """Match one reply to the head request; return False to swallow it."""
        queue = self._queue
        if self._head == len(queue):  # unsolicited (a FATAL before the server closes, a notice)
            if kind == _M_ERROR:
                self._note_error(data, pos)
            return True
        head = queue[self._head]
        request = _REQUEST[head]
        if _REPLY[kind] & _R_ASYNC:
            if request & (_Q_QUIET | _Q_RESTORING):
                return self._quiet_async(head, kind, data, pos)
            return True
        if kind == _M_READY:
            if _length(data, pos) != 5:
                raise ProtocolError("malformed ReadyForQuery from server")
            self.status = status = data[pos + 5]
            if self._ending_rollback:  # ROLLBACK TO SAVEPOINT leaves us in the transaction
                self.rolled_back = status == _IDLE
                self._ending_rollback = False
            return self._ready(self._pop())
        if kind == _M_ERROR:
            return self._error(head, data, pos)
        if request & _Q_QUIET:
            if head == QUERY_CHECK and kind == _M_DATA:
                self.check_rows.append(data[pos + 5 : pos + 1 + _length(data, pos)])
            return False
        if kind == _M_COMPLETE:
            self._note_tag(data, pos + 5)
        if head == QUERY or head == FUNCTION or head == QUERY_RESTORING:
            return True
        if head == EXECUTE:
            if _REPLY[kind] & _R_ENDS_EXECUTE:
                self._pop()
            return True
        if head == DESCRIBE_STMT and kind == _M_PARAM_DESC:
            queue[self._head] = DESCRIBE_PORTAL  # a RowDescription or NoData follows
            return True
        if request & _Q_SYNC:
            return True  # e.g. a late NoticeResponse; Z pops the Sync
        if head == DESCRIBE_CHECK:
            return self._described(kind, data, pos)
        return self._pop() not in (PARSE_SKIP, CLOSE_SKIP)

    def _described(self, kind: int, data: bytes, pos: i64) -> bool:
        """A reply to a DESCRIBE_CHECK, swallowed: its RowDescription or NoData is the
        statement's result type."""
        if kind == _M_PARAM_DESC:
            self._checks[0].params = data[pos + 5 : pos + 1 + _length(data, pos)]
            return False  # a RowDescription or NoData follows
        if kind == _M_ROW_DESC:
            self._checks[0].shape = result_shape(data, pos)
        elif kind == _M_NO_DATA:
            self._checks[0].shape = b""
        else:
            raise ProtocolError(f"unexpected reply {chr(kind)!r} to a Describe from server")
        self._pop()
        return False

    def _quiet_async(self, head: int, kind: int, data: bytes, pos: i64) -> bool:
        """A NoticeResponse, NotificationResponse or ParameterStatus in a reply that is not
        plainly the client's: only a restore's reports, and a restoring request's other
        reports, reach it."""
        if head in _RESTORING:
            if kind != _M_PARAM or self._request_failed:
                # after an error the server reports what its abort undid (a SET earlier
                # in the transaction): the client's own value, as directly
                return True
            end = data.index(b"\x00", pos + 5)
            return data[pos + 5 : end].lower() not in self._hidden[0]
        if head != RESTORE:  # a notification stays the client's even during a check
            return head == QUERY_CHECK and kind == _M_NOTIFY
        if kind == _M_PARAM:
            return not self._request_failed
        return kind == _M_NOTIFY  # the client's, whichever reply it comes in

    def _ready(self, kind: int) -> bool:
        """The ReadyForQuery that ends a request of `kind`: to the client or not."""
        if kind == QUERY or kind == SYNC:
            return True
        if _REQUEST[kind] & _Q_RESTORING:
            self._hidden.popleft()
            return False  # the RESTORE's ReadyForQuery, next, is the client's
        if kind == RESTORE:
            self._request_failed = False
            return True
        return kind not in _OWN_READY

    def _note_tag(self, data: bytes, start: i64) -> None:
        """Remember whether the last transaction-ending command was a ROLLBACK."""
        if start >= len(data):
            return
        first = data[start]
        if first != _R and first != _C:  # (SELECT, INSERT ...: most tags)
            return
        if data.startswith(b"ROLLBACK", start):
            self._ending_rollback = True
        elif data.startswith(b"COMMIT", start):
            self._ending_rollback = False

    def _error(self, head: int, data: bytes, pos: i64) -> bool:
        """An ErrorResponse: in extended mode the server now skips to the next Sync."""
        if head in _QUIET:
            return self._quiet_error(head, data, pos)
        self.errors += 1
        if head == STALE:  # the server refused it as it would refuse the stale statement
            self.stale_plan = True
            self._instead = self._stale[0]
        else:
            self._note_error(data, pos)
        if head in _TO_CLIENT_ON_ERROR:
            self._request_failed = self._request_failed or head in _RESTORING
            return True
        queue = self._queue
        kept: set[bytes] = set()
        while self._head < len(queue) and not _REQUEST[queue[self._head]] & _Q_SYNC:
            kind = queue[self._head]
            if kind == PARSE or kind == PARSE_SKIP:
                name = self._names[self._names_head]
                if name not in kept:
                    self.prepared.pop(name, None)  # the server never made it
            elif kind == CLOSE_SKIP:  # the server skipped it: the statement is still there
                name = self._names[self._names_head]
                kept.add(name)
                self.prepared[name] = Prepared(-1)  # to be closed before any use
            self._pop()
        if self._head == len(queue):
            self.awaiting_sync = True  # the client has not sent the Sync yet
        elif queue[self._head] == SYNC_RESTORING:
            self._request_failed = True
        return head != STALE

    def _note_error(self, data: bytes, pos: i64) -> None:
        """Note an ErrorResponse for the client that ends the session (the server closes),
        or that refuses a statement planned before a schema change."""
        try:
            fields = parse_error_fields(data[pos + 5 : pos + 1 + _length(data, pos)])
        except ProtocolError:
            return  # relayed as it came; the client makes of it what it can
        if (fields.get("V") or fields.get("S")) in _ENDS_SESSION:
            self.fatal = True
        elif fields.get("C") == _STALE_PLAN:
            self.stale_plan = True

    def _quiet_error(self, head: int, data: bytes, pos: i64) -> bool:
        """An error in a reply the proxy swallows; a failed replay must be noticed."""
        if head == QUERY_SKIP:
            self.swallowed_errors += 1
        elif head == QUERY_CHECK:
            self.check_failed = True
        elif head == REPLAY or not self._request_failed:  # a failed request fails its restore
            end = pos + 1 + _length(data, pos)
            self.replay_error = data[pos + 5 : end]
        return False
