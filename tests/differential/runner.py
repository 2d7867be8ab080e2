"""Run a program directly and through a fresh proxy, and compare what the clients saw.

Each side starts from freshly made schemas. Steps run one at a time on one worker
thread, so both sides see the same interleaving. A step that has not finished after
`STEP_TIMEOUT` seconds, or that the proxy answered with its borrow-timeout error, is
recorded as `blocked` and ends that side's run: the model (`model.py`) admits no step
that waits, so a wait is itself a divergence, and the schedule after it means nothing.
A stuck side is cut off (the proxy stopped, or the direct connections ended) so its
thread returns.

The proxy starts in the background while the direct side runs, so a run costs little
more than the two sides' steps.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from sluice.dbserver.launcher import free_port
from sluice.devtools.runner import SluiceProcess

from .limitations import Limitation, allowed
from .program import Program, Step
from .target import Endpoint, Observation, Session, Target

STEP_TIMEOUT = 10.0


@dataclass
class Trace:
    """What one side observed: one entry per client connect, then one per step."""

    observations: list[Observation]
    final: dict[str, Any]


@dataclass(frozen=True)
class Divergence:
    """A difference between the sides at one place (a connect, a step, the final rows)
    that no limitation covers."""

    where: str  # "connect c0", "step 12", "final"
    step: int | None
    label: str
    field: str
    direct: Any
    proxy: Any
    fields: list[str]  # every observable that differed at this place, `field` first

    @property
    def signature(self) -> tuple[str, str]:
        """What a shrunken program must still show: the grammar rule and the observable.
        A step that waited is one kind whatever the step: what made it wait came before."""
        return ("any", "blocked") if self.field == "blocked" else (self.label, self.field)

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "label": self.label,
            "field": self.field,
            "fields": self.fields,
            "direct": self.direct,
            "proxy": self.proxy,
        }


@dataclass
class Outcome:
    """Both traces, and every divergence (the first of each signature, in trace order)."""

    direct: Trace
    proxy: Trace
    divergences: list[Divergence] = field(default_factory=list)
    proxy_log: str = ""
    accepted: list[str] = field(default_factory=list)


def execute(
    program: Program, target: Target, endpoint: Endpoint, cut: Callable[[], None]
) -> list[Observation]:
    """Connect every client, run the steps in order; stop at the first step that waits."""
    sessions = [target.session(spec, endpoint) for spec in program.clients]
    calls: list[Callable[[], Observation]] = [s.open for s in sessions]
    calls += [_bind(sessions[step.client], step) for step in program.steps]
    observed: list[Observation] = []
    with ThreadPoolExecutor(1, thread_name_prefix="differential") as worker:
        try:
            for call in calls:
                future = worker.submit(_guarded, call)
                try:
                    obs = future.result(STEP_TIMEOUT)
                except FutureTimeout:
                    observed.append({"blocked": "no answer"})
                    cut()
                    break
                observed.append(obs)
                if obs.get("error", [None])[0] == target.pool_timeout:
                    obs["blocked"] = "borrow timeout"
                    break
        finally:
            for session in sessions:
                worker.submit(_guarded, _closer(session))
    return observed


def _bind(session: Session, step: Step) -> Callable[[], Observation]:
    return lambda: session.run(step)


def _closer(session: Session) -> Callable[[], Observation]:
    def close() -> Observation:
        session.close()
        return {}

    return close


def _guarded(call: Callable[[], Observation]) -> Observation:
    """A library exception that is not a database error is an observation too."""
    try:
        return call()
    except Exception as exc:
        return {"exception": type(exc).__name__}


def run_both(program: Program, target: Target, limits: tuple[Limitation, ...]) -> Outcome:
    """Run `program` directly, then through a fresh proxy started meanwhile; compare."""
    port = free_port()
    proc = SluiceProcess([target.proxy(port, program.pool_size)])
    started: list[BaseException] = []
    starter = threading.Thread(target=_start, args=(proc, started), daemon=True)
    starter.start()
    try:
        target.reset()
        direct = Trace(execute(program, target, target.endpoint, target.kill_clients), {})
        direct.final = target.final_state()
        starter.join()
        if started:
            raise RuntimeError(f"sluice did not start: {started[0]}")
        target.reset()
        via = Trace(execute(program, target, target.endpoint.at("127.0.0.1", port), proc.stop), {})
    finally:
        proc.stop()  # the proxy's connections close, so the final read sees only what committed
        log = proc.log_tail(60)
        shutil.rmtree(proc.workdir, ignore_errors=True)
    via.final = target.final_state()
    outcome = Outcome(direct, via, proxy_log=log)
    outcome.divergences = compare(program, direct, via, limits, outcome.accepted)
    return outcome


def _start(proc: SluiceProcess, errors: list[BaseException]) -> None:
    try:
        proc.start()
    except BaseException as exc:
        errors.append(exc)


def labels(program: Program) -> list[tuple[str, int | None, str, int]]:
    """(where, step index, label, client) of each observation, in trace order."""
    out: list[tuple[str, int | None, str, int]] = [
        (f"connect c{i}", None, "connect", i) for i in range(len(program.clients))
    ]
    out += [(f"step {i}", i, step.label, step.client) for i, step in enumerate(program.steps)]
    return out


def is_state(name: str) -> bool:
    """Observables that describe the session rather than the step (they persist)."""
    return name in ("tx", "in_trans", "autocommit") or name.startswith("param.")


def compare(
    program: Program,
    direct: Trace,
    via: Trace,
    limits: tuple[Limitation, ...],
    accepted: list[str],
) -> list[Divergence]:
    """Differences no limitation covers, the first of each signature; the limitations
    that covered others go to `accepted`. A session observable that differs exactly as
    it did at the client's previous step is not new; a client whose connection broke on
    one side is not compared again until it reconnects; comparing stops after a step
    that waited, and after an accepted refusal that left the proxy's transaction failed
    where the direct one goes on (everything after it, the rows committed included, may
    differ because of it). Later divergences may still follow from earlier ones."""
    found: dict[tuple[str, str], Divergence] = {}
    before: dict[int, tuple[Observation, Observation]] = {}
    lost: set[int] = set()
    for index, (where, step, label, client) in enumerate(labels(program)):
        a, b = _at(direct.observations, index), _at(via.observations, index)
        if label == "reconnect":
            lost.discard(client)
        if client in lost:
            continue
        differ = []
        refused = False
        for name in sorted(a.keys() | b.keys(), key=_weight):
            if a.get(name) == b.get(name) or _persists(before.get(client), name, a, b):
                continue
            lim = allowed(limits, program.engine, label, name, b)
            if lim is not None:
                accepted.append(f"{where} {name}: {lim.id}")
                refused = refused or lim.proxy_error is not None
                continue
            differ.append(name)
        if differ:
            main = differ[0]
            diverged = Divergence(where, step, label, main, a.get(main), b.get(main), differ)
            found.setdefault(diverged.signature, diverged)
            if _broken(a) or _broken(b):
                lost.add(client)
        before[client] = (a, b)
        if a.get("blocked") or b.get("blocked") or not (a.get("ran", 1) and b.get("ran", 1)):
            return list(found.values())
        if refused and b.get("tx") == "INERROR" != a.get("tx"):
            return list(found.values())
    for table in sorted(direct.final.keys() | via.final.keys()):
        a_rows, b_rows = direct.final.get(table), via.final.get(table)
        name = f"final.{table}"
        if a_rows != b_rows and allowed(limits, program.engine, "final", name) is None:
            diverged = Divergence("final", None, "final", name, a_rows, b_rows, [name])
            found.setdefault(diverged.signature, diverged)
    return list(found.values())


_FIRST = ("blocked", "ran", "exception", "error", "rows", "result", "status", "cols")


def _weight(name: str) -> tuple[int, str]:
    """Fields in the order a divergence is named by: what the step returned first."""
    return (_FIRST.index(name) if name in _FIRST else len(_FIRST), name)


def _broken(obs: Observation) -> bool:
    return bool(obs.get("exception")) or obs.get("error", [None])[0] == "client"


def _at(observations: list[Observation], index: int) -> Observation:
    return observations[index] if index < len(observations) else {"ran": False}


def _persists(
    previous: tuple[Observation, Observation] | None, name: str, a: Observation, b: Observation
) -> bool:
    if previous is None or not is_state(name):
        return False
    return previous[0].get(name) == a.get(name) and previous[1].get(name) == b.get(name)
