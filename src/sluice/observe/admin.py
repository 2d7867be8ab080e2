"""The admin console's commands: PgBouncer-style SHOW / PAUSE / RESUME / RELOAD.

The console is reached over the PostgreSQL protocol (`sluice.pg.admin` logs a
client in and hands each query here); this module knows no wire format: a
command's answer is a `Result` of text columns and rows.

Every view reads `take_snapshot` / `list_clients` / `list_servers`
(observe/stats.py), the same functions the Prometheus exporter reads; with
several worker processes, those of every worker, summed (sluice.workers).
RELOAD, PAUSE and RESUME act on every worker. PAUSE stops lending connections
and waits for the borrowed ones to come back; pools created after a PAUSE are
not paused.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sluice.errors import SluiceError
from sluice.observe import pausing
from sluice.observe.stats import (
    ClientInfo,
    PoolSnapshot,
    ServerInfo,
    Snapshot,
    TargetSnapshot,
)
from sluice.workers.peers import gather_lists, gather_snapshot

if TYPE_CHECKING:
    from sluice.observe.stats import Gathering

log = logging.getLogger("sluice.admin")


class CommandError(SluiceError):
    """A console command that failed; reported as ERROR, the session goes on."""

    sqlstate = "42601"

    def __init__(self, text: str, sqlstate: str = "42601") -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


@dataclass(frozen=True, slots=True)
class Result:
    """A command's answer: text columns and rows (none for PAUSE and the like) and a tag."""

    tag: str
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str | None, ...], ...] = ()


class AdminConsole:
    """Runs console commands against the running program."""

    def __init__(self, app: Gathering) -> None:
        self.app = app

    async def run(self, text: str, user: str = "") -> Result | None:
        """Run one console command (None for an empty one); CommandError if it fails."""
        words = text.strip().rstrip(";").split()
        if not words:
            return None
        if ";" in text.strip().rstrip(";"):
            raise CommandError("one command per query")
        return await self._dispatch(words[0].upper(), words[1:], user)

    async def _dispatch(self, verb: str, args: list[str], user: str) -> Result:
        if verb == "SHOW":
            if len(args) != 1 or args[0].upper() not in SHOW_VIEWS:
                raise CommandError(f"SHOW expects one of: {', '.join(SHOW_VIEWS).lower()}")
            name = args[0].upper()
            return SHOW_VIEWS[name](await Seen.gather(self.app, name in ("CLIENTS", "SERVERS")))
        actions: dict[str, Callable[[list[str]], Awaitable[Result]]] = {
            "PAUSE": self._pause,
            "RESUME": self._resume,
            "RELOAD": self._reload,
        }
        action = actions.get(verb)
        if action is None:
            raise CommandError(f"unknown command: {_clip(verb)}")
        log.info("admin console: %s ran %s", user, " ".join([verb, *args]))
        return await action(args)

    # ---- commands that act ----

    async def _pause(self, args: list[str]) -> Result:
        """Stop lending in every worker; return once every borrowed connection is back."""
        name = _database(args)
        pools = pausing.matching_pools(self.app, name)
        local = pausing.pause(pools)
        if self.app.peers is None:
            await local
            found = len(pools)
        else:
            _, elsewhere = await asyncio.gather(local, self.app.peers.pause(name))
            found = len(pools) + elsewhere
        _check_found(name, found)
        return Result("PAUSE")

    async def _resume(self, args: list[str]) -> Result:
        name = _database(args)
        pools = pausing.matching_pools(self.app, name)
        pausing.resume(pools)
        found = len(pools)
        if self.app.peers is not None:
            found += await self.app.peers.resume(name)
        _check_found(name, found)
        return Result("RESUME")

    async def _reload(self, args: list[str]) -> Result:
        if args:
            raise CommandError("RELOAD takes no arguments")
        try:
            # shielded: a console that disconnects must not leave a reload half applied
            await asyncio.shield(self.app.reload())
        except (SluiceError, OSError) as exc:
            raise CommandError(f"reload failed: {exc}", "F0000") from exc
        if self.app.peers is not None:  # every worker reloads, as on SIGHUP
            failed = await asyncio.shield(self.app.peers.reload())
            if failed:
                raise CommandError(f"reload failed in {'; '.join(failed)}", "F0000")
        return Result("RELOAD")


# ---- views: each a function of what is seen: the app, and the shared snapshot ----


