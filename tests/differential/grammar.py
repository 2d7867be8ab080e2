"""The generator: a seeded walk over an engine's grammar that the schedule model admits.

A grammar is a list of weighted rules; a rule makes one step for a client from the
random source. The walk picks a client that can get a connection, then a rule whose
step the model admits (see `model.py`), so every generated program runs step by step
without waiting, directly and through the pool.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .model import PoolModel
from .program import ClientSpec, Program, Step

Make = Callable[[random.Random, int, ClientSpec], Step | None]


@dataclass(frozen=True)
class Rule:
    weight: int
    make: Make


@dataclass(frozen=True)
class Grammar:
    """An engine's client maker and rules."""

    engine: str
    clients: Callable[[random.Random], tuple[ClientSpec, ...]]
    rules: Sequence[Rule]


def generate(grammar: Grammar, seed: int, length: int = 60) -> Program:
    """The program of `seed`: the same seed always gives the same program."""
    rng = random.Random(f"{grammar.engine}:{seed}")
    clients = grammar.clients(rng)
    program = Program(grammar.engine, seed, clients, ())
    model = PoolModel(program)
    weights = [rule.weight for rule in grammar.rules]
    steps: list[Step] = []
    for _ in range(length * 20):
        if len(steps) >= length:
            break
        ready = [i for i in range(len(clients)) if model.can_start(i)]
        client = rng.choice(ready)
        step = _pick(rng, grammar, weights, client, clients[client], model)
        if step is not None:
            model.apply(step)
            steps.append(step)
    return program.with_steps(tuple(steps))


def _pick(
    rng: random.Random,
    grammar: Grammar,
    weights: list[int],
    client: int,
    spec: ClientSpec,
    model: PoolModel,
) -> Step | None:
    for _ in range(30):
        rule = rng.choices(grammar.rules, weights)[0]
        step = rule.make(rng, client, spec)
        if step is not None and model.admits(step):
            return step
    return None


def sql(
    label: str,
    text: str,
    *effects: str,
    params: list[object] | None = None,
    action: str = "sql",
) -> Callable[[random.Random, int, ClientSpec], Step]:
    """A rule maker for one fixed statement (every statement carries the `stmt` effect)."""

    def make(rng: random.Random, client: int, spec: ClientSpec) -> Step:
        return Step(client, action, label, text, params, ("stmt", *effects))

    return make


def choice(*makers: Make) -> Make:
    """A rule maker that uses one of `makers`, chosen at random."""

    def make(rng: random.Random, client: int, spec: ClientSpec) -> Step | None:
        return rng.choice(makers)(rng, client, spec)

    return make


def action(label: str, name: str, *effects: str) -> Make:
    """A rule maker for a client-library call that runs no SQL text of ours."""

    def make(rng: random.Random, client: int, spec: ClientSpec) -> Step:
        return Step(client, name, label, "", None, effects)

    return make
