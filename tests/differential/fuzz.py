"""Run many seeds per engine, shrink each new kind of divergence, and say how long it took.

    python -m tests.differential.fuzz --seeds 50            # seeds 0..49, both engines
    python -m tests.differential.fuzz --engine pg --seed 7  # one program (as pytest names it)

Each engine gets its own throwaway server (see `servers.py`). Divergences are grouped
by signature (grammar rule, observable); the first program showing each new signature
is shrunk (`minimise.py`) and written to `--out` as JSON for
`python -m tests.differential.replay`. Exits 1 if anything diverged.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import limitations
from .engines import GRAMMARS
from .grammar import generate
from .minimise import shrink
from .program import Program
from .report import describe, write
from .runner import Divergence, run_both
from .servers import target
from .target import Target

DEFAULT_OUT = Path(".sluice/differential")


@dataclass
class Found:
    seed: int
    program: Program
    divergence: Divergence
    count: int = 1


def fuzz_engine(engine: str, seeds: list[int], args: argparse.Namespace) -> int:
    """Run `seeds` on `engine`; print and save what diverged; return how many kinds."""
    limits = limitations.load()
    started = time.monotonic()
    with target(engine) as tgt:
        found = _run_seeds(tgt, engine, seeds, args.length, limits)
        ran = time.monotonic() - started
        print(f"{engine}: {len(seeds)} seeds in {ran:.1f} s, {len(found)} kinds of divergence")
        for item in found.values():
            _report(tgt, item, args, limits)
    print(f"{engine}: done in {time.monotonic() - started:.1f} s", flush=True)
    return len(found)


def _run_seeds(
    tgt: Target,
    engine: str,
    seeds: list[int],
    length: int,
    limits: tuple[limitations.Limitation, ...],
) -> dict[tuple[str, str], Found]:
    found: dict[tuple[str, str], Found] = {}
    for seed in seeds:
        program = generate(GRAMMARS[engine], seed, length)
        outcome = run_both(program, tgt, limits)
        kinds = ", ".join(f"{d.label}/{d.field}" for d in outcome.divergences) or "same"
        print(f"{engine} seed {seed}: {kinds}", flush=True)
        for divergence in outcome.divergences:
            if divergence.signature in found:
                found[divergence.signature].count += 1
            else:
                found[divergence.signature] = Found(seed, program, divergence)
    return found


def _report(
    tgt: Target, item: Found, args: argparse.Namespace, limits: tuple[limitations.Limitation, ...]
) -> None:
    program, divergence = item.program, item.divergence
    head = f"\n== {program.engine} {divergence.label} / {divergence.field}"
    print(f"{head}: seen in {item.count} seed(s), first seed {item.seed}", flush=True)
    if not args.no_minimise:
        shrunk = shrink(program, tgt, limits, divergence, budget=args.budget)
        program, divergence = shrunk.program, shrunk.divergence
        print(
            f"   shrunk to {len(program.steps)} steps in {shrunk.runs} runs, {shrunk.seconds:.1f} s"
        )
    print("   " + describe(program, divergence))
    for index, spec in enumerate(program.clients):
        print(f"      c{index}: {spec}")
    for step in program.steps:
        print(f"      {step.text()}")
    path = write(args.out, program, divergence)
    print(f"   replay: python -m tests.differential.replay {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.differential.fuzz")
    parser.add_argument("--engine", choices=("pg", "mysql", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds per engine")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, action="append", help="run only these seeds")
    parser.add_argument("--length", type=int, default=60, help="steps per program")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per shrink")
    parser.add_argument("--no-minimise", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    seeds = args.seed or list(range(args.first, args.first + args.seeds))
    engines = ("pg", "mysql") if args.engine == "all" else (args.engine,)
    started = time.monotonic()
    kinds = sum(fuzz_engine(engine, seeds, args) for engine in engines)
    print(f"\n{kinds} kinds of divergence in {time.monotonic() - started:.1f} s")
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
