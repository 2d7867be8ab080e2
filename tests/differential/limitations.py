"""The documented differences the tester accepts, read from `limitations.toml`.

Each entry names the engine, the observable (`field`, a glob over names such as
`rows`, `error`, `tx`, `param.TimeZone`, `in_trans`, `final.diff_a.t`), optionally the
grammar rule (`label`, a glob) and the error Sluice answers instead (`proxy_error`: the
entry then covers a step only when the proxy's side failed with exactly that code, so a
documented refusal is accepted and a wrong answer never is), and says in `explanation`
why Sluice cannot do better.
docs/configuration.md points here: this file is the list of what differs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).with_name("limitations.toml")


@dataclass(frozen=True)
class Limitation:
    id: str
    engine: str
    explanation: str
    field: str
    label: str = "*"
    proxy_error: int | str | None = None

    def covers(
        self, engine: str, label: str, field: str, via: Mapping[str, Any] | None = None
    ) -> bool:
        return (
            self.engine in (engine, "both")
            and fnmatchcase(field, self.field)
            and fnmatchcase(label, self.label)
            and (self.proxy_error is None or _failed_with(via, self.proxy_error))
        )


def _failed_with(via: Mapping[str, Any] | None, code: int | str) -> bool:
    error = via.get("error") if via is not None else None
    return isinstance(error, (list, tuple)) and bool(error) and error[0] == code


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
    limits: tuple[Limitation, ...],
    engine: str,
    label: str,
    field: str,
    via: Mapping[str, Any] | None = None,
) -> Limitation | None:
    """The limitation that accepts a difference in `field` at a `label` step (where the
    proxy's side observed `via`), if any."""
    return next((lim for lim in limits if lim.covers(engine, label, field, via)), None)
