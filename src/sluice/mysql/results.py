"""Which connection holds what a client's earlier statements left in its session.

A session keeps results of its earlier statements that a later one may read, and
MariaDB 10.11 keeps each for its own reasons:

- ROW_COUNT(): set by every statement but GET DIAGNOSTICS;
- FOUND_ROWS(): set by SELECTs only (a SAVEPOINT or an UPDATE leaves it, and so does
  COM_RESET_CONNECTION);
- the diagnostics area (SHOW WARNINGS / ERRORS, @@warning_count, @@error_count, GET
  DIAGNOSTICS): cleared only by a statement that uses a table or raises a condition.
  After a SAVEPOINT, a SET, `SELECT 1` or COM_PING it still lists the conditions of
  the statement before, whoever ran it;
- @@last_gtid: set only by a commit that wrote something.

Through transaction pooling, the connection a client holds may last have run another
client's statements, or Sluice's own. So each connection records whose results it holds
and which kinds (`MyServerConn.results_of`, `MyServerConn.holds`: bits `sql.ROW_COUNT`,
`FOUND_ROWS`, `DIAGNOSTICS`). A kind becomes the client's when its statement certainly
wrote it there: ROW_COUNT() by any COM_QUERY text but GET DIAGNOSTICS; the diagnostics
by an INSERT, UPDATE, DELETE or REPLACE (they use a table) or by a statement that raised
a condition (an ERR, or an OK or EOF with warnings); FOUND_ROWS() by a SELECT that did
not fail. A kind stays the client's while only its own statements run there: they change
it as they would on a direct connection. Whatever else runs there (another client's
statement, Sluice's own reset, replayed SET or re-PREPARE) drops the kinds it may change;
a statement of the client's that ran on another connection, or that Sluice answered
itself, leaves none of its results anywhere (`ClientResults.server` moves on). Where the
effect is not certain (a SELECT without a table may or may not clear the diagnostics;
on MySQL every statement but a diagnostic one clears them) the kind is dropped unless the
connection held it already. @@last_gtid is never held: whether a commit wrote a GTID is
not visible here.

A read (`sql.Effect.read_kinds`) is relayed only when the connection holds every kind it
reads for the client; otherwise Sluice refuses it with a clear error
(`ClientResults.refuse`) rather than answer with another session's results. One case
needs no connection's memory: a client none of whose statements raised a condition has
an empty diagnostics area, as a new session does. Its reads of the diagnostics (SHOW
WARNINGS on a new session, say) go to a connection whose own area Sluice empties first
with a statement that uses a table and raises nothing (`CLEAR_DIAGNOSTICS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql.messages import build_err
from sluice.wire.mysql.packets import frame
from sluice.wire.mysql.sql import DIAGNOSTICS, FOUND_ROWS, LAST_GTID, ROW_COUNT

if TYPE_CHECKING:
    from sluice.mysql.server import MyServerConn

ALL: Final = ROW_COUNT | FOUND_ROWS | DIAGNOSTICS | LAST_GTID
# What Sluice's own `SELECT LAST_INSERT_ID()` changes on MariaDB (no table, no condition).
SELECT_WITHOUT_TABLE: Final = ROW_COUNT | FOUND_ROWS
# Uses a (derived) table and raises nothing: empties the diagnostics area on MariaDB and
# MySQL alike; changes ROW_COUNT() and FOUND_ROWS() as any SELECT does.
CLEAR_DIAGNOSTICS: Final = cmd.query(b"SELECT * FROM (SELECT 1) AS sluice_clear")
_FOUND_IF_OK: Final = 0x100  # a SELECT: FOUND_ROWS() is its own unless it fails
_TABLE_WRITES: Final[tuple[bytes, ...]] = (b"insert", b"update", b"delete", b"replace")


class Answering(Protocol):
    """What a client session's results need of it (`MyClientSession`): to answer itself."""

    def answered_locally(self, packets: bytes) -> None: ...

    def release_if_idle(self, server: MyServerConn) -> None: ...


def head_of(sql: bytes) -> bytes:
    """The start of a statement text, lower case: enough for its first word."""
    return sql[:24].lstrip().lower()


