"""Keeps the running proxies equal to the RDS documents, and their targets' health true.

The RDS service only writes documents (a proxy `creating`, `modifying` or
`deleting`, targets `REGISTERING`) and pokes the runtime. The runtime builds
one `ProxyConfig` per proxy endpoint from them, the same snapshot objects a
configuration file gives, and hands the whole snapshot to `App.apply`: new
listeners open, changed settings reach running pools without dropping idle
clients, removed proxies drain. Only then does a proxy become `available` (so
the recipe's polling means "a client can connect now"), and a `deleting` one
disappear with its address.

Database connections leave from the proxy's own address, so the target's
security groups see the proxy as on AWS (`TargetConfig.source_address`).

Target health comes from real checks, repeated every few seconds and after
every change: the target's security groups must admit the proxy
(`CONNECTION_FAILED`), the database must accept a TCP connection
(`UNREACHABLE`), and the proxy must log in with a secret its role may read
(`AUTH_FAILURE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from sluice.auth.base import CLEARTEXT, MD5, MYSQL_CLEAR, MYSQL_NATIVE, MYSQL_SHA2, SCRAM
from sluice.config import Limit, PoolConfig, ProxyConfig, TargetConfig
from sluice.control import registry
from sluice.control.authority import AccountState
from sluice.control.health import check_target, settled
from sluice.control.registry import Listener, Listeners

if TYPE_CHECKING:
    from sluice.app import App

log = logging.getLogger("sluice.control")

HEALTH_INTERVAL = 10.0
_CLIENT_AUTH = {
    "POSTGRES_SCRAM_SHA_256": SCRAM,
    "POSTGRES_MD5": MD5,
    "MYSQL_NATIVE_PASSWORD": MYSQL_NATIVE,
    "MYSQL_CACHING_SHA2_PASSWORD": MYSQL_SHA2,
}
_DEFAULT_AUTH = {"postgresql": SCRAM, "mysql": MYSQL_NATIVE}


class Certificates(Protocol):
    def for_address(self, address: str) -> tuple[str, str]:
        """The certificate and key files a listener on `address` presents."""
        ...


class RuntimeParts(AccountState, Protocol):
    """What the runtime reads besides the documents: the endpoints' certificates."""

    @property
    def certificates(self) -> Certificates: ...


