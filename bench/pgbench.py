"""Run pgbench against an endpoint and read its summary.

pgbench prints `tps = N (without initial connection time)` for a normal run
and `tps = N (including reconnection times)` with `-C`, where connecting is the
point of the test; either way the one tps line is the figure we report. A run
whose clients aborted (pgbench exits 2) still prints a summary, but its tps is
not comparable, so it is reported as a failure with pgbench's own error lines.
pgbench runs in its own session so a timeout kills it and nothing else.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

from bench.systems import BENCH_DB, BENCH_USER, Endpoint, pg_env

_TPS = re.compile(r"^tps = ([0-9.]+) \(([^)]*)\)", re.M)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_CONNECT = re.compile(r"^(?:initial|average) connection time = ([0-9.]+) ms", re.M)
_CLIENTS_PER_EXTRA_SECOND = 125  # 1000 SCRAM logins took 3-6 s here; -T counts them
# 1000 SCRAM logins over TLS took 7.5 s through either proxy and 17 s direct (a backend
# forked for each) on a busy machine
TLS_CLIENTS_PER_EXTRA_SECOND = 40
_GRACE = 120.0  # seconds beyond -T for connecting 1000 clients and shutting down
_MAX_ERROR_LINES = 6


@dataclass(frozen=True)
class PgbenchRun:
    """One pgbench invocation: select-only, `mode` protocol, `clients` over `threads`."""

    mode: str
    clients: int
    threads: int
    duration: int
    connect_each: bool = False
    connect_threads: int = 32
    tls: bool = False  # the clients log in over TLS: more time for the initial connections

    @property
    def seconds(self) -> int:
        """pgbench's -T: the duration plus time for the initial connections.

        pgbench starts its -T clock before its clients connect, and 1000 SCRAM
        logins take seconds (more over TLS), so many-client rows get that time on top.
        """
        per_second = TLS_CLIENTS_PER_EXTRA_SECOND if self.tls else _CLIENTS_PER_EXTRA_SECOND
        return self.duration + self.clients // per_second

    def args(self, endpoint: Endpoint) -> list[str]:
        cmd = ["pgbench", "-n", "-S", "-M", self.mode, "-T", str(self.seconds)]
        # pgbench connects synchronously within a thread: -C needs threads to overlap logins.
        threads = self.connect_threads if self.connect_each else self.threads
        cmd += ["-c", str(self.clients), "-j", str(min(threads, self.clients))]
        if self.connect_each:
            cmd.append("-C")
        cmd += ["-h", endpoint.host, "-p", str(endpoint.port), "-U", BENCH_USER, BENCH_DB]
        return cmd


@dataclass(frozen=True)
class PgbenchResult:
    tps: float | None
    transactions: int | None
    failed: int | None
    connect_ms: float | None
    error: str | None
    elapsed: float


def _number(pattern: re.Pattern[str], text: str) -> float | None:
    found = pattern.search(text)
    return float(found.group(1)) if found else None


def parse_summary(text: str) -> tuple[float | None, int | None, int | None, float | None]:
    """(tps, transactions processed, failed transactions, connection ms) from pgbench's stdout.

    The connection time is the initial one, or with -C the average per connection.
    """
    done, failed = _number(_PROCESSED, text), _number(_FAILED, text)
    return (
        _number(_TPS, text),
        None if done is None else int(done),
        None if failed is None else int(failed),
        _number(_CONNECT, text),
    )


def error_lines(stderr: str) -> str:
    """pgbench's distinct error lines, the first few (a failed run repeats them per client)."""
    seen: list[str] = []
    for line in stderr.splitlines():
        line = re.sub(r"client \d+", "client N", line.strip())
        if line and line not in seen:
            seen.append(line)
    return "\n".join(seen[:_MAX_ERROR_LINES])


def run_pgbench(run: PgbenchRun, endpoint: Endpoint, password: str) -> PgbenchResult:
    """Run pgbench to completion (or kill it after -T plus a grace period).

    `password` is the database's; an endpoint with a password of its own (an IAM
    token) gets that one instead, and its TLS mode.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        run.args(endpoint),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=pg_env(endpoint.password or password, endpoint.sslmode),
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=run.seconds + _GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        elapsed = time.monotonic() - started
        timed_out = f"pgbench timed out\n{error_lines(err)}"
        return PgbenchResult(None, None, None, None, timed_out, elapsed)
    elapsed = time.monotonic() - started
    tps, done, failed, connect_ms = parse_summary(out)
    error: str | None = None
    if proc.returncode != 0 or tps is None:
        why = "" if tps is not None or proc.returncode else ", no tps (no transaction completed)"
        error = f"pgbench exit {proc.returncode}{why}\n{error_lines(err)}".strip()
        tps = None
    return PgbenchResult(tps, done, failed, connect_ms, error, elapsed)
