"""Which new client connections a proxy takes: caps on clients, and on clients still logging in.

A connection that has not logged in costs the proxy a socket, a buffer and a
coroutine, and proves nothing: an attacker opens them by the thousand. So a
proxy holds at most `max_client_connections` clients, of which at most
`max_logins` are still logging in, and at most `max_logins_per_address` of
those from one client address (one attacker cannot take every login place);
the process as a whole holds no more clients than its file descriptor limit
allows (`sluice.fdlimit`). A connection beyond a cap is refused with the
engine's "too many connections" error (PostgreSQL 53300, MySQL 1040), and
`login_timeout` closes a login that takes too long. Logging in ends with the
first ready state, or with the admin console's greeting.

A MySQL client is refused at once, before anything is read: the server speaks
first. A PostgreSQL client speaks first, and libpq's first words are an
SSLRequest: an error in answer to it is shown only as "server sent an error
response during SSL exchange". So a refused PostgreSQL client is told 'N' (no
TLS), its startup packet is read (bounded, within `REFUSAL_WAIT` seconds),
and then it gets the error, which libpq shows. At most `MAX_LINGERING` such
refusals wait at a time per proxy; beyond, and when the process is out of
file descriptors, the refusal is sent at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.errors import LoginThrottled, OutOfFiles, TooManyConnections

if TYPE_CHECKING:
    from sluice.config import ProxyConfig

TOO_MANY = "sorry, too many clients already"
MAX_LINGERING = 64  # refused PostgreSQL clients awaited for their startup packet at a time
REFUSAL_WAIT = 2.0  # seconds they have to send it (libpq sends it at once)


def address_of(peer: str) -> str:
    """The address part of a peer written "address:port"."""
    return peer.rpartition(":")[0] or peer


class Admission:
    """A proxy's clients still logging in, in all and by address."""

    __slots__ = ("by_address", "lingering", "logins")

    def __init__(self) -> None:
        self.logins = 0
        self.by_address: dict[str, int] = {}
        self.lingering = 0  # refused clients whose startup packet is awaited

    def refusal(self, config: ProxyConfig, clients: int, address: str) -> TooManyConnections | None:
        """Why a new client from `address` is refused, when `clients` are connected; None
        when it may log in."""
        if clients >= config.max_client_connections:
            limit = config.max_client_connections
            return TooManyConnections(TOO_MANY, f"max_client_connections ({limit}) is reached")
        if self.logins >= config.max_logins:
            return TooManyConnections(
                "sorry, too many clients are logging in",
                f"max_logins ({config.max_logins}) clients have not finished logging in",
            )
        if self.by_address.get(address, 0) >= config.max_logins_per_address:
            return TooManyConnections(
                "sorry, too many clients are logging in from this address",
                f"max_logins_per_address ({config.max_logins_per_address}) clients from"
                f" {address} have not finished logging in",
            )
        return None

    def linger(self, refused: TooManyConnections | LoginThrottled) -> bool:
        """Whether a refused client may be awaited for its startup packet (a place is
        taken: give it back with `lingered`)."""
        if isinstance(refused, OutOfFiles) or self.lingering >= MAX_LINGERING:
            return False
        self.lingering += 1
        return True

    def lingered(self) -> None:
        self.lingering -= 1

    def enter(self, address: str) -> None:
        self.logins += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1

    def leave(self, address: str) -> None:
        self.logins -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]
