"""The runner: warm execution environments per function, started and stopped on demand.

Rules, as Lambda keeps them:
1. An environment serves one invocation at a time; an invocation takes the most recently used
   idle environment of its function (LIFO: the warmest), else a new one is started.
2. New environments are started while the function stays under its reserved concurrency (if
   set; zero means every invocation is throttled) and all functions together stay under the
   runner's `max_environments`; beyond that the invocation is `Throttled`.
3. Environments belong to one revision of the function's configuration and code: after a
   change no old environment is given another invocation; idle ones are stopped at once, busy
   ones when they finish.
4. A timed-out or crashed environment is never reused (the next invocation starts a new one).
5. Environments idle for `idle_seconds` are stopped by the reaper.
6. The execution role's credentials are refreshed in an environment before they expire.
7. Each invocation's log lines go to the environment's stream of the function's log group.
8. What the host allows environments (their own /opt, a memory cgroup, an unprivileged uid) is
   found once, when the first environment starts (`sandbox.probe`); so is the directory of
   Lambda's own libraries they may import (`libraries.provide`).
9. At most four environments per CPU are starting at any moment; a burst of cold starts
   queues for a turn instead of sharing the CPUs so thinly that every init phase (10 s at
   most, as on Lambda) runs out of time. Init Duration counts from the process's start.
Every stop says why in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from sluice.functions.environment import Environment, EnvironmentGone, no_runtime
from sluice.functions.libraries import provide
from sluice.functions.logs import LogArchive
from sluice.functions.sandbox import Sandbox, probe
from sluice.functions.spec import (
    CredentialSource,
    FunctionSpec,
    Outcome,
    RunnerSettings,
    TemporaryCredentials,
    Throttled,
)

log = logging.getLogger("sluice.functions")

_REAP_INTERVAL = 5.0
STARTS_AT_ONCE = 4 * (os.cpu_count() or 1)


@dataclass(slots=True)
class _Pool:
    """One function's environments: idle ones (LIFO) and how many are busy."""

    idle: list[Environment] = field(default_factory=list)
    busy: int = 0
    revision: str = ""


class Runner:
    """Runs invocations in execution environments; see the module docstring."""

    def __init__(self, settings: RunnerSettings, credentials: CredentialSource,
                 sandbox: Sandbox | None = None) -> None:  # fmt: skip
        self.settings = settings
        self._credentials = credentials
        self._pools: dict[str, _Pool] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._all: set[Environment] = set()
        self.logs = LogArchive(settings.root / "logs")
        self._sandbox = sandbox  # None: probed when the first environment starts
        self._probing = asyncio.Lock()
        self._starting = asyncio.Semaphore(STARTS_AT_ONCE)

    @property
    def running(self) -> int:
        """Environments alive, busy or idle, over all functions."""
        return sum(p.busy + len(p.idle) for p in self._pools.values())

    async def invoke(self, spec: FunctionSpec, request_id: str, event: bytes) -> Outcome:
        """Run one invocation (Throttled when no environment may take it)."""
        self._ensure_reaper()
        pool = self._pools.setdefault(spec.name, _Pool(revision=spec.revision))
        if pool.revision != spec.revision:
            self._retire_idle(pool, "the function changed")
            pool.revision = spec.revision
        env = pool.idle.pop() if pool.idle else None
        if env is None:
            self._admit(spec, pool)
        pool.busy += 1
        try:
            if env is None:
                env = await self._start(spec)
            outcome = await env.run(request_id, event, self._refresh(env, spec))
        except EnvironmentGone:
            outcome = no_runtime(request_id, spec)
            self.logs.append(spec.log_group, outcome.stream, outcome.lines)
            return outcome
        finally:
            pool.busy -= 1
        self._release(pool, env, spec)
        self.logs.append(spec.log_group, outcome.stream, outcome.lines)
        return outcome

    def _admit(self, spec: FunctionSpec, pool: _Pool) -> None:
        reserved = spec.reserved_concurrency
        if reserved is not None and pool.busy >= reserved:
            raise Throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
        if self.running >= self.settings.max_environments:
            self._evict_idle_elsewhere(spec.name)
        if self.running >= self.settings.max_environments:
            raise Throttled("ConcurrentInvocationLimitExceeded")

    async def _start(self, spec: FunctionSpec) -> Environment:
        creds = self._credentials.credentials(spec.role_arn, spec.name)
        env = Environment(spec, self.settings, await self.sandbox())
        self._all.add(env)
        try:
            async with self._starting:
                await env.start(creds)
        finally:
            if not env.alive:
                self._all.discard(env)
        bound = f" (connects from {spec.source_address}, bound by the {env.binding})"
        log.info("function %s: environment %d started%s", spec.name, env.pid,
                 bound if env.binding else "")  # fmt: skip
        return env

    async def sandbox(self) -> Sandbox:
        """What the host allows environments (probed on first use)."""
        async with self._probing:
            if self._sandbox is None:
                root = self.settings.root
                await asyncio.to_thread(provide, self.settings.libraries)
                self._sandbox = await probe(root / "opt", self.settings.python, root / "unpacked")
        return self._sandbox

    def _refresh(self, env: Environment, spec: FunctionSpec) -> TemporaryCredentials | None:
        if env.credentials_expire - time.time() > self.settings.credential_margin:
            return None
        return self._credentials.credentials(spec.role_arn, spec.name)

    def _release(self, pool: _Pool, env: Environment, spec: FunctionSpec) -> None:
        if not env.alive:
            self._all.discard(env)
            return  # timed out, crashed or failed to init: already stopped, never reused
        if pool.revision != spec.revision:
            self._close_later(env, "the function changed")
            return
        pool.idle.append(env)

    # ---- stopping ----

    def retire(self, name: str) -> None:
        """The function changed or is gone: no environment of it is used again."""
        pool = self._pools.get(name)
        if pool is not None:
            pool.revision = ""
            self._retire_idle(pool, "the function changed or was deleted")

    def _retire_idle(self, pool: _Pool, reason: str) -> None:
        for env in pool.idle:
            self._close_later(env, reason)
        pool.idle.clear()

    def _evict_idle_elsewhere(self, name: str) -> None:
        """Make room: the longest idle environment of another function is stopped."""
        candidates = [(env.idle_since, n) for n, p in self._pools.items() if n != name
                      for env in p.idle[:1]]  # fmt: skip
        if candidates:
            _, victim = min(candidates)
            env = self._pools[victim].idle.pop(0)
            self._close_later(env, f"room was needed for function {name}")

    def _close_later(self, env: Environment, reason: str) -> None:
        self._all.discard(env)
        task = asyncio.get_running_loop().create_task(env.close(reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(_REAP_INTERVAL)
            self.reap()

    def reap(self) -> None:
        """Stop environments idle longer than `idle_seconds`."""
        limit = time.monotonic() - self.settings.idle_seconds
        for pool in self._pools.values():
            stale = [env for env in pool.idle if env.idle_since < limit]
            for env in stale:
                pool.idle.remove(env)
                self._close_later(env, f"idle for {self.settings.idle_seconds:.0f} s")

    async def stop(self) -> None:
        """Stop every environment (the server is shutting down)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for pool in self._pools.values():
            pool.idle.clear()
        for env in list(self._all):  # busy ones too: their invocations are cut short
            self._close_later(env, "the server is stopping")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
