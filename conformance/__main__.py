"""`python -m conformance`: run the suites direct and through Sluice, then write the report.

By default every suite runs in every mode and docs/conformance.md is rewritten from
the results. `--suite` / `--mode` limit a run (the report then also uses earlier runs'
results kept in the work folder); `--report-only` rewrites the report without running.
The whole run is bounded by `--budget` on top of each run's own deadline.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from conformance import report
from conformance.runner import RunContext, run
from conformance.servers import tls_files
from conformance.sources import ensure_tests, ensure_venv
from conformance.suites import MODES, SUITES, Suite

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = ROOT / "conformance" / "work"
DEFAULT_DOC = ROOT / "docs" / "conformance.md"
DEFAULT_BUDGET = 25 * 60.0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    names = [suite.name for suite in SUITES]
    parser.add_argument("--suite", action="append", choices=names, help="default: all")
    parser.add_argument("--mode", action="append", choices=MODES, help="default: all")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds")
    parser.add_argument("--report-only", action="store_true")
    return parser.parse_args(argv)


def _selected(opts: argparse.Namespace) -> tuple[Suite, ...]:
    wanted = set(opts.suite or [suite.name for suite in SUITES])
    return tuple(suite for suite in SUITES if suite.name in wanted)


def sluice_commit() -> str:
    """The last commit that changed Sluice's sources (src/), and whether they differ from it.

    Not HEAD: commits that only touch this harness or the docs do not change what ran,
    and a rebase of them would leave a HEAD hash that no longer exists.
    """
    last = _git("log", "-1", "--format=%h", "--abbrev=10", "--", "src") or "unknown"
    changed = _git("status", "--porcelain", "--", "src")
    return f"{last} (with uncommitted changes in src/)" if changed else last


def _git(*args: str) -> str:
    cmd = ["git", "-C", str(ROOT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()


def run_suites(suites: tuple[Suite, ...], modes: list[str], work: Path, budget: float) -> None:
    """Every selected suite in every selected mode, within `budget` seconds in all.

    Each run may take its suite's `run_timeout`, or less when the budget left is short:
    then every run still to come gets a share in proportion to its `run_timeout`, so a
    slow machine shortens all runs rather than leaving the last ones out.
    """
    deadline = time.monotonic() + budget
    work.mkdir(parents=True, exist_ok=True)
    python = ensure_venv(work, SUITES)
    commit = sluice_commit()
    plan = [(suite, mode) for suite in suites for mode in modes]
    contexts: dict[str, RunContext] = {}
    for index, (suite, mode) in enumerate(plan):
        if suite.name not in contexts:
            tests_dir = ensure_tests(suite, work, python)
            tls = tls_files(suite, tests_dir, work)
            contexts[suite.name] = RunContext(suite, python, tests_dir, tls, work, commit)
        weights = sum(later.run_timeout for later, _ in plan[index:])
        share = (deadline - time.monotonic()) * suite.run_timeout / weights
        run(contexts[suite.name], mode, min(suite.run_timeout, share))


def main(argv: list[str] | None = None) -> int:
    opts = _parse(sys.argv[1:] if argv is None else argv)
    modes = [mode for mode in MODES if mode in (opts.mode or MODES)]
    if not opts.report_only:
        run_suites(_selected(opts), modes, opts.work, opts.budget)
    report.write(opts.work, opts.doc)
    print(f"conformance: wrote {opts.doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
