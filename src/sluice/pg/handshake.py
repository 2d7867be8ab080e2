"""The startup of a client session, from the first byte to the first ReadyForQuery.

The protocol is `sluice.wire.pg.login.LoginServer`'s: this drives it, moving
packets between the client and the machine, and decides what the proxy's
rules decide (network rules, TLS required, the admin console, the pool). The
machine returns what it learned (`Login`: who and which database, `Greeting`:
the startup settings shown) and only this driver writes it to the session.

0. A client refused before login (`sluice.session.admission`): TLS and GSSAPI
   requests are told 'N', and the refusal answers its startup packet.
1. SSLRequest: answer 'S' and upgrade to TLS (bytes the client sent after the
   request but before the handshake are refused: they would bypass TLS), or 'N'
   when the listener has no TLS. GSSENCRequest: always 'N'.
2. CancelRequest: forward to the connection running that client's query; close.
3. StartupMessage: a client asking for protocol 3.x, x > 0, or for protocol
   options (`_pq_.` parameters) is told what is spoken (NegotiateProtocolVersion:
   3.0, none), as the server tells it; refuse plaintext when `require_tls`;
   authenticate with the proxy's method (an unknown user goes through the same
   exchange and fails the same way as a wrong password, so users cannot be
   probed; failed logins are throttled, `sluice.session.throttle`). A client
   asking for the admin database is logged in by the admin console.
4. Startup settings: checked by the server (`sluice.pg.startup`); one it
   refuses ends the login with the server's error, as a direct login would.
5. Greeting: the pool's server parameters, with the client's own startup
   settings over them as the server shows them, a proxy-issued
   BackendKeyData, ReadyForQuery. In session mode the client's connection is
   borrowed first and the BackendKeyData carries its server's pid (what
   pg_backend_pid() and NOTIFY report), with a secret of Sluice's own: a
   cancel still goes through Sluice.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import TYPE_CHECKING, Protocol

from sluice.errors import (
    AuthFailed,
    HostNotAllowed,
    SluiceError,
    TLSRequired,
    UnknownDatabase,
)
from sluice.pg.auth import AuthHost, AuthSession, authenticate
from sluice.pg.settings import for_startup
from sluice.pg.startup import startup_settings, verify
from sluice.session.admission import REFUSAL_WAIT
from sluice.session.services import Cancellable, ProxyHost, Services
from sluice.wire.pg import login as lg

if TYPE_CHECKING:
    from sluice.pg.pgpool import PgPool
    from sluice.pg.server import ServerConn
    from sluice.pg.settings import SessionSettings
    from sluice.pg.startup import VerifiedSettings
    from sluice.pool.pool import PoolStats
    from sluice.session.admission import Admission
    from sluice.wire.pg.framing import MessageReader


class AdminGate(Protocol):
    """Where a client that asks for the admin database is served."""

    async def serve(self, client: LoginSession, login: lg.LoginServer) -> None: ...


class LoginServices(Services, Protocol):
    """The program's services a login uses, with the admin console."""

    @property
    def admin(self) -> AdminGate: ...


class LoginHost(ProxyHost, AuthHost, Protocol):
    """What a login needs of the proxy the client reached (`PgProxy`)."""

    @property
    def app(self) -> LoginServices: ...

    @property
    def verified_settings(self) -> VerifiedSettings: ...

    @property
    def admission(self) -> Admission: ...

    def database_allowed(self, database: str) -> bool: ...

    def pool_for(self, database: str, user: str) -> PgPool: ...


class LoginSession(AuthSession, Cancellable, Protocol):
    """What a login needs of the client session it logs in (`ClientSession`)."""

    @property
    def proxy(self) -> LoginHost: ...

    @property
    def reader(self) -> MessageReader: ...

    settings: SessionSettings

    pool: PgPool | None
    stats: PoolStats
    database: str
    tls: bool
    admin_session: bool

    def logged_in(self) -> None: ...

    async def recv_startup(self) -> bytes: ...

    async def start_tls(self, ctx: ssl.SSLContext) -> None: ...

    async def borrow_for_session(self) -> ServerConn: ...

    def attach_session(self, server: ServerConn) -> None: ...


