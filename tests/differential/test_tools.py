"""The tester's own parts, without servers: generator, schedule model, shrinking, comparing."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import limitations
from .engines import GRAMMARS
from .grammar import generate
from .minimise import ddmin
from .model import PoolModel, check
from .program import ClientSpec, Program, Step, load, save
from .runner import Trace, compare


def _program(*steps: Step, clients: int = 3, autocommit: bool = True) -> Program:
    specs = tuple(ClientSpec("psycopg", autocommit) for _ in range(clients))
    return Program("pg", 0, specs, steps)


def _sql(client: int, *effects: str) -> Step:
    return Step(client, "sql", "x", "SELECT 1", None, ("stmt", *effects))


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_same_seed_same_program_and_every_step_admitted(engine: str, tmp_path: Path) -> None:
    for seed in range(40):
        program = generate(GRAMMARS[engine], seed, 60)
        assert program == generate(GRAMMARS[engine], seed, 60)
        assert len(program.steps) == 60
        assert check(program) is None, seed
    save(tmp_path / "p.json", program)
    assert load(tmp_path / "p.json") == program


def test_a_third_client_waits_while_two_hold_connections() -> None:
    program = _program(_sql(0, "begin"), _sql(1, "pin"))
    model = PoolModel(program)
    for step in program.steps:
        model.apply(step)
    assert not model.admits(_sql(2))
    assert model.admits(_sql(0, "end"))
    model.apply(_sql(0, "end"))
    assert model.admits(_sql(2))


def test_autocommit_off_holds_after_any_statement_until_the_end() -> None:
    model = PoolModel(_program(clients=3, autocommit=False))
    model.apply(_sql(0))
    model.apply(_sql(1))
    assert not model.admits(_sql(2))
    model.apply(Step(1, "commit", "c", "", None, ("end",)))
    assert model.admits(_sql(2))


def test_a_table_written_in_an_open_transaction_is_its_own() -> None:
    model = PoolModel(_program())
    model.apply(_sql(0, "begin"))
    model.apply(_sql(0, "write:t"))
    assert not model.admits(_sql(1, "write:t"))
    assert model.admits(_sql(1, "write:c"))
    model.apply(_sql(0, "end"))
    assert model.admits(_sql(1, "write:t"))


def test_locks_wait_for_other_holders_and_keys_of_a_closed_client_are_tainted() -> None:
    model = PoolModel(_program())
    model.apply(_sql(0, "try:1"))
    assert not model.admits(_sql(1, "lock:1"))
    assert model.admits(_sql(1, "try:1"))
    assert model.admits(_sql(0, "lock:1"))
    model.apply(Step(0, "reconnect", "reconnect", "", None, ("reconnect",)))
    assert not model.admits(_sql(1, "peek:1"))
    assert model.admits(_sql(1, "lock:2"))


def test_ddmin_keeps_exactly_the_steps_that_matter() -> None:
    steps = [_sql(i % 3) for i in range(20)]
    steps = [Step(s.client, s.action, f"s{i}", s.sql) for i, s in enumerate(steps)]
    runs: list[int] = []

    def holds(candidate: list[Step]) -> bool:
        runs.append(1)
        labels = {s.label for s in candidate}
        return {"s3", "s17"} <= labels

    assert [s.label for s in ddmin(steps, holds)] == ["s3", "s17"]
    assert len(runs) < 60


def test_a_session_difference_is_reported_where_it_appears_only() -> None:
    program = _program(_sql(0), _sql(0), _sql(1))
    same = {"tx": "IDLE", "param.TimeZone": "UTC"}
    moved = {"tx": "IDLE", "param.TimeZone": "Asia/Tokyo"}
    direct = Trace([same, same, same, same, same, {"rows": [[1]], **same}], {"t": [[1]]})
    proxy = Trace([same, same, same, moved, moved, {"rows": [[2]], **same}], {"t": [[2]]})
    found = compare(program, direct, proxy, (), [])
    assert [(d.where, d.field) for d in found] == [
        ("step 0", "param.TimeZone"),
        ("step 2", "rows"),
        ("final", "final.t"),
    ]


def test_a_step_that_waited_ends_the_comparison() -> None:
    program = _program(_sql(0), _sql(1))
    ok = {"tx": "IDLE"}
    found = compare(program, Trace([ok] * 5, {}), Trace([ok] * 3 + [{"blocked": True}], {}), (), [])
    assert [(d.where, d.field) for d in found] == [("step 0", "blocked")]


def test_limitations_cover_by_engine_field_and_label(tmp_path: Path) -> None:
    assert all(lim.proxy_error is not None for lim in limitations.load())
    path = tmp_path / "l.toml"
    path.write_text(
        '[[limitation]]\nid = "v"\nengine = "pg"\nexplanation = "e"\n'
        'field = "param.server_*"\nlabel = "connect"\n'
    )
    limits = limitations.load(path)
    assert limitations.allowed(limits, "pg", "connect", "param.server_version") is not None
    assert limitations.allowed(limits, "pg", "snapshot", "param.server_version") is None
    assert limitations.allowed(limits, "mysql", "connect", "param.server_version") is None
    program = _program(_sql(0))
    a, b = {"param.server_version": "1"}, {"param.server_version": "2"}
    accepted: list[str] = []
    assert compare(program, Trace([a], {}), Trace([b], {}), limits, accepted) == []
    assert accepted == ["connect c0 param.server_version: v"]


def test_a_client_whose_connection_broke_is_compared_again_after_it_reconnects() -> None:
    reconnect = Step(0, "reconnect", "reconnect", "", None, ("reconnect",))
    program = _program(_sql(0), _sql(0), reconnect, _sql(0), clients=1)
    ok, broken = {"rows": [[1]]}, {"error": ["client", "OperationalError"]}
    direct = Trace([ok, ok, ok, ok, {"rows": [[1]]}], {})
    proxy = Trace([ok, broken, broken, ok, {"rows": [[2]]}], {})
    found = compare(program, direct, proxy, (), [])
    assert [(d.where, d.field) for d in found] == [("step 0", "error"), ("step 3", "rows")]


def test_a_refusal_limitation_covers_only_its_error_code(tmp_path: Path) -> None:
    path = tmp_path / "l.toml"
    path.write_text(
        '[[limitation]]\nid = "r"\nengine = "mysql"\nexplanation = "e"\n'
        'field = "*"\nproxy_error = 1235\n'
    )
    limits = limitations.load(path)
    refused = {"error": [1235, "not available"]}
    assert limitations.allowed(limits, "mysql", "x", "rows", refused) is not None
    assert limitations.allowed(limits, "mysql", "x", "rows", {"rows": [[7]]}) is None
    assert limitations.allowed(limits, "mysql", "x", "rows", {"error": [1146, "no"]}) is None


def test_an_accepted_refusal_that_failed_the_transaction_ends_the_comparison(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.toml"
    path.write_text(
        '[[limitation]]\nid = "r"\nengine = "pg"\nexplanation = "e"\n'
        'field = "*"\nlabel = "refused"\nproxy_error = "55000"\n'
    )
    limits = limitations.load(path)
    refused = Step(0, "sql", "refused", "SELECT currval('s')", None, ("stmt",))
    program = _program(_sql(0), refused, _sql(0), clients=1)
    ok, aborted = {"rows": [[1]], "tx": "INTRANS"}, {"error": ["25P02", "aborted"], "tx": "INERROR"}
    direct = Trace([ok, ok, ok, ok], {"t": [[1]]})
    proxy = Trace([ok, ok, {"error": ["55000", "not yet defined"], "tx": "INERROR"}, aborted], {})
    accepted: list[str] = []
    assert compare(program, direct, proxy, limits, accepted) == []
    assert accepted and all(note.startswith("step 1 ") for note in accepted)
    goes_on = {"error": ["55000", "not yet defined"], "tx": "INTRANS"}
    proxy = Trace([ok, ok, goes_on, {"rows": [[2]], "tx": "INTRANS"}], {})
    found = compare(program, direct, proxy, limits, [])  # the transaction goes on: compared
    assert [(d.where, d.field) for d in found] == [("step 2", "rows"), ("final", "final.t")]
