"""Replay saved programs directly and through a fresh proxy, and show what differs.

    python -m tests.differential.replay tests/differential/found/pg-connect-param.DateStyle.json

Starts a throwaway server of the program's engine, runs the program both ways
(`runner.py`), prints every step with what the direct client saw and, under it, what
differed through the proxy, then the divergences and the proxy's log tail. `--shrink`
writes a smaller program showing the divergence the file was saved for (else the
first). Exits 1 if anything diverged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import limitations
from .minimise import shrink
from .model import check
from .program import load
from .report import describe, trace, write
from .runner import run_both
from .servers import target


def replay(path: Path, args: argparse.Namespace) -> bool:
    """Replay one file; True if it diverged."""
    program = load(path)
    limits = limitations.load()
    bad = check(program)
    if bad is not None:
        print(f"{path}: step {bad} could wait for a connection or a lock; running anyway")
    with target(program.engine) as tgt:
        outcome = run_both(program, tgt, limits)
        print(f"== {path} ({program.engine}, {len(program.steps)} steps)")
        print(trace(program, outcome))
        for note in outcome.accepted:
            print(f"   accepted: {note}")
        if not outcome.divergences:
            print("no divergence")
            return False
        print(f"\n{len(outcome.divergences)} divergence(s):")
        for divergence in outcome.divergences:
            print("   " + describe(program, divergence))
        if args.log:
            print("\n---- sluice log ----\n" + outcome.proxy_log)
        if args.shrink is not None:
            saved = json.loads(path.read_text()).get("divergence", {})
            wanted = (saved.get("label"), saved.get("field"))
            if wanted[1] == "blocked":
                wanted = ("any", "blocked")
            chosen = next(
                (d for d in outcome.divergences if d.signature == wanted),
                outcome.divergences[0],
            )
            shrunk = shrink(program, tgt, limits, chosen, budget=args.budget)
            print(
                f"\nshrunk to {len(shrunk.program.steps)} steps in {shrunk.runs} runs: "
                f"{write(args.shrink, shrunk.program, shrunk.divergence)}"
            )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.differential.replay")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--log", action="store_true", help="print the proxy's log tail")
    parser.add_argument("--shrink", type=Path, metavar="DIR", help="shrink into DIR")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for --shrink")
    args = parser.parse_args(argv)
    diverged = [replay(path, args) for path in args.files]
    return 1 if any(diverged) else 0


if __name__ == "__main__":
    sys.exit(main())
