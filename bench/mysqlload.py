"""Run the MySQL load generators against an endpoint and read their summaries.

`sysbench oltp_point_select` runs one primary-key SELECT per event (its
transaction count equals its query count), as a binary-protocol prepared
statement (`--db-ps-mode=auto`, the default), over connections held for the
whole run; the figure kept is its `queries: N (Q per sec.)` line.
`sysbench oltp_read_write` runs a transaction per event: BEGIN, ten point
selects, four range selects (a sum, an ORDER BY, a DISTINCT: 100 rows each),
two UPDATEs, a DELETE and an INSERT, COMMIT (20 queries, all prepared but the
BEGIN and COMMIT); deadlocks and lock waits it retries are its `ignored errors`. A run that
exits non-zero (sysbench stops at the first error it does not ignore) is a
failure, reported with its FATAL lines.

`mariadb-slap --detach=1` closes and reopens the connection after every query,
so it measures logins: `--concurrency` clients each run their share of
`--number-of-queries` (`SELECT 1`), and slap prints the seconds the whole
batch took, all clients together. Queries per second is the queries run over
those seconds. The query count is sized from a short probe run (which also
warms the system up) so that the measured run lasts about the row's duration.

Both run in their own session, so a timeout kills them and nothing else.
The password goes to slap in MYSQL_PWD, to sysbench on its command line
(it has no other way); neither ends up in an error message.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

from bench.mysql import sysbench_base
from bench.systems import BENCH_DB, BENCH_USER, Endpoint

_SB_QUERIES = re.compile(r"^\s*queries:\s+(\d+)\s+\(([0-9.]+) per sec\.\)", re.M)
_SB_TRANSACTIONS = re.compile(r"^\s*transactions:\s+(\d+)\s+\(([0-9.]+) per sec\.\)", re.M)
_SB_IGNORED = re.compile(r"^\s*ignored errors:\s+(\d+)", re.M)
_SB_RECONNECTS = re.compile(r"^\s*reconnects:\s+(\d+)", re.M)
_SB_TOTAL_TIME = re.compile(r"^\s*total time:\s+([0-9.]+)s", re.M)
_SLAP_AVERAGE = re.compile(r"Average number of seconds to run all queries: ([0-9.]+) seconds")
_SLAP_CLIENTS = re.compile(r"Number of clients running queries: (\d+)")
_SLAP_PER_CLIENT = re.compile(r"Average number of queries per client: (\d+)")
_CLIENTS_PER_EXTRA_SECOND = 100  # grace for 1000 threads logging in before the clock starts
_GRACE = 120.0
_MAX_ERROR_LINES = 6
PROBE_QUERIES_PER_CLIENT = 25
_MAX_QUERIES_PER_CLIENT = 200_000


@dataclass(frozen=True)
class LoadResult:
    qps: float | None
    queries: int | None
    seconds: float | None  # the tool's own measured time
    error: str | None
    elapsed: float  # wall time of the whole invocation
    transactions: int | None = None
    ignored_errors: int | None = None
    reconnects: int | None = None


def error_lines(text: str) -> str:
    """The distinct error lines of a tool's output, the first few."""
    seen: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not re.search(r"FATAL|ERROR|[Ee]rror|Cannot|failed|[Ll]ost connection", line):
            continue
        line = re.sub(r"thread(?:_id)? ?#?\d+", "thread N", line)
        if line not in seen:
            seen.append(line)
    return "\n".join(seen[:_MAX_ERROR_LINES])


def _last_lines(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_MAX_ERROR_LINES:])


def _run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, stdout+stderr, elapsed seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out, time.monotonic() - started
    return proc.returncode, out, time.monotonic() - started


def _int(pattern: re.Pattern[str], text: str) -> int | None:
    found = pattern.search(text)
    return int(found.group(1)) if found else None


# ------------------------------------------------------------------ sysbench


@dataclass(frozen=True)
class SysbenchRun:
    threads: int
    duration: int
    tables: int
    table_size: int
    test: str = "oltp_point_select"

    @property
    def timeout(self) -> float:
        return self.duration + self.threads / _CLIENTS_PER_EXTRA_SECOND + _GRACE

    def args(self, endpoint: Endpoint, password: str) -> list[str]:
        return [
            *sysbench_base(endpoint, password, self.test),
            f"--tables={self.tables}",
            f"--table-size={self.table_size}",
            f"--threads={self.threads}",
            f"--time={self.duration}",
            "--report-interval=0",
            "--db-ps-mode=auto",
            "run",
        ]


