"""The order of the demo, and its clean-up.

0. The RDS Proxy recipe on MySQL, from an empty `sluice server` data directory to the
   function's answer through the proxy, then many invocations at once: see recipe.py.
   `--no-recipe` skips it.
1. A throwaway PostgreSQL server (max_connections 100), a role and a database.
2. Sluice in a child process, configured from examples/postgres.toml.
3. Rounds of concurrent short-lived clients through Sluice, the server's
   backends polled meanwhile; then the pin count, and Sluice is stopped (so its
   pooled connections do not take server slots from the next step).
4. The same crowd straight to the server, once.
5. The same crowd through Sluice as a local RDS Proxy (`sluice server`, a proxy
   made with boto3, IAM tokens over TLS): see rds.py. `--no-rds` skips it.
6. The report. The exit status is 1 if any client through Sluice failed.

Everything started is registered on one ExitStack as soon as it exists, so an
error or Ctrl-C at any step stops Sluice and the server and removes the
temporary files; a second Ctrl-C during that clean-up is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sluice.dbserver.postgres import PgCluster
from sluice.demo import rds, recipe, report
from sluice.demo.clients import BackendPoller, RoundResult, run_round
from sluice.demo.stage import (
    DATABASE,
    EXAMPLE,
    direct_conninfo,
    example_user,
    load_example,
    metrics_url,
    prepare_database,
    proxy_conninfo,
    sluice_process,
)
from sluice.devtools.runner import SluiceProcess

MAX_CONNECTIONS = 100
ROUND_TIMEOUT = 20.0
DIRECT_TIMEOUT = 15.0


@dataclass(frozen=True)
class Plan:
    clients: int
    rounds: int
    example: Path
    rds: bool = True
    invocations: int = 200
    recipe: bool = True


def main(argv: list[str] | None = None) -> int:
    plan = _arguments(argv)
    # Each client's failure is counted in the report; psycopg's own warnings (e.g. a
    # cancel sent to a proxy that is gone, after Ctrl-C) would only bury it.
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    stack = ExitStack()
    try:
        return _demo(plan, stack)
    except recipe.RecipeFailed as exc:
        _say(f"\nFAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("\ninterrupted: stopping Sluice and PostgreSQL, removing temporary files")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.close()


def _arguments(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m sluice.demo", description=__doc__)
    parser.add_argument("--clients", type=int, default=500, help="clients at once (500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds through Sluice (3)")
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="configuration to run")
    parser.add_argument("--no-rds", action="store_true", help="skip the local RDS Proxy part")
    parser.add_argument("--invocations", type=int, default=200,
                        help="invocations of the recipe's function (200)")  # fmt: skip
    parser.add_argument("--no-recipe", action="store_true", help="skip the MySQL recipe part")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 2000 or not 1 <= args.rounds <= 10:
        parser.error("use 1-2000 clients and 1-10 rounds")
    if not 1 <= args.invocations <= 5000:
        parser.error("use 1-5000 invocations")
    return Plan(args.clients, args.rounds, args.example, not args.no_rds, args.invocations,
                not args.no_recipe)  # fmt: skip


def _say(text: str) -> None:
    print(text, flush=True)


def _demo(plan: Plan, stack: ExitStack) -> int:
    example = load_example(plan.example)
    user, password = example_user(example), secrets.token_urlsafe(18)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-demo-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    first = None
    if plan.recipe:
        _say("The RDS Proxy recipe on MySQL: examples/cookbook-403 against a new `sluice server`")
        first = recipe.run(plan.invocations, workdir / "recipe", stack, _say)
    _say(f"Starting a throwaway PostgreSQL server (max_connections={MAX_CONNECTIONS}) ...")
    pg = stack.enter_context(PgCluster(max_connections=MAX_CONNECTIONS))
    prepare_database(pg, user, password)
    proc = sluice_process(example, pg, password, workdir)
    stack.callback(proc.stop, 10.0)
    _say(f"Starting Sluice on {proc.proxies[0]['listen']}, configured from {plan.example} ...")
    proc.start()
    proxied = asyncio.run(_proxied(plan, pg, user, proxy_conninfo(proc, user, password)))
    facts = _finish_proxy(plan, pg, proc, proxied, password)
    _say(f"Now {plan.clients} clients straight to PostgreSQL ...")
    direct, direct_peak = asyncio.run(_direct(plan, pg, user, direct_conninfo(pg, user, password)))
    part = None
    if plan.rds:
        _say(f"Now {plan.clients} clients through Sluice as a local RDS Proxy (IAM tokens) ...")
        part = rds.run(plan.clients, pg, user, password, workdir, stack)
    if first is not None:
        print("\n".join(["", *report.recipe_report(first)]), flush=True)
    _print_report(proxied.result, facts, direct, direct_peak)
    if part is not None:
        lines = report.rds_report(part, MAX_CONNECTIONS, rds.POOL_PERCENT)
        print("\n".join(["", *lines]), flush=True)
    return _recipe_verdict(first) or _verdict(proc, proxied.result, facts) or _rds_verdict(part)


def _recipe_verdict(part: recipe.RecipePart | None) -> int:
    if part is None:
        return 0
    if part.secrets_logged:
        _say("\nFAILED: the database's master password appears in the control plane's log.")
        return 1
    if part.invocations.answered != part.invocations.count:
        _say("\nFAILED: not every invocation of the recipe's function answered.")
        return 1
    return 0


def _rds_verdict(part: rds.RdsPart | None) -> int:
    if part is None:
        return 0
    if part.secrets_logged:
        _say("\nFAILED: a token or password appears in the control plane's log.")
        return 1
    if part.result.failed:
        _say("\nFAILED: not every client through the local RDS Proxy succeeded.")
        return 1
    return 0


def _verdict(proc: SluiceProcess, proxied: RoundResult, facts: report.ProxyFacts) -> int:
    """1 if any client through Sluice failed or its log holds the password, else 0."""
    status = 0
    if facts.password_logged:
        _say("\nFAILED: the user's password appears in the proxy's log.")
        status = 1
    if proxied.failed or facts.rows_written != proxied.served:
        _say("\nFAILED: not every client through Sluice succeeded. Its log ends:")
        _say(proc.log_tail(30))
        status = 1
    return status


@dataclass
class Proxied:
    result: RoundResult
    peak: int


async def _proxied(plan: Plan, pg: PgCluster, user: str, conninfo: str) -> Proxied:
    total = RoundResult()
    async with BackendPoller(pg, user, DATABASE) as poller:
        for round_no in range(1, plan.rounds + 1):
            result = await run_round(conninfo, plan.clients, round_no, ROUND_TIMEOUT)
            total.merge(result)
            _say(
                f"  round {round_no}/{plan.rounds}: {result.served} of {plan.clients} clients "
                f"served, {result.failed} failed, in {result.elapsed:.1f} s "
                f"(database connections so far: peak {poller.peak})"
            )
    return Proxied(total, poller.peak)


async def _direct(plan: Plan, pg: PgCluster, user: str, conninfo: str) -> tuple[RoundResult, int]:
    async with BackendPoller(pg, user, DATABASE) as poller:
        result = await run_round(conninfo, plan.clients, 0, DIRECT_TIMEOUT)
    return result, poller.peak


def _finish_proxy(
    plan: Plan, pg: PgCluster, proc: SluiceProcess, proxied: Proxied, password: str
) -> report.ProxyFacts:
    """Read the metrics, stop Sluice (freeing its server slots), then read its log and the rows."""
    metrics = report.fetch_metrics(metrics_url(proc))
    code = proc.stop(10.0)
    if code not in (0, None):
        _say(f"  (Sluice exited with status {code} when asked to stop)")
    log_text = proc.log_text()
    rows = int(pg.psql("SELECT count(*) FROM demo_events WHERE round > 0", db=DATABASE))
    pool = proc.proxies[0].get("pool", {})
    return report.ProxyFacts(
        rounds=plan.rounds,
        clients_per_round=plan.clients,
        pool_mode=str(pool.get("mode", "transaction")),
        pool_size=str(pool.get("max_connections", 20)),
        peak_backends=proxied.peak,
        rows_written=rows,
        pins=report.count_pins(metrics, log_text),
        counters=report.proxy_counters(metrics),
        password_logged=password in log_text,
    )


def _print_report(
    proxied: RoundResult, facts: report.ProxyFacts, direct: RoundResult, direct_peak: int
) -> None:
    lines = [
        "",
        *report.proxy_report(proxied, facts),
        "",
        *report.direct_report(direct, direct_peak, MAX_CONNECTIONS),
        "",
        *report.summary(proxied, facts.peak_backends, direct),
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)
