"""Stats snapshots: the one view of the running proxies that every reader shares.

The relay only bumps counters and `Histogram.observe`s latencies; it never
formats anything. Readers (the Prometheus exporter, the admin console) call
`take_snapshot` and get frozen dataclasses of every proxy and pool, so a
scrape and `SHOW POOLS` taken at the same moment agree. `list_clients` and
`list_servers` are the per-connection views behind `SHOW CLIENTS` and
`SHOW SERVERS`; the exporter does not use them (their size grows with the
number of connections).

Everything here runs on the event loop thread, between two callbacks, so the
numbers read are consistent with each other without locks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sluice.observe.histogram import HistogramSnapshot
from sluice.session.views import Running

if TYPE_CHECKING:
    from sluice.config import ProxyConfig
    from sluice.pool.budget import Budget
    from sluice.session.views import ClientView, PoolView, ProxyView
    from sluice.workers.slot import WorkerSlot


class Siblings(Protocol):
    """The other worker processes, as the readers ask them (`sluice.workers.peers.Peers`)."""

    async def snapshot(self, local: Snapshot) -> Snapshot: ...

    async def lists(self) -> tuple[list[ClientInfo], list[ServerInfo]]: ...

    async def reload(self) -> list[str]: ...

    async def pause(self, database: str | None) -> int:
        """PAUSE in every sibling (returns once each is paused): how many pools matched."""

    async def resume(self, database: str | None) -> int: ...


class Gathering(Running, Protocol):
    """The running program with its place among the workers (`App`)."""

    @property
    def slot(self) -> WorkerSlot: ...

    @property
    def peers(self) -> Siblings | None: ...


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """One pool (proxy, database, user): its connections, its clients and its counters."""

    proxy: str
    engine: str
    database: str
    user: str
    mode: str
    paused: bool
    clients_active: int  # logged in, not waiting (linked to a server or idle)
    clients_waiting: int  # waiting for a connection to be lent
    max_wait: float  # seconds the longest-waiting client has waited
    servers: int  # open backend connections
    borrowed: int
    idle: int
    opening: int
    in_transaction: int
    pinned: int
    max_size: int
    borrow_count: int
    borrow_wait_total: float
    timeouts: int
    connects: int
    connect_failures: int
    transactions: int
    queries: int
    query_time_total: float
    pins: int
    borrow_latency: HistogramSnapshot
    query_latency: HistogramSnapshot


@dataclass(frozen=True, slots=True)
class ProxySnapshot:
    """One proxy listener: its client counters and its pools."""

    name: str
    engine: str
    listen: str
    clients: int
    clients_login: int  # still in the handshake
    clients_admin: int  # on the admin console
    received: int
    setup_succeeded: int
    setup_failed_auth: int
    setup_failed_tls: int
    tls: int
    auth_failures: int  # wrong passwords and unknown users
    refused: int  # connections refused at connect: a cap reached, or a blocked address
    pools: tuple[PoolSnapshot, ...]


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """One target's connection budget, shared by every pool of every proxy pointing at it."""

    target: str  # host:port
    proxies: tuple[str, ...]
    connections: int  # open or opening, all pools
    limit: int
    idle: int
    max_idle: int
    server_max_connections: int | None  # the server's own, once a connection told it
    pools_waiting: int  # pools queued for room
    evictions: int  # idle connections closed to make room for another pool


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float  # wall clock
    started_at: float  # wall clock
    proxies: tuple[ProxySnapshot, ...]
    targets: tuple[TargetSnapshot, ...]

    def pools(self) -> Iterator[PoolSnapshot]:
        for proxy in self.proxies:
            yield from proxy.pools


def take_snapshot(app: Running) -> Snapshot:
    """Every proxy and pool of `app`, read at one instant."""
    now = time.monotonic()
    proxies = tuple(_proxy_snapshot(p, now) for p in list(app.proxies.values()))
    targets = tuple(_target_snapshot(b) for b in list(app.budgets.by_target.values()))
    return Snapshot(time.time(), app.started_at, proxies, targets)


def _target_snapshot(budget: Budget) -> TargetSnapshot:
    return TargetSnapshot(
        target=budget.target,
        proxies=tuple(s.name for s in budget.shares),
        connections=budget.used,
        limit=budget.limit,
        idle=budget.idle,
        max_idle=budget.max_idle,
        server_max_connections=budget.server_max,
        pools_waiting=len(budget.queue),
        evictions=budget.evictions,
    )


