"""Prometheus metrics, named after RDS Proxy's CloudWatch metrics, served on GET /metrics.

Naming: every metric is `sluice_` + the snake_case of the RDS Proxy name, with
the RDS name at the start of its help text; counters end in `_total` and
latencies are histograms in seconds (RDS reports microseconds), as Prometheus
conventions ask. The mapping:

    ClientConnections                          sluice_client_connections (gauge)
    ClientConnectionsReceived                  sluice_client_connections_received_total
    ClientConnectionsSetupSucceeded            sluice_client_connections_setup_succeeded_total
    ClientConnectionsSetupFailedAuth           sluice_client_connections_setup_failed_auth_total
    ClientConnectionsTLS                       sluice_client_connections_tls_total
    DatabaseConnections                        sluice_database_connections (gauge)
    DatabaseConnectionsCurrentlyBorrowed       sluice_database_connections_currently_borrowed
    DatabaseConnectionsCurrentlyInTransaction  sluice_database_connections_currently_in_transaction
    DatabaseConnectionsCurrentlySessionPinned  sluice_database_connections_currently_session_pinned
    DatabaseConnectionsSetupSucceeded          sluice_database_connections_setup_succeeded_total
    DatabaseConnectionsSetupFailed             sluice_database_connections_setup_failed_total
    MaxDatabaseConnectionsAllowed              sluice_max_database_connections_allowed (gauge)
    DatabaseConnectionsBorrowLatency           sluice_database_connections_borrow_latency_seconds
    QueryRequests                              sluice_query_requests_total
    QueryDatabaseResponseLatency               sluice_query_database_response_latency_seconds

plus Sluice's own: sluice_client_connections_setup_failed_tls_total,
sluice_auth_failures_total, sluice_client_connections_refused_total,
sluice_transactions_total, sluice_pins_total, sluice_borrow_timeouts_total and
sluice_clients_waiting. Labels: `proxy` and `engine` on every metric, and
`database` and `user` on pool-level ones. MaxDatabaseConnectionsAllowed is the
proxy's own limit; the connection budget of each target, shared by every pool
and proxy pointing at it, has the `sluice_target_*` metrics, labelled `target`
(host:port).

A custom collector on a private `CollectorRegistry` reads `take_snapshot` at
scrape time (the admin console reads the same snapshot). With several worker
processes every worker listens on `metrics_listen` (SO_REUSEPORT) and the one a
scrape reaches sums every worker's snapshot (sluice.workers.merge). The HTTP server is a
small asyncio one on the proxy's own event loop, so a scrape never reads
counters from another thread: one request per connection, request head capped
at `MAX_REQUEST`, a deadline per connection, `Connection: close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from sluice.errors import ConfigError
from sluice.observe.histogram import HistogramSnapshot
from sluice.observe.stats import (
    PoolSnapshot,
    ProxySnapshot,
    Snapshot,
    TargetSnapshot,
    take_snapshot,
)
from sluice.workers.peers import gather_snapshot

if TYPE_CHECKING:
    from sluice.observe.stats import Gathering

log = logging.getLogger("sluice.metrics")

GAUGE, COUNTER, HISTOGRAM = "gauge", "counter", "histogram"
PROXY_LABELS: Final = ("proxy", "engine")
POOL_LABELS: Final = ("proxy", "engine", "database", "user")

TARGET_LABELS: Final = ("target",)

S = TypeVar("S", ProxySnapshot, PoolSnapshot, TargetSnapshot)
Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


@dataclass(frozen=True, slots=True)
class MetricDef(Generic[S]):
    """A metric's type and help text, and how to read its value from a snapshot."""

    kind: str
    help: str
    value: Callable[[S], float | HistogramSnapshot]


