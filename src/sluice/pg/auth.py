"""The PostgreSQL password exchanges, as the server side: SCRAM-SHA-256, md5, cleartext.

Each exchange asks the proxy's `Authenticator` what to check against and never
sees a stored password itself. A failure raises `AuthFailed`, which the client
sees as PostgreSQL's FATAL 28P01, the same for a wrong password and an unknown
user. Cleartext is refused without TLS: the password would cross the network.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sluice.auth.base import MD5, SCRAM, Authenticator
from sluice.errors import AuthFailed, ProtocolError, TLSRequired
from sluice.wire.pg import messages as m
from sluice.wire.pg.md5 import md5_check, md5_hash
from sluice.wire.pg.scram import MECHANISM, ScramServer

if TYPE_CHECKING:
    from sluice.pg.client import ClientSession


async def authenticate(client: ClientSession, auth: Authenticator) -> None:
    """Run the exchange the authenticator asks for; raise AuthFailed unless it succeeds
    (after the pause the proxy's throttle puts on a failure)."""
    method = auth.method(client.user)
    try:
        if method == SCRAM:
            await _scram(client, auth)
        elif method == MD5:
            await _md5(client, auth)
        else:
            await _cleartext(client, auth)
    except AuthFailed as exc:
        await client.proxy.login_failed(client, exc)
        raise


async def _scram(client: ClientSession, auth: Authenticator) -> None:
    server = ScramServer(auth.scram_verifier(client.user))
    client.transport_write(m.auth_sasl((MECHANISM,)))
    mech, data = m.parse_sasl_initial(_password(await client.recv()))
    if mech != MECHANISM:
        raise AuthFailed(f"unsupported SASL mechanism {mech}")
    client.transport_write(m.auth_request(m.AUTH_SASL_CONTINUE, server.handle_first(data)))
    proof = _password(await client.recv())
    await client.proxy.before_password_check(client)
    final = server.handle_final(proof)
    if not auth.known(client.user):
        raise AuthFailed("unknown user")
    client.transport_write(m.auth_request(m.AUTH_SASL_FINAL, final))


async def _md5(client: ClientSession, auth: Authenticator) -> None:
    salt = os.urandom(4)
    client.transport_write(m.auth_request(m.AUTH_MD5, salt))
    answer = _password(await client.recv()).rstrip(b"\x00")
    await client.proxy.before_password_check(client)
    stored = auth.md5_secret(client.user)
    decoy = md5_hash(client.user, os.urandom(8).hex())
    if not md5_check(stored or decoy, salt, answer) or stored is None:
        raise AuthFailed("wrong password")


async def _cleartext(client: ClientSession, auth: Authenticator) -> None:
    if not client.tls:
        raise TLSRequired("cleartext password authentication requires TLS")
    client.transport_write(m.auth_request(m.AUTH_CLEARTEXT))
    answer = _password(await client.recv()).rstrip(b"\x00")
    await client.proxy.before_password_check(client)
    if not await auth.check_cleartext(client.user, answer):
        raise AuthFailed("wrong password")


def _password(msg: bytes) -> bytes:
    if msg[0] != ord("p"):
        raise ProtocolError("expected a password message")
    return msg[5:]