def _proxy_snapshot(proxy: ProxyView, now: float) -> ProxySnapshot:
    active: dict[PoolView, int] = {}
    waiting: dict[PoolView, int] = {}
    max_wait: dict[PoolView, float] = {}
    login = admin = 0
    for client in proxy.clients:
        pool = client.pool
        if client.state.value == "startup":
            login += 1
            admin += client.admin_session
        elif pool is None:
            continue
        elif client.state.value == "waiting":
            waiting[pool] = waiting.get(pool, 0) + 1
            max_wait[pool] = max(max_wait.get(pool, 0.0), now - client.last_active)
        elif client.state.value in ("ready", "checking", "describing"):
            active[pool] = active.get(pool, 0) + 1
    cfg, stats = proxy.config, proxy.stats
    pools = tuple(
        _pool_snapshot(cfg, p, active.get(p, 0), waiting.get(p, 0), max_wait.get(p, 0.0))
        for p in list(proxy.pools.values())
    )
    return ProxySnapshot(
        name=cfg.name,
        engine=cfg.engine,
        listen=f"{cfg.listen_host}:{cfg.listen_port}",
        clients=len(proxy.clients),
        clients_login=login - admin,
        clients_admin=admin,
        received=stats.received,
        setup_succeeded=stats.setup_succeeded,
        setup_failed_auth=stats.setup_failed_auth,
        setup_failed_tls=stats.setup_failed_tls,
        tls=stats.tls,
        auth_failures=stats.auth_failures,
        refused=stats.refused,
        pools=pools,
    )


def _pool_snapshot(
    config: ProxyConfig, pool: PoolView, active: int, waiting: int, max_wait: float
) -> PoolSnapshot:
    numbers = pool.snapshot()
    stats = pool.pool.stats
    return PoolSnapshot(
        proxy=config.name,
        engine=config.engine,
        database=pool.database,
        user=pool.user,
        mode=config.pool.mode,
        paused=pool.pool.paused,
        clients_active=active,
        clients_waiting=waiting,
        max_wait=max_wait,
        servers=len(pool.servers),
        borrowed=int(numbers["borrowed"]),
        idle=int(numbers["idle"]),
        opening=int(numbers["opening"]),
        in_transaction=int(numbers["in_transaction"]),
        pinned=int(numbers["pinned"]),
        max_size=int(numbers["max"]),
        borrow_count=stats.borrow_count,
        borrow_wait_total=stats.borrow_wait_total,
        timeouts=stats.timeouts,
        connects=stats.connects,
        connect_failures=stats.connect_failures,
        transactions=stats.transactions,
        queries=stats.queries,
        query_time_total=stats.query_time_total,
        pins=stats.pins,
        borrow_latency=stats.borrow_latency.snapshot(),
        query_latency=stats.query_latency.snapshot(),
    )


# ---- per-connection views (admin console only) ----


@dataclass(frozen=True, slots=True)
class ClientInfo:
    proxy: str
    user: str
    database: str
    state: str
    addr: str
    port: str
    connect_time: float  # wall clock
    request_time: float  # wall clock of the last request
    wait: float  # seconds waiting for a connection (0 unless waiting)
    tls: bool
    pinned: str  # the pin reason, "" if not pinned
    server_pid: int | None
    application_name: str


@dataclass(frozen=True, slots=True)
class ServerInfo:
    proxy: str
    user: str
    database: str
    state: str
    addr: str
    port: str
    pid: int
    connect_time: float  # wall clock
    idle_since: float  # wall clock
    prepared: int  # server-side prepared statements this connection holds
    client: str  # peer address of the client it is lent to, "" if none


def split_peer(peer: str) -> tuple[str, str]:
    host, sep, port = peer.rpartition(":")
    return (host, port) if sep else (peer, "")


def _client_state(client: ClientView) -> str:
    if client.admin_session:
        return "admin"
    if client.state.value == "ready":
        return "active" if client.server is not None else "idle"
    return str(client.state.value)


def list_clients(app: Running) -> list[ClientInfo]:
    """Every connected client of every proxy (admin sessions included)."""
    now, wall = time.monotonic(), time.time()
    rows: list[ClientInfo] = []
    for proxy in list(app.proxies.values()):
        for client in list(proxy.clients):
            addr, port = split_peer(client.peer)
            waiting = client.state.value == "waiting"
            rows.append(
                ClientInfo(
                    proxy=proxy.config.name,
                    user=client.user,
                    database=client.database,
                    state=_client_state(client),
                    addr=addr,
                    port=port,
                    connect_time=wall - (now - client.connected_at),
                    request_time=wall - (now - client.last_active),
                    wait=now - client.last_active if waiting else 0.0,
                    tls=client.tls,
                    pinned=client.pinned,
                    server_pid=client.server.backend_pid if client.server else None,
                    application_name=client.application_name,
                )
            )
    return rows


def list_servers(app: Running) -> list[ServerInfo]:
    """Every open backend connection of every pool."""
    now, wall = time.monotonic(), time.time()
    rows: list[ServerInfo] = []
    for proxy in list(app.proxies.values()):
        for pool in list(proxy.pools.values()):
            for server in list(pool.servers):
                addr, port = split_peer(server.peer)
                rows.append(
                    ServerInfo(
                        proxy=proxy.config.name,
                        user=pool.user,
                        database=pool.database,
                        state=server.state.value,
                        addr=addr,
                        port=port,
                        pid=server.backend_pid,
                        connect_time=wall - (now - server.created_at),
                        idle_since=wall - (now - server.idle_since),
                        prepared=server.prepared_count,
                        client=server.client.peer if server.client else "",
                    )
                )
    return rows