@dataclass(frozen=True, slots=True)
class Seen:
    """What a view reads: the app, every worker's snapshot summed, and (for SHOW CLIENTS
    and SERVERS) every worker's clients and servers."""

    app: Gathering
    snapshot: Snapshot
    clients: list[ClientInfo]
    servers: list[ServerInfo]

    @classmethod
    async def gather(cls, app: Gathering, lists: bool) -> Seen:
        clients, servers = await gather_lists(app) if lists else ([], [])
        return cls(app, await gather_snapshot(app), clients, servers)


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _when(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def _us(seconds: float) -> str:
    return str(int(seconds * 1_000_000))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


T = TypeVar("T")
Columns = tuple[tuple[str, Callable[[T], str | None]], ...]


def _table(columns: Columns[T], items: Iterable[T]) -> Result:
    """One row per item, one column per (name, getter) pair."""
    names = tuple(name for name, _ in columns)
    return Result("SHOW", names, tuple(tuple(get(i) for _, get in columns) for i in items))


POOL_COLUMNS: Columns[PoolSnapshot] = (
    ("database", lambda p: p.database),
    ("user", lambda p: p.user),
    ("cl_active", lambda p: str(p.clients_active)),
    ("cl_waiting", lambda p: str(p.clients_waiting)),
    ("sv_active", lambda p: str(p.borrowed)),
    ("sv_idle", lambda p: str(p.idle)),
    ("sv_opening", lambda p: str(p.opening)),
    ("maxwait", lambda p: str(int(p.max_wait))),
    ("maxwait_us", lambda p: _us(p.max_wait % 1.0)),
    ("pool_mode", lambda p: p.mode),
    ("pinned", lambda p: str(p.pinned)),
    ("paused", lambda p: _yes(p.paused)),
    ("max_connections", lambda p: str(p.max_size)),
    ("proxy", lambda p: p.proxy),
)

STATS_COLUMNS: Columns[PoolSnapshot] = (
    ("database", lambda p: p.database),
    ("user", lambda p: p.user),
    ("total_xact_count", lambda p: str(p.transactions)),
    ("total_query_count", lambda p: str(p.queries)),
    ("total_query_time", lambda p: _us(p.query_time_total)),
    ("total_wait_time", lambda p: _us(p.borrow_wait_total)),
    ("total_borrow_count", lambda p: str(p.borrow_count)),
    ("avg_query_time", lambda p: _us(p.query_time_total / max(p.queries, 1))),
    ("avg_wait_time", lambda p: _us(p.borrow_wait_total / max(p.borrow_count, 1))),
    ("borrow_timeouts", lambda p: str(p.timeouts)),
    ("pins", lambda p: str(p.pins)),
    ("server_connects", lambda p: str(p.connects)),
    ("server_connect_failures", lambda p: str(p.connect_failures)),
    ("proxy", lambda p: p.proxy),
)

CLIENT_COLUMNS: Columns[ClientInfo] = (
    ("user", lambda c: c.user),
    ("database", lambda c: c.database),
    ("state", lambda c: c.state),
    ("addr", lambda c: c.addr),
    ("port", lambda c: c.port),
    ("connect_time", lambda c: _when(c.connect_time)),
    ("request_time", lambda c: _when(c.request_time)),
    ("wait", lambda c: str(int(c.wait))),
    ("wait_us", lambda c: _us(c.wait % 1.0)),
    ("tls", lambda c: _yes(c.tls)),
    ("pinned", lambda c: c.pinned),
    ("server_pid", lambda c: None if c.server_pid is None else str(c.server_pid)),
    ("application_name", lambda c: c.application_name),
    ("proxy", lambda c: c.proxy),
)

SERVER_COLUMNS: Columns[ServerInfo] = (
    ("user", lambda s: s.user),
    ("database", lambda s: s.database),
    ("state", lambda s: s.state),
    ("addr", lambda s: s.addr),
    ("port", lambda s: s.port),
    ("pid", lambda s: str(s.pid)),
    ("connect_time", lambda s: _when(s.connect_time)),
    ("request_time", lambda s: _when(s.idle_since)),
    ("prepared_statements", lambda s: str(s.prepared)),
    ("link", lambda s: s.client),
    ("proxy", lambda s: s.proxy),
)


TARGET_COLUMNS: Columns[TargetSnapshot] = (
    ("target", lambda t: t.target),
    ("sv_used", lambda t: str(t.connections)),
    ("max_connections", lambda t: str(t.limit)),
    ("sv_idle", lambda t: str(t.idle)),
    ("max_idle_connections", lambda t: str(t.max_idle)),
    ("server_max_connections", lambda t: _opt(t.server_max_connections)),
    ("pools_waiting", lambda t: str(t.pools_waiting)),
    ("evictions", lambda t: str(t.evictions)),
    ("proxies", lambda t: ",".join(t.proxies)),
)


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)