# name -> (type, help, value): one sample per proxy listener.
PROXY_METRICS: Final[dict[str, MetricDef[ProxySnapshot]]] = {
    "sluice_client_connections": MetricDef(
        GAUGE, "ClientConnections: client connections currently open.", lambda p: p.clients
    ),
    "sluice_client_connections_received_total": MetricDef(
        COUNTER,
        "ClientConnectionsReceived: client connection requests received.",
        lambda p: p.received,
    ),
    "sluice_client_connections_setup_succeeded_total": MetricDef(
        COUNTER,
        "ClientConnectionsSetupSucceeded: client connections that completed setup.",
        lambda p: p.setup_succeeded,
    ),
    "sluice_client_connections_setup_failed_auth_total": MetricDef(
        COUNTER,
        "ClientConnectionsSetupFailedAuth: client connections that failed to log in.",
        lambda p: p.setup_failed_auth,
    ),
    "sluice_client_connections_setup_failed_tls_total": MetricDef(
        COUNTER,
        "Client connections refused because TLS is required and was not used.",
        lambda p: p.setup_failed_tls,
    ),
    "sluice_client_connections_tls_total": MetricDef(
        COUNTER, "ClientConnectionsTLS: client connections that negotiated TLS.", lambda p: p.tls
    ),
    "sluice_auth_failures_total": MetricDef(
        COUNTER,
        "Client logins that failed: a wrong password or an unknown user.",
        lambda p: p.auth_failures,
    ),
    "sluice_client_connections_refused_total": MetricDef(
        COUNTER,
        "Client connections refused at connect: a connection or login cap reached, or an "
        "address blocked after failed logins.",
        lambda p: p.refused,
    ),
}

# name -> (type, help, value): one sample per pool (proxy, database, user).
POOL_METRICS: Final[dict[str, MetricDef[PoolSnapshot]]] = {
    "sluice_database_connections": MetricDef(
        GAUGE, "DatabaseConnections: open connections to the database.", lambda p: p.servers
    ),
    "sluice_database_connections_currently_borrowed": MetricDef(
        GAUGE,
        "DatabaseConnectionsCurrentlyBorrowed: database connections lent to clients.",
        lambda p: p.borrowed,
    ),
    "sluice_database_connections_currently_in_transaction": MetricDef(
        GAUGE,
        "DatabaseConnectionsCurrentlyInTransaction: connections inside a transaction.",
        lambda p: p.in_transaction,
    ),
    "sluice_database_connections_currently_session_pinned": MetricDef(
        GAUGE,
        "DatabaseConnectionsCurrentlySessionPinned: connections pinned to one client.",
        lambda p: p.pinned,
    ),
    "sluice_database_connections_setup_succeeded_total": MetricDef(
        COUNTER,
        "DatabaseConnectionsSetupSucceeded: database connections opened.",
        lambda p: p.connects,
    ),
    "sluice_database_connections_setup_failed_total": MetricDef(
        COUNTER,
        "DatabaseConnectionsSetupFailed: database connections that failed to open.",
        lambda p: p.connect_failures,
    ),
    "sluice_max_database_connections_allowed": MetricDef(
        GAUGE,
        "MaxDatabaseConnectionsAllowed: the proxy's maximum of database connections "
        "(shared with the other pools of its target: see sluice_target_*).",
        lambda p: p.max_size,
    ),
    "sluice_database_connections_borrow_latency_seconds": MetricDef(
        HISTOGRAM,
        "DatabaseConnectionsBorrowLatency: seconds to borrow a database connection.",
        lambda p: p.borrow_latency,
    ),
    "sluice_query_requests_total": MetricDef(
        COUNTER, "QueryRequests: queries received from clients.", lambda p: p.queries
    ),
    "sluice_query_database_response_latency_seconds": MetricDef(
        HISTOGRAM,
        "QueryDatabaseResponseLatency: seconds the database took to answer a query.",
        lambda p: p.query_latency,
    ),
    "sluice_transactions_total": MetricDef(
        COUNTER,
        "Transactions completed on borrowed connections (connections given back).",
        lambda p: p.transactions,
    ),
    "sluice_pins_total": MetricDef(
        COUNTER, "Clients pinned to their database connection by session state.", lambda p: p.pins
    ),
    "sluice_borrow_timeouts_total": MetricDef(
        COUNTER,
        "Clients that waited longer than the borrow timeout for a connection.",
        lambda p: p.timeouts,
    ),
    "sluice_clients_waiting": MetricDef(
        GAUGE, "Clients currently waiting for a database connection.", lambda p: p.clients_waiting
    ),
}

# name -> (type, help, value): one sample per target (database server address).
TARGET_METRICS: Final[dict[str, MetricDef[TargetSnapshot]]] = {
    "sluice_target_database_connections": MetricDef(
        GAUGE,
        "Database connections open or opening to the target, from every pool and proxy.",
        lambda t: t.connections,
    ),
    "sluice_target_max_database_connections": MetricDef(
        GAUGE,
        "The target's connection budget: at most this many connections, all pools together.",
        lambda t: t.limit,
    ),
    "sluice_target_idle_database_connections": MetricDef(
        GAUGE, "Idle database connections to the target, all pools together.", lambda t: t.idle
    ),
    "sluice_target_pools_waiting": MetricDef(
        GAUGE, "Pools queued for room in the target's connection budget.", lambda t: t.pools_waiting
    ),
    "sluice_target_evictions_total": MetricDef(
        COUNTER,
        "Idle database connections closed to make room for another pool of the same target.",
        lambda t: t.evictions,
    ),
}


