"""The PostgreSQL password exchanges, as the server side: SCRAM-SHA-256, md5, cleartext.

The exchange itself is `sluice.wire.pg.login.LoginServer`'s; this drives it:
it asks the proxy's `Authenticator` what to check against (never seeing a
stored password itself), moves messages between the client and the machine,
and waits the throttle's turn before the password is checked. A failure raises
`AuthFailed`, which the client sees as PostgreSQL's FATAL 28P01, the same for
a wrong password and an unknown user. Cleartext is refused without TLS: the
password would cross the network.
"""

from __future__ import annotations

from typing import Protocol

from sluice.auth.base import MD5, SCRAM, Authenticator
from sluice.errors import AuthFailed
from sluice.session.views import Session
from sluice.wire.pg.login import LoginServer, Password


class AuthHost(Protocol):
    """What a password exchange needs of the proxy: the throttle on failed logins."""

    async def before_password_check(self, client: Session) -> None: ...

    async def login_failed(self, client: Session, exc: AuthFailed) -> None: ...


class AuthSession(Session, Protocol):
    """What a password exchange needs of the client session (`ClientSession`)."""

    @property
    def proxy(self) -> AuthHost: ...

    def transport_write(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...


async def authenticate(client: AuthSession, auth: Authenticator, login: LoginServer) -> None:
    """Run the exchange the authenticator asks for; raise AuthFailed unless it succeeds
    (after the pause the proxy's throttle puts on a failure)."""
    user = login.user
    try:
        client.transport_write(_start(login, auth, user))
        while not isinstance(step := login.feed(await client.recv()), Password):
            client.transport_write(step)
        await client.proxy.before_password_check(client)
        ok = login.cleartext and await auth.check_cleartext(user, step.data)
        client.transport_write(login.verify(cleartext_ok=ok))
    except AuthFailed as exc:
        await client.proxy.login_failed(client, exc)
        raise


def _start(login: LoginServer, auth: Authenticator, user: str) -> bytes:
    method = auth.method(user)
    if method == SCRAM:
        return login.start_scram(auth.scram_verifier(user), auth.known(user))
    if method == MD5:
        return login.start_md5(auth.md5_secret(user))
    return login.start_cleartext()