class Runtime:
    """Runs what the documents describe; see the module docstring."""

    def __init__(self, plane: RuntimeParts, app: App, listeners: Listeners) -> None:
        self.plane = plane
        self.app = app
        self.listeners = listeners
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checked_at = 0.0

    def poke(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                # after a change, and every HEALTH_INTERVAL (a listener that could not open
                # is tried again then)
                if woken or time.monotonic() - self._checked_at >= HEALTH_INTERVAL:
                    await self.sync()
                    await self.check_targets()
            except Exception:  # a bug in one pass must not stop the control plane
                log.exception("control plane runtime pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    # ---- proxies ----

    async def sync(self) -> None:
        """Apply the documents to the running proxies, then move statuses on."""
        store = self.plane.store
        configs: list[ProxyConfig] = []
        listeners: dict[str, Listener] = {}
        for doc in store.all("db_proxy"):
            if doc["Status"] == "deleting":
                continue
            for name, listener in registry.proxy_listeners(store, doc):
                configs.append(self.config_for(doc, name, listener))
                listeners[name] = listener
        self.listeners.add(listeners)
        failed: dict[str, OSError] = {}
        settings = dataclasses.replace(self.app.settings, proxies=tuple(configs))
        await self.app.apply(settings, failed)
        self.listeners.replace({k: v for k, v in listeners.items() if k in self.app.proxies})
        self._move_statuses(failed)

    def config_for(self, doc: dict[str, Any], name: str, listener: Listener) -> ProxyConfig:
        engine = "mysql" if doc["EngineFamily"] == "MYSQL" else "postgresql"
        auth = doc.get("Auth") or [{}]
        if any(a.get("IAMAuth") == "REQUIRED" for a in auth):
            method = MYSQL_CLEAR if engine == "mysql" else CLEARTEXT
        else:
            chosen = _CLIENT_AUTH.get(auth[0].get("ClientPasswordAuthType", ""))
            method = chosen or _DEFAULT_AUTH[engine]
        group = self.plane.store.get("db_proxy_target_group", f"{doc['DBProxyName']}/default")
        pool = (group or {}).get("ConnectionPoolConfig", {})
        most = int(pool.get("MaxConnectionsPercent", 100))
        idle = int(pool.get("MaxIdleConnectionsPercent", 50))
        cert_file, key_file = self.plane.certificates.for_address(listener.address)
        return ProxyConfig(
            name=name,
            engine=engine,
            listen_host=listener.address,
            listen_port=listener.port,
            target=self._target_config(doc),
            pool=PoolConfig(
                mode="transaction",
                max_connections=Limit(most, percent=True),
                max_idle_connections=_idle_limit(most, idle),
                borrow_timeout=float(pool.get("ConnectionBorrowTimeout", 120)),
                idle_client_timeout=float(doc.get("IdleClientTimeout", 1800)),
                # RDS Proxy's idle timeout runs "after the previous request completed",
                # whether or not a transaction is open
                idle_transaction_timeout=float(doc.get("IdleClientTimeout", 1800)),
                init_query=str(pool.get("InitQuery", "") or ""),
                exclude_variable_sets="EXCLUDE_VARIABLE_SETS"
                in pool.get("SessionPinningFilters", []),
            ),
            users=(),
            require_tls=bool(doc.get("RequireTLS", False)),
            auth_method=method,
            tls_cert_file=cert_file,
            tls_key_file=key_file,
            debug_logging=bool(doc.get("DebugLogging", False)),
        )

    def _target_config(self, doc: dict[str, Any]) -> TargetConfig:
        """Where the proxy's database connections go. To an instance Sluice runs they leave
        from the proxy's own address (every endpoint's too: on AWS they leave from the
        proxy's interfaces), which is what the instance's security groups see; to an
        adopted server, from wherever the system chooses, as before."""
        store = self.plane.store
        target = registry.target(store, doc["DBProxyName"])
        if target is None:
            return TargetConfig(host="", port=0)
        own = registry.held_by(store, registry.resource_id(doc["DBProxyArn"]))
        source = own.address if own is not None and target.guarded else ""
        return TargetConfig(host=target.address, port=target.port, tls="prefer",
                            source_address=source)  # fmt: skip

    def _move_statuses(self, failed: dict[str, OSError]) -> None:
        store = self.plane.store
        for doc in store.all("db_proxy"):
            name, status = doc["DBProxyName"], doc["Status"]
            if status == "deleting":
                if name not in self.app.proxies:
                    self._forget(doc)
                continue
            if name in failed:
                if status != "incompatible-network":
                    log.error("proxy %s cannot listen: %s", name, failed[name])
                    store.put("db_proxy", name, {**doc, "Status": "incompatible-network"})
                continue
            if status in ("creating", "modifying", "incompatible-network") and (
                name in self.app.proxies
            ):
                fresh = {**doc, "Status": "available", "UpdatedDate": time.time()}
                store.put("db_proxy", name, fresh)
                log.info("proxy %s is available", name)
        for ep in store.all("db_proxy_endpoint"):
            key = f"{ep['DBProxyName']}/{ep['DBProxyEndpointName']}"
            if ep["Status"] == "deleting" and key not in self.app.proxies:
                registry.release(store, registry.resource_id(ep["DBProxyEndpointArn"]))
                store.delete("db_proxy_endpoint", ep["DBProxyEndpointName"])
            elif ep["Status"] in ("creating", "modifying") and key in self.app.proxies:
                fresh = {**ep, "Status": "available"}
                store.put("db_proxy_endpoint", ep["DBProxyEndpointName"], fresh)

    def _forget(self, doc: dict[str, Any]) -> None:
        """A deleted proxy whose listener is closed: its documents and address go."""
        store, name = self.plane.store, doc["DBProxyName"]
        with store.batch():
            for key in store.keys("db_proxy_target"):
                if key.startswith(f"{name}/"):
                    store.delete("db_proxy_target", key)
            for key in store.keys("db_proxy_target_group"):
                if key.startswith(f"{name}/"):
                    store.delete("db_proxy_target_group", key)
            for ep in store.all("db_proxy_endpoint"):
                if ep["DBProxyName"] == name:
                    registry.release(store, registry.resource_id(ep["DBProxyEndpointArn"]))
                    store.delete("db_proxy_endpoint", ep["DBProxyEndpointName"])
            registry.release(store, registry.resource_id(doc["DBProxyArn"]))
            store.delete("db_proxy", name)
        log.info("proxy %s deleted", name)

    # ---- target health ----

    async def check_targets(self) -> None:
        self._checked_at = time.monotonic()
        store = self.plane.store
        checks = []
        keys = []
        for key in store.keys("db_proxy_target"):
            proxy = store.get("db_proxy", key.split("/")[0])
            if proxy is None or proxy["Status"] == "deleting":
                continue
            keys.append(key)
            checks.append(check_target(self.plane, proxy, store.get("db_proxy_target", key)))
        results = await asyncio.gather(*checks, return_exceptions=True)
        for key, health in zip(keys, results, strict=True):
            if isinstance(health, BaseException):
                log.error("health check of target %s failed: %r", key, health)
                continue
            current = store.get("db_proxy_target", key)
            if current is not None:
                health = settled(store, current, health)
            if current is not None and current.get("TargetHealth") != health:
                store.put("db_proxy_target", key, {**current, "TargetHealth": health})
                log.info("target %s: %s", key, health.get("State"))


def _idle_limit(most: int, idle: int) -> Limit:
    """MaxIdleConnectionsPercent is of the database's max_connections, as MaxConnectionsPercent
    is; the pool's idle limit is a percent of the pool's own size: convert."""
    if idle <= 0 or most <= 0:
        return Limit(0)
    return Limit(min(100, max(1, round(idle * 100 / most))), percent=True)
