"""`python -m bench.run`: Sluice vs PgBouncer vs direct, measured in one run.

The run starts one throwaway PostgreSQL, fills it with `pgbench -i`, then for
each workload and client count measures every system in turn: start it fresh,
warm it up briefly, run pgbench while a thread samples pg_stat_activity and
/proc gives the proxy's CPU time, stop it, wait for its backends to go. The
idle-client rows hold thousands of logged-in clients open instead. A row that
fails is recorded with its error and the proxy's log tail, and the run goes
on. Every child process is stopped in `finally`, also on SIGTERM.
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
from bench.backends import BackendPoller, wait_no_backends
from bench.idle import hold_idle
from bench.pgbench import PgbenchRun, run_pgbench
from bench.procinfo import cpu_seconds, ephemeral_ports, machine_info, raise_nofile_limit
from bench.systems import (
    BenchDatabase,
    DirectSystem,
    PgBouncerSystem,
    SluiceSystem,
    System,
)

ROOT = Path(__file__).resolve().parent.parent
PROXIES = ("pgbouncer", "sluice")
_FD_MARGIN = 1000  # descriptors kept free for pgbench, logs and the poller
_LOG_LINES = 15
_IDLE_TIMEOUT = 900.0  # seconds for opening, measuring and closing all idle clients


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    clients: tuple[int, ...]
    mode: str = "simple"
    connect_each: bool = False
    systems: tuple[str, ...] = report.SYSTEMS


WORKLOADS = (
    Workload("select_simple", (32, 1000)),
    Workload("select_extended", (32, 1000), mode="extended"),
    Workload("select_prepared", (32,), mode="prepared"),
    Workload("select_connect", (32,), connect_each=True),
    Workload("idle_clients", (15000,), systems=PROXIES),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    names = [w.name for w in WORKLOADS]
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s rows, 2000 idle")
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
        choices=report.SYSTEMS,
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
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/latest.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep logs and configs of every row"
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 15)
    args.idle_clients = args.idle_clients or (2000 if args.quick else 15000)
    return args


class Bench:
    """The state of one run: database, systems, options, rows measured so far."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.db = BenchDatabase(workdir, args.pg_max_connections, args.scale)
        self.systems: dict[str, System] = {}
        self.rows: list[report.Row] = []

    def setup(self) -> None:
        self.db.start()
        max_clients = self.args.idle_clients + 1000
        self.systems = {
            "direct": DirectSystem(self.db),
            "pgbouncer": PgBouncerSystem(self.db, self.workdir, self.args.pool_size, max_clients),
            "sluice": SluiceSystem(self.db, self.workdir, self.args.pool_size),
        }

    def close(self) -> None:
        for system in self.systems.values():
            system.stop()
        self.db.stop()

    def plan(self) -> list[tuple[Workload, int, str]]:
        rows = []
        for workload in WORKLOADS:
            if self.args.only and workload.name not in self.args.only:
                continue
            for clients in workload.clients:
                if workload.name == "idle_clients":
                    clients = self.args.idle_clients
                for system in workload.systems:
                    if not self.args.system or system in self.args.system:
                        rows.append((workload, clients, system))
        return rows

    def run(self) -> None:
        plan = self.plan()
        for i, (workload, clients, name) in enumerate(plan, 1):
            started = time.monotonic()
            system = self.systems[name]
            row = new_row(workload, name, clients)
            try:
                if workload.name == "idle_clients":
                    self.measure_idle(system, row)
                else:
                    self.measure_pgbench(system, workload, row)
            except Exception as exc:  # a failed row is a result, not the end of the run
                row["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                self.finish_row(system, row)
            self.rows.append(row)
            print(
                f"[{i}/{len(plan)}] {progress(row)} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )

    def finish_row(self, system: System, row: report.Row) -> None:
        """Stop the system, attach its log tail to a failure, wait for its backends to go."""
        try:
            system.stop()
        finally:
            if row.get("error"):
                log = system.log_tail(_LOG_LINES).strip()
                if log and log not in row["error"]:
                    what = "postgresql" if system.name == "direct" else system.name
                    row["error"] += f"\n--- {what} log (last lines) ---\n{log}"
            warning = wait_no_backends(self.db.admin_conninfo())
            if warning:
                print(f"  warning: {warning}", flush=True)

    def measure_pgbench(self, system: System, workload: Workload, row: report.Row) -> None:
        args = self.args
        run = PgbenchRun(
            workload.mode,
            row["clients"],
            args.threads,
            args.duration,
            workload.connect_each,
            args.connect_threads,
        )
        endpoint = system.start()
        if args.warmup > 0:
            clients = min(row["clients"], args.pool_size)
            warm = dataclasses.replace(run, clients=clients, duration=args.warmup)
            run_pgbench(warm, endpoint, self.db.password)  # failures show in the real run
        cpu_before = None if endpoint.pid is None else cpu_seconds(endpoint.pid)
        with BackendPoller(self.db.admin_conninfo()) as poller:
            result = run_pgbench(run, endpoint, self.db.password)
        row.update(
            tps=result.tps,
            transactions=result.transactions,
            failed_transactions=result.failed,
            pgbench_duration_s=run.seconds,
            connect_ms=result.connect_ms,
            pgbench_seconds=round(result.elapsed, 1),
            peak_backend_connections=poller.peak,
        )
        if endpoint.pid is not None and cpu_before is not None:
            used = cpu_seconds(endpoint.pid) - cpu_before
            row["proxy_cpu_seconds"] = round(used, 2)
            if result.transactions:
                row["cpu_us_per_txn"] = round(used * 1e6 / result.transactions, 2)
        if result.error:
            row["error"] = result.error
        if poller.error:
            row["poller_error"] = poller.error

    def measure_idle(self, system: System, row: report.Row) -> None:
        endpoint = system.start()
        with BackendPoller(self.db.admin_conninfo()) as poller:
            held = hold_idle(endpoint, self.db.password, row["clients"])
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


def new_row(workload: Workload, system: str, clients: int) -> report.Row:
    pgbench = workload.name != "idle_clients"
    return {
        "workload": workload.name,
        "system": system,
        "clients": clients,
        "tps": None,
        "cpu_us_per_txn": None,
        "peak_backend_connections": None,
        "rss_bytes_per_idle_client": None,
        "protocol": workload.mode if pgbench else None,
        "connect_per_txn": workload.connect_each,
        "error": None,
    }


def progress(row: report.Row) -> str:
    head = f"{row['workload']} {row['clients']} clients {row['system']}:"
    if row["workload"] == "idle_clients":
        body = f"{row.get('idle_clients_opened')} held, {row['rss_bytes_per_idle_client']} B each"
    else:
        body = f"tps {row['tps']}, cpu µs/txn {row['cpu_us_per_txn']}"
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
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-")).resolve()
    workdir.chmod(0o755)  # PostgreSQL and PgBouncer run as the postgres OS user
    bench = Bench(args, workdir)
    print(f"bench: work dir {workdir}, RLIMIT_NOFILE {nofile}", flush=True)
    try:
        bench.setup()
        meta = run_meta(args, argv, bench)
        bench.run()
    finally:
        bench.close()
        if args.keep_workdir:
            print(f"bench: kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.write_json(bench.rows, args.json)
    report.write_markdown(bench.rows, meta, args.markdown)
    failed = sum(1 for row in bench.rows if row.get("error"))
    print(f"bench: {len(bench.rows)} rows, {failed} failed; wrote {args.json} and {args.markdown}")
    return 0


def run_meta(args: argparse.Namespace, argv: Sequence[str], bench: Bench) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(argv),
        "machine": machine_info(bench.db.cluster.bin_dir),
        "duration": args.duration,
        "warmup": args.warmup,
        "threads": args.threads,
        "connect_threads": args.connect_threads,
        "pool_size": args.pool_size,
        "scale": args.scale,
        "pg_max_connections": args.pg_max_connections,
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    sys.exit(main())
