"""Turn what the demo measured into a short text a person can read.

Pinned sessions come from the proxy's Prometheus endpoint (sluice_pins_total)
when it answers; otherwise they are counted in the proxy's log, where every pin
writes one "pinned to its connection" line at info level. The report names the
source it used, and says whether the two agree.
Latencies are measured in the demo's own process, so they include its
scheduling of hundreds of clients on one event loop.
"""

from __future__ import annotations

import math
import textwrap
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sluice.demo.clients import QUERIES_PER_CLIENT, TOO_MANY_CLIENTS, RoundResult

if TYPE_CHECKING:
    from sluice.demo.rds import RdsPart
    from sluice.demo.recipe import RecipePart

PIN_LOG_MARK = "pinned to its connection"
PIN_METRIC = "sluice_pins_total"
_COUNTERS = (
    ("sluice_client_connections_setup_succeeded_total", "client logins"),
    ("sluice_transactions_total", "transactions"),
    ("sluice_database_connections_setup_succeeded_total", "database connections opened"),
    ("sluice_borrow_timeouts_total", "borrow timeouts"),
)
_LABEL = 22
_WIDTH = 96


@dataclass(frozen=True)
class PinCount:
    count: int
    source: str


@dataclass(frozen=True)
class ProxyFacts:
    """What the demo knows about the proxied run besides the clients' own results."""

    rounds: int
    clients_per_round: int
    pool_mode: str
    pool_size: str
    peak_backends: int
    rows_written: int
    pins: PinCount
    counters: str
    password_logged: bool


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-100) of `values`; 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fetch_metrics(url: str, timeout: float = 2.0) -> str | None:
    """The Prometheus text from `url`, or None if the endpoint does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body.decode("utf-8", "replace")


def metric_sum(metrics_text: str, name: str) -> float | None:
    """The sum of `name`'s samples over all label sets, or None if there is no sample."""
    total: float | None = None
    for line in metrics_text.splitlines():
        if line.startswith("#") or line.split("{", 1)[0].split(" ", 1)[0] != name:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        total = value if total is None else total + value
    return total


def count_pins(metrics_text: str | None, log_text: str) -> PinCount:
    """Pins from the metrics endpoint if it exports the pin counter, else from the log."""
    logged = sum(1 for line in log_text.splitlines() if PIN_LOG_MARK in line)
    value = metric_sum(metrics_text or "", PIN_METRIC)
    if value is not None:
        agree = "the log agrees" if int(value) == logged else f"the log has {logged} pin lines"
        return PinCount(int(value), f"{PIN_METRIC} from the metrics endpoint; {agree}")
    why = f"no {PIN_METRIC} on the metrics endpoint" if metrics_text else "no metrics endpoint"
    return PinCount(logged, f"counted in the proxy log: {why}")


def proxy_counters(metrics_text: str | None) -> str:
    """The proxy's own view of the run, from the metrics endpoint (empty if it has none)."""
    parts = []
    for name, label in _COUNTERS:
        value = metric_sum(metrics_text or "", name)
        if value is not None:
            parts.append(f"{int(value)} {label}")
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _row(label: str, text: str) -> str:
    return f"  {label:<{_LABEL}}{text}"


def _wrapped(label: str, text: str) -> list[str]:
    indent = " " * (_LABEL + 2)
    body = textwrap.wrap(text, width=_WIDTH - len(indent))
    return [_row(label, body[0]), *(indent + more for more in body[1:])]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _latency(label: str, values: list[float]) -> str:
    if not values:
        return _row(label, "(no samples)")
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return _row(label, f"p50 {_ms(p50):>9}   p99 {_ms(p99):>9}   ({len(values)} samples)")


def _failures(errors: Counter[str], skip: str = "") -> list[str]:
    lines = []
    for label, count in errors.most_common(5):
        if label != skip:
            lines.append(f"      {count:>5} x {label}")
    return lines


