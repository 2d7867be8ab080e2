"""What every proxy is, whatever its engine: a listener, its clients, its pools.

An engine (PostgreSQL, MySQL) subclasses `Proxy` with how to make a client
session and a pool; listening, admitting and counting clients, throttling
failed logins, reloading, timing out idle clients and slow logins, and shutting
down are the same for both, and so are the stats the metrics exporter and the
admin console read.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import ssl
import time
from typing import Generic, Protocol, TypeVar

from sluice import tls
from sluice.auth.base import Authenticator
from sluice.config import ProxyConfig
from sluice.errors import AuthFailed, LoginThrottled, OutOfFiles, TooManyConnections
from sluice.net.endpoints import Listener, listen
from sluice.observe.logs import Occasional, clip
from sluice.observe.redact import redact
from sluice.pool.budget import Share
from sluice.pool.pool import PoolLimits, PoolStats
from sluice.session.admission import Admission
from sluice.session.frontend import Switches
from sluice.session.pooling import limits_for
from sluice.session.services import Services
from sluice.session.throttle import AuthThrottle
from sluice.session.views import ProxyStats, Session

log = logging.getLogger("sluice.proxy")
statement_log = logging.getLogger("sluice.statements")  # debug_logging's lines

# What a client idle in a transaction too long is told (PostgreSQL's own words, 25P03).
IDLE_IN_TRANSACTION = "terminating connection due to idle-in-transaction timeout"


class Lending(Protocol):
    """What a proxy does with the engine-agnostic pool inside each of its pools."""

    def renew(self, limits: PoolLimits, share: Share | None = None) -> None: ...

    def maintain(self) -> None: ...

    def close(self, reason: str) -> None: ...


class ProxyPool(Protocol):
    """What a proxy needs of its pools."""

    @property
    def pool(self) -> Lending: ...

    @property
    def user(self) -> str: ...


PoolT = TypeVar("PoolT", bound=ProxyPool)


class Proxy(abc.ABC, Generic[PoolT]):
    """Listener, clients and pools of one configured proxy; engines fill in the rest.

    `app` is the program's shared services (`Services`), never the program itself.
    """

    engine = ""

    def __init__(self, app: Services, config: ProxyConfig) -> None:
        self.app = app
        self.config = config
        self.clients: set[Session] = set()
        self.pools: dict[tuple[str, str], PoolT] = {}
        self.stats = ProxyStats()
        self.admission = Admission()
        self.throttle = AuthThrottle(config.name, config.auth_failure_limit, config.auth_block_time)
        self._refusals = Occasional(log)
        self.authenticator: Authenticator = app.authority.authenticator(config)
        self.startup_stats = PoolStats()  # what clients count into before they have a pool
        self.server: Listener | None = None
        self.share: Share = self._join_budget(config)
        self.tls_context: ssl.SSLContext | None = tls.server_context(
            config.tls_cert_file, config.tls_key_file, app.settings.state_dir
        )
        self.backend_tls = tls.client_context(config.target)
        # what client sessions read before each statement or transaction
        self.switches = Switches(config.debug_logging, config.pool.mode == "session")

    @property
    def debug_logging(self) -> bool:
        return self.switches.debug_logging

    @abc.abstractmethod
    def new_session(self) -> Session:
        """A protocol object for one accepted client connection."""

    async def start(self) -> None:
        if self.share.limit == 0:  # several workers, fewer connections: leave it to others
            log.info(
                "proxy %s: this worker's part of max_connections is 0: the other workers serve it",
                self.config.name,
            )
            return
        self.server = await listen(
            self.new_session,
            self.config.listen_host,
            self.config.listen_port,
            reuse_port=not self.app.slot.single,  # the workers share the port (sluice.workers)
            backlog=4096,
        )
        log.info(
            "%s proxy %s listening on %s:%d -> %s:%d",
            self.engine,
            self.config.name,
            self.config.listen_host,
            self.config.listen_port,
            self.config.target.host,
            self.config.target.port,
        )

    def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()

    # ---- clients ----

    def admit(self, peer: str) -> str | None:
        """None when the network rules admit a client from `peer` ("ip:port"), else why not."""
        return self.app.authority.admit(self.config, peer.rpartition(":")[0] or peer)

    def client_connected(self, client: Session) -> TooManyConnections | LoginThrottled | None:
        """Take a new client, or say why not (a cap reached, a blocked address): the
        session then answers with that error and closes (`sluice.session.admission`)."""
        self.stats.received += 1
        refused = self._refusal(client.address)
        if refused is not None:
            self.stats.refused += 1
            return refused
        self.clients.add(client)
        self.admission.enter(client.address)
        client.counted_login = True
        return None

    def _refusal(self, address: str) -> TooManyConnections | LoginThrottled | None:
        now = time.monotonic()
        blocked = self._blocked(address, now)
        if blocked is not None:
            return blocked
        capacity = self.app.client_capacity
        refused: TooManyConnections | None
        if self.app.client_count() >= capacity:
            refused = OutOfFiles(
                "sorry, too many clients already",
                f"the proxy holds as many clients ({capacity}) as its open file limit allows",
            )
        else:
            refused = self.admission.refusal(self.config, len(self.clients), address)
        if refused is not None:
            self._refusals.note(
                refused.detail.partition(" (")[0], now,
                f"proxy {self.config.name}: refusing new clients: {refused.detail}",
            )  # fmt: skip
        return refused

    def client_logged_in(self, client: Session) -> None:
        """The client has logged in: it no longer counts among the logins."""
        if client.counted_login:
            client.counted_login = False
            self.admission.leave(client.address)

    def client_disconnected(self, client: Session) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.client_logged_in(client)
        self.app.unregister_cancel(client)

    # ---- failed logins ----

    async def before_password_check(self, client: Session) -> None:
        """Wait for this address's turn to have a password checked; LoginThrottled if the
        address is blocked meanwhile. Called once the client has sent its password, so
        failures counted by earlier checks count for this one."""
        now = time.monotonic()
        at = self.throttle.check_at(client.address, now)
        if at > now:
            await asyncio.sleep(at - now)
            now = time.monotonic()
        blocked = self._blocked(client.address, now)
        if blocked is not None:
            raise blocked

    def _blocked(self, address: str, now: float) -> LoginThrottled | None:
        seconds = self.throttle.blocked_for(address, now)
        if not seconds:
            return None
        text = f"too many failed logins from {address}: refused for {seconds:.0f} more seconds"
        return LoginThrottled(text)

    async def login_failed(self, client: Session, exc: AuthFailed) -> None:
        """Count a failed login, then wait the pause that its user's failures cost."""
        self.stats.auth_failures += 1
        log.debug(
            "proxy %s: failed login of user %s from %s: %s",
            self.config.name, clip(client.user), client.peer, exc,
        )  # fmt: skip
        wait = self.throttle.failed(client.address, client.user, time.monotonic())
        if wait:
            await asyncio.sleep(wait)

    # ---- the target's connection budget ----

    def _join_budget(self, config: ProxyConfig) -> Share:
        target = config.target
        return self.app.budgets.join(target.host, target.port, config.name, config.pool)

    @property
    def target_max_connections(self) -> int | None:
        """The target's max_connections, once a connection has told it."""
        return self.share.budget.server_max

    def log_statement(self, client: Session, sql: bytes) -> None:
        """debug_logging: one statement a client sent, redacted and bounded."""
        statement_log.info(
            "proxy %s client %s user=%s: %s", self.config.name, client.peer, client.user,
            redact(sql),
        )  # fmt: skip

    def learned_max_connections(self, value: int) -> None:
        """The target's max_connections is known: percent limits take their real size."""
        self.share.budget.learned_server_max(value)

    # ---- reload and shutdown ----

    def apply(self, config: ProxyConfig) -> None:
        """New settings for the same listener: pools renew (old connections drain)."""
        if config == self.config:
            return
        old, self.config = self.config, config
        if (old.users, old.auth_method) != (config.users, config.auth_method):
            self.authenticator = self.app.authority.authenticator(config)
        share = self._apply_budget(old, config)
        if old.target != config.target or old.users != config.users:
            for pool in self.pools.values():
                pool.pool.renew(limits_for(config), share)
            self.pools = {k: p for k, p in self.pools.items() if config.user(p.user) is not None}
        elif old.pool != config.pool:
            for pool in self.pools.values():
                pool.pool.renew(limits_for(config))
        if (old.tls_cert_file, old.tls_key_file) != (config.tls_cert_file, config.tls_key_file):
            self.tls_context = tls.server_context(
                config.tls_cert_file, config.tls_key_file, self.app.settings.state_dir
            )
        self.backend_tls = tls.client_context(config.target)
        self.switches.debug_logging = config.debug_logging
        self.switches.session_mode = config.pool.mode == "session"
        self.throttle.configure(config.auth_failure_limit, config.auth_block_time)

    def _apply_budget(self, old: ProxyConfig, config: ProxyConfig) -> Share:
        """The share of the (maybe new) target's budget that the pools now draw from."""
        if (old.target.host, old.target.port) != (config.target.host, config.target.port):
            self.share.budget.leave(self.share)
            self.share = self._join_budget(config)
        elif old.pool != config.pool:
            self.share.update(config.pool)
        return self.share

    def maintain(self) -> None:
        for pool in self.pools.values():
            pool.pool.maintain()
        self._close_idle_clients(self.config.pool.idle_client_timeout)
        self.throttle.maintain(time.monotonic())
        if self.config.pool.idle_transaction_timeout:
            self._close_idle_transactions(self.config.pool.idle_transaction_timeout)

    def _close_idle_clients(self, timeout: float) -> None:
        now = time.monotonic()
        # a login may take login_timeout, or the idle client timeout when that is shorter
        login_timeout = self.config.login_timeout
        login_timeout = min(login_timeout, timeout) if timeout else login_timeout
        for client in list(self.clients):
            if timeout and client.idle and now - client.last_active > timeout:
                client.fail_with("closing idle client connection (idle client timeout)", "57P05")
            elif (
                client.wait_timeout
                and client.idle
                and now - client.last_active > client.wait_timeout
            ):
                # it holds no connection the server could time out: as the server would
                client.fail_quietly("the session's wait_timeout passed")
            elif client.logging_in and now - client.connected_at > login_timeout:
                client.fail_with("client did not complete its login in time", "08P01")

    def _close_idle_transactions(self, timeout: float) -> None:
        """Close clients that hold a connection in a transaction and have sent nothing for
        `timeout` since its last reply; the close rolls the transaction back. Replies are
        not timed on the relay path: a request seen still running at one check makes the
        wait start no earlier than the next (never early; up to two checks late)."""
        now = time.monotonic()
        for client in list(self.clients):
            if not client.in_transaction:
                continue
            if not client.idle_in_transaction:
                client.quiet_from = math.inf  # a request runs: the client is not the one late
                continue
            if client.quiet_from == math.inf:
                client.quiet_from = now
            if now - max(client.last_active, client.quiet_from) >= timeout:
                client.fail_with(IDLE_IN_TRANSACTION, "25P03")

    @property
    def busy(self) -> int:
        """Clients in the middle of a transaction (what a graceful stop waits for)."""
        return sum(1 for c in self.clients if c.in_transaction)

    def close(self, reason: str) -> None:
        for client in list(self.clients):
            client.fail_with(reason, "57P01")
        for pool in self.pools.values():
            pool.pool.close(reason)
        self.share.budget.leave(self.share)