def parse_sysbench(text: str) -> LoadResult:
    """qps, query count, seconds and error counters from sysbench's summary (no error set)."""
    queries = _SB_QUERIES.search(text)
    total = _SB_TOTAL_TIME.search(text)
    return LoadResult(
        qps=float(queries.group(2)) if queries else None,
        queries=int(queries.group(1)) if queries else None,
        seconds=float(total.group(1)) if total else None,
        error=None,
        elapsed=0.0,
        transactions=_int(_SB_TRANSACTIONS, text),
        ignored_errors=_int(_SB_IGNORED, text),
        reconnects=_int(_SB_RECONNECTS, text),
    )


def run_sysbench(run: SysbenchRun, endpoint: Endpoint, password: str) -> LoadResult:
    """Run sysbench to completion (or kill it after --time plus a grace period)."""
    code, out, elapsed = _run(run.args(endpoint, password), run.timeout)
    parsed = parse_sysbench(out)
    error: str | None = None
    if code is None:
        error = f"sysbench timed out after {run.timeout:.0f} s\n{error_lines(out)}"
    elif code != 0 or parsed.qps is None:
        why = "" if parsed.qps is not None else ", no summary"
        error = f"sysbench exit {code}{why}\n{error_lines(out) or _last_lines(out)}".strip()
    return LoadResult(
        qps=None if error else parsed.qps,
        queries=parsed.queries,
        seconds=parsed.seconds,
        error=error,
        elapsed=elapsed,
        transactions=parsed.transactions,
        ignored_errors=parsed.ignored_errors,
        reconnects=parsed.reconnects,
    )


# ------------------------------------------------------------------ mariadb-slap


@dataclass(frozen=True)
class SlapRun:
    concurrency: int
    queries: int  # in all, over all clients; each client runs queries // concurrency
    query: str = "SELECT 1"

    @property
    def per_client(self) -> int:
        return max(1, self.queries // self.concurrency)

    def timeout(self, expected_seconds: float) -> float:
        return 4 * expected_seconds + _GRACE

    def args(self, endpoint: Endpoint) -> list[str]:
        return [
            "mariadb-slap",
            "--no-defaults",  # must come first: no /etc/mysql or ~/.my.cnf
            f"--host={endpoint.host}",
            f"--port={endpoint.port}",
            "--protocol=tcp",
            f"--user={BENCH_USER}",
            "--skip-ssl",
            f"--create-schema={BENCH_DB}",
            "--no-drop",
            f"--query={self.query}",
            f"--concurrency={self.concurrency}",
            "--iterations=1",
            f"--number-of-queries={self.per_client * self.concurrency}",
            "--detach=1",
        ]


def parse_slap(text: str) -> tuple[float | None, int | None]:
    """(seconds for all queries, queries run) from mariadb-slap's benchmark summary."""
    seconds = _SLAP_AVERAGE.search(text)
    clients, per_client = _int(_SLAP_CLIENTS, text), _int(_SLAP_PER_CLIENT, text)
    queries = None if clients is None or per_client is None else clients * per_client
    return (float(seconds.group(1)) if seconds else None), queries


def run_slap(run: SlapRun, endpoint: Endpoint, password: str, expected: float) -> LoadResult:
    """Run mariadb-slap once; `expected` seconds sizes its timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    env.update(LC_ALL="C", MYSQL_PWD=password)
    timeout = run.timeout(expected)
    code, out, elapsed = _run(run.args(endpoint), timeout, env)
    seconds, queries = parse_slap(out)
    error: str | None = None
    if code is None:
        error = f"mariadb-slap timed out after {timeout:.0f} s\n{error_lines(out)}"
    elif code != 0 or seconds is None or queries is None:
        error = f"mariadb-slap exit {code}\n{error_lines(out) or _last_lines(out)}".strip()
    qps = None
    if error is None and seconds is not None and queries is not None:
        # slap prints milliseconds; a batch too short to time is timed by the wall clock.
        qps = round(queries / (seconds if seconds > 0 else elapsed), 2)
    return LoadResult(qps, queries, seconds, error, elapsed)


def size_slap(concurrency: int, duration: int, endpoint: Endpoint, password: str) -> SlapRun:
    """A probe run (the warm-up) measures the rate; return a run lasting about `duration` s."""
    probe = SlapRun(concurrency, concurrency * PROBE_QUERIES_PER_CLIENT)
    result = run_slap(probe, endpoint, password, expected=30.0)
    if result.error is not None or not result.qps:
        raise RuntimeError(f"probe run failed: {result.error}")
    per_client = round(result.qps * duration / concurrency)
    per_client = min(max(per_client, PROBE_QUERIES_PER_CLIENT), _MAX_QUERIES_PER_CLIENT)
    return SlapRun(concurrency, per_client * concurrency)
