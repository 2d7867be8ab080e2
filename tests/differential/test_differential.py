"""Fixed seeds of the differential tester, per engine, on the session servers.

Each seed's program runs directly and through a fresh `sluice proxy` (transaction
pooling, two connections for three clients); any difference outside
`limitations.toml` fails the seed with what differed and how to shrink and replay it.
The same programs run twice directly must not differ: that keeps the grammar free of
non-deterministic observables, so every proxy divergence is Sluice's.
`make fuzz SEEDS=N` runs more seeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgCluster

from . import limitations
from .engines import GRAMMARS
from .grammar import generate
from .model import check
from .my_client import MyTarget
from .pg_client import PgTarget
from .program import save
from .report import describe
from .runner import Trace, compare, execute, run_both
from .target import Target

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SEEDS = range(10)
LENGTH = 60


@pytest.fixture(scope="session")
def pg_target(pg: PgCluster) -> Iterator[PgTarget]:
    target = PgTarget(pg, APP_USER, APP_PASSWORD, APP_DB)
    yield target
    target.drop()


@pytest.fixture(scope="session")
def mysql_target(mariadb: MariaDbCluster) -> Iterator[MyTarget]:
    target = MyTarget(mariadb, APP_USER, APP_PASSWORD, APP_DB)
    yield target
    target.drop()


def _target(request: pytest.FixtureRequest, engine: str) -> Target:
    target: Target = request.getfixturevalue(f"{engine}_target")
    return target


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_seed_same_through_proxy(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str, seed: int
) -> None:
    target = _target(request, engine)
    program = generate(GRAMMARS[engine], seed, LENGTH)
    assert check(program) is None
    outcome = run_both(program, target, limitations.load())
    if outcome.divergences:
        saved = tmp_path / f"{engine}-{seed}.json"
        save(saved, program)
        found = "\n".join("  " + describe(program, d) for d in outcome.divergences)
        pytest.fail(
            f"{engine} seed {seed}: {len(outcome.divergences)} divergence(s) through the proxy\n"
            f"{found}\n"
            f"shrink: python -m tests.differential.fuzz --engine {engine} --seed {seed}\n"
            f"replay: python -m tests.differential.replay {saved}",
            pytrace=False,
        )


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_seed_same_twice_directly(request: pytest.FixtureRequest, engine: str, seed: int) -> None:
    target = _target(request, engine)
    program = generate(GRAMMARS[engine], seed, LENGTH)
    traces = []
    for _ in range(2):
        target.reset()
        trace = Trace(execute(program, target, target.endpoint, target.kill_clients), {})
        trace.final = target.final_state()
        traces.append(trace)
    differences = compare(program, traces[0], traces[1], (), [])
    assert not differences, "\n".join(describe(program, d) for d in differences)
