"""The binary-protocol commands of one client session (COM_STMT_*), over pooled connections.

A PREPARE is relayed, or answered from the connection's cache of statements
prepared under the same key (see `sluice.mysql.statements`); the client gets a
statement id of Sluice's own. An EXECUTE (or RESET, SEND_LONG_DATA, FETCH) on a
connection that does not hold the statement under its key is held while the
statement is prepared there first, as commands of the proxy's own: in the
schema it was prepared in (COM_INIT_DB to it and back around the PREPARE), so
that it means what it meant when the client prepared it. A statement whose
text would read differently now (the client changed sql_mode or its character
set since) cannot be prepared again as it was: the client gets the server's
own answer to that, ER_NEED_REPREPARE.

A command on a statement id the client does not have, or too short for its
fields, is answered before any connection is borrowed, as MariaDB answers it
(1243 unknown handler, 1835 malformed packet, 1210 for parameters that do not
parse; nothing for SEND_LONG_DATA and CLOSE, which never get a reply), and the
session goes on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol

from sluice.errors import ProtocolError
from sluice.mysql.results import Answering, ClientResults, head_of, query_writes
from sluice.mysql.statements import (
    ClientStatements,
    ClientStmt,
    ServerStmt,
    StmtKey,
    execute_for_server,
    meaning,
    reply_for_client,
)
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql.messages import build_err
from sluice.wire.mysql.packets import frame
from sluice.wire.mysql.sql import classify_bytes

if TYPE_CHECKING:
    from sluice.config import ProxyConfig
    from sluice.mysql.server import MyServerConn


class ProxyConfigured(Protocol):
    @property
    def config(self) -> ProxyConfig: ...


class RelaySession(Answering, Protocol):
    """What the statement relay needs of its client session (`MyClientSession`)."""

    pinned: str
    role_changed: bool
    taint: str

    @property
    def proxy(self) -> ProxyConfigured: ...

    @property
    def server(self) -> MyServerConn | None: ...

    @property
    def database(self) -> str: ...

    @property
    def settings(self) -> dict[str, str]: ...

    @property
    def statements(self) -> ClientStatements: ...

    @property
    def results(self) -> ClientResults: ...

    def pin(self, reason: str) -> None: ...

    def note_sets(self, sets: tuple[tuple[str, str], ...]) -> None:
        """Variables the statement being sent sets (kept once it succeeds)."""

    def send(self, server: MyServerConn, payload: bytes, writes: int = 0) -> None: ...

    def status_flags(self) -> int: ...

    def drain(self) -> None: ...


# What MariaDB names each command in its ER_UNKNOWN_STMT_HANDLER text; the
# commands missing here get no reply at all.
_HANDLER_NAMES: Final = {
    c.COM_STMT_EXECUTE: "mysqld_stmt_execute",
    c.COM_STMT_RESET: "mysqld_stmt_reset",
    c.COM_STMT_FETCH: "mysqld_stmt_fetch",
}


class Reprepare:
    """A statement prepared again on a connection, for the client command held meanwhile."""

    __slots__ = ("command", "relay", "reply", "server", "stmt", "switch_error")

    def __init__(
        self, relay: StatementRelay, server: MyServerConn, command: bytes, stmt: ClientStmt
    ) -> None:
        self.relay, self.server, self.command, self.stmt = relay, server, command, stmt
        self.reply: list[bytes] = []
        self.switch_error: bytes | None = None

    def switched(self, payload: bytes, flags: int) -> None:
        """The reply to the COM_INIT_DB into the statement's schema."""
        if flags & rp.ERROR:
            self.switch_error = payload

    def prepared(self, payload: bytes, flags: int) -> None:
        self.reply.append(payload)
        if flags & rp.DONE:
            self.relay.reprepared(self, bool(flags & rp.ERROR))


