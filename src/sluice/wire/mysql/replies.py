"""The server's reply stream, packet by packet, matched to the commands that were sent.

A MySQL server answers commands strictly in order, and the shape of each
answer depends on the command. `ReplyTracker` keeps the queue of commands sent
on one backend connection (`expect`) and walks the server's logical packets
(`feed`, continuations already joined) to know, for each packet, which command
it answers, whether it completes that answer, and what the server status flags
now say (in a transaction? autocommit?). The proxy uses it to know when a
connection can go back to the pool, to swallow the replies to commands it
injected itself (`own=True`), to map statement ids, and to convert between
clients with and without CLIENT_DEPRECATE_EOF.

Reply shapes, by command (all may instead be a single ERR, which ends them):

- QUERY / STMT_EXECUTE: an OK, or a LOCAL INFILE request (0xFB: the client
  now sends the file and an empty packet, then the server sends OK or ERR), or
  a result set: column count, column definitions, an EOF (unless
  DEPRECATE_EOF), rows, then EOF (or an OK with a 0xFE header under
  DEPRECATE_EOF). An OK or a final EOF with SERVER_MORE_RESULTS_EXISTS means
  another result follows. An EXECUTE that opens a cursor ends after the
  definitions: its EOF carries SERVER_STATUS_CURSOR_EXISTS (under
  DEPRECATE_EOF the server sends the 0xFE-OK right away instead of rows, so
  the ordinary end-of-rows rule covers it; MariaDB 10.11 does this).
- STMT_FETCH: rows, then the EOF/OK (LAST_ROW_SENT when the cursor is done).
- STMT_PREPARE: STMT_PREPARE_OK (0x00, statement id, counts), then the
  parameter definitions and the column definitions, each block followed by
  an EOF unless DEPRECATE_EOF.
- FIELD_LIST: column definitions until an EOF/OK.
- STATISTICS: one string packet.
- CHANGE_USER: an authentication exchange (AuthSwitchRequest 0xFE,
  AuthMoreData 0x01, answered by the session) ending in OK or ERR.
- PING, INIT_DB, RESET_CONNECTION, STMT_RESET, PROCESS_KILL, SET_OPTION (which
  answers with an EOF) and the rest: OK or ERR.
- QUIT, STMT_CLOSE, STMT_SEND_LONG_DATA: nothing (`expect` returns False).

An ERR carries no status flags. With autocommit off it may leave a
transaction open (a failed INSERT still started one), so the tracker then
assumes one is, until the next OK or EOF says otherwise; with autocommit on
and no transaction open, a failed statement cannot open one.

Result sets that use CLIENT_OPTIONAL_RESULTSET_METADATA or MariaDB's metadata
caching are not understood: those capabilities must never be negotiated.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import i64

from sluice.errors import PacketTooLarge, ProtocolError
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.commands import PrepareOk, parse_prepare_ok
from sluice.wire.mysql.messages import ok_status, ok_warnings
from sluice.wire.mysql.packets import (
    MAX_CHUNK,
    frame,
    read_lenenc_int,
    read_lenenc_str,
    read_u16,
    u24_at,
)

# ---- what `feed` reports (bit flags) -----------------------------------------

DONE: Final = 1  # this packet completes the answer to the oldest command
ERROR: Final = 2  # an ERR packet (it also completes the answer)
PREPARED: Final = 4  # a STMT_PREPARE_OK: see `prepared`; the statement id is at bytes 1..4
INFILE: Final = 8  # a LOCAL INFILE request: the client must now send the file
AUTH: Final = 16  # an authentication packet during COM_CHANGE_USER: someone must answer it
STATE_CHANGED: Final = 32  # an OK/EOF with SERVER_SESSION_STATE_CHANGED
OWN: Final = 64  # the packet answers a command the proxy sent itself: do not forward it
DEFS_END: Final = 128  # the last parameter/column definition of a block
DEFS_EOF: Final = 256  # the EOF after a definition block (only without DEPRECATE_EOF)
# An end packet: EOF, or an OK with a 0xFE header under DEPRECATE_EOF. It ends a
# result set's rows, COM_FIELD_LIST's definitions, or answers COM_SET_OPTION.
RESULT_END: Final = 512
OK: Final = 1024  # an OK packet (0x00) answering a command: affected rows, insert id, status

# ---- reply kinds, by command ------------------------------------------------

_NONE: Final = 0
_OK: Final = 1
_RESULT: Final = 2
_EXECUTE: Final = 3
_FETCH: Final = 4
_PREPARE: Final = 5
_FIELDS: Final = 6
_STRING: Final = 7
_AUTH: Final = 8
_REFUSED: Final = 9  # replication: never relayed (NOT_RELAYED)
_KIND: Final = {
    c.COM_QUIT: _NONE,
    c.COM_STMT_CLOSE: _NONE,
    c.COM_STMT_SEND_LONG_DATA: _NONE,
    c.COM_QUERY: _RESULT,
    c.COM_PROCESS_INFO: _RESULT,
    c.COM_STMT_EXECUTE: _EXECUTE,
    0xFA: _EXECUTE,  # MariaDB's COM_STMT_BULK_EXECUTE
    c.COM_STMT_FETCH: _FETCH,
    c.COM_STMT_PREPARE: _PREPARE,
    c.COM_FIELD_LIST: _FIELDS,
    c.COM_STATISTICS: _STRING,
    c.COM_CHANGE_USER: _AUTH,
}
NOT_RELAYED: Final = frozenset(
    (c.COM_BINLOG_DUMP, c.COM_BINLOG_DUMP_GTID, c.COM_REGISTER_SLAVE, 0xFE)
)
# The kind of every command byte, as one table: indexing bytes is cheaper than a dict.
_KIND_OF: Final = bytes(
    _REFUSED if command in NOT_RELAYED else _KIND.get(command, _OK) for command in range(256)
)


def not_relayed(command: int) -> bool:
    """Whether `command` is one of NOT_RELAYED (as a table look-up: once per command)."""
    return _KIND_OF[command] == _REFUSED


# ---- states of the answer being read ----------------------------------------

_IDLE: Final = -1  # nothing outstanding
_FIRST: Final = 0  # the first packet of an answer (or of the next result)
_DEFS: Final = 1  # definitions remain in the current block
_DEFS_EOF: Final = 2  # the EOF after a block
_ROWS: Final = 3  # rows until the end-of-rows packet
_FIELD_DEFS: Final = 4  # COM_FIELD_LIST: definitions until an EOF

_OWN_BIT: Final = 0x100
_IN_TRANS: Final = c.SERVER_STATUS_IN_TRANS


class ReplyTracker:
    """Commands outstanding on one backend connection, and where its replies stand."""

    __slots__ = (
        "_deprecate_eof",
        "_done",
        "_kind",
        "_left",
        "_next_block",
        "_own",
        "_queue",
        "_state",
        "errors",
        "prepared",
        "status",
    )

    def __init__(self, capabilities: int, status: int = c.SERVER_STATUS_AUTOCOMMIT) -> None:
        """`capabilities`: as negotiated with this server; `status`: from the login OK."""
        self._deprecate_eof = bool(capabilities & c.CLIENT_DEPRECATE_EOF)
        # Commands sent, as their first byte (| _OWN_BIT for the proxy's own): those from
        # `_done` on are outstanding (a list and an index: no deque, no shifting the list).
        self._queue: list[int] = []
        self._done = 0
        self._kind = _NONE
        self._state = _IDLE
        self._own = 0
        self._left = 0  # definitions left in the current block
        self._next_block = 0  # COM_STMT_PREPARE: column definitions after the parameters
        self.status = status
        self.prepared: PrepareOk | None = None  # the last STMT_PREPARE_OK seen
        self.errors = 0  # ERR packets seen

    # ---- commands ----

    def expect(self, command: int, *, own: bool = False) -> bool:
        """Note a command sent to the server; return False if it gets no reply."""
        kind = _KIND_OF[command]
        if kind == _NONE:
            return False
        if kind == _REFUSED:
            raise ValueError(f"command 0x{command:02x} cannot be relayed")
        queue = self._queue
        queue.append(command | _OWN_BIT if own else command)
        if len(queue) - self._done == 1:
            self._start(queue[self._done])
        return True

    @property
    def pending(self) -> int:
        """Commands whose answer is not complete yet."""
        return len(self._queue) - self._done

    @property
    def in_transaction(self) -> bool:
        return bool(self.status & _IN_TRANS)

    @property
    def idle_in_transaction(self) -> bool:
        """Nothing outstanding, yet a transaction is open: the server waits for the client."""
        return len(self._queue) == self._done and bool(self.status & _IN_TRANS)

    @property
    def autocommit(self) -> bool:
        return bool(self.status & c.SERVER_STATUS_AUTOCOMMIT)

    @property
    def idle(self) -> bool:
        """No client command outstanding and no transaction open: the connection may be
        returned. Commands of the proxy's own may still run: their replies are the
        connection's business (see MyServerConn.own_packet), whoever holds it next."""
        if self.status & _IN_TRANS:
            return False
        queue = self._queue
        return all(queue[i] & _OWN_BIT for i in range(self._done, len(queue)))

    @property
    def client_pending(self) -> int:
        """Commands outstanding that are not the proxy's own."""
        queue = self._queue
        return sum(1 for i in range(self._done, len(queue)) if not queue[i] & _OWN_BIT)

    def warnings(self, payload: bytes, flags: int) -> int:
        """The warning count of a packet `feed` marked OK or RESULT_END: how many
        conditions the statement raised (not those the session still lists)."""
        if flags & RESULT_END and not self._deprecate_eof:
            return payload[1] | payload[2] << 8 if len(payload) >= 3 else 0
        return ok_warnings(payload)

    def _start(self, head: int) -> None:
        """Get ready for the answer to `head`, the oldest command outstanding."""
        self._kind = kind = _KIND_OF[head & 0xFF]
        self._state = _ROWS if kind == _FETCH else _FIELD_DEFS if kind == _FIELDS else _FIRST
        self._own = OWN if head & _OWN_BIT else 0
        self._left = self._next_block = 0

    def _finish(self) -> int:
        queue = self._queue
        done = self._done + 1
        if done == len(queue):
            queue.clear()
            self._done = 0
            self._state = _IDLE
            return DONE
        if done >= 64 and done * 2 >= len(queue):  # a long pipeline: drop what is answered
            del queue[:done]
            done = 0
        self._done = done
        self._start(queue[done])
        return DONE

    # ---- replies ----

    def feed(self, payload: bytes) -> int:
        """Take one logical server packet; return what it is, as flags (0: nothing special)."""
        state = self._state
        own = self._own
        if state == _ROWS and len(payload):  # the common case: a row
            first = payload[0]
            if first < 0xFE:
                return own
            if first == 0xFF:
                return own | self._error()
            if len(payload) < MAX_CHUNK:
                return own | RESULT_END | self._end_of_result(payload)
            return own  # a row of 16 MiB or more whose first value is as long
        if state == _IDLE:
            raise ProtocolError("packet from the server with no command outstanding")
        if payload and payload[0] == 0xFF:
            return own | self._error()
        if state == _DEFS:
            self._left -= 1
            return own | (DEFS_END | self._block_done() if not self._left else 0)
        if state == _DEFS_EOF:
            return own | DEFS_EOF | self._defs_eof(payload)
        if state == _FIELD_DEFS:
            if payload and payload[0] == 0xFE and len(payload) < MAX_CHUNK:
                return (
                    own | RESULT_END | self._set_status(self._end_status(payload)) | self._finish()
                )
            return own
        return own | self._first(payload)

    def _first(self, payload: bytes) -> int:
        kind = self._kind
        if not payload:
            if kind == _STRING:
                return self._finish()
            raise ProtocolError("empty packet from the server")
        head = payload[0]
        if kind == _RESULT or kind == _EXECUTE:
            return self._result_head(payload, head)
        if kind == _PREPARE:
            return self._prepare_ok(payload)
        if kind == _STRING:
            return self._finish()
        if kind == _AUTH and head in (c.EOF_HEADER, c.AUTH_MORE_DATA_HEADER):
            return AUTH
        if head == c.OK_HEADER:
            return OK | self._set_status(ok_status(payload)) | self._finish()
        if head == c.EOF_HEADER and kind == _OK:  # COM_SET_OPTION, COM_DEBUG
            return RESULT_END | self._set_status(self._end_status(payload)) | self._finish()
        raise ProtocolError(f"unexpected packet 0x{head:02x} from the server")

    def _result_head(self, payload: bytes, head: int) -> int:
        """First packet of a result: OK, LOCAL INFILE request, or a column count."""
        if head == c.OK_HEADER:
            status = ok_status(payload)
            flags = OK | self._set_status(status)
            return flags if status & c.SERVER_MORE_RESULTS_EXISTS else flags | self._finish()
        if head == c.LOCAL_INFILE_HEADER:
            return INFILE  # the OK or ERR after the file is again a first packet
        count = read_lenenc_int(payload, 0)[0] if head != c.EOF_HEADER else 0
        if not count:
            raise ProtocolError("malformed result set header from the server")
        self._state, self._left = _DEFS, count
        return 0

    def _prepare_ok(self, payload: bytes) -> int:
        ok = self.prepared = parse_prepare_ok(payload)
        if ok.num_params:
            self._state, self._left, self._next_block = _DEFS, ok.num_params, ok.num_columns
        elif ok.num_columns:
            self._state, self._left = _DEFS, ok.num_columns
        else:
            return PREPARED | self._finish()
        return PREPARED

    def _block_done(self) -> int:
        """A definition block is complete: its EOF, the next block, rows or the end."""
        if not self._deprecate_eof:
            self._state = _DEFS_EOF
            return 0
        return self._after_block()

    def _after_block(self) -> int:
        if self._kind != _PREPARE:
            self._state = _ROWS
            return 0
        if self._next_block:
            self._state, self._left, self._next_block = _DEFS, self._next_block, 0
            return 0
        return self._finish()

    def _defs_eof(self, payload: bytes) -> int:
        if not payload or payload[0] != 0xFE or len(payload) >= MAX_CHUNK:
            raise ProtocolError("expected an EOF after the definitions")
        status = read_u16(payload, 3)
        flags = self._set_status(status)
        if self._kind == _EXECUTE and status & c.SERVER_STATUS_CURSOR_EXISTS:
            return flags | self._finish()  # a cursor is open: rows come with FETCH
        return flags | self._after_block()

    def _end_of_result(self, payload: bytes) -> int:
        status = self._end_status(payload)
        flags = self._set_status(status)
        if status & c.SERVER_MORE_RESULTS_EXISTS and self._kind != _FETCH:
            self._state = _FIRST
            return flags
        return flags | self._finish()

    def _end_status(self, payload: bytes) -> int:
        """Status flags of an end packet: an EOF, or an OK with 0xFE under DEPRECATE_EOF."""
        return ok_status(payload) if self._deprecate_eof else read_u16(payload, 3)

    def _set_status(self, status: int) -> int:
        self.status = status
        return STATE_CHANGED if status & c.SERVER_SESSION_STATE_CHANGED else 0

    def _error(self) -> int:
        self.errors += 1
        if not self.status & c.SERVER_STATUS_AUTOCOMMIT:
            self.status |= _IN_TRANS  # it may have started one; the next OK/EOF will tell
        return ERROR | self._finish()