def query_writes(head: bytes) -> int:
    """What a COM_QUERY text (or the EXECUTE of one) certainly leaves in the session,
    from its first word (`head_of`): kinds, and `_FOUND_IF_OK` for a SELECT."""
    if head.startswith(b"select"):
        return ROW_COUNT | _FOUND_IF_OK
    if head.startswith(_TABLE_WRITES):
        return ROW_COUNT | DIAGNOSTICS
    if head.startswith(b"get"):  # GET DIAGNOSTICS leaves ROW_COUNT() as it was
        return 0
    return ROW_COUNT


class ClientResults:
    """Where one client's latest results are, and what of them a connection holds."""

    __slots__ = ("_conditions", "_found", "raised", "server", "session")

    def __init__(self, session: Answering) -> None:
        self.session = session
        self.server: MyServerConn | None = None  # ran its latest statement (None: Sluice did)
        self._found = False  # the command in flight is a SELECT
        self._conditions = False  # the reply so far raised a condition (ERR, warnings)
        self.raised = False  # a statement of the client's raised one: its area may be full

    def holds(self, server: MyServerConn, kinds: int) -> bool:
        """Whether `server` holds the client's own results of every kind in `kinds`."""
        return (
            self.server is server
            and server.results_of is self.session
            and server.holds & kinds == kinds
        )

    def readable(self, server: MyServerConn, kinds: int) -> bool:
        """Whether a read of `kinds` may run on `server` and find the client's own
        results: the connection holds them, or the read is of a diagnostics area that
        is empty for the client and that an own statement empties on the connection."""
        if self.holds(server, kinds):
            return True
        if kinds != DIAGNOSTICS or self.raised:
            return False
        server.send_command(CLEAR_DIAGNOSTICS, own=True)  # drops what others' statements left
        self.server = server
        server.results_of = self.session
        server.holds = DIAGNOSTICS  # empty, as the client's own
        return True

    def sent(self, server: MyServerConn, writes: int) -> None:
        """A command of the client's goes to `server` (`writes`: see `query_writes`)."""
        if self.server is server and server.results_of is self.session:
            server.holds |= writes & ALL  # its own results, changed as directly
        else:
            self.server = server
            server.results_of = self.session
            server.holds = writes & ALL
        self._found = bool(writes & _FOUND_IF_OK)

    def pinged(self) -> None:
        """Sluice answered a COM_PING itself: directly, MariaDB would keep the diagnostics
        area but set ROW_COUNT() to 0, so no connection holds the client's ROW_COUNT()."""
        server = self.server
        if server is not None and server.results_of is self.session:
            server.holds &= ~ROW_COUNT

    def refuse(self, server: MyServerConn, what: str) -> None:
        """Answer a read of results that `server` does not hold for the client with a
        clear error, never with another session's values."""
        text = (
            f"{what} reads what the previous statement left, which this database connection "
            "does not hold for this client (Sluice transaction pooling): read it in the same "
            "transaction or the same multi-statement text as the statement it is about"
        )
        self.session.answered_locally(frame(build_err(c.ER_NOT_SUPPORTED_YET, text), 1))
        self.session.release_if_idle(server)

    def answered(self, error: bool = False) -> None:
        """Sluice answered a command itself: no connection holds the client's results
        (`error`: with an ERR, which a direct connection would list in its area)."""
        self.server = None
        if error:
            self.raised = True

    def packet(self, tracker: rp.ReplyTracker, payload: bytes, flags: int) -> None:
        """An OK, end-of-rows or ERR packet of the reply to the client's command."""
        if not self._conditions and (flags & rp.ERROR or tracker.warnings(payload, flags)):
            self._conditions = True

    def done(self, server: MyServerConn, error: bool) -> None:
        """The reply to a command of the client's is complete: what it certainly wrote is
        the client's, unless something else was sent behind it."""
        if not server.tracker.pending and self.holds(server, 0):
            if self._conditions:
                server.holds |= DIAGNOSTICS
            if self._found and not error:
                server.holds |= FOUND_ROWS
        if self._conditions:
            self.raised = True
        self._conditions = self._found = False
