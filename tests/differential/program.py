"""Programs: the clients, their steps, and the JSON form a divergence is saved and replayed in.

A step says what its client does (`action`, with `sql` and `params` where it runs SQL)
and, in `effects`, what the schedule model must know about it (`model.py`): whether
it opens or ends a transaction, may pin its client, writes a table or takes a lock.
Effects are part of the saved program, so a replay and a shrunken program are checked
by the same model that generated them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ENGINES = ("pg", "mysql")
POOL_SIZE = 2
FORMAT = 1


@dataclass(frozen=True)
class ClientSpec:
    """One client's connection: library, autocommit at connect, startup options."""

    library: str  # "psycopg" | "pymysql" | "connector"
    autocommit: bool
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One operation of one client. `label` names the grammar rule that made it."""

    client: int
    action: str
    label: str
    sql: str = ""
    params: list[Any] | None = None
    effects: tuple[str, ...] = ()

    def text(self) -> str:
        """How the step reads in a report."""
        what = self.sql if self.sql else self.action
        if self.action not in ("sql", "") and self.sql:
            what = f"[{self.action}] {self.sql}"
        if self.params is not None:
            what += f"  params={self.params!r}"
        return f"c{self.client}: {what}"


@dataclass(frozen=True)
class Program:
    """Clients and the schedule of their steps, for one engine."""

    engine: str
    seed: int
    clients: tuple[ClientSpec, ...]
    steps: tuple[Step, ...]
    pool_size: int = POOL_SIZE

    def with_steps(self, steps: tuple[Step, ...]) -> Program:
        return Program(self.engine, self.seed, self.clients, steps, self.pool_size)

    def without_client(self, index: int) -> Program:
        """The program without client `index` (which must have no step), renumbered."""
        assert all(s.client != index for s in self.steps)
        steps = tuple(
            Step(s.client - (s.client > index), s.action, s.label, s.sql, s.params, s.effects)
            for s in self.steps
        )
        clients = self.clients[:index] + self.clients[index + 1 :]
        return Program(self.engine, self.seed, clients, steps, self.pool_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "engine": self.engine,
            "seed": self.seed,
            "pool_size": self.pool_size,
            "clients": [asdict(c) for c in self.clients],
            "steps": [_step_json(s) for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Program:
        if data.get("format") != FORMAT or data.get("engine") not in ENGINES:
            raise ValueError("not a differential program (format or engine unknown)")
        clients = tuple(ClientSpec(**c) for c in data["clients"])
        steps = tuple(
            Step(
                client=s["client"],
                action=s["action"],
                label=s["label"],
                sql=s.get("sql", ""),
                params=s.get("params"),
                effects=tuple(s.get("effects", ())),
            )
            for s in data["steps"]
        )
        return cls(data["engine"], data["seed"], clients, steps, data.get("pool_size", POOL_SIZE))


def _step_json(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"client": step.client, "action": step.action, "label": step.label}
    if step.sql:
        out["sql"] = step.sql
    if step.params is not None:
        out["params"] = step.params
    if step.effects:
        out["effects"] = list(step.effects)
    return out


def save(path: Path, program: Program, divergence: dict[str, Any] | None = None) -> None:
    """Write `program` (and what diverged, for the reader) as JSON."""
    data: dict[str, Any] = {"program": program.to_json()}
    if divergence is not None:
        data["divergence"] = divergence
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def load(path: Path) -> Program:
    data = json.loads(path.read_text())
    return Program.from_json(data.get("program", data))