def show_targets(seen: Seen) -> Result:
    """Each target's connection budget: in use (all pools and proxies) against its limit."""
    return _table(TARGET_COLUMNS, seen.snapshot.targets)


def show_pools(seen: Seen) -> Result:
    return _table(POOL_COLUMNS, seen.snapshot.pools())


def show_stats(seen: Seen) -> Result:
    return _table(STATS_COLUMNS, seen.snapshot.pools())


def show_clients(seen: Seen) -> Result:
    return _table(CLIENT_COLUMNS, seen.clients)


def show_servers(seen: Seen) -> Result:
    return _table(SERVER_COLUMNS, seen.servers)


def show_lists(seen: Seen) -> Result:
    snap = seen.snapshot
    pools = list(snap.pools())
    users = {u.name for p in seen.app.proxies.values() for u in p.config.users}
    items = (
        ("proxies", len(snap.proxies)),
        ("pools", len(pools)),
        ("databases", len({p.database for p in pools})),
        ("users", len(users)),
        ("used_clients", sum(p.clients_active for p in pools)),
        ("waiting_clients", sum(p.clients_waiting for p in pools)),
        ("login_clients", sum(p.clients_login for p in snap.proxies)),
        ("admin_clients", sum(p.clients_admin for p in snap.proxies)),
        ("used_servers", sum(p.borrowed for p in pools)),
        ("free_servers", sum(p.idle for p in pools)),
        ("login_servers", sum(p.opening for p in pools)),
    )
    return Result("SHOW", ("list", "items"), tuple((k, str(v)) for k, v in items))


def show_config(seen: Seen) -> Result:
    """Settings that are safe to show: never a password, nor the init query's text."""
    s = seen.app.settings
    rows: list[tuple[str, str]] = [
        ("admin_database", s.admin_database),
        ("admin_users", ",".join(s.admin_users)),
        ("metrics_listen", s.metrics_listen),
        ("log_level", s.log_level),
        ("log_format", s.log_format),
        ("shutdown_timeout", f"{s.shutdown_timeout:g}"),
        ("max_packet_size", str(s.max_packet_size)),
        ("workers", str(seen.app.slot.count)),
    ]
    for proxy in s.proxies:
        pool, key = proxy.pool, f"proxy.{proxy.name}."
        rows += [
            (key + "listen", f"{proxy.listen_host}:{proxy.listen_port}"),
            (key + "target", f"{proxy.target.host}:{proxy.target.port}"),
            (key + "auth_method", proxy.auth_method),
            (key + "require_tls", _yes(proxy.require_tls)),
            (key + "debug_logging", _yes(proxy.debug_logging)),
            (key + "users", ",".join(u.name for u in proxy.users)),
            (key + "pool.mode", pool.mode),
            (key + "pool.max_connections", str(pool.max_connections)),
            (key + "pool.max_idle_connections", str(pool.max_idle_connections)),
            (key + "pool.borrow_timeout", f"{pool.borrow_timeout:g}"),
            (key + "pool.idle_client_timeout", f"{pool.idle_client_timeout:g}"),
            (key + "pool.idle_transaction_timeout", f"{pool.idle_transaction_timeout:g}"),
            (key + "pool.init_query", "(set)" if pool.init_query else ""),
        ]
    return Result("SHOW", ("key", "value"), tuple(rows))


def show_version(seen: Seen) -> Result:
    try:
        version = importlib.metadata.version("sluice")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return Result("SHOW", ("version",), ((f"Sluice {version}",),))


SHOW_VIEWS: dict[str, Callable[[Seen], Result]] = {
    "POOLS": show_pools,
    "TARGETS": show_targets,
    "STATS": show_stats,
    "CLIENTS": show_clients,
    "SERVERS": show_servers,
    "LISTS": show_lists,
    "CONFIG": show_config,
    "VERSION": show_version,
}


def _database(args: list[str]) -> str | None:
    """PAUSE / RESUME's optional database name."""
    if len(args) > 1:
        raise CommandError("expected at most one database name")
    return args[0].strip('"') if args else None


def _check_found(name: str | None, found: int) -> None:
    if name is not None and not found:
        raise CommandError(f"no pool for database {_clip(name)!r}", "3D000")