async def handshake(client: LoginSession, refused: SluiceError | None = None) -> None:
    """Log `client` in; `refused`: the client is refused (a cap, a blocked address), and
    is told so once it has sent its startup packet (`sluice.session.admission`)."""
    proxy = client.proxy
    machine = lg.LoginServer(tls_offered=proxy.tls_context is not None, refusing=bool(refused))
    if refused is not None:
        await _refuse(client, machine)
        raise refused
    login = await _negotiate(client, machine)
    if login is None:
        return
    if login.reply:
        client.transport_write(login.reply)
    _apply(client, login)
    denied = proxy.admit(client.peer)
    if denied is not None:
        proxy.stats.setup_failed_auth += 1
        raise HostNotAllowed(denied)
    if proxy.config.require_tls and not client.tls:
        proxy.stats.setup_failed_tls += 1
        raise TLSRequired("SSL/TLS required: connect with sslmode=require")
    if client.database == proxy.app.settings.admin_database:
        await proxy.app.admin.serve(client, machine)
        return
    try:
        await authenticate(client, proxy.authenticator, machine)
    except AuthFailed:
        proxy.stats.setup_failed_auth += 1
        raise
    await _greet(client, machine, login.params)


def _apply(client: LoginSession, login: lg.Login) -> None:
    """What the startup packet told: who logs in, to which database."""
    client.user = sys.intern(login.user)  # shared by every client of that user
    client.database = sys.intern(login.database)


async def _refuse(client: LoginSession, machine: lg.LoginServer) -> None:
    """Answer TLS and GSSAPI requests 'N' and read the startup packet, for a while: libpq
    shows an error sent after the startup packet, not one in answer to its SSLRequest.
    A client that sends nothing usable in time gets the error all the same."""
    try:
        async with asyncio.timeout(REFUSAL_WAIT):
            while isinstance(step := machine.feed_refused(await client.recv_startup()), lg.Reply):
                client.transport_write(step.data)
    except (TimeoutError, SluiceError):  # (a bad length, the client left, or too slow)
        machine.refuse_now()
    finally:
        client.proxy.admission.lingered()


async def _negotiate(client: LoginSession, machine: lg.LoginServer) -> lg.Login | None:
    while True:
        packet = await client.recv_startup()
        step = machine.feed_startup(packet, client.reader.pending)
        if isinstance(step, lg.Login):
            return step
        if isinstance(step, lg.Cancel):
            await client.proxy.app.cancel(step.pid, step.secret)
            client.fail_quietly("cancel request handled")
            return None
        client.transport_write(step.data)
        if isinstance(step, lg.StartTLS):
            ctx = client.proxy.tls_context
            assert ctx is not None
            await client.start_tls(ctx)
            machine.tls_started()
            client.proxy.stats.tls += 1


async def _greet(client: LoginSession, machine: lg.LoginServer, params: dict[str, str]) -> None:
    proxy = client.proxy
    if not proxy.database_allowed(client.database):
        raise UnknownDatabase(f'database "{client.database}" does not exist')
    pool = proxy.pool_for(client.database, client.user)
    client.pool = pool
    client.stats = pool.pool.stats
    defaults = await pool.greeting_params()
    settings = startup_settings(params)
    shown = await verify(pool, proxy.verified_settings, settings) if settings else {}
    server = await client.borrow_for_session() if proxy.config.pool.mode == "session" else None
    client.cancel_key = proxy.app.register_cancel(client, server.pid if server else 0)
    greeting = machine.greeting(defaults, shown, client.cancel_key)
    client.settings = for_startup(greeting.settings)  # shared by the clients alike
    client.transport_write(greeting.data)
    if server is not None:
        client.attach_session(server)
    proxy.stats.setup_succeeded += 1
