"""The startup of a client session, from the first byte to the first ReadyForQuery.

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
import sys
from typing import TYPE_CHECKING

from sluice.errors import (
    AuthFailed,
    HostNotAllowed,
    ProtocolError,
    SluiceError,
    TLSRequired,
    UnknownDatabase,
)
from sluice.pg.auth import authenticate
from sluice.pg.startup import startup_settings, verify
from sluice.session.admission import REFUSAL_WAIT
from sluice.wire.pg import messages as m

if TYPE_CHECKING:
    from sluice.pg.client import ClientSession


async def handshake(client: ClientSession, refused: SluiceError | None = None) -> None:
    """Log `client` in; `refused`: the client is refused (a cap, a blocked address), and
    is told so once it has sent its startup packet (`sluice.session.admission`)."""
    if refused is not None:
        await _refuse(client, refused)
    startup = await _negotiate(client)
    if startup is None:
        return
    params = startup.params
    options = [name for name in params if name.startswith("_pq_.")]
    if startup.minor or options:
        client.transport_write(m.negotiate_protocol_version(0, options))
    client.user = sys.intern(params.get("user", ""))  # shared by every client of that user
    client.database = sys.intern(params.get("database", "") or client.user)
    if not client.user:
        raise ProtocolError("no PostgreSQL user name specified in startup packet")
    if params.get("replication", "false").lower() not in ("false", "0", "no", "off"):
        raise ProtocolError("replication connections are not supported by the proxy")
    proxy = client.proxy
    denied = proxy.admit(client.peer)
    if denied is not None:
        proxy.stats.setup_failed_auth += 1
        raise HostNotAllowed(denied)
    if proxy.config.require_tls and not client.tls:
        proxy.stats.setup_failed_tls += 1
        raise TLSRequired("SSL/TLS required: connect with sslmode=require")
    if client.database == proxy.app.settings.admin_database:
        await proxy.app.admin.serve(client)
        return
    try:
        await authenticate(client, proxy.authenticator)
    except AuthFailed:
        proxy.stats.setup_failed_auth += 1
        raise
    await _greet(client, params, client.user)


async def _refuse(client: ClientSession, refused: SluiceError) -> None:
    """Answer TLS and GSSAPI requests 'N', read the startup packet, then raise `refused`:
    libpq shows an error sent after the startup packet, not one in answer to its
    SSLRequest. A client that sends nothing usable in time gets the error all the same."""
    try:
        async with asyncio.timeout(REFUSAL_WAIT):
            for _ in range(3):  # an SSLRequest, a GSSENCRequest, the startup packet
                packet = m.parse_startup(await client.recv_startup())
                if not isinstance(packet, m.SSLRequest | m.GSSENCRequest):
                    break
                client.transport_write(m.SSL_NO)
    except (TimeoutError, SluiceError):
        pass
    finally:
        client.proxy.admission.lingered()
    raise refused


async def _negotiate(client: ClientSession) -> m.Startup | None:
    proxy = client.proxy
    while True:
        packet = m.parse_startup(await client.recv_startup())
        if isinstance(packet, m.SSLRequest):
            await _upgrade(client)
        elif isinstance(packet, m.GSSENCRequest):
            client.transport_write(m.SSL_NO)
        elif isinstance(packet, m.CancelRequest):
            await proxy.app.cancel(packet.pid, packet.secret)
            client.fail_quietly("cancel request handled")
            return None
        else:
            return packet


async def _upgrade(client: ClientSession) -> None:
    if client.tls:
        raise ProtocolError("SSLRequest received twice")
    ctx = client.proxy.tls_context
    if ctx is None:
        client.transport_write(m.SSL_NO)
        return
    if client.reader.pending:
        raise ProtocolError("unencrypted data after SSL request")
    client.transport_write(m.SSL_YES)
    await client.start_tls(ctx)
    client.proxy.stats.tls += 1


async def _greet(client: ClientSession, params: dict[str, str], user: str) -> None:
    proxy = client.proxy
    if not proxy.database_allowed(client.database):
        raise UnknownDatabase(f'database "{client.database}" does not exist')
    pool = proxy.pool_for(client.database, user)
    client.pool = pool
    client.stats = pool.pool.stats
    defaults = await pool.greeting_params()
    settings = startup_settings(params)
    shown = await verify(pool, proxy.verified_settings, settings) if settings else {}
    reported = dict(defaults)
    reported_names = {key.lower(): key for key in defaults}
    for name, value in shown.items():
        key = reported_names.get(name)
        if key is not None:
            reported[key] = value
        client.settings.set_startup(name, value, key is not None and defaults[key] == value)
    out = [m.auth_request(m.AUTH_OK)]
    out += [m.parameter_status(k, v) for k, v in reported.items()]
    server = await client.borrow_for_session() if proxy.config.pool.mode == "session" else None
    client.cancel_key = proxy.app.register_cancel(client, server.pid if server else 0)
    out.append(m.backend_key_data(*client.cancel_key))
    out.append(m.READY_IDLE)
    client.transport_write(b"".join(out))
    if server is not None:
        client.attach_session(server)
    proxy.stats.setup_succeeded += 1