def _family(name: str, spec: MetricDef[S], labels: tuple[str, ...]) -> Family:
    if spec.kind == GAUGE:
        return GaugeMetricFamily(name, spec.help, labels=labels)
    if spec.kind == COUNTER:
        return CounterMetricFamily(name, spec.help, labels=labels)
    return HistogramMetricFamily(name, spec.help, labels=labels)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def _add(family: Family, labels: list[str], value: float | HistogramSnapshot) -> None:
    if isinstance(family, HistogramMetricFamily):
        assert isinstance(value, HistogramSnapshot)
        buckets = [(_le(b), float(n)) for b, n in value.cumulative()]
        family.add_metric(labels, buckets, value.total)
    else:
        assert not isinstance(value, HistogramSnapshot)
        family.add_metric(labels, float(value))


class SnapshotCollector(Collector):
    """Turns one stats snapshot per scrape into the metric families above (`snapshot`:
    one taken already, the sum of every worker's)."""

    def __init__(self, app: Gathering, snapshot: Snapshot | None = None) -> None:
        self.app = app
        self.snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        for name, spec in PROXY_METRICS.items():
            yield _family(name, spec, PROXY_LABELS)
        for name, pool_spec in POOL_METRICS.items():
            yield _family(name, pool_spec, POOL_LABELS)
        for name, target_spec in TARGET_METRICS.items():
            yield _family(name, target_spec, TARGET_LABELS)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot or take_snapshot(self.app)
        for name, spec in PROXY_METRICS.items():
            family = _family(name, spec, PROXY_LABELS)
            for proxy in snap.proxies:
                _add(family, [proxy.name, proxy.engine], spec.value(proxy))
            yield family
        for name, pool_spec in POOL_METRICS.items():
            family = _family(name, pool_spec, POOL_LABELS)
            for pool in snap.pools():
                labels = [pool.proxy, pool.engine, pool.database, pool.user]
                _add(family, labels, pool_spec.value(pool))
            yield family
        for name, target_spec in TARGET_METRICS.items():
            family = _family(name, target_spec, TARGET_LABELS)
            for target in snap.targets:
                _add(family, [target.target], target_spec.value(target))
            yield family


def make_registry(app: Gathering, snapshot: Snapshot | None = None) -> CollectorRegistry:
    """A private registry holding only Sluice's collector (never the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(app, snapshot))
    return registry


# ---- the HTTP endpoint ----

MAX_REQUEST = 8192  # bytes of request line and headers
REQUEST_DEADLINE = 10.0  # seconds a connection may take to send its request and read the answer
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


def parse_request(head: bytes) -> Request | None:
    """The request line and headers of an HTTP/1.x request head; None if malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    return Request(parts[0], parts[1].split("?", 1)[0], headers)


def response(status: int, body: bytes, content_type: str, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


class MetricsServer:
    """Serves the registry on GET /metrics; started by App when `metrics_listen` is set."""

    def __init__(self, app: Gathering) -> None:
        self.app = app
        self.registry = make_registry(app)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, listen: str, reuse_port: bool = False) -> None:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"metrics_listen: expected HOST:PORT, got {listen!r}")
        self._server = await asyncio.start_server(
            self._handle,
            host.strip("[]") or "127.0.0.1",
            int(port),
            limit=MAX_REQUEST,
            reuse_port=reuse_port,  # with several workers, each serves the sum
        )
        log.info("metrics on http://%s/metrics", listen)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # a scrape cut short by shutdown
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                writer.write(await self._answer(reader))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # the scraper went away or was too slow: nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()  # one request per connection (Connection: close)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return response(431, b"request head too large\n", "text/plain")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                return response(400, b"incomplete request\n", "text/plain")
            raise ConnectionResetError from None
        request = parse_request(head[:-4])
        if request is None:
            return response(400, b"malformed request\n", "text/plain")
        if request.method not in ("GET", "HEAD"):
            return response(405, b"only GET and HEAD\n", "text/plain")
        if request.path != "/metrics":
            return response(404, b"not found; try /metrics\n", "text/plain")
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        registry = self.registry
        if self.app.peers is not None:  # several workers: the sum of their snapshots
            registry = make_registry(self.app, await gather_snapshot(self.app))
        return response(200, encode(registry), content_type, request.method == "HEAD")