class StatementRelay:
    """Statement ids, caching and re-preparing for one client session."""

    __slots__ = ("_capture_stmt", "capture", "held", "results", "session", "statements")

    def __init__(self, session: RelaySession) -> None:
        self.session = session
        # the session's own, read once: compiled, an attribute of a Protocol is a lookup
        # by name at every use
        self.statements = session.statements
        self.results = session.results
        self.held: Reprepare | None = None  # a command waiting for its statement's PREPARE
        self.capture: list[bytes] | None = None  # the reply to a relayed PREPARE, so far
        self._capture_stmt: ClientStmt | None = None

    # ---- COM_STMT_PREPARE ----

    def prepare(self, server: MyServerConn, payload: bytes) -> None:
        session = self.session
        sql = payload[1:]
        effect = classify_bytes(sql)
        if effect.pin and not session.pinned:
            session.pin(effect.pin)  # it takes effect when executed: keep the connection
        session.role_changed = session.role_changed or effect.role
        stmt = ClientStmt(sql, session.database, meaning(session.settings))
        stmt.reads, stmt.taint, stmt.sets = effect.reads, effect.taint, effect.sets
        stmt.read_kinds, stmt.writes = effect.read_kinds, query_writes(head_of(sql))
        cached = server.statements.get(stmt.key)
        if cached is None:
            self.capture, self._capture_stmt = [], stmt
            session.send(server, payload)
            return
        ok = cmd.parse_prepare_ok(cached.reply[0])
        stmt.num_params, stmt.num_columns = ok.num_params, ok.num_columns
        client_id = self.statements.add(stmt)
        reply = reply_for_client(cached.reply, client_id, session.status_flags())
        session.answered_locally(b"".join(frame(p, seq) for seq, p in enumerate(reply, 1)))
        session.release_if_idle(server)

    def captured(self, server: MyServerConn, payload: bytes, flags: int) -> bytes:
        """A packet of the reply to a client's PREPARE: cache it, give the client its id."""
        capture, stmt = self.capture, self._capture_stmt
        assert capture is not None and stmt is not None
        if flags & rp.ERROR:
            self.capture = self._capture_stmt = None
            return payload
        capture.append(payload)
        if flags & rp.PREPARED:
            ok = cmd.parse_prepare_ok(payload)
            stmt.num_params, stmt.num_columns = ok.num_params, ok.num_columns
            payload = cmd.with_stmt_id(payload, self.statements.add(stmt))
        if flags & rp.DONE:
            self.capture = self._capture_stmt = None
            self._remember(server, stmt.key, capture)
        return payload

    # ---- EXECUTE, RESET, SEND_LONG_DATA, FETCH, CLOSE ----

    def refusal(self, command: int, payload: bytes) -> bytes | None:
        """The answer to a command on a statement the client does not have, or that is
        malformed (b"": no answer, as from the server); None if it may go on."""
        if command == c.COM_STMT_EXECUTE and len(payload) < 10:
            return _error(c.ER_MALFORMED_PACKET, "Malformed communication packet")
        if len(payload) >= 5:
            sid = cmd.stmt_id(payload)
            stmt = self.statements.by_id.get(sid)
        else:  # a short one names no statement
            sid, stmt = int.from_bytes(payload[1:5], "little"), None
        if stmt is None:
            return _unknown_handler(command, sid)
        if command == c.COM_STMT_EXECUTE:
            try:
                cmd.execute_values_at(payload, stmt.num_params)
            except ProtocolError:
                return _error(c.ER_WRONG_ARGUMENTS, "Incorrect arguments to mysqld_stmt_execute")
        return None

    def command(self, server: MyServerConn, command: int, payload: bytes) -> bool:
        """Relay a command on a statement; False if it waits for the statement's PREPARE."""
        session = self.session
        sid = cmd.stmt_id(payload)
        stmt = self.statements.by_id.get(sid)
        if command == c.COM_STMT_CLOSE:
            self.statements.by_id.pop(sid, None)
            session.release_if_idle(server)  # the statement stays prepared for others
            return True
        if stmt is None:  # (`refusal` answers these before a connection is borrowed)
            refused = _unknown_handler(command, sid)
            if refused:
                session.answered_locally(refused)
            session.release_if_idle(server)
            return True
        if command == c.COM_STMT_EXECUTE:
            if stmt.reads and not self.results.readable(server, stmt.read_kinds):
                self.results.refuse(server, stmt.reads)
                return True
            if stmt.taint:
                session.taint = stmt.taint
            if stmt.sets:  # it sets them when it runs, each time it runs
                session.note_sets(stmt.sets)
            if len(payload) > 5 and payload[5] != c.CURSOR_TYPE_NO_CURSOR and not session.pinned:
                session.pin("server-side cursor")
        known = server.statements.get(stmt.key)
        if known is None:
            return self._prepare_again(server, payload, stmt)
        if command == c.COM_STMT_EXECUTE:  # as session.send() does, on the hot path
            self.results.sent(server, stmt.writes)
            server.send_command(execute_for_server(payload, stmt, known))
        else:
            self.results.sent(server, 0)
            server.send_command(cmd.with_id_bytes(payload, known.id_bytes))
        return True

    def _send(
        self, server: MyServerConn, payload: bytes, stmt: ClientStmt, known: ServerStmt
    ) -> None:
        if payload[0] == c.COM_STMT_EXECUTE:
            self.session.send(server, execute_for_server(payload, stmt, known), stmt.writes)
        else:
            self.session.send(server, cmd.with_id_bytes(payload, known.id_bytes))

    def _prepare_again(self, server: MyServerConn, payload: bytes, stmt: ClientStmt) -> bool:
        """Prepare `stmt` on `server` as it was first prepared; the command waits for it."""
        session = self.session
        if stmt.reading != meaning(session.settings):
            text = (
                "Prepared statement needs to be re-prepared (its sql_mode or character set changed)"
            )
            session.answered_locally(frame(build_err(c.ER_NEED_REPREPARE, text), 1))
            session.release_if_idle(server)
            return True
        job = Reprepare(self, server, payload, stmt)
        back = server.schema
        switch = bool(stmt.schema) and stmt.schema != back
        if switch:
            server.send_command(cmd.init_db(stmt.schema), own=True, on_reply=job.switched)
        server.send_command(cmd.stmt_prepare(stmt.sql), own=True, on_reply=job.prepared)
        if switch and back:
            server.send_command(cmd.init_db(back), own=True)
        elif switch:  # no way back to "no database": the connection stays in this one
            server.schema = stmt.schema
        self.held = job
        return False

    def reprepared(self, job: Reprepare, error: bool) -> None:
        """The PREPARE for a held command is answered: send the command, or fail it."""
        self.held = None
        session, server = self.session, job.server
        failure = job.reply[-1] if error else job.switch_error
        if failure is None:
            known = self._remember(server, job.stmt.key, job.reply)
        elif not error:  # prepared, but not in its schema: not usable
            server.send_command(cmd.stmt_close(cmd.stmt_id(job.reply[0])), own=True)
        if session.server is not server:  # the client left meanwhile
            return
        if failure is None:
            self._send(server, job.command, job.stmt, known)
        else:
            session.answered_locally(frame(failure, 1))  # the server's reason
        asyncio.get_running_loop().call_soon(session.drain)

    def _remember(self, server: MyServerConn, key: StmtKey, reply: list[bytes]) -> ServerStmt:
        known = ServerStmt(cmd.stmt_id(reply[0]), reply)
        limit = self.session.proxy.config.pool.max_prepared_statements
        for old in server.statements.add(key, known, limit):
            server.send_command(cmd.stmt_close(old), own=True, touches=0)  # changes no results
        return known


def _error(error: tuple[int, str], text: str) -> bytes:
    return frame(build_err(error, text), 1)


def _unknown_handler(command: int, sid: int) -> bytes:
    """MariaDB's answer to a statement id it does not know (none to SEND_LONG_DATA, CLOSE)."""
    name = _HANDLER_NAMES.get(command)
    if name is None:
        return b""
    return _error(
        c.ER_UNKNOWN_STMT_HANDLER, f"Unknown prepared statement handler ({sid}) given to {name}"
    )
