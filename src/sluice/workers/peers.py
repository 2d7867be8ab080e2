"""The channel between sibling workers: what one must ask another.

Each worker serves a unix socket, `<state_dir>/workers/<supervisor pid>/<index>.sock`
(the directory is the owner's alone; the supervisor's pid keeps two programs that
share a state_dir apart), and asks its siblings on theirs. One request per
connection: a JSON line in, a JSON line out. The requests:

- `cancel` (pid, secret): a PostgreSQL CancelRequest reached a worker that does
  not hold that key; every sibling is asked, and the one holding it checks the
  secret and cancels, as it would have done itself;
- `kill` (id, user, query, by): a MySQL `KILL [QUERY] id` of a session another
  worker owns (its id says which: `WorkerSlot.owner`); the answer says whether
  that worker found a session of that user to kill;
- `snapshot` (lists): the worker's stats snapshot, and with `lists` its clients
  and servers, for a scrape or an admin `SHOW` answered by a sibling;
- `reload`: the admin console's RELOAD, run by every worker (as SIGHUP is); the
  answer carries the error if the worker kept its configuration;
- `pause` / `resume` (database): the admin console's PAUSE and RESUME; a pause is
  answered once the worker's borrowed connections are back, however long that
  takes, and the answer counts the pools that matched.

Rare operations all, so a connection per request costs nothing worth saving.
A sibling that does not answer within ASK_TIMEOUT (restarting, or stuck) is
left out: a cancel does not reach it, a view lacks its part (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from sluice.errors import SluiceError
from sluice.observe import pausing
from sluice.observe.stats import (
    ClientInfo,
    Gathering,
    ServerInfo,
    Snapshot,
    list_clients,
    list_servers,
    take_snapshot,
)
from sluice.session.services import Services
from sluice.workers import merge

log = logging.getLogger("sluice.workers")

ASK_TIMEOUT = 2.0  # seconds a sibling has to answer
RELOAD_TIMEOUT = 30.0  # a reload may open listeners and read certificates
MAX_LINE = 64 * 1024 * 1024  # a snapshot with its lists of clients can be large
SOCKET_DIR = "workers"


def socket_dir(state_dir: Path, group: int) -> Path:
    """The folder of the sockets of the workers of supervisor `group`."""
    return state_dir / SOCKET_DIR / str(group)


class Worker(Gathering, Services, Protocol):
    """What the peer channel needs of its own worker's program (`App`)."""

    async def cancel(self, pid: int, secret: int, *, forward: bool = True) -> None: ...

    async def reload(self) -> None: ...


