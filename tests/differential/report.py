"""How divergences and traces read: in pytest's failure message and on the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .program import Program, save
from .runner import Divergence, Outcome, labels


def short(value: Any, width: int = 160) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe(program: Program, divergence: Divergence) -> str:
    """One divergence: where, which step, which observable, and both values."""
    step = ""
    if divergence.step is not None:
        step = "  " + program.steps[divergence.step].text()
    also = f" (also {', '.join(divergence.fields[1:])})" if len(divergence.fields) > 1 else ""
    return (
        f"{divergence.where} [{divergence.label}] {divergence.field}{also}:{step}\n"
        f"      direct: {short(divergence.direct)}\n"
        f"      proxy:  {short(divergence.proxy)}"
    )


def trace(program: Program, outcome: Outcome) -> str:
    """Every observation, the proxy's shown under the direct one where they differ."""
    lines = []
    places = labels(program)
    count = max(len(outcome.direct.observations), len(outcome.proxy.observations))
    for index in range(count):
        where, step, _, client = places[index]
        direct = _at(outcome.direct.observations, index)
        proxy = _at(outcome.proxy.observations, index)
        what = program.steps[step].text() if step is not None else str(program.clients[client])
        lines.append(f"{where:>9}  {what}")
        lines.append(f"{'':>11}direct {short(_brief(direct), 400)}")
        if direct != proxy:
            changed = {
                k: proxy.get(k)
                for k in sorted(direct.keys() | proxy.keys())
                if direct.get(k) != proxy.get(k)
            }
            lines.append(f"{'':>11}PROXY  {short(changed, 400)}")
    for table in sorted(outcome.direct.final.keys() | outcome.proxy.final.keys()):
        a, b = outcome.direct.final.get(table), outcome.proxy.final.get(table)
        lines.append(f"    final  {table}: {short(a)}" + ("" if a == b else f"  PROXY {short(b)}"))
    return "\n".join(lines)


def _at(observations: list[dict[str, Any]], index: int) -> dict[str, Any]:
    return observations[index] if index < len(observations) else {"ran": False}


def _brief(obs: dict[str, Any]) -> dict[str, Any]:
    """An observation without the ParameterStatus values (shown only where they differ)."""
    return {k: v for k, v in obs.items() if not k.startswith("param.")}


def file_name(engine: str, divergence: Divergence) -> str:
    name = f"{engine}-{divergence.label}-{divergence.field}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".json"


def write(directory: Path, program: Program, divergence: Divergence) -> Path:
    path = directory / file_name(program.engine, divergence)
    save(path, program, divergence.to_json())
    return path
