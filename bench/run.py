"""`python -m bench.run`: Sluice vs PgBouncer vs direct, and Sluice vs direct for MySQL.

The run starts one throwaway PostgreSQL, fills it with `pgbench -i`, then for
each workload and client count measures every system in turn: start it fresh,
warm it up briefly, run pgbench while a thread samples pg_stat_activity and
/proc gives the proxy's CPU time, stop it, wait for its backends to go. The
idle-client rows hold thousands of logged-in clients open instead. The MySQL
rows do the same against a throwaway MariaDB with sysbench's tables, with
`sysbench oltp_point_select`, `oltp_read_write` and `mariadb-slap --detach=1` as the load, direct
and through Sluice's MySQL proxy. One PostgreSQL row runs `-S -C` through a
proxy that `sluice server` builds as an AWS RDS Proxy would be built, with an
IAM auth token over TLS as the password (bench.iam). The `select_workers` rows run `-S`
through Sluice pinned to one CPU with `workers = 1`, then to two CPUs with `workers = 2`
(report.WORKER_SYSTEMS_SETUP). The `_tls` rows run `-S` and `-S -M extended` with TLS
required on both legs of every system, pgbench to the proxy and the proxy to PostgreSQL
(bench.systems); the bench PostgreSQL has `ssl = on` for those rows only, and the
pg_stat_ssl of the backends seen during the run must show TLS on all of them, or the row
fails. A database server starts only when a row of
its engine is to run (`--only mysql_point_select` starts no PostgreSQL). The function rows
start no database: they time `lambda.invoke` of a trivial function on a `sluice server` of
their own, cold (a new execution environment for every call) and warm (bench.functions).

A row that fails is recorded with its error and the proxy's log tail, and the
run goes on. Every child process is stopped in `finally`, also on SIGTERM. A
run limited with `--only` or `--system` merges its rows into the results of
earlier runs (replacing the rows it measured again); a full run replaces them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench import report
from bench.attack import ATTACKERS, AttackedProxy, attack, summary
from bench.backends import BackendCounter, BackendPoller, PgBackendCounter, wait_no_backends
from bench.functions import FunctionSystem
from bench.iam import IamProxySystem
from bench.idle import hold_idle
from bench.mysql import BenchMariaDb, MysqlDirectSystem, MysqlSluiceSystem
from bench.mysqlload import (
    PROBE_QUERIES_PER_CLIENT,
    LoadResult,
    SysbenchRun,
    run_slap,
    run_sysbench,
    size_slap,
)
from bench.pgbench import PgbenchRun, run_pgbench
from bench.procinfo import (
    cpu_seconds,
    cpu_times,
    ephemeral_ports,
    machine_info,
    raise_nofile_limit,
)
from bench.relayloop import build_kind
from bench.systems import (
    BenchDatabase,
    DirectSystem,
    Endpoint,
    PgBouncerSystem,
    SluiceSystem,
    System,
)

ROOT = Path(__file__).resolve().parent.parent
PROXIES = ("pgbouncer", "sluice")
PG, MYSQL = "postgresql", "mysql"
FUNCTIONS = report.FUNCTIONS_ENGINE
BOTH = report.BOTH_ENGINES  # a row that needs both servers (the attack)
_FD_MARGIN = 1000  # descriptors kept free for pgbench, logs and the poller
_LOG_LINES = 15
_IDLE_TIMEOUT = 900.0  # seconds for opening, measuring and closing all idle clients
SYSBENCH_TESTS = {"mysql_point_select": "oltp_point_select", "mysql_read_write": "oltp_read_write"}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    clients: tuple[int, ...]
    mode: str = "simple"
    connect_each: bool = False
    systems: tuple[str, ...] = report.SYSTEMS
    engine: str = PG
    auth: str = "password"  # "iam": an RDS Proxy of `sluice server`, IAM token over TLS
    tls: bool = False  # TLS required on both legs: client to proxy, proxy to PostgreSQL


WORKLOADS = (
    Workload("select_simple", (32, 1000)),
    Workload("select_extended", (32, 1000), mode="extended"),
    Workload("select_simple_tls", (32, 1000), tls=True),
    Workload("select_extended_tls", (32, 1000), mode="extended", tls=True),
    Workload("select_prepared", (32,), mode="prepared"),
    Workload("select_connect", (32,), connect_each=True),
    Workload("select_connect_iam", (32,), connect_each=True, systems=("sluice",), auth="iam"),
    # one core with one worker against two cores with two workers (report.WORKER_SYSTEMS)
    Workload("select_workers", (32,), systems=report.WORKER_SYSTEMS),
    Workload("idle_clients", (15000,), systems=PROXIES),
    Workload("under_attack", (ATTACKERS,), systems=("sluice",), engine=BOTH),
    Workload(
        "mysql_point_select", (32, 1000), mode="binary", systems=report.MYSQL_SYSTEMS, engine=MYSQL
    ),
    Workload("mysql_read_write", (32,), mode="binary", systems=report.MYSQL_SYSTEMS, engine=MYSQL),
    Workload(
        "mysql_connect",
        (32,),
        mode="text",
        connect_each=True,
        systems=report.MYSQL_SYSTEMS,
        engine=MYSQL,
    ),
    Workload("function_cold_start", (1,), systems=("sluice",), engine=FUNCTIONS),
    Workload("function_warm_invoke", (1,), systems=("sluice",), engine=FUNCTIONS),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    names = [w.name for w in WORKLOADS]
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 s rows, 2000 idle, 2000 attackers"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="WORKLOAD",
        help=f"run only this workload (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--system",
        action="append",
        choices=report.SYSTEMS + report.WORKER_SYSTEMS,
        help="run only this system (repeatable)",
    )
    parser.add_argument("--duration", type=int, help="seconds per row (default 15, quick 3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per row")
    parser.add_argument(
        "--idle-clients", type=int, help="idle clients to hold (default 15000, quick 2000)"
    )
    parser.add_argument("--pool-size", type=int, default=20, help="proxy pool size")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor")
    parser.add_argument("--threads", type=int, default=2, help="pgbench -j")
    parser.add_argument("--connect-threads", type=int, default=32, help="pgbench -j for -C rows")
    parser.add_argument(
        "--pg-max-connections",
        type=int,
        default=1100,
        help="PostgreSQL max_connections (direct runs 1000 clients)",
    )
    parser.add_argument(
        "--mysql-max-connections",
        type=int,
        default=1100,
        help="MariaDB max_connections (direct runs 1000 sysbench threads)",
    )
    parser.add_argument("--sysbench-tables", type=int, default=4, help="sysbench --tables")
    parser.add_argument(
        "--sysbench-table-size", type=int, default=10000, help="sysbench --table-size"
    )
    parser.add_argument(
        "--cold-starts", type=int, help="timed cold invocations (default 100, quick 20)"
    )
    parser.add_argument(
        "--warm-invokes", type=int, help="timed warm invocations (default 1000, quick 100)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench/results/latest.json",
        help="rows (a run with --only/--system merges into it; runs' settings go "
        "beside it in *.runs.json)",
    )
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep logs and configs of every row"
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 15)
    args.idle_clients = args.idle_clients or (2000 if args.quick else 15000)
    args.cold_starts = args.cold_starts or (20 if args.quick else 100)
    args.warm_invokes = args.warm_invokes or (100 if args.quick else 1000)
    return args


class Bench:
    """The state of one run: databases, systems, options, rows measured so far."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.plan = plan(args)
        engines = {workload.engine for workload, _, _ in self.plan}
        if BOTH in engines:
            engines |= {PG, MYSQL}
        self.pg = (
            BenchDatabase(workdir, args.pg_max_connections, args.scale) if PG in engines else None
        )
        self.mysql = (
            BenchMariaDb(
                workdir,
                args.mysql_max_connections,
                args.sysbench_tables,
                args.sysbench_table_size,
            )
            if MYSQL in engines
            else None
        )
        self.systems: dict[tuple[str, str], System] = {}
        self.rows: list[report.Row] = []

    def setup(self) -> None:
        pool = self.args.pool_size
        if self.pg is not None:
            self.pg.start()
            max_clients = self.args.idle_clients + 1000
            for tls, suffix in ((False, ""), (True, "+tls")):
                self.systems[PG, "direct" + suffix] = DirectSystem(self.pg, tls)
                self.systems[PG, "pgbouncer" + suffix] = PgBouncerSystem(
                    self.pg, self.workdir, pool, max_clients, tls
                )
                self.systems[PG, "sluice" + suffix] = SluiceSystem(
                    self.pg, self.workdir, pool, max_clients, tls=tls
                )
            self.systems[PG, "sluice+iam"] = IamProxySystem(self.pg, self.workdir)
            for name, (workers, cpus) in report.WORKER_SYSTEMS_SETUP.items():
                self.systems[PG, name] = SluiceSystem(
                    self.pg, self.workdir, pool, max_clients, workers, frozenset(cpus)
                )
        if self.mysql is not None:
            self.mysql.start()
            self.systems[MYSQL, "direct"] = MysqlDirectSystem(self.mysql)
            self.systems[MYSQL, "sluice"] = MysqlSluiceSystem(
                self.mysql, self.workdir, pool, self.args.idle_clients + 1000
            )
        if self.pg is not None and self.mysql is not None:
            pg = (self.pg.cluster.host, self.pg.cluster.port, self.pg.password)
            my = (self.mysql.cluster.host, self.mysql.cluster.port, self.mysql.password)
            self.systems[BOTH, "sluice"] = AttackedProxy(self.workdir, pg, my)
        if any(workload.engine == FUNCTIONS for workload, _, _ in self.plan):
            self.systems[FUNCTIONS, "sluice"] = FunctionSystem(self.workdir)

    def close(self) -> None:
        """Stop every system and both servers, even when one of them fails to stop."""
        stops = [system.stop for system in self.systems.values()]
        stops += [db.stop for db in (self.pg, self.mysql) if db is not None]
        failure: BaseException | None = None
        for stop in stops:
            try:
                stop()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def counter(self, engine: str) -> BackendCounter:
        if engine == MYSQL:
            assert self.mysql is not None
            return self.mysql.counter()
        assert self.pg is not None
        return PgBackendCounter(self.pg.admin_conninfo())

    def run(self, run_id: str) -> None:
        for i, (workload, clients, name) in enumerate(self.plan, 1):
            started = time.monotonic()
            system = self.system_for(workload, name)
            row = new_row(workload, name, clients, run_id)
            try:
                if self.pg is not None and workload.engine in (PG, BOTH):
                    self.pg.set_ssl(workload.tls)  # on for the TLS rows only
                if workload.name == "idle_clients":
                    self.measure_idle(system, row)
                elif workload.name == "under_attack":
                    self.measure_attack(system, row)
                elif workload.name in SYSBENCH_TESTS:
                    self.measure_sysbench(system, row, SYSBENCH_TESTS[workload.name])
                elif workload.name == "mysql_connect":
                    self.measure_slap(system, row)
                elif workload.engine == FUNCTIONS:
                    self.measure_function(system, workload, row)
                else:
                    self.measure_pgbench(system, workload, row)
            except Exception as exc:  # a failed row is a result, not the end of the run
                row["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                self.finish_row(system, workload.engine, row)
            self.rows.append(row)
            print(
                f"[{i}/{len(self.plan)}] {progress(row)} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )

    def system_for(self, workload: Workload, name: str) -> System:
        """The system measuring `name` in this workload (the IAM rows' Sluice is another,
        and so are the TLS rows' systems)."""
        key = name if workload.auth == "password" else f"{name}+{workload.auth}"
        if workload.tls:
            key += "+tls"
        return self.systems[workload.engine, key]

    def finish_row(self, system: System, engine: str, row: report.Row) -> None:
        """Stop the system, attach its log tail to a failure, wait for its backends to go."""
        try:
            system.stop()
        finally:
            if row.get("error"):
                log = system.log_tail(_LOG_LINES).strip()
                if log and log not in row["error"]:
                    server = "mariadb" if engine == MYSQL else "postgresql"
                    what = server if system.name == "direct" else system.name
                    row["error"] += f"\n--- {what} log (last lines) ---\n{log}"
            warning = None if engine == FUNCTIONS else wait_no_backends(self.counter(engine))
            if warning:
                print(f"  warning: {warning}", flush=True)

    def measure_pgbench(self, system: System, workload: Workload, row: report.Row) -> None:
        args = self.args
        assert self.pg is not None
        run = PgbenchRun(
            workload.mode,
            row["clients"],
            args.threads,
            args.duration,
            workload.connect_each,
            args.connect_threads,
            workload.tls,
        )
        endpoint = system.start()
        if args.warmup > 0:
            clients = min(row["clients"], args.pool_size)
            warm = dataclasses.replace(run, clients=clients, duration=args.warmup)
            run_pgbench(warm, endpoint, self.pg.password)  # failures show in the real run
        cpu_before = None if endpoint.pid is None else cpu_times(endpoint.pid)
        counter = PgBackendCounter(self.pg.admin_conninfo())
        with BackendPoller(counter) as poller:
            result = run_pgbench(run, endpoint, self.pg.password)
        row.update(
            tps=result.tps,
            transactions=result.transactions,
            failed_transactions=result.failed,
            pgbench_duration_s=run.seconds,
            connect_ms=result.connect_ms,
            pgbench_seconds=round(result.elapsed, 1),
            peak_backend_connections=poller.peak,
        )
        record_cpu(row, endpoint, cpu_before, result.transactions)
        if workload.tls:
            row.update(
                endpoint_sslmode=endpoint.sslmode,
                peak_backends_tls=counter.tls_peak,
                peak_backends_plaintext=counter.plaintext_peak,
                backend_tls=", ".join(sorted(counter.tls_kinds)) or None,
            )
        if result.error:
            row["error"] = result.error
        elif workload.tls:
            row["error"] = tls_failure(endpoint, counter, poller.samples)
        if poller.error:
            row["poller_error"] = poller.error

    def measure_sysbench(self, system: System, row: report.Row, test: str) -> None:
        args = self.args
        assert self.mysql is not None
        run = SysbenchRun(
            row["clients"], args.duration, args.sysbench_tables, args.sysbench_table_size, test
        )
        endpoint = system.start()
        if args.warmup > 0:
            warm = dataclasses.replace(
                run, threads=min(row["clients"], args.pool_size), duration=args.warmup
            )
            run_sysbench(warm, endpoint, self.mysql.password)  # failures show in the real run
        cpu_before = None if endpoint.pid is None else cpu_times(endpoint.pid)
        with BackendPoller(self.counter(MYSQL)) as poller:
            result = run_sysbench(run, endpoint, self.mysql.password)
        row.update(
            transactions=result.transactions,
            ignored_errors=result.ignored_errors,
            reconnects=result.reconnects,
            sysbench_time_s=run.duration,
        )
        self.record_load(row, endpoint, cpu_before, result, poller)

    def measure_slap(self, system: System, row: report.Row) -> None:
        assert self.mysql is not None
        endpoint = system.start()
        password = self.mysql.password
        run = size_slap(row["clients"], self.args.duration, endpoint, password)  # also warms up
        cpu_before = None if endpoint.pid is None else cpu_times(endpoint.pid)
        with BackendPoller(self.counter(MYSQL)) as poller:
            result = run_slap(run, endpoint, password, expected=self.args.duration)
        row["slap_queries_per_client"] = run.per_client
        self.record_load(row, endpoint, cpu_before, result, poller)

    def record_load(
        self,
        row: report.Row,
        endpoint: Endpoint,
        cpu_before: tuple[float, float] | None,
        result: LoadResult,
        poller: BackendPoller,
    ) -> None:
        """The fields every MySQL row has, from the load generator's result."""
        row.update(
            tps=result.qps,
            queries=result.queries,
            tool_seconds=result.seconds,
            elapsed_s=round(result.elapsed, 1),
            peak_backend_connections=poller.peak,
        )
        record_cpu(row, endpoint, cpu_before, result.queries)
        if result.error:
            row["error"] = result.error
        if poller.error:
            row["poller_error"] = poller.error

    def measure_function(self, system: System, workload: Workload, row: report.Row) -> None:
        assert isinstance(system, FunctionSystem)
        endpoint = system.start()
        if workload.name == "function_cold_start":
            cpu_before = None
            result = system.cold_starts(self.args.cold_starts)
        else:
            system.warm_up()
            cpu_before = cpu_seconds(endpoint.pid) if endpoint.pid is not None else None
            result = system.warm_invokes(self.args.warm_invokes)
        row.update(result.summary(), sandbox=system.sandbox())
        warm = workload.name == "function_warm_invoke"
        if warm and cpu_before is not None and endpoint.pid is not None and result.calls_ms:
            # the server (API, IAM, runner) and its one live environment, per invocation
            used = cpu_seconds(endpoint.pid) - cpu_before
            row["server_cpu_ms_per_invoke"] = round(used * 1000 / len(result.calls_ms), 2)
        if result.failed:
            row["error"] = f"{len(result.failed)} invocations failed: {result.failed[0]}"

    def measure_attack(self, system: System, row: report.Row) -> None:
        assert isinstance(system, AttackedProxy)
        system.start()
        result = attack(system, row["clients"])
        row.update(summary(result))
        if result.good_errors:
            row["error"] = f"{len(result.good_errors)} good logins failed: " + "; ".join(
                result.good_errors[:3]
            )

    def measure_idle(self, system: System, row: report.Row) -> None:
        assert self.pg is not None
        endpoint = system.start()
        with BackendPoller(self.counter(PG)) as poller:
            held = hold_idle(endpoint, self.pg.password, row["clients"])
            result = asyncio.run(asyncio.wait_for(held, _IDLE_TIMEOUT))
        row.update(
            peak_backend_connections=poller.peak,
            idle_clients_opened=result.opened,
            idle_clients_failed=result.failed,
            idle_open_seconds=round(result.open_seconds, 1),
            idle_sample_queries_ok=f"{result.sample_ok}/{result.sample_total}",
            rss_before_bytes=result.rss_before,
            rss_after_bytes=result.rss_after,
        )
        per = result.bytes_per_client
        row["rss_bytes_per_idle_client"] = None if per is None else round(per)
        if result.errors:
            row["error"] = f"{result.failed} of {result.requested} clients failed: " + "; ".join(
                result.errors
            )


def plan(args: argparse.Namespace) -> list[tuple[Workload, int, str]]:
    """(workload, clients, system) of every row this run measures, in order."""
    rows = []
    for workload in WORKLOADS:
        if args.only and workload.name not in args.only:
            continue
        for clients in workload.clients:
            if workload.name == "idle_clients":
                clients = args.idle_clients
            elif workload.name == "under_attack" and args.quick:
                clients = 2000
            for system in workload.systems:
                if not args.system or system in args.system:
                    rows.append((workload, clients, system))
    return rows


def record_cpu(
    row: report.Row,
    endpoint: Endpoint,
    cpu_before: tuple[float, float] | None,
    count: int | None,
) -> None:
    """The proxy's CPU over the measured run, in all and per transaction or query, and
    split into user and system (kernel) time."""
    if endpoint.pid is None or cpu_before is None:
        return
    user, system = (after - before for after, before in
                    zip(cpu_times(endpoint.pid), cpu_before, strict=True))  # fmt: skip
    used = user + system
    row.update(
        proxy_cpu_seconds=round(used, 2),
        proxy_cpu_user_seconds=round(user, 2),
        proxy_cpu_system_seconds=round(system, 2),
    )
    if count:
        row.update(
            cpu_us_per_txn=round(used * 1e6 / count, 2),
            cpu_user_us_per_txn=round(user * 1e6 / count, 2),
            cpu_system_us_per_txn=round(system * 1e6 / count, 2),
        )


def tls_failure(endpoint: Endpoint, counter: PgBackendCounter, samples: int) -> str | None:
    """Why a TLS row did not run with TLS on both legs, or None when it did.

    The client leg is TLS when pgbench ran with `PGSSLMODE=require` (libpq then refuses
    a server without TLS); the database leg when every backend the poller saw used TLS.
    """
    if endpoint.sslmode != "require":
        return f"TLS row but pgbench ran with PGSSLMODE={endpoint.sslmode}"
    if counter.plaintext_peak:
        return f"up to {counter.plaintext_peak} backends without TLS (pg_stat_ssl)"
    if samples and not counter.tls_peak:
        return "no backend with TLS seen (pg_stat_ssl)"
    return None


def new_row(workload: Workload, system: str, clients: int, run_id: str) -> report.Row:
    load = workload.name not in ("idle_clients", "under_attack") and workload.engine != FUNCTIONS
    row: report.Row = {
        "workload": workload.name,
        "engine": workload.engine,
        "system": system,
        "clients": clients,
        "tps": None,
        "unit": None if not load else "queries/s" if workload.engine == MYSQL else "transactions/s",
        "cpu_us_per_txn": None,
        "peak_backend_connections": None,
        "rss_bytes_per_idle_client": None,
        "protocol": workload.mode if load else None,
        "connect_per_txn": workload.connect_each,
        "client_auth": "iam-token+tls" if workload.auth == "iam" else None,
        "error": None,
        "run": run_id,
    }
    if workload.engine == PG and load and workload.auth == "password":
        row["tls"] = workload.tls  # on both legs or on neither (the IAM row: client_auth)
    if system != "direct" and workload.auth == "password":
        row["pool_max_connections"] = None  # set by main() from --pool-size
    return row


def progress(row: report.Row) -> str:
    head = f"{row['workload']} {row['clients']} clients {row['system']}:"
    if row["workload"] == "idle_clients":
        body = f"{row.get('idle_clients_opened')} held, {row['rss_bytes_per_idle_client']} B each"
    elif row["workload"] == "under_attack":
        body = (
            f"{row.get('attack_held_min')} stalled logins held, slowest good login "
            f"{row.get('good_login_worst_s')} s, RSS peak {row.get('rss_peak_bytes')} B"
        )
    elif row.get("engine") == FUNCTIONS:
        body = (
            f"{row.get('invokes')} invokes, p50 {row.get('latency_p50_ms')} ms, "
            f"p99 {row.get('latency_p99_ms')} ms"
        )
    else:
        mysql = row.get("engine") == MYSQL
        body = (
            f"qps {row['tps']}, cpu µs/query {row['cpu_us_per_txn']}"
            if mysql
            else f"tps {row['tps']}, cpu µs/txn {row['cpu_us_per_txn']}"
        )
        if row.get("cpu_user_us_per_txn") is not None:
            body += f" (user {row['cpu_user_us_per_txn']}, sys {row['cpu_system_us_per_txn']})"
        if row.get("tls"):
            body += (
                f", backends with TLS {row.get('peak_backends_tls')} without "
                f"{row.get('peak_backends_plaintext')} ({row.get('backend_tls')})"
            )
    if row.get("engine") != FUNCTIONS:
        body += f", peak backends {row['peak_backend_connections']}"
    if row.get("error"):
        body += " FAILED: " + str(row["error"]).splitlines()[0]
    return f"{head} {body}"


def command_line(argv: Sequence[str]) -> str:
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(Path.cwd()))
    except ValueError:
        shown = str(exe)
    return shlex.join([shown, "-m", "bench.run", *argv])


def limit_idle_clients(args: argparse.Namespace, nofile: int) -> None:
    """Keep the idle count within the fd limit and the ephemeral port range."""
    cap = min(nofile - _FD_MARGIN, ephemeral_ports() - _FD_MARGIN)
    if args.idle_clients > cap:
        print(f"idle clients capped to {cap} (fd limit {nofile}, port range)", flush=True)
        args.idle_clients = cap


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    nofile = raise_nofile_limit()
    limit_idle_clients(args, nofile)
    # Read the earlier results first: a broken file must stop the run, not be overwritten.
    partial = bool(args.only or args.system)
    old_rows, runs = report.load_results(args.json) if partial else ([], {})
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-")).resolve()
    workdir.chmod(0o755)  # the servers and PgBouncer run as the postgres / mysql OS users
    bench = Bench(args, workdir)
    print(f"bench: work dir {workdir}, RLIMIT_NOFILE {nofile}", flush=True)
    meta: dict[str, Any] = {}
    try:
        bench.setup()
        meta = run_meta(args, argv, bench)
        bench.run(meta["run_id"])
    finally:
        try:
            bench.close()
        finally:
            if args.keep_workdir:
                print(f"bench: kept {workdir}", flush=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    for row in bench.rows:
        if "pool_max_connections" in row:
            row["pool_max_connections"] = args.pool_size
    rows = report.merge_rows(old_rows, bench.rows)
    runs[meta["run_id"]] = meta
    report.write_json(rows, args.json, runs)
    report.write_markdown(rows, runs, args.markdown)
    failed = sum(1 for row in bench.rows if row.get("error"))
    kept = f", {len(rows) - len(bench.rows)} kept from earlier runs" if partial else ""
    print(
        f"bench: {len(bench.rows)} rows, {failed} failed{kept}; "
        f"wrote {args.json} and {args.markdown}"
    )
    return 0


def run_meta(args: argparse.Namespace, argv: Sequence[str], bench: Bench) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    engines = sorted({workload.engine for workload, _, _ in bench.plan})
    meta: dict[str, Any] = {
        "run_id": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(argv),
        "engines": engines,
        "machine": machine_info(None if bench.pg is None else bench.pg.cluster.bin_dir),
        "duration": args.duration,
        "warmup": args.warmup,
        "pool_size": args.pool_size,
        "pid": os.getpid(),
        "build": build_kind(),  # the proxies run what this process imports (PYTHONPATH)
    }
    if bench.pg is not None:
        meta.update(
            threads=args.threads,
            connect_threads=args.connect_threads,
            scale=args.scale,
            pg_max_connections=args.pg_max_connections,
        )
    if FUNCTIONS in engines:
        meta.update(cold_starts=args.cold_starts, warm_invokes=args.warm_invokes)
    if bench.mysql is not None:
        meta.update(
            mariadb=f"MariaDB {bench.mysql.cluster.version}",
            mysql_max_connections=args.mysql_max_connections,
            sysbench_tables=args.sysbench_tables,
            sysbench_table_size=args.sysbench_table_size,
            slap_probe_queries_per_client=PROBE_QUERIES_PER_CLIENT,
        )
    return meta


if __name__ == "__main__":
    sys.exit(main())
