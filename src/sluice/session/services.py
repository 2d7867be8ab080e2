"""What proxies, pools and sessions need of the running program, and nothing more.

The engines never see `App`: each proxy is handed an object that has these
services (`App` has them), so the layers below the program depend on this
small protocol rather than on the program that holds them.
"""

from __future__ import annotations

import ssl
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sluice.auth.base import Authenticator, Authority
    from sluice.config import ProxyConfig, Settings
    from sluice.pool.budget import Budgets
    from sluice.session.views import ProxyStats
    from sluice.workers.slot import WorkerSlot


class Cancellable(Protocol):
    """A client session that can be told to cancel what it is running."""

    cancel_key: tuple[int, int]

    @property
    def peer(self) -> str: ...

    async def cancel_running(self) -> None: ...


class Services(Protocol):
    """The program's shared services, as proxies, pools and sessions use them."""

    @property
    def settings(self) -> Settings: ...

    @property
    def authority(self) -> Authority: ...

    @property
    def budgets(self) -> Budgets: ...

    @property
    def slot(self) -> WorkerSlot:
        """This process's place among the workers sharing the listeners."""

    @property
    def stopping(self) -> bool:
        """Shutting down: no new borrowing."""

    @property
    def client_capacity(self) -> int:
        """Clients all proxies may hold together (what the open file limit allows)."""

    def client_count(self) -> int:
        """Client connections of every proxy."""

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run a background coroutine, keeping a reference until it ends."""

    def register_cancel(self, client: Cancellable, pid: int = 0) -> tuple[int, int]:
        """A proxy-issued (id, secret) for a client (see `App.register_cancel`)."""

    def unregister_cancel(self, client: Cancellable) -> None: ...

    def next_connection_id(self) -> int:
        """A MySQL connection id for a new client."""

    def cancel_target(self, pid: int) -> Cancellable | None:
        """The client that holds the proxy-issued id `pid`."""

    async def cancel(self, pid: int, secret: int) -> None:
        """Forward a client's cancel to the connection running its query, and no other."""


class ProxyHost(Protocol):
    """What a client's login needs of the proxy it reached, whatever the engine."""

    @property
    def app(self) -> Services: ...

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def stats(self) -> ProxyStats: ...

    @property
    def authenticator(self) -> Authenticator: ...

    @property
    def tls_context(self) -> ssl.SSLContext | None: ...

    def admit(self, peer: str) -> str | None:
        """Why the proxy refuses a client from `peer` (its network rules), or None."""
