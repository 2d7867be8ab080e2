"""The admin console's PostgreSQL side: its login and its simple-query loop.

A client whose startup database is `[sluice] admin_database` is handed here by
the handshake (the session is still in its STARTUP state). It logs in with the
proxy's own method and users, and must also be listed in `admin_users`, else it
gets FATAL 28000 after authenticating, so the console cannot be used to probe
passwords any more than the proxy can. The session then speaks only the simple
query protocol: each Query is one command (`sluice.observe.admin` runs it),
answered with text columns and ReadyForQuery; a wrong command is an ERROR and
the session goes on.

`serve` returns only once the session is closed (Terminate, EOF or a FATAL
error), so the handshake never moves an admin session into the relay.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sluice.errors import AuthFailed, ClientError, ProtocolError
from sluice.observe.admin import AdminConsole, CommandError, Result
from sluice.pg.auth import authenticate
from sluice.wire.pg import messages as m
from sluice.wire.pg.login import LoginServer

if TYPE_CHECKING:
    from sluice.pg.handshake import LoginSession

log = logging.getLogger("sluice.admin")

GREETING_PARAMS = (
    ("server_version", "15.0 (sluice)"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("application_name", ""),
)
_EXTENDED = frozenset(b"PBDECH")  # extended-protocol messages: refused until the next Sync


class AdminNotAllowed(ClientError):
    """An authenticated user who is not in `admin_users`."""

    sqlstate = "28000"


def encode(result: Result) -> bytes:
    """A command's answer as RowDescription, DataRows and CommandComplete."""
    out = [m.row_description(list(result.columns))] if result.columns else []
    out += [m.data_row(list(row)) for row in result.rows]
    out.append(m.command_complete(result.tag))
    return b"".join(out)


class AdminServer:
    """Serves admin sessions over the PostgreSQL protocol; `console` runs their commands."""

    def __init__(self, console: AdminConsole) -> None:
        self.console = console

    async def serve(self, client: LoginSession, login: LoginServer) -> None:
        """Log the client in (`login`: its startup packet is read), then answer its
        commands until it leaves."""
        await self._login(client, login)
        await self._loop(client)

    async def _login(self, client: LoginSession, login: LoginServer) -> None:
        proxy = client.proxy
        try:
            await authenticate(client, proxy.authenticator, login)
            if client.user not in proxy.app.settings.admin_users:
                raise AdminNotAllowed("not allowed")
        except (AuthFailed, AdminNotAllowed):
            proxy.stats.setup_failed_auth += 1
            raise
        client.cancel_key = proxy.app.register_cancel(client)
        client.transport_write(login.greeting(dict(GREETING_PARAMS), {}, client.cancel_key).data)
        client.admin_session = True  # the login timeout no longer applies
        client.logged_in()
        proxy.stats.setup_succeeded += 1
        log.info("admin console: %s logged in from %s", client.user, client.peer)

    async def _loop(self, client: LoginSession) -> None:
        skipping = False  # after an extended-protocol message, until Sync
        while True:
            msg = await client.recv()
            client.last_active = time.monotonic()
            kind = msg[0]
            if kind == ord("X"):
                client.fail_quietly("admin client sent Terminate")
                return
            if kind == ord("Q"):
                text = msg[5:-1].decode("utf-8", errors="replace")
                client.transport_write(await self.execute(text, client.user) + m.READY_IDLE)
            elif kind == ord("S"):
                skipping = False
                client.transport_write(m.READY_IDLE)
            elif kind in _EXTENDED:
                if not skipping:
                    text = "the admin console supports only the simple query protocol"
                    client.transport_write(m.error_response("0A000", text))
                skipping = True
            else:
                raise ProtocolError(f"unexpected message type {chr(kind)!r} on the admin console")

    async def execute(self, text: str, user: str = "") -> bytes:
        """Run one console command; the answer without the ReadyForQuery."""
        try:
            result = await self.console.run(text, user)
        except CommandError as exc:
            return m.error_response(exc.sqlstate, str(exc))
        if result is None:
            return m.message(b"I")  # EmptyQueryResponse
        return encode(result)
