"""The login of a MySQL client, from Sluice's greeting to the OK that ends it.

1. Greeting: HandshakeV10 with a fresh scramble, a proxy-issued connection id
   (what `KILL QUERY <id>` names; counted up, as the server's are), the
   target's version with "-sluice" added, and the capabilities Sluice relays
   (CLIENT_SSL when the listener has TLS), and CLIENT_COMPRESS: a client that
   asks for it gets compressed packets once the login's final OK has gone out
   (`sluice.wire.mysql.compress`; Sluice's connections to the server stay
   uncompressed). It names the proxy's plugin, except mysql_clear_password:
   the greeting goes out before the client says whether it will use TLS, and a
   client told to use that plugin sends its password in the clear with its
   very first answer. Such a listener names mysql_native_password, and
   switches a client on TLS to mysql_clear_password afterwards.
2. The client's answer: a short SSLRequest first (then the TLS handshake and
   the full answer over TLS), or the HandshakeResponse41 itself, with the
   sequence ids of the protocol (1, or 2 after the SSLRequest): another is
   refused, as the server refuses it. `require_tls` refuses a plaintext login.
3. Authentication with the proxy's plugin (`LoginServer` decides each step;
   the `Authenticator` holds what to check against). An unknown user goes
   through the same steps and fails the same way as a wrong password; failed
   logins are throttled (`sluice.session.throttle`).
4. The pool for this user and capability profile; a database named in the
   login is checked once per pool, so a wrong one fails the login, as it would
   on the server.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from typing import TYPE_CHECKING, Protocol

from sluice.auth.base import Authenticator
from sluice.errors import AuthFailed, HostNotAllowed, ProtocolError, TLSRequired
from sluice.session.empty import SharedEmptyList
from sluice.session.services import Cancellable, ProxyHost
from sluice.session.views import Session
from sluice.wire.mysql import auth as a
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import handshake as hs
from sluice.wire.mysql import login as lg
from sluice.wire.mysql.messages import OkPacket, build_ok
from sluice.wire.mysql.packets import frame

if TYPE_CHECKING:
    from sluice.mysql.pool import MyPool
    from sluice.pool.pool import PoolStats


class LoginHost(ProxyHost, Protocol):
    """What a login needs of the proxy the client reached (`MyProxy`)."""

    @property
    def server_version(self) -> str: ...

    def capabilities(self) -> int: ...

    def pool_for(self, user: str, capabilities: int, charset: int) -> MyPool: ...

    async def before_password_check(self, client: Session) -> None: ...

    async def login_failed(self, client: Session, exc: AuthFailed) -> None: ...


class LoginSession(Session, Cancellable, Protocol):
    """What a login needs of the client session it logs in (`MyClientSession`)."""

    @property
    def proxy(self) -> LoginHost: ...

    pool: MyPool | None
    stats: PoolStats
    database: str
    capabilities: int
    charset: int
    program_name: str
    pinned: str
    role_changed: bool
    status: int
    _login_seq: int  # the sequence id of the proxy's next login packet
    _login_accept: list[bytes]  # the packets that end a successful login

    def write(self, data: bytes) -> None: ...

    async def receive(self, expect: int) -> tuple[int, bytes]: ...

    async def start_tls(self, ctx: ssl.SSLContext) -> None: ...

    def start_compression(self) -> None: ...

    def forget_session(self) -> None: ...


SERVER_STATUS = c.SERVER_STATUS_AUTOCOMMIT
# A session's `_login_accept` outside a login: shared, empty (the packets are not kept).
NO_PACKETS: list[bytes] = SharedEmptyList()
_INSECURE = (
    "Connections using insecure transport are prohibited while --require_secure_transport=ON."
)


async def login(client: LoginSession) -> None:
    proxy = client.proxy
    refused = proxy.admit(client.peer)
    if refused is not None:  # as a server answers a host it does not know: ERR, no greeting
        proxy.stats.setup_failed_auth += 1
        client._login_seq = 0
        raise HostNotAllowed(refused)
    scramble = a.make_scramble()
    client.cancel_key = proxy.app.register_cancel(client, proxy.app.next_connection_id())
    offered = proxy.capabilities()
    greeting = hs.Handshake(
        server_version=proxy.server_version,
        connection_id=client.cancel_key[0],
        scramble=scramble,
        capabilities=offered,
        charset=c.UTF8MB4_GENERAL_CI,
        status=SERVER_STATUS,
        auth_plugin=greeting_plugin(proxy.config.auth_method),
    )
    client.write(frame(hs.build_handshake(greeting), 0))
    response = await _response(client)
    client.user = response.user
    client.capabilities = response.capabilities & offered
    client.charset = response.charset
    client.program_name = response.attributes.get("program_name", "")
    if proxy.config.require_tls and not client.tls:
        proxy.stats.setup_failed_tls += 1
        raise TLSRequired(_INSECURE)
    try:
        await _authenticate(client, response, scramble)
    except AuthFailed:
        proxy.stats.setup_failed_auth += 1
        raise
    await _finish(client, response.database or "")


def greeting_plugin(auth_method: str) -> str:
    """The plugin the greeting names: never mysql_clear_password (see above)."""
    return c.NATIVE_PASSWORD if auth_method == c.CLEAR_PASSWORD else auth_method


async def _response(client: LoginSession) -> hs.HandshakeResponse:
    _, payload = await client.receive(1)
    answer = hs.parse_handshake_response(payload)
    if isinstance(answer, hs.SSLRequest):
        ctx = client.proxy.tls_context
        if ctx is None:
            raise ProtocolError("the client asked for TLS, which this listener does not offer")
        await client.start_tls(ctx)  # bytes already read are the TLS ClientHello
        client.proxy.stats.tls += 1
        _, payload = await client.receive(2)
        answer = hs.parse_handshake_response(payload)
        if isinstance(answer, hs.SSLRequest):
            raise ProtocolError("SSL request received twice")
    if not answer.capabilities & c.CLIENT_PROTOCOL_41:
        raise ProtocolError("the client does not speak the 4.1 protocol")
    return answer


async def _authenticate(
    client: LoginSession, response: hs.HandshakeResponse, scramble: bytes
) -> None:
    auth = client.proxy.authenticator
    server = lg.LoginServer(client.proxy.config.auth_method, scramble, tls=client.tls)
    action, data = server.start(response)
    while action == lg.SEND:
        client.write(frame(data, client._login_seq))
        _, payload = await client.receive((client._login_seq + 1) & 0xFF)
        action, data = server.feed(payload)
    await client.proxy.before_password_check(client)
    try:
        ok = await _check(auth, response.user, action, scramble, data)
        if not ok:
            raise AuthFailed("wrong password or unknown user")
    except AuthFailed as exc:
        await client.proxy.login_failed(client, exc)
        raise
    client._login_accept = server.accept(SERVER_STATUS)


async def _check(auth: Authenticator, user: str, action: int, scramble: bytes, data: bytes) -> bool:
    """Whether `data` proves `user` (an unknown user is checked against a decoy, and fails)."""
    known = auth.known(user)
    decoy = os.urandom(20)
    if action == lg.CHECK_NATIVE:
        ok = a.native_check(auth.mysql_native_hash(user) or a.native_hash(decoy), scramble, data)
    elif action == lg.CHECK_SHA2:
        ok = a.sha2_check(auth.mysql_sha2_hash(user) or a.sha2_hash(decoy), scramble, data)
    else:
        ok = await auth.check_cleartext(user, data)
    return ok and known


async def _finish(client: LoginSession, database: str) -> None:
    proxy = client.proxy
    pool = proxy.pool_for(client.user, client.capabilities, client.charset)
    client.pool = pool
    client.stats = pool.pool.stats
    if database:
        await pool.check_schema(database)
        client.database = database
    client.status = pool.default_status  # as a session of this server starts
    client._login_accept[-1] = build_ok(OkPacket(status=client.status))
    for payload in client._login_accept:
        client.write(frame(payload, client._login_seq))
        client._login_seq += 1
    client._login_accept = NO_PACKETS  # (not kept for the session's life)
    if client.capabilities & c.CLIENT_COMPRESS:
        client.start_compression()  # (after COM_CHANGE_USER it simply goes on)
    proxy.stats.setup_succeeded += 1


async def change_user_to(client: LoginSession, payload: bytes) -> None:
    """COM_CHANGE_USER: authenticate the new user afresh, then move to their pool.

    The client's first answer was made with the greeting's scramble, which is not
    kept; like MariaDB, Sluice always switches the client to a fresh scramble.
    """
    response = cmd.parse_change_user(payload, client.capabilities)
    scramble = a.make_scramble()
    fresh = dataclasses.replace(response, auth_plugin="", auth_response=b"")
    client._login_seq = 1
    client.user = response.user
    try:
        await _authenticate(client, fresh, scramble)
    except AuthFailed:
        client.proxy.stats.setup_failed_auth += 1
        raise
    client.charset = response.charset
    client.pinned = ""
    client.role_changed = False
    await _finish(client, response.database or "")
    client.forget_session()  # a fresh session of the new user, in its pool
