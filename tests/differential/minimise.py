"""Shrink a diverging program to a small one that still shows the same divergence.

Steps after the diverging one are dropped first (they cannot change it), then delta
debugging (Zeller's ddmin) over the rest: try halves, then complements, then
finer pieces; a candidate counts if the schedule model admits it (so it cannot wait)
and running it both ways still shows a divergence of the same signature (grammar rule,
observable). Then each client's startup options and autocommit are simplified one at a
time, and clients left without steps are dropped. Every candidate re-runs both sides,
so a budget bounds the work; the smallest program found so far is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .limitations import Limitation
from .model import check
from .program import ClientSpec, Program, Step
from .runner import Divergence, Outcome, run_both
from .target import Target


@dataclass
class Shrunk:
    program: Program
    divergence: Divergence
    runs: int
    seconds: float


class _Tester:
    """Runs candidates, counting them, until the budget is spent."""

    def __init__(
        self,
        target: Target,
        limits: tuple[Limitation, ...],
        signature: tuple[str, str],
        budget: float,
    ) -> None:
        self.target, self.limits, self.signature = target, limits, signature
        self.deadline = time.monotonic() + budget
        self.runs = 0
        self.last: Divergence | None = None

    @property
    def spent(self) -> bool:
        return time.monotonic() > self.deadline

    def __call__(self, program: Program) -> bool:
        if self.spent or check(program) is not None:
            return False
        self.runs += 1
        outcome: Outcome = run_both(program, self.target, self.limits)
        match = next((d for d in outcome.divergences if d.signature == self.signature), None)
        if match is not None:
            self.last = match
        return match is not None


def ddmin(steps: list[Step], holds: Callable[[list[Step]], bool]) -> list[Step]:
    """A 1-minimal sublist of `steps` (keeping order) for which `holds` is true."""
    if holds([]):
        return []
    granularity = 2
    while len(steps) >= 2:
        chunks = _split(steps, granularity)
        for index, chunk in enumerate(chunks):
            if holds(chunk):
                steps, granularity = chunk, 2
                break
            rest = [s for i, c in enumerate(chunks) if i != index for s in c]
            if granularity > 2 and holds(rest):
                steps, granularity = rest, max(granularity - 1, 2)
                break
        else:
            if granularity >= len(steps):
                break
            granularity = min(len(steps), granularity * 2)
    if len(steps) == 1 and holds([]):
        return []
    return steps


def _split(steps: list[Step], parts: int) -> list[list[Step]]:
    size, extra = divmod(len(steps), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(steps[start:end])
        start = end
    return [c for c in chunks if c]


def _simpler_clients(program: Program) -> list[Program]:
    """Programs with one idle client left out, one client option removed, or one client
    put in autocommit."""
    busy = {s.client for s in program.steps}
    out = [program.without_client(i) for i in range(len(program.clients)) if i not in busy]
    for index, spec in enumerate(program.clients):
        variants: list[ClientSpec] = []
        for key in spec.options:
            options = {k: v for k, v in spec.options.items() if k != key}
            variants.append(replace(spec, options=options))
        if "options" in spec.options:
            startup = spec.options["options"]
            parts = startup.split("-c ")[1:]
            for part in parts if len(parts) > 1 else []:
                trimmed = " ".join(startup.replace(f"-c {part}", "").split())
                variants.append(replace(spec, options={**spec.options, "options": trimmed}))
        if not spec.autocommit:
            variants.append(replace(spec, autocommit=True))
        for variant in variants:
            clients = (*program.clients[:index], variant, *program.clients[index + 1 :])
            out.append(
                Program(program.engine, program.seed, clients, program.steps, program.pool_size)
            )
    return out


def shrink(
    program: Program,
    target: Target,
    limits: tuple[Limitation, ...],
    divergence: Divergence,
    budget: float = 300.0,
) -> Shrunk:
    """The smallest program found within `budget` seconds that shows `divergence` again."""
    started = time.monotonic()
    tester = _Tester(target, limits, divergence.signature, budget)
    steps = list(program.steps)
    if divergence.where.startswith("connect"):
        steps = []  # what a client saw at connect cannot depend on any step
    elif divergence.step is not None:
        steps = steps[: divergence.step + 1]  # later steps cannot change what it saw
    steps = ddmin(steps, lambda s: tester(program.with_steps(tuple(s))))
    best = program.with_steps(tuple(steps))
    improved = True
    while improved and not tester.spent:
        improved = False
        for candidate in _simpler_clients(best):
            if tester(candidate):
                best, improved = candidate, True
                break
    final = tester.last if tester.last is not None else divergence
    return Shrunk(best, final, tester.runs, time.monotonic() - started)
