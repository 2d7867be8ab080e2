"""The authenticator interface the client-side exchanges are written against.

An exchange first asks `method(user)` which proof to demand, then, depending
on it, compares the client's proof with `scram_verifier`/`md5_secret`, or hands
the cleartext to `check_cleartext` (where a token can be verified). Unknown
users get a decoy verifier from `scram_verifier`, so the exchange runs and fails
the same way as for a wrong password; `known(user)` then says no.
`backend_login` gives the database credentials for an authenticated user; it
is asked on every new database connection, so a changed secret applies at once,
and may raise a `ServerError` when the proxy may not reach its database.

An `Authority` is where a proxy's users and rules come from: the configuration
file (`FileAuthority`) or the control plane (IAM tokens, Secrets Manager
secrets, security groups). Each proxy asks it for its authenticator and, for
every new client, whether the client's address is admitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sluice.wire.pg.scram import ScramVerifier

if TYPE_CHECKING:
    from sluice.config import ProxyConfig

SCRAM = "scram-sha-256"
MD5 = "md5"
CLEARTEXT = "cleartext"
MYSQL_NATIVE = "mysql_native_password"
MYSQL_SHA2 = "caching_sha2_password"
MYSQL_CLEAR = "mysql_clear_password"


@dataclass(frozen=True, slots=True)
class BackendLogin:
    """The role and password Sluice logs in to the database with."""

    user: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"BackendLogin(user={self.user!r})"


class Authenticator(Protocol):
    def method(self, user: str) -> str:
        """SCRAM, MD5 or CLEARTEXT: the proof to demand from this user."""
        ...

    def known(self, user: str) -> bool: ...

    def scram_verifier(self, user: str) -> ScramVerifier:
        """The user's verifier, or a stable decoy for an unknown user."""
        ...

    def md5_secret(self, user: str) -> str | None:
        """PostgreSQL's stored md5 form ("md5" + hex), None for an unknown user."""
        ...

    def mysql_native_hash(self, user: str) -> bytes | None:
        """SHA1(SHA1(password)) for mysql_native_password, None for an unknown user."""
        ...

    def mysql_sha2_hash(self, user: str) -> bytes | None:
        """SHA256(SHA256(password)) for caching_sha2_password, None for an unknown user."""
        ...

    async def check_cleartext(self, user: str, password: bytes) -> bool:
        """Whether `password` (as the client sent it) proves `user`."""
        ...

    def backend_login(self, user: str) -> BackendLogin | None: ...


class Authority(Protocol):
    def authenticator(self, config: ProxyConfig) -> Authenticator:
        """The authenticator of a proxy, asked again whenever its configuration changes."""
        ...

    def admit(self, config: ProxyConfig, client_ip: str) -> str | None:
        """None when the proxy's network rules admit a client at `client_ip`, else why not."""
        ...
