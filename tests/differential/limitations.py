"""The documented differences the tester accepts, read from `limitations.toml`.

Each entry names the engine, the observable (`field`, a glob over names such as
`rows`, `error`, `tx`, `param.TimeZone`, `in_trans`, `final.diff_a.t`), optionally the
grammar rule (`label`, a glob), and says in `explanation` why Sluice cannot do better.
docs/configuration.md points here: this file is the list of what differs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

DEFAULT_PATH = Path(__file__).with_name("limitations.toml")


@dataclass(frozen=True)
class Limitation:
    id: str
    engine: str
    explanation: str
    field: str
    label: str = "*"

    def covers(self, engine: str, label: str, field: str) -> bool:
        return (
            self.engine in (engine, "both")
            and fnmatchcase(field, self.field)
            and fnmatchcase(label, self.label)
        )


def load(path: Path = DEFAULT_PATH) -> tuple[Limitation, ...]:
    data = tomllib.loads(path.read_text())
    found = []
    for entry in data.get("limitation", []):
        missing = {"id", "engine", "explanation", "field"} - entry.keys()
        if missing:
            raise ValueError(f"{path}: limitation {entry.get('id', '?')} lacks {sorted(missing)}")
        found.append(Limitation(**entry))
    return tuple(found)


def allowed(
    limits: tuple[Limitation, ...], engine: str, label: str, field: str
) -> Limitation | None:
    """The limitation that accepts a difference in `field` at a `label` step, if any."""
    return next((lim for lim in limits if lim.covers(engine, label, field)), None)
