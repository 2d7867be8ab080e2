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
- stream large rows (DataRow, CopyData) without buffering them whole.

After an ErrorResponse the server skips everything up to the next Sync, so the
queue drops those entries too. When the error comes before the client has sent
that Sync (the server reports it as soon as it happens), the connection is
`awaiting_sync`: not idle, whatever the queue says, and requests pushed until
the Sync are dropped at once, since the server discards them without a reply.
All rules for matching live in `_route` below.
"""

from __future__ import annotations

import struct
from collections import deque

from sluice.errors import ProtocolError
from sluice.wire.pg.messages import CLOSE_COMPLETE, PARSE_COMPLETE

_unpack_len = struct.Struct("!I").unpack_from

# Request kinds (queue entries). Upper-case letters are forwarded requests whose
# replies go to the client; the others are the proxy's own.
PARSE = ord("P")
BIND = ord("B")
DESCRIBE_STMT = ord("D")
DESCRIBE_PORTAL = ord("d")
EXECUTE = ord("E")
CLOSE = ord("C")
SYNC = ord("S")
QUERY = ord("Q")
FUNCTION = ord("F")
PARSE_SKIP = ord("p")  # injected Parse: swallow its ParseComplete
PARSE_FAKE = ord("f")  # answered by the proxy: make up a ParseComplete
CLOSE_SKIP = ord("x")  # injected Close (statement evicted): swallow CloseComplete
CLOSE_FAKE = ord("c")  # answered by the proxy: make up a CloseComplete
QUERY_SKIP = ord("q")  # injected simple query: swallow everything up to ReadyForQuery

SPECIAL = frozenset((PARSE_SKIP, PARSE_FAKE, CLOSE_SKIP, CLOSE_FAKE, QUERY_SKIP))
_FAKES = {PARSE_FAKE: PARSE_COMPLETE, CLOSE_FAKE: CLOSE_COMPLETE}
_ENDS_EXECUTE = frozenset(b"CIs")
_ASYNC = frozenset(b"NAS")
_STREAMED = frozenset(b"Dd")
_M_DATA = ord("D")
_M_READY = ord("Z")
_M_ERROR = ord("E")
_M_PARAM_DESC = ord("t")
_M_COMPLETE = ord("C")
_IDLE = ord("I")
# Replies that may change the tracker's state; any other reply to a Query or an
# Execute only passes along to the client.
_EVENTS = frozenset(b"ZECIs")
_PASS_ALONG = frozenset((QUERY, EXECUTE))


class ResponseTracker:
    """Outstanding requests of one backend connection and the routing of its replies."""

    __slots__ = (
        "_ending_rollback",
        "_partial",
        "_skip",
        "awaiting_sync",
        "errors",
        "max_size",
        "parse_names",
        "prepared",
        "queue",
        "rolled_back",
        "specials",
        "status",
        "swallowed_errors",
    )

    def __init__(self, max_size: int) -> None:
        self.queue: deque[int] = deque()
        self.parse_names: deque[bytes] = deque()  # server names of PARSE/PARSE_SKIP, in order
        self.prepared: dict[bytes, None] = {}  # statements this connection has (LRU order)
        self.specials = 0
        self.status = ord("I")
        self.errors = 0  # ErrorResponses forwarded since the counter was last reset
        self.swallowed_errors = 0
        self.rolled_back = False  # a ROLLBACK completed since the client last reset this
        self._ending_rollback = False
        self.max_size = max_size
        self._partial = b""
        self._skip = 0
        self.awaiting_sync = False  # an error emptied the queue; the server skips to a Sync

    # ---- requests ----

    def push(self, kind: int) -> None:
        if self.awaiting_sync:
            if kind != SYNC:
                return  # the server discards it unanswered (fakes are owed nothing either)
            self.awaiting_sync = False
        self.queue.append(kind)
        if kind in SPECIAL:
            self.specials += 1

    def push_parse(self, kind: int, server_name: bytes) -> None:
        if self.awaiting_sync:
            self.prepared.pop(server_name, None)  # discarded: the server never makes it
            return
        self.push(kind)
        self.parse_names.append(server_name)

    @property
    def idle(self) -> bool:
        """No request outstanding and the last ReadyForQuery said: not in a transaction."""
        return not self.queue and self.status == 73 and not self.awaiting_sync  # 'I'

    def flush_fakes(self) -> bytes:
        """Replies the proxy owes the client now that nothing is outstanding before them."""
        out = b""
        queue = self.queue
        while queue and queue[0] in _FAKES:
            out += _FAKES[self._pop()]
        return out

    def _pop(self) -> int:
        kind = self.queue.popleft()
        if kind in SPECIAL:
            self.specials -= 1
        if kind == PARSE or kind == PARSE_SKIP:
            self.parse_names.popleft()
        return kind

    # ---- replies ----

    def feed(self, data: bytes) -> bytes:
        """Route a chunk of the server's bytes; return the bytes to send to the client."""
        head = b""
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return data
            head, data = data[: self._skip], data[self._skip :]
            self._skip = 0
        if self._partial:
            data = self._partial + data
            self._partial = b""
        out = self._walk(data)
        return head + out if head else out

    def _walk(self, data: bytes) -> bytes:
        pieces: list[bytes] | None = None
        mark = pos = 0
        n = len(data)
        queue = self.queue
        max_size = self.max_size
        while n - pos >= 5:
            kind = data[pos]
            end = pos + 1 + _unpack_len(data, pos + 1)[0]
            if end > n or end < pos + 5:
                if end < pos + 5 or (end - pos > max_size and kind not in _STREAMED):
                    raise ProtocolError(f"invalid message length from server (type {kind})")
                if kind in _STREAMED and queue and queue[0] != QUERY_SKIP:
                    self._skip = end - n  # stream the row, skip its remainder later
                    pos = n
                break
            if end - pos > max_size and kind not in _STREAMED:  # as if it came in pieces
                raise ProtocolError(f"invalid message length from server (type {kind})")
            if queue and kind not in _EVENTS and queue[0] in _PASS_ALONG:
                pos = end  # the common case: rows and descriptions for the client
                continue
            if queue and queue[0] in _FAKES:
                pieces = pieces if pieces is not None else []
                pieces.append(data[mark:pos])
                pieces.append(self.flush_fakes())
                mark = pos
            if not self._route(kind, data, pos):
                pieces = pieces if pieces is not None else []
                pieces.append(data[mark:pos])
                mark = end
            pos = end
        if pos < n:
            self._partial = data[pos:]
        if pieces is None:
            out = data if pos == n else data[:pos]
        else:
            pieces.append(data[mark:pos])
            out = b"".join(pieces)
        fakes = self.flush_fakes() if queue and queue[0] in _FAKES else b""
        return out + fakes if fakes else out

    def _route(self, kind: int, data: bytes, pos: int) -> bool:
        """Match one reply to the head request; return False to swallow it."""
        queue = self.queue
        if not queue:
            return True  # unsolicited (a FATAL before the server closes, a notice)
        head = queue[0]
        if kind in _ASYNC:
            return head != QUERY_SKIP
        if kind == _M_READY:
            if _unpack_len(data, pos + 1)[0] != 5:
                raise ProtocolError("malformed ReadyForQuery from server")
            self.status = status = data[pos + 5]
            if self._ending_rollback:  # ROLLBACK TO SAVEPOINT leaves us in the transaction
                self.rolled_back = status == _IDLE
                self._ending_rollback = False
            return self._pop() != QUERY_SKIP
        if kind == _M_ERROR:
            return self._error(head)
        if kind == _M_COMPLETE:
            self._note_tag(data, pos + 5)
        if head == QUERY or head == QUERY_SKIP or head == FUNCTION:
            return head != QUERY_SKIP
        if head == EXECUTE:
            if kind in _ENDS_EXECUTE:
                self._pop()
            return True
        if head == DESCRIBE_STMT and kind == _M_PARAM_DESC:
            queue[0] = DESCRIBE_PORTAL  # a RowDescription or NoData follows
            return True
        if head == SYNC:
            return True  # e.g. a late NoticeResponse; Z pops the Sync
        return self._pop() not in (PARSE_SKIP, CLOSE_SKIP)

    def _note_tag(self, data: bytes, start: int) -> None:
        """Remember whether the last transaction-ending command was a ROLLBACK."""
        if data.startswith(b"ROLLBACK", start):
            self._ending_rollback = True
        elif data.startswith(b"COMMIT", start):
            self._ending_rollback = False

    def _error(self, head: int) -> bool:
        """An ErrorResponse: in extended mode the server now skips to the next Sync."""
        if head == QUERY_SKIP:
            self.swallowed_errors += 1
            return False
        self.errors += 1
        if head in (QUERY, FUNCTION, SYNC):
            return True
        queue = self.queue
        while queue and queue[0] != SYNC:
            kind = queue[0]
            if kind == PARSE or kind == PARSE_SKIP:
                self.prepared.pop(self.parse_names[0], None)  # the server never made it
            self._pop()
        if not queue:
            self.awaiting_sync = True  # the client has not sent the Sync yet
        return True
