"""The running program: proxies built from a settings snapshot, and what they share.

`App` is handed to every proxy as its services (`sluice.session.services`: the
proxies, pools and sessions see only those), and to the metrics and the admin
console as what they read (`sluice.session.views`); there is no module-level
mutable state. It owns the proxy-issued cancel keys, the registry of server-side
statement names, the connection budget of each target, the maintenance task,
the metrics endpoint and the admin console. `reload` builds a new snapshot,
compares it with the running one proxy by proxy and applies the difference;
`shutdown` stops accepting, lets transactions finish up to the timeout, then
closes everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any

from sluice import config as config_mod
from sluice import fdlimit
from sluice.auth.base import Authority
from sluice.auth.static import FileAuthority
from sluice.config import ProxyConfig, Settings
from sluice.mysql.proxy import MyProxy
from sluice.observe.admin import AdminConsole
from sluice.observe.metrics import MetricsServer
from sluice.pg.admin import AdminServer
from sluice.pg.proxy import PgProxy
from sluice.pg.statements import StatementNames
from sluice.pool.budget import Budgets
from sluice.session.services import Cancellable
from sluice.workers.peers import Peers
from sluice.workers.slot import DEFAULT_SLOT, WorkerSlot

Proxy = PgProxy | MyProxy  # a running proxy, of either engine

log = logging.getLogger("sluice")


class App:
    """All running proxies and their shared services."""

    def __init__(
        self,
        settings: Settings,
        authority: Authority | None = None,
        slot: WorkerSlot = DEFAULT_SLOT,
    ) -> None:
        self.settings = settings
        self.authority: Authority = authority or FileAuthority()
        self.proxies: dict[str, Proxy] = {}
        # this process's place among the workers sharing the listeners (sluice.workers)
        self.slot = slot
        self.peers: Peers | None = None if slot.single else Peers(self, settings.state_dir)
        self.budgets = Budgets(slot)  # one connection budget per target, shared by its proxies
        self.statement_names = StatementNames()
        self.admin = AdminServer(AdminConsole(self))
        self.metrics = MetricsServer(self)
        self.started_at = time.time()
        self._cancel_keys: dict[int, Cancellable] = {}
        self._last_id = 0  # the last MySQL connection id given
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self.stopping = False
        # clients all proxies may hold together: what the open file limit allows
        self.client_capacity = fdlimit.client_need(settings)

    async def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.client_capacity = fdlimit.raise_limit(self.settings)
        if self.peers is not None:
            await self.peers.start()
        for cfg in self.settings.proxies:
            proxy = make_proxy(self, cfg)
            await proxy.start()
            self.proxies[cfg.name] = proxy
        if self.settings.metrics_listen:
            await self.metrics.start(self.settings.metrics_listen, reuse_port=not self.slot.single)
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background coroutine, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for proxy in list(self.proxies.values()):
                try:
                    proxy.maintain()
                except Exception:  # a bug in one pass must not stop maintenance
                    log.exception("maintenance of proxy %s failed", proxy.config.name)
            try:
                self.budgets.maintain()
            except Exception:  # likewise
                log.exception("maintenance of the connection budgets failed")

    def client_count(self) -> int:
        """Client connections of every proxy."""
        return sum(len(proxy.clients) for proxy in self.proxies.values())

    # ---- cancel keys ----

    def register_cancel(self, client: Cancellable, pid: int = 0) -> tuple[int, int]:
        """A proxy-issued (id, secret) for a client: PostgreSQL's BackendKeyData, MySQL's
        connection id (the secret unused there: KILL comes over an authenticated session).
        `pid`: the id to give if it is free (a session-mode client's server pid).
        Ids this worker invents are its own (`WorkerSlot.random_id`)."""
        while pid <= 0 or pid in self._cancel_keys:
            pid = self.slot.random_id()
        self._cancel_keys[pid] = client
        return pid, secrets.randbelow(2**32)

    def next_connection_id(self) -> int:
        """A MySQL connection id for a new client: counted up, as the server's thread ids
        are (clients rely on a reconnection's id being the greater), skipping ids in use."""
        while True:
            self._last_id = self.slot.next_id(self._last_id)
            if self._last_id not in self._cancel_keys:
                return self._last_id

    def unregister_cancel(self, client: Cancellable) -> None:
        pid = client.cancel_key[0]
        if self._cancel_keys.get(pid) is client:
            del self._cancel_keys[pid]

    def cancel_target(self, pid: int) -> Cancellable | None:
        return self._cancel_keys.get(pid)

    async def cancel(self, pid: int, secret: int, *, forward: bool = True) -> None:
        """Forward a client's cancel to the connection running its query, and no other.
        A key this worker does not hold may be a sibling's: `forward` asks them."""
        client = self._cancel_keys.get(pid)
        if client is None:
            if forward and self.peers is not None:
                await self.peers.cancel(pid, secret)
            return
        expected = client.cancel_key[1].to_bytes(4, "big")
        if not hmac.compare_digest(expected, secret.to_bytes(4, "big")):
            log.warning("cancel request with a wrong secret for client %s", client.peer)
            return
        await client.cancel_running()

    # ---- reload and shutdown ----

    async def reload(self) -> None:
        """Re-read the configuration file and apply the difference.

        New listeners are opened first: if one cannot be (a bad file, a port in
        use), nothing changes and the error is raised to the caller.
        """
        if self.settings.source is None:
            return
        new = config_mod.load(self.settings.source)
        await self.apply(new)
        log.info("configuration reloaded from %s", new.source)

    async def apply(self, new: Settings, failed: dict[str, OSError] | None = None) -> set[str]:
        """Swap in a new snapshot; the names of the proxies whose listeners were (re)opened.

        With `failed`, a listener that cannot be opened does not stop the others:
        its proxy is left out (the one running before, if any, is kept) and its
        error is put in `failed`. Without, the first such error is raised and
        nothing changes.
        """
        if failed is not None:
            new = await self._skip_unbindable(new, failed)
        fresh = await self._start_new_listeners(new)
        self.settings = new
        self.client_capacity = fdlimit.raise_limit(new)
        for cfg in new.proxies:
            running = self.proxies.get(cfg.name)
            if cfg.name in fresh:
                if running is not None:
                    self._retire(running)
                self.proxies[cfg.name] = fresh[cfg.name]
            elif running is not None:
                running.apply(cfg)
        for name in set(self.proxies) - {c.name for c in new.proxies}:
            self._retire(self.proxies.pop(name))
        return set(fresh)

    async def _skip_unbindable(self, new: Settings, failed: dict[str, OSError]) -> Settings:
        keep: list[ProxyConfig] = []
        for cfg in new.proxies:
            running = self.proxies.get(cfg.name)
            if running is not None and _same_listener(running.config, cfg):
                keep.append(cfg)
                continue
            try:
                probe = await asyncio.get_running_loop().create_server(
                    asyncio.Protocol,
                    cfg.listen_host,
                    cfg.listen_port,
                    reuse_address=True,
                    reuse_port=not self.slot.single,  # siblings may listen there already
                )
            except OSError as exc:
                failed[cfg.name] = exc
                if running is not None:
                    keep.append(running.config)
                continue
            probe.close()
            await probe.wait_closed()
            keep.append(cfg)
        return dataclasses.replace(new, proxies=tuple(keep))

    async def _start_new_listeners(self, new: Settings) -> dict[str, Proxy]:
        started: dict[str, Proxy] = {}
        try:
            for cfg in new.proxies:
                running = self.proxies.get(cfg.name)
                if running is not None and _same_listener(running.config, cfg):
                    continue
                proxy = make_proxy(self, cfg)
                await proxy.start()
                started[cfg.name] = proxy
        except BaseException:
            for proxy in started.values():
                proxy.stop_listening()
            raise
        return started

    def _retire(self, proxy: Proxy) -> None:
        proxy.stop_listening()
        self.spawn(self._drain(proxy, self.settings.shutdown_timeout))

    async def _drain(self, proxy: Proxy, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proxy.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        proxy.close("proxy removed by reload")

    async def shutdown(self) -> None:
        """Stop accepting, let transactions finish (up to the timeout), then close."""
        self.stopping = True
        log.info("shutting down")
        for proxy in self.proxies.values():
            proxy.switches.stopping = True  # what sessions read before borrowing
            proxy.stop_listening()
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while any(p.busy for p in self.proxies.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proxy in self.proxies.values():
            proxy.close("the proxy is shutting down")
        await self.metrics.stop()
        if self.peers is not None:
            await self.peers.stop()
        if self._maintenance is not None:
            self._maintenance.cancel()
        await asyncio.sleep(0)


def _same_listener(a: ProxyConfig, b: ProxyConfig) -> bool:
    return (a.listen_host, a.listen_port, a.engine) == (b.listen_host, b.listen_port, b.engine)


def make_proxy(app: App, config: ProxyConfig) -> Proxy:
    """The proxy object for a configuration entry, by its engine."""
    if config.engine == "mysql":
        return MyProxy(app, config)
    return PgProxy(app, config)