class Peers:
    """This worker's end of the channel: its server, and requests to its siblings."""

    def __init__(self, app: Worker, state_dir: Path) -> None:
        self.app = app
        self.slot = app.slot
        self.directory = socket_dir(state_dir, self.slot.group)
        self._server: asyncio.Server | None = None

    def path(self, index: int) -> Path:
        return self.directory / f"{index}.sock"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # a request is trusted: only the owner may send one
        path = self.path(self.slot.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this worker's previous life
        self._server = await asyncio.start_unix_server(self._handle, path, limit=MAX_LINE)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    # ---- asking ----

    def siblings(self) -> list[int]:
        return [i for i in range(self.slot.count) if i != self.slot.index]

    async def ask(
        self, index: int, request: dict[str, Any], timeout: float | None = ASK_TIMEOUT
    ) -> dict[str, Any] | None:
        """One sibling's answer, or None if it did not give one in time."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(
                    self.path(index), limit=MAX_LINE
                )
                try:
                    writer.write(json.dumps(request).encode() + b"\n")
                    answer: dict[str, Any] = json.loads(await reader.readline())
                    return answer
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("worker %d did not answer %s: %s", index, request["op"], exc or "timeout")
            return None

    async def ask_all(
        self, request: dict[str, Any], timeout: float | None = ASK_TIMEOUT
    ) -> list[dict[str, Any]]:
        """The answers of every sibling that gave one."""
        asked = (self.ask(i, request, timeout) for i in self.siblings())
        return [a for a in await asyncio.gather(*asked) if a is not None]

    async def reload(self) -> list[str]:
        """RELOAD in every sibling: why each that did not (no answer counts too)."""
        asked = self.siblings()
        answers = await asyncio.gather(
            *(self.ask(i, {"op": "reload"}, RELOAD_TIMEOUT) for i in asked)
        )
        return [
            f"worker {i}: {'no answer' if a is None else a['error']}"
            for i, a in zip(asked, answers, strict=True)
            if a is None or a.get("error")
        ]

    async def pause(self, database: str | None) -> int:
        answers = await self.ask_all({"op": "pause", "database": database}, timeout=None)
        return sum(int(a["pools"]) for a in answers)

    async def resume(self, database: str | None) -> int:
        answers = await self.ask_all({"op": "resume", "database": database})
        return sum(int(a["pools"]) for a in answers)

    async def cancel(self, pid: int, secret: int) -> None:
        await self.ask_all({"op": "cancel", "pid": pid, "secret": secret})

    async def kill(self, ident: int, user: str, *, query: bool, by: str) -> bool:
        """KILL [QUERY] on the worker owning `ident`: whether it found the session."""
        request = {"op": "kill", "id": ident, "user": user, "query": query, "by": by}
        answer = await self.ask(self.slot.owner(ident), request)
        return bool(answer and answer.get("found"))

    async def snapshot(self, local: Snapshot) -> Snapshot:
        """`local` summed with every sibling's snapshot."""
        answers = await self.ask_all({"op": "snapshot", "lists": False})
        return merge.merge([local, *(merge.decode(a["snapshot"]) for a in answers)])

    async def lists(self) -> tuple[list[ClientInfo], list[ServerInfo]]:
        """Every worker's clients and servers, this worker's first."""
        clients, servers = list_clients(self.app), list_servers(self.app)
        for answer in await self.ask_all({"op": "snapshot", "lists": True}):
            clients += merge.decode_clients(answer["clients"])
            servers += merge.decode_servers(answer["servers"])
        return clients, servers

    # ---- answering ----

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                request = json.loads(await reader.readline())
            # a pause waits for the borrowed connections, however long they are kept
            limit = None if request["op"] == "pause" else RELOAD_TIMEOUT
            async with asyncio.timeout(limit):
                writer.write(json.dumps(await self._answer(request)).encode() + b"\n")
                await writer.drain()
        except (OSError, TimeoutError, ValueError, KeyError) as exc:
            log.warning("bad request from a sibling worker: %s", exc)
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "cancel":
            await self.app.cancel(int(request["pid"]), int(request["secret"]), forward=False)
            return {}
        if op == "kill":
            from sluice.mysql.client import kill_session  # the engine's rule for KILL

            found = kill_session(
                self.app, int(request["id"]), str(request["user"]),
                query=bool(request["query"]), by=str(request["by"]),
            )  # fmt: skip
            return {"found": found}
        if op == "reload":
            try:
                await asyncio.shield(self.app.reload())  # never left half applied
            except (SluiceError, OSError) as exc:
                return {"error": str(exc)}
            return {"error": ""}
        if op in ("pause", "resume"):
            pools = pausing.matching_pools(self.app, request["database"])
            if op == "pause":
                await pausing.pause(pools)
            else:
                pausing.resume(pools)
            return {"pools": len(pools)}
        if op == "snapshot":
            answer: dict[str, Any] = {"snapshot": merge.encode(take_snapshot(self.app))}
            if request.get("lists"):
                answer["clients"] = merge.encode_rows(list_clients(self.app))
                answer["servers"] = merge.encode_rows(list_servers(self.app))
            return answer
        raise KeyError(f"unknown request {op!r}")


async def gather_snapshot(app: Gathering) -> Snapshot:
    """The stats snapshot of every worker, summed (this worker's own when it is alone)."""
    local = take_snapshot(app)
    return local if app.peers is None else await app.peers.snapshot(local)


async def gather_lists(app: Gathering) -> tuple[list[ClientInfo], list[ServerInfo]]:
    """Every worker's clients and servers."""
    if app.peers is None:
        return list_clients(app), list_servers(app)
    return await app.peers.lists()