NONE: Final = -1  # `ReplyStream.next`: every whole packet received has been walked
# What `ReplyStream.next` stops at (a definition block's end alone, or a state change, is
# the tracker's business).
_LOOK: Final = ~(DEFS_END | DEFS_EOF | STATE_CHANGED)


class ReplyStream:
    """The server's reply bytes, forwarded as they came while the tracker walks them.

    The relay hands each chunk received to `feed`, then calls `next` until it
    returns NONE: `next` walks the packets by their 4-byte headers and stops at
    each one that needs a look (the tracker gave it flags but for DEFS_END,
    DEFS_EOF and STATE_CHANGED: an OK, an end of rows, an ERR, a packet of the
    proxy's own command...), with its payload in
    `payload`. `take` then gives the bytes walked so far, exactly as received,
    to forward to the client; the sequence ids are the server's, which are the
    client's as every command starts at 0 on both sides. `drop` leaves the
    packet `next` returned out of them (the reply to an own command), `replace`
    puts another payload in its place (a statement id rewritten).

    A row of a result set is known by its header and its first byte: it is
    neither copied nor handed to the tracker, and a row that is not complete
    yet (one of 16 MiB or more, in several packets) is forwarded as far as it
    came, so rows of any size stream through (unless `whole`). Every other packet is handed to
    the tracker whole, continuation packets joined; those are limited to
    `max_size` bytes. `next(every=True)` stops at every packet, rows too (a
    PREPARE's reply, which the relay caches).
    """

    __slots__ = (
        "_buf",
        "_cont",
        "_here",
        "_need",
        "_parts",
        "_parts_len",
        "_pos",
        "_ready",
        "_skip",
        "_start",
        "_tracker",
        "max_size",
        "payload",
        "seq",
    )

    def __init__(self, tracker: ReplyTracker, max_size: int) -> None:
        self._tracker = tracker
        self.max_size = max_size
        self._buf = b""
        # (offsets and lengths are i64: machine integers in the compiled build)
        self._pos: i64 = 0  # the first byte not walked yet
        self._start: i64 = 0  # the first byte walked and not taken yet
        self._here: i64 = 0  # where the packet `next` returned starts
        self._ready: list[bytes] = []  # to forward, before `_start`
        self._skip: i64 = 0  # bytes of a row still to come (beyond `_buf`)
        self._cont = False  # the next packet continues a row (it had 0xFFFFFF bytes)
        self._need: i64 = 0  # bytes from `_pos` that the walk needs to go on
        self._parts: list[bytes] = []  # received while those are not all here
        self._parts_len: i64 = 0
        self.payload = b""  # of the packet `next` returned
        self.seq = 0  # its (first) sequence id

    @property
    def buffered(self) -> int:
        """Bytes received and not walked yet."""
        return len(self._buf) - self._pos + self._parts_len

    def feed(self, data: bytes) -> None:
        buf = self._buf
        start = self._start
        parts = self._parts
        if start == len(buf) and not parts:  # all walked and taken: the common case
            self._buf = data
            self._pos = self._start = self._here = 0
            return
        parts.append(data)
        self._parts_len += len(data)
        if len(buf) - self._pos + self._parts_len < self._need:
            return  # the packet at `_pos` is still short: joined once, when it is not
        self._buf = b"".join([buf[start:], *parts])
        parts.clear()
        self._parts_len = 0
        self._pos -= start
        self._start = 0
        self._here = 0

    def next(self, every: bool = False, whole: bool = False) -> int:
        """Walk on to the next packet that needs a look; return its flags, or NONE.

        `every`: stop at every packet; `whole`: forward whole packets only, rows too
        (a compressed stream: some clients cannot read a packet cut across more than
        two compressed packets)."""
        buf = self._buf
        pos = self._pos
        end: i64 = len(buf)
        tracker = self._tracker
        need: i64 = 0
        while True:
            if self._skip:  # the rest of a row, as far as it came
                step = self._skip if self._skip < end - pos else end - pos
                pos += step
                self._skip -= step
                if self._skip:
                    break
            if not every and tracker._state == _ROWS and not tracker._own and not self._cont:
                while end - pos > 4:  # whole rows shorter than 16 MiB, the common case
                    length = u24_at(buf, pos)
                    stop = pos + 4 + length
                    if buf[pos + 4] >= 0xFE or stop > end or not length or length == MAX_CHUNK:
                        break
                    pos = stop
            if end - pos < 4:
                need = 4
                break
            length = u24_at(buf, pos)
            if self._cont:  # a piece of a row of 16 MiB or more
                if whole and pos + 4 + length > end:
                    need = 4 + length
                    break
                self._cont = length == MAX_CHUNK
                self._skip = length
                pos += 4
                continue
            if length and end - pos == 4:
                need = 5  # what it is shows from its first byte
                break
            if (
                not every
                and tracker._state == _ROWS
                and not tracker._own
                and length
                and (buf[pos + 4] < 0xFE or (buf[pos + 4] == 0xFE and length == MAX_CHUNK))
            ):  # a row (as ReplyTracker.feed tells one), not copied
                if pos + 4 + length <= end:
                    self._cont = length == MAX_CHUNK
                    pos += 4 + length
                    continue
                if whole:
                    need = 4 + length
                    break
                self._cont = length == MAX_CHUNK
                self._skip = length
                pos += 4
                continue
            stop = pos + 4 + length
            if length == MAX_CHUNK:
                stop = self._joined_end(buf, pos)
                if stop < 0:
                    need = -stop
                    break
                payload = self._join(buf, pos, stop)
            elif stop > end:
                if length > self.max_size:
                    raise PacketTooLarge(f"packet of {length} bytes exceeds the maximum")
                need = 4 + length
                break
            else:
                payload = buf[pos + 4 : stop]
            self.seq = buf[pos + 3]
            self._here = pos
            self._pos = stop
            flags = tracker.feed(payload)
            if flags & _LOOK or every:
                self.payload = payload
                return flags
            pos = stop
        self._pos = pos
        self._need = need
        return NONE

    def _joined_end(self, buf: bytes, pos: int) -> int:
        """The end of the logical packet that starts at `pos`; if it is not all here
        yet, minus the bytes from `pos` needed to know more."""
        total = 0
        end = len(buf)
        first = pos
        seq = buf[pos + 3]
        while True:
            if end - pos < 4:
                return first - pos - 4
            length = u24_at(buf, pos)
            if buf[pos + 3] != seq:
                raise ProtocolError(f"packet out of order: sequence id {buf[pos + 3]}")
            total += length
            if total > self.max_size:
                raise PacketTooLarge(f"packet of {total}+ bytes exceeds the maximum")
            pos += 4 + length
            if pos > end:
                return first - pos
            if length < MAX_CHUNK:
                return pos
            seq = (seq + 1) & 0xFF

    @staticmethod
    def _join(buf: bytes, pos: int, stop: int) -> bytes:
        pieces: list[bytes] = []
        while pos < stop:
            length = u24_at(buf, pos)
            pieces.append(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
        return b"".join(pieces)

    def drop(self) -> None:
        """Leave the packet `next` returned out of what is forwarded."""
        if self._here > self._start:
            self._ready.append(self._buf[self._start : self._here])
        self._start = self._pos

    def replace(self, payload: bytes) -> None:
        """Forward `payload` instead of the packet `next` returned (same sequence id)."""
        self.drop()
        self._ready.append(frame(payload, self.seq))

    def take(self) -> bytes:
        """The bytes walked since the last call, to forward (b"": none)."""
        tail = self._buf[self._start : self._pos]
        self._start = self._pos
        ready = self._ready
        if not ready:
            return tail
        ready.append(tail)
        data = b"".join(ready)
        ready.clear()
        return data


class FirstRow:
    """The values of the first row of a text result set, read from the packets of the
    reply and the flags `ReplyTracker.feed` gave them (for the proxy's own queries)."""

    __slots__ = ("_rows", "done", "values")

    def __init__(self) -> None:
        self.values: list[bytes | None] | None = None  # None until a row came; NULL is None
        self.done = False
        self._rows = False

    def feed(self, payload: bytes, flags: int) -> None:
        if flags & DONE:
            self.done = True
        if flags & (DEFS_END | DEFS_EOF):
            self._rows = True  # rows follow the definitions (and their EOF)
        elif self._rows and self.values is None and not flags & (RESULT_END | ERROR | DONE):
            self.values = _text_row(payload)


def _text_row(payload: bytes) -> list[bytes | None]:
    values: list[bytes | None] = []
    pos = 0
    while pos < len(payload):
        if payload[pos] == 0xFB:
            values.append(None)
            pos += 1
        else:
            value, pos = read_lenenc_str(payload, pos)
            values.append(value)
    return values
