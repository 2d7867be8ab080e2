"""docs/conformance.md from the runs' records: counts, regressions by cause, what cannot run.

Only the records of the work folder go into the report, so it can be rewritten without
running anything (`python -m conformance --report-only`) after a cause is added.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from conformance.causes import CAUSES, Cause, classify
from conformance.results import (
    OUTCOMES,
    Difference,
    TestRecord,
    count,
    improvements,
    last_line,
    read_records,
    regressions,
)
from conformance.runner import RunMeta, load_meta, run_paths
from conformance.servers import BORROW_TIMEOUT, POOL_MAX_CONNECTIONS
from conformance.suites import MODES, SUITES, Suite

PROXIED = ("transaction", "session")
_SKIP_REASONS_SHOWN = 8

Runs = dict[str, tuple[RunMeta, dict[str, TestRecord]]]


def _load(work: Path, suite: Suite) -> Runs:
    runs: Runs = {}
    for mode in MODES:
        paths = run_paths(work, suite, mode)
        meta = load_meta(paths.meta)
        if meta is not None:
            runs[mode] = (meta, read_records(paths.results).outcomes())
    return runs


def _header(all_runs: dict[str, Runs]) -> list[str]:
    metas = [meta for runs in all_runs.values() for meta, _ in runs.values()]
    dates = sorted({meta.started[:10] for meta in metas})
    commits = sorted({meta.commit for meta in metas})
    servers = sorted({meta.server for meta in metas if meta.server})
    total = sum(meta.seconds for meta in metas)
    return [
        "# Client libraries' own test suites through Sluice",
        "",
        "`make conformance` (`python -m conformance`, code in `conformance/`) runs the test",
        "suites that asyncpg, psycopg2 and mysql-connector-python ship in their PyPI source",
        "archives three times each: against the server directly, then through Sluice in",
        "transaction mode and in session mode, and compares the runs test by test. This page",
        "is generated from the last run's records; the causes are from reading the failures",
        "(`conformance/causes.py`). `python -m conformance --suite NAME --mode MODE` runs a",
        "part again; `--report-only` rewrites this page from the kept records.",
        "",
        f"- Run on {', '.join(dates) or '-'} with Sluice at commit {', '.join(commits) or '-'} "
        "(the last commit that changed `src/`);",
        f"  {total / 60:.1f} minutes of runs on a 2-core machine shared with other work.",
        f"- Servers: {', '.join(servers) or '-'}, a fresh one for every run (same settings).",
        "",
    ]


def _method() -> list[str]:
    bounds = "; ".join(
        f"{suite.name}: {suite.test_timeout:.0f} s per test, {suite.run_timeout:.0f} s per run"
        for suite in SUITES
    )
    clients = ", ".join(
        f"{suite.name}: tests of `{suite.sdist}` against `{', '.join(suite.requirements)}`"
        for suite in SUITES
    )
    return [
        "## How the runs are made",
        "",
        f"- Clients (in a virtualenv of their own under `conformance/work/`): {clients}.",
        "  The project's dev extras accept newer releases (asyncpg < 1, mysql-connector-python",
        "  < 10); the pins are in `conformance/suites.py`.",
        "- Each suite's own harness is pointed at the endpoint: asyncpg's `_testbase` by",
        "  PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE (it then skips the tests that manage",
        "  clusters of their own), psycopg2's `tests/testconfig.py` by PSYCOPG2_TESTDB*,",
        "  mysql-connector's `unittests.py` with `--use-external-server --skip-install`.",
        "  `conformance/driver.py` runs the unittest suites and records every test's outcome.",
        "- The servers have password authentication (SCRAM-SHA-256; mysql_native_password),",
        "  the suites connect as the superuser (`postgres`; `root`), TLS is on with the",
        "  suite's own certificate where it ships one (mysql-connector) or a generated one,",
        "  `max_prepared_transactions = 10`, and for MariaDB the settings of mysql-connector's",
        "  own test servers (`sql_mode = ''`, `default_time_zone = '+00:00'`, 600 MB packets).",
        "- Sluice has the server's certificate on its listener, the same password method,",
        f"  TLS to the server, `max_connections = {POOL_MAX_CONNECTIONS}`, "
        f"`borrow_timeout = {BORROW_TIMEOUT}`,",
        "  `max_packet_size` of 1 GiB, and its defaults otherwise; only `pool.mode` differs.",
        f"- Bounds: {bounds}. A test stuck where the timeout cannot interrupt it ends the",
        "  driver, which restarts without the tests already recorded; the whole make has a",
        "  25-minute budget, shared out among the runs still to come when it runs short.",
        "- Each run's files stay in `conformance/work/runs/<suite>/<mode>/`: the records",
        "  (`results.jsonl`, with every failure's traceback), the suite's own output",
        "  (`driver.log`) and Sluice's configuration and log (`sluice/`).",
        "- Outcomes: an expected failure counts as a pass, an unexpected success as a fail;",
        "  a test whose class setup failed gets that error; `not run` means the run ended first.",
        "",
    ]


def _counts_table(all_runs: dict[str, Runs]) -> list[str]:
    head = "| suite | mode | tests | " + " | ".join(OUTCOMES) + " | broken vs direct | time |"
    lines = ["## Results", "", head, "|" + "---|" * (len(OUTCOMES) + 5)]
    for suite in SUITES:
        runs = all_runs[suite.name]
        direct = runs.get("direct", (None, {}))[1]
        for mode in MODES:
            if mode not in runs:
                continue
            meta, outcomes = runs[mode]
            counts = count(outcomes)
            broken = "" if mode == "direct" else str(len(regressions(direct, outcomes)))
            cells = [suite.name, mode, str(len(outcomes))]
            cells += [str(counts.get(outcome, 0)) for outcome in OUTCOMES]
            ended = "" if meta.ended == "complete" else f" ({meta.ended})"
            cells += [broken, f"{meta.seconds:.0f} s{ended}"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        '"broken vs direct": tests that pass directly and fail, error or time out in that',
        'mode; each is listed below under its cause. "not run": left out by the run\'s',
        "deadline (its time then says so).",
        "",
    ]
    return lines


def _grouped(all_runs: dict[str, Runs]) -> dict[str, dict[str, list[tuple[str, Difference]]]]:
    """cause key ("" for none) -> "<suite> <test>" -> [(mode, difference)]."""
    grouped: dict[str, dict[str, list[tuple[str, Difference]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for suite, runs in all_runs.items():
        direct = runs.get("direct", (None, {}))[1]
        for mode in PROXIED:
            if mode not in runs:
                continue
            for diff in regressions(direct, runs[mode][1]):
                cause = classify(suite, diff, mode)
                key = "" if cause is None else cause.key
                grouped[key][f"{suite} {diff.test}"].append((mode, diff))
    return grouped


def _test_lines(tests: dict[str, list[tuple[str, Difference]]], show_detail: bool) -> list[str]:
    lines = []
    for test, found in sorted(tests.items()):
        modes = ", ".join(f"{mode}: {diff.proxied}" for mode, diff in found)
        suite, _, test_id = test.partition(" ")
        lines.append(f"- {suite} `{test_id}` ({modes})")
        if show_detail:
            lines.append(f"  - `{last_line(found[0][1].detail)}`")
    return lines


def _cause_section(cause: Cause, tests: dict[str, list[tuple[str, Difference]]]) -> list[str]:
    title = f"#### {cause.title} ({len(tests)} test{'s' if len(tests) > 1 else ''})"
    return [title, "", cause.why, "", *_test_lines(tests, False), ""]


def _causes(all_runs: dict[str, Runs]) -> list[str]:
    grouped = _grouped(all_runs)
    lines = ["## Passes directly, broken through Sluice, by cause", ""]
    for inherent, heading in (
        (False, "Differences in Sluice (to fix)"),
        (True, "Inherent to pooling in that mode (any pooler)"),
    ):
        sections = [c for c in CAUSES if c.inherent == inherent and c.key in grouped]
        sections.sort(key=lambda c: -len(grouped[c.key]))
        lines += [f"### {heading}", ""]
        for cause in sections:
            lines += _cause_section(cause, grouped[cause.key])
        if not sections:
            lines += ["None in this run.", ""]
    unexplained = grouped.get("")
    lines += ["### Not yet classified", ""]
    lines += _test_lines(unexplained, True) if unexplained else ["None in this run."]
    return [*lines, ""]


def _improvements(all_runs: dict[str, Runs]) -> list[str]:
    lines = ["## Fails directly, passes through Sluice", ""]
    found = False
    for suite in SUITES:
        runs = all_runs[suite.name]
        direct = runs.get("direct", (None, {}))[1]
        for mode in PROXIED:
            if mode in runs:
                for diff in improvements(direct, runs[mode][1]):
                    found = True
                    lines.append(
                        f"- `{diff.test}` ({mode}; directly {diff.direct}: "
                        f"`{last_line(diff.detail, 100)}`)"
                    )
    return lines + (
        ["", "(timing-dependent tests, or differences)", ""] if found else ["None.", ""]
    )


def _coverage(all_runs: dict[str, Runs]) -> list[str]:
    lines = ["## What runs, and what cannot run here", ""]
    for suite in SUITES:
        lines += [f"### {suite.name}", ""]
        lines += [f"- {note}" for note in suite.notes]
        lines += [f"- Left out: `{e.pattern}`: {e.reason}." for e in suite.exclusions]
        direct = all_runs[suite.name].get("direct")
        if direct is not None:
            reasons = Counter(
                last_line(r.detail, 90) for r in direct[1].values() if r.outcome == "skip"
            )
            shown = reasons.most_common(_SKIP_REASONS_SHOWN)
            if shown:
                lines.append("- Skipped directly (the suite's own reasons, most common first):")
                lines += [f"  - {n} x {reason or '(no reason)'}" for reason, n in shown]
        lines.append("")
    return lines


def write(work: Path, doc: Path) -> None:
    """Rewrite `doc` from the runs recorded under `work`."""
    all_runs = {suite.name: _load(work, suite) for suite in SUITES}
    lines = _header(all_runs) + _counts_table(all_runs) + _causes(all_runs)
    lines += _improvements(all_runs) + _coverage(all_runs) + _method()
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
