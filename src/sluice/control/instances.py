"""Runs the DB instances created through the API: one real database server each.

The RDS handlers (`services.rds_managed`) only write documents; this runner
keeps the servers equal to them and walks each status on as RDS does:

    creating -> backing-up -> available        (a fresh data directory, master user, DBName)
    rebooting -> available                     (the server restarted)
    resetting-master-credentials -> available  (the new master password given to the server)
    stopping -> stopped, starting -> available
    deleting -> (gone)                         (server stopped, data, address and secret removed)

An `available` instance whose server is not running (`sluice server` was
restarted, or the server died) is started again, and an event says so. Each
server is a `dbserver` launcher (MariaDB for engines mysql and mariadb,
PostgreSQL for postgres) with its base directory under
`<data-dir>/db-instances/<identifier>`. The server itself listens on a
loopback port of its own (kept in the document as `_server_port`); the
instance's address and port are held by its front (`control.guard`), which
admits a connection only when the instance's security groups do, as they
stand at that moment, and relays it to the server. The front is open while
the server runs (a reboot keeps it: connections made meanwhile are closed).
Starting and stopping block for seconds, so they run in worker threads, one
task per instance at a time; documents are only read and written on the event
loop.
`stop` stops every server: they start again with the next `sluice server`.
Under root the servers run as the engines' OS users, which must be able to
enter the data directory: the runner makes it traversable (o+x, no listing).
Where a folder above it is closed to them (the default data directory is
under root's home, mode 700), the servers' directories are kept in
`/var/lib/sluice/<digest of the data directory>/db-instances` instead, and
`<data-dir>/db-instances` is a link to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from sluice.control import network, registry
from sluice.control.guard import InstanceGuard
from sluice.control.services import rds_common as c
from sluice.control.services.rds_events import record
from sluice.control.store import Doc, Store
from sluice.control.vault import Vault
from sluice.dbserver.launcher import LOCALHOST, DbServer
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgCluster

log = logging.getLogger("sluice.control")

MAX_CONNECTIONS = 200
PASS_INTERVAL = 2.0
Work = Callable[[], Awaitable[None]]


class InstanceRunner:
    """The database servers of the managed DB instances; see the module docstring."""

    def __init__(self, store: Store, vault: Vault, root: Path, changed: Callable[[], None]) -> None:
        self.store = store
        self.vault = vault
        self.root = root
        self.changed = changed
        self._servers: dict[str, DbServer] = {}
        self._fronts: dict[str, InstanceGuard] = {}
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._wake.set()

    async def resume(self) -> None:
        """Start what the documents say should run; wait for it (before the API answers)."""
        self._pass()
        await asyncio.gather(*self._busy.values(), return_exceptions=True)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop, let running work finish, then stop every server (fast)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._busy.values(), return_exceptions=True)
        fronts = list(self._fronts.values())
        self._fronts.clear()
        await asyncio.gather(*(f.stop() for f in fronts), return_exceptions=True)
        servers = list(self._servers.values())
        self._servers.clear()
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers),
                             return_exceptions=True)  # fmt: skip

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._pass()
            except Exception:  # a bug in one pass must not stop the control plane
                log.exception("DB instance pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=PASS_INTERVAL)

    def _prepare_root(self) -> None:
        if os.geteuid() == 0 and not self.root.is_symlink() and _closed_above(self.root.parent):
            elsewhere = system_root(self.root)
            elsewhere.mkdir(parents=True, exist_ok=True)
            if not self.root.exists():  # else: kept where an earlier version made it
                self.root.symlink_to(elsewhere, target_is_directory=True)
        self.root.mkdir(parents=True, exist_ok=True)
        real = self.root.resolve()
        real.chmod(0o755)
        if os.geteuid() == 0:
            parent = real.parent
            parent.chmod(stat.S_IMODE(parent.stat().st_mode) | stat.S_IXOTH)

    # ---- one pass: a task for each instance with work to do ----

    def _pass(self) -> None:
        for doc in self.store.all(c.INSTANCE):
            name = doc["DBInstanceIdentifier"]
            busy = self._busy.get(name)
            if not doc.get("_managed") or (busy is not None and not busy.done()):
                continue
            work = self._work_for(doc)
            if work is not None:
                self._busy[name] = asyncio.get_running_loop().create_task(self._guard(name, work))

    def _work_for(self, doc: Doc) -> Work | None:
        name, status = doc["DBInstanceIdentifier"], doc["DBInstanceStatus"]
        if status == "creating":
            return lambda: self._create(doc)
        if status == "backing-up":
            return lambda: self._backed_up(name)
        if status == "deleting":
            return lambda: self._delete(doc)
        if status == "rebooting":
            return lambda: self._restart(name, "DB instance restarted")
        if status == "stopping":
            return lambda: self._stop(name)
        if status == "starting":
            return lambda: self._start(name, "DB instance started")
        if status == "resetting-master-credentials":
            return lambda: self._reset_password(doc)
        if status in ("available", "modifying") and not self._running(name):
            died = name in self._servers
            why = "DB instance restarted: its server had stopped" if died else "DB instance started"
            return lambda: self._start(name, why)
        if status in ("available", "modifying") and name not in self._fronts:
            return lambda: self._open_front(name)  # it could not listen at the last try
        return None

    async def _guard(self, name: str, work: Work) -> None:
        try:
            await work()
        except Exception as exc:  # the server would not start: the instance has failed
            log.error("DB instance %s: %s", name, exc)
            doc = self.store.get(c.INSTANCE, name)
            if doc is not None and doc["DBInstanceStatus"] != "deleting":
                self._put(name, DBInstanceStatus="failed")
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                record(self.store, doc, f"DB instance failed: {first}", "failure")
        finally:
            self.changed()

    # ---- the work ----

    def _server(self, doc: Doc) -> DbServer:
        name = doc["DBInstanceIdentifier"]
        server = self._servers.get(name)
        if server is None:
            self._prepare_root()
            base = self.root / name
            port = doc.get("_server_port")  # None: a free one (a new instance)
            if doc["Engine"] == "postgres":
                server = PgCluster(base, host=LOCALHOST, port=port,
                                   max_connections=MAX_CONNECTIONS)  # fmt: skip
            else:
                server = MariaDbCluster(base, host=LOCALHOST, port=port,
                                        max_connections=MAX_CONNECTIONS)  # fmt: skip
            self._servers[name] = server
        return server

    def _admits(self, name: str) -> Callable[[str], bool]:
        """The front's question for each new connection, answered from the documents as
        they stand then (the instance's groups and every group's rules)."""

        def admits(address: str) -> bool:
            doc = self.store.get(c.INSTANCE, name)
            if doc is None:
                return False
            target = registry.instance_target(doc)
            return network.reachable(self.store, target.groups, address, target.port)

        return admits

    async def _open_front(self, name: str) -> None:
        """Hold the instance's address for its server (once it runs); record where the
        server listens, so the next `sluice server` finds it there."""
        doc = self.store.get(c.INSTANCE, name)
        server = self._servers.get(name)
        if doc is None or server is None:
            return
        if doc.get("_server_port") != server.port:
            self._put(name, _server_port=server.port)
        front = self._fronts.get(name)
        if front is None:
            endpoint = doc["Endpoint"]
            front = InstanceGuard(name, doc["Engine"], (endpoint["Address"], int(endpoint["Port"])),
                                  (server.host, server.port), self._admits(name))  # fmt: skip
            await front.start()  # OSError: the address is taken; the instance fails
            self._fronts[name] = front
        front.backend = (server.host, server.port)

    async def _close_front(self, name: str) -> None:
        front = self._fronts.pop(name, None)
        if front is not None:
            await front.stop()

    def _running(self, name: str) -> bool:
        server = self._servers.get(name)
        return server is not None and server.running

    async def _create(self, doc: Doc) -> None:
        name = doc["DBInstanceIdentifier"]
        shutil.rmtree(self.root / name, ignore_errors=True)  # what a creation cut short left
        self._servers.pop(name, None)
        server = self._server(doc)
        user, password = doc["MasterUsername"], self.vault.open_text(doc["_password"])
        db_name = doc.get("DBName")

        def create() -> None:
            server.start()
            with _quiet("creating the master user and database"):
                server.create_admin(user, password)
                if db_name:
                    server.create_database(db_name, user)

        await asyncio.to_thread(create)
        await self._open_front(name)
        fresh = self.store.get(c.INSTANCE, name)
        if fresh is None or fresh["DBInstanceStatus"] != "creating":
            return
        secret = fresh.get("MasterUserSecret")
        version = _short_version(server.version) or doc["EngineVersion"]
        changes: Doc = {
            "DBInstanceStatus": "backing-up", "InstanceCreateTime": time.time(),
            "EngineVersion": version,
        }  # fmt: skip
        if secret is not None:
            changes["MasterUserSecret"] = {**secret, "SecretStatus": "active"}
        self._put(name, drop=("_password",), **changes)
        record(self.store, fresh, "DB instance created", "creation")
        record(self.store, fresh, "Backing up DB instance", "backup")
        log.info("DB instance %s is up at %s:%s", name, server.host, server.port)

    async def _backed_up(self, name: str) -> None:
        self._put(name, DBInstanceStatus="available")
        doc = self.store.get(c.INSTANCE, name)
        if doc is not None:
            record(self.store, doc, "Finished DB Instance backup", "backup")

    async def _start(self, name: str, why: str) -> None:
        doc = self.store.get(c.INSTANCE, name)
        if doc is None:
            return
        server = self._server(doc)

        def start() -> None:
            if server.running:  # left by an earlier `sluice server` that did not stop it
                server.stop()
            server.start()

        await asyncio.to_thread(start)
        await self._open_front(name)
        self._put(name, DBInstanceStatus="available")
        record(self.store, doc, why, "availability")
        log.info("DB instance %s: %s", name, why)

    async def _restart(self, name: str, why: str) -> None:
        doc = self.store.get(c.INSTANCE, name)
        if doc is None:
            return
        server = self._server(doc)
        await asyncio.to_thread(server.restart)
        await self._open_front(name)
        self._put(name, DBInstanceStatus="available")
        record(self.store, doc, why, "availability")
        log.info("DB instance %s: %s", name, why)

    async def _stop(self, name: str) -> None:
        doc = self.store.get(c.INSTANCE, name)
        server = self._servers.get(name)
        await self._close_front(name)  # a stopped instance's address answers nothing
        if server is not None:
            await asyncio.to_thread(server.stop)
        self._put(name, DBInstanceStatus="stopped")
        if doc is not None:
            record(self.store, doc, "DB instance stopped", "notification")

    async def _reset_password(self, doc: Doc) -> None:
        name = doc["DBInstanceIdentifier"]
        server = self._server(doc)
        user, password = doc["MasterUsername"], self.vault.open_text(doc["_password"])

        def reset() -> None:
            with _quiet("changing the master password"):
                server.set_password(user, password)

        await asyncio.to_thread(reset)
        self._put(name, drop=("_password",), DBInstanceStatus="available")
        record(self.store, doc, "Reset master credentials", "configuration change")

    async def _delete(self, doc: Doc) -> None:
        name = doc["DBInstanceIdentifier"]
        server = self._server(doc)
        self._servers.pop(name, None)
        await self._close_front(name)
        base = self.root / name

        def remove() -> None:
            server.destroy()
            shutil.rmtree(base, ignore_errors=True)

        await asyncio.to_thread(remove)
        with self.store.batch():
            registry.release(self.store, doc["DbiResourceId"])
            secret = doc.get("MasterUserSecret")
            if secret is not None:
                self.store.delete("secret", secret["SecretArn"])
            self.store.delete(c.INSTANCE, name)
            record(self.store, doc, "DB instance deleted", "deletion")
        log.info("DB instance %s deleted", name)

    def _put(self, name: str, drop: tuple[str, ...] = (), **changes: object) -> None:
        doc = self.store.get(c.INSTANCE, name)
        if doc is None:
            return
        fresh = {k: v for k, v in doc.items() if k not in drop}
        self.store.put(c.INSTANCE, name, {**fresh, **changes})


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """The SQL client's message may quote the statement, password included: never pass it on."""
    try:
        yield
    except RuntimeError:
        raise RuntimeError(f"{what} failed (the server's log may say why)") from None


def _short_version(version: str) -> str:
    """"10.11.19-MariaDB-0+deb12u1" -> "10.11.19"; "15.20 (Debian ...)" -> "15.20"."""
    head = version.split()[0] if version else ""
    return head.split("-")[0]


SYSTEM_BASE = Path("/var/lib/sluice")


def system_root(root: Path) -> Path:
    """Where the servers' directories go when `root`'s own place is closed to their users."""
    digest = hashlib.sha256(str(root.parent.resolve()).encode()).hexdigest()[:16]
    return SYSTEM_BASE / digest / root.name


def _closed_above(directory: Path) -> bool:
    """Whether a folder above `directory` keeps others out (the runner opens `directory`)."""
    for path in directory.resolve().parents:
        if path.exists() and not path.stat().st_mode & stat.S_IXOTH:
            return True
    return False