def proxy_report(result: RoundResult, facts: ProxyFacts) -> list[str]:
    """The paragraph about the clients that went through Sluice."""
    lines = [
        f"Through Sluice ({facts.pool_mode} pooling, pool of {facts.pool_size}; "
        f"{_count(facts.rounds, 'round')} x {facts.clients_per_round} clients at once)",
        _row("clients served", f"{result.served} of {result.clients} ({result.failed} failed)"),
        *_failures(result.errors),
        _row(
            "queries run",
            f"{result.queries} ({QUERIES_PER_CLIENT} per client, two in a write transaction)",
        ),
        _row("rows written", f"{facts.rows_written} (one per client served)"),
        _row(
            "database connections",
            f"peak {facts.peak_backends} for {facts.clients_per_round} clients at once "
            f"(clients saw {len(result.backend_pids)} different backend processes)",
        ),
        _row("pinned sessions", f"{facts.pins.count} ({facts.pins.source})"),
        _latency("connect latency", result.connect_times),
        _latency("query latency", result.query_times),
        _row("wall time", f"{result.elapsed:.1f} s for {_count(facts.rounds, 'round')}"),
    ]
    if facts.counters:
        lines += _wrapped("the proxy counted", facts.counters)
    lines.append(
        "  (latencies are timed by the demo, which is the busiest process here: it runs"
        " every client,\n   SCRAM logins included, on one core)"
    )
    return lines


def direct_report(result: RoundResult, peak_backends: int, max_connections: int) -> list[str]:
    """The paragraph about the same crowd going straight to PostgreSQL."""
    refused = result.errors.get(TOO_MANY_CLIENTS, 0)
    other = result.failed - refused
    return [
        f"Straight to PostgreSQL (max_connections={max_connections}; "
        f"{result.clients} clients at once, one round)",
        _row("clients served", f"{result.served} of {result.clients}"),
        _row("refused", f'{refused} with "sorry, too many clients already"'),
        _row("other failures", str(other)),
        *_failures(result.errors, skip=TOO_MANY_CLIENTS),
        _row("database connections", f"peak {peak_backends} (as often as polling saw)"),
        _latency("connect latency", result.connect_times),
        _row("wall time", f"{result.elapsed:.1f} s"),
    ]


def summary(proxied: RoundResult, peak: int, direct: RoundResult) -> list[str]:
    """Two lines for the impatient."""
    return [
        f"Sluice served {proxied.served} of {proxied.clients} clients with at most {peak} "
        "database connections;",
        f"connecting directly, {direct.served} of {direct.clients} got in and "
        f"{direct.failed} were turned away.",
    ]


def rds_report(part: RdsPart, max_connections: int, pool_percent: int) -> list[str]:
    """The paragraph about the clients that went through the local RDS Proxy."""
    result = part.result
    return [
        f"Through Sluice as a local RDS Proxy (sluice server, endpoint {part.endpoint}:5432;",
        f"  IAM token + verified TLS; pool {pool_percent}% of max_connections={max_connections}; "
        f"{result.clients} clients at once)",
        _row("clients served", f"{result.served} of {result.clients} ({result.failed} failed)"),
        *_failures(result.errors),
        _row("database connections", f"peak {part.peak}"),
        _latency("connect (TLS+token)", result.connect_times),
        *_wrapped("without a token", part.refused),
    ]


def recipe_report(part: RecipePart) -> list[str]:
    """The paragraph about the recipe on MySQL and the crowd of invocations."""
    crowd = part.invocations
    books = part.answer.get("books", [])
    seconds = dict(part.timings)
    made = f"a MariaDB DB instance at {part.instance}:3306, a table, the function"
    steps = f"steps 1-9 (proxy endpoint {part.endpoint}:3306) and the invoke"
    said = f"{part.answer.get('user')} via {part.answer.get('host')}: {len(books)} rows of books"
    answered = f"{crowd.answered} of {crowd.count} answered, {crowd.concurrency} at a time"
    connections = f"peak {crowd.peak_connections} open; {crowd.opened_connections} opened"
    return [
        "The RDS Proxy recipe on MySQL (examples/cookbook-403: the aws CLI, a new sluice server)",
        _row("prerequisites.sh", f"{seconds['prerequisites.sh']:.1f} s: {made}"),
        _row("recipe.sh", f"{seconds['recipe.sh']:.1f} s: {steps}"),
        _row("the function said", said),
        _row("invocations", f"{answered}, in {crowd.elapsed:.1f} s"),
        *_failures(crowd.errors),
        _row("database connections", f"{connections} for {crowd.count} logins to the proxy"),
    ]
