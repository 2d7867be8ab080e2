"""Turn measured rows into `bench/results/latest.json` and `docs/benchmarks.md`.

A row is a plain dict (one workload, system and client count); the JSON file
is the list of rows, the Markdown page regroups them: for PostgreSQL one line
per workload and client count with a column group per system, the ratios
Sluice is judged by and the idle-client memory table; for MySQL the same with
queries per second, and the targets checked; the "under attack" row
(stalled logins held by a proxy of both engines, good logins beside them);
then every failure with its error text, and the facts about the machine
needed to weigh the numbers.

Rows can come from different runs: a run limited with `--only` or `--system`
replaces only the rows it measured (same workload, client count and system)
and keeps the others. Each row names its run (`run`), and the runs' settings
(command, duration, pool size, machine...) are kept beside the rows in
`latest.runs.json`, so the page can say which run each section comes from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Runs = dict[str, dict[str, Any]]

SYSTEMS = ("direct", "pgbouncer", "sluice")
BOTH_ENGINES = "postgresql+mysql"  # the engine of a row that runs both (under attack)
FUNCTIONS_ENGINE = "lambda"  # the function rows: no database, `sluice server` invoking
MYSQL_SYSTEMS = ("direct", "sluice")
# the `select_workers` rows: Sluice pinned to one CPU with one worker, and to two with two
WORKER_SYSTEMS_SETUP = {"sluice-1cpu": (1, (0,)), "sluice-2cpu-2workers": (2, (0, 1))}
WORKER_SYSTEMS = tuple(WORKER_SYSTEMS_SETUP)
TITLES = {
    "select_simple": "`-S` simple protocol",
    "select_extended": "`-S -M extended`",
    "select_simple_tls": "`-S` simple protocol, TLS",
    "select_extended_tls": "`-S -M extended`, TLS",
    "select_prepared": "`-S -M prepared`",
    "select_connect": "`-S -C` (new connection per transaction)",
    "select_connect_iam": "`-S -C`, IAM auth token + TLS (Sluice as RDS Proxy)",
    "select_workers": "`-S` simple protocol, Sluice pinned to 1 CPU / 1 worker vs 2 / 2",
    "idle_clients": "idle clients held open",
    "mysql_point_select": "`sysbench oltp_point_select` (binary prepared statements)",
    "mysql_read_write": "`sysbench oltp_read_write` (20 queries per transaction)",
    "mysql_connect": "`mariadb-slap --detach=1` (new connection per query)",
    "under_attack": "under attack: stalled logins held, good clients logging in",
    "function_cold_start": "function cold start (a new execution environment per call)",
    "function_warm_invoke": "function warm invoke (the same environment every call)",
}
ATTACK_RSS_TARGET = 300 * 1024 * 1024
ATTACK_LOGIN_TARGET = 1.0
# The PostgreSQL row of the same shape as a MySQL row, for the proxy-CPU target.
SAME_SHAPE = {
    ("mysql_point_select", 32): ("select_prepared", 32),
    ("mysql_point_select", 1000): ("select_extended", 1000),
    ("mysql_connect", 32): ("select_connect", 32),
}
POINT_SELECT_TARGET = 0.9
# the proxy's CPU per transaction: in all, then its user and system (kernel) parts
CPU_KEYS = ("cpu_us_per_txn", "cpu_user_us_per_txn", "cpu_system_us_per_txn")
_UNRECORDED = "unrecorded"
TLS_WORKLOADS = ("select_simple_tls", "select_extended_tls")


def engine_of(row: Row) -> str:
    """`mysql` or `postgresql` (rows measured before the field existed are PostgreSQL)."""
    engine = row.get("engine")
    if engine:
        return str(engine)
    return "mysql" if str(row["workload"]).startswith("mysql_") else "postgresql"


def row_key(row: Row) -> tuple[str, int, str]:
    return (row["workload"], row["clients"], row["system"])


def runs_path(json_path: Path) -> Path:
    """Where the runs' settings are kept: `latest.runs.json` beside `latest.json`."""
    return json_path.with_name(json_path.stem + ".runs.json")


def load_results(json_path: Path) -> tuple[list[Row], Runs]:
    """The rows and runs written before (empty if there are none)."""
    rows: list[Row] = []
    runs: Runs = {}
    if json_path.exists():
        rows = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{json_path}: expected a JSON list of rows")
    meta_path = runs_path(json_path)
    if meta_path.exists():
        runs = json.loads(meta_path.read_text(encoding="utf-8"))
    return rows, runs


def merge_rows(old: Sequence[Row], new: Sequence[Row]) -> list[Row]:
    """`old` with each row that `new` measured again replaced in place, then new rows."""
    fresh = {row_key(row): row for row in new}
    merged = [fresh.pop(row_key(row), row) for row in old]
    return merged + [row for row in new if row_key(row) in fresh]


def write_json(rows: Sequence[Row], path: Path, runs: Runs | None = None) -> None:
    """The rows to `path`; the runs they name (if given) to `runs_path(path)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    if runs is not None:
        used = {row.get("run") for row in rows}
        kept = {run_id: meta for run_id, meta in sorted(runs.items()) if run_id in used}
        runs_path(path).write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "—"
    return f"{a / b:.2f}x"


def _find(rows: Sequence[Row], workload: str, clients: int, system: str) -> Row | None:
    for row in rows:
        if (row["workload"], row["clients"], row["system"]) == (workload, clients, system):
            return row
    return None


def _keys(rows: Sequence[Row], idle: bool) -> list[tuple[str, int]]:
    """(workload, clients) of the PostgreSQL rows, workloads in TITLES' order.

    Rows merged in by a later `--only` run come last in the JSON; the table
    still shows each workload where it belongs (the IAM row beside `-S -C`).
    """
    keys: list[tuple[str, int]] = []
    for row in rows:
        key = (row["workload"], row["clients"])
        if engine_of(row) != "postgresql" or row["workload"] == "select_workers":
            continue
        if (row["workload"] == "idle_clients") == idle and key not in keys:
            keys.append(key)
    order = list(TITLES)
    return sorted(keys, key=lambda k: order.index(k[0]) if k[0] in order else len(order))


def _cell(row: Row | None, key: str, digits: int = 0) -> str:
    """A row's figure; "—" when missing (a row measured before the field existed)."""
    if row is None:
        return "—"
    if row.get("error") and key in ("tps", *CPU_KEYS):
        return "failed" if key == "tps" else "—"
    return _fmt(row.get(key), digits)


def _cpu_cells(row: Row | None) -> str:
    """The CPU per transaction columns of one system: total, user, system."""
    return " | ".join(_cell(row, key, 1) for key in CPU_KEYS)


def throughput_table(rows: Sequence[Row]) -> list[str]:
    head = (
        "| Workload | Clients | direct tps | pgbouncer tps | sluice tps "
        "| sluice / pgbouncer | sluice / direct "
        "| pgbouncer CPU µs/txn | pgbouncer user | pgbouncer sys "
        "| sluice CPU µs/txn | sluice user | sluice sys "
        "| peak backends direct / pgbouncer / sluice |"
    )
    lines = [head, "|" + "---|" * 14]
    for workload, clients in _keys(rows, idle=False):
        by = {s: _find(rows, workload, clients, s) for s in SYSTEMS}
        tps = {s: None if r is None or r.get("error") else r["tps"] for s, r in by.items()}
        peaks = " / ".join(_cell(by[s], "peak_backend_connections") for s in SYSTEMS)
        lines.append(
            f"| {TITLES.get(workload, workload)} | {clients:,} "
            f"| {_cell(by['direct'], 'tps')} | {_cell(by['pgbouncer'], 'tps')} "
            f"| {_cell(by['sluice'], 'tps')} "
            f"| {_ratio(tps['sluice'], tps['pgbouncer'])} | {_ratio(tps['sluice'], tps['direct'])} "
            f"| {_cpu_cells(by['pgbouncer'])} | {_cpu_cells(by['sluice'])} | {peaks} |"
        )
    return lines


def tls_lines(rows: Sequence[Row]) -> list[str]:
    """What pg_stat_ssl showed of the TLS rows' backends (each row fails if one had none)."""
    seen: list[str] = []
    plaintext = 0
    tls_rows = [r for r in rows if r["workload"] in TLS_WORKLOADS and engine_of(r) == "postgresql"]
    for row in tls_rows:
        plaintext = max(plaintext, row.get("peak_backends_plaintext") or 0)
        for kind in str(row.get("backend_tls") or "").split(", "):
            if kind and kind not in seen:
                seen.append(kind)
    if not tls_rows:
        return []
    return [
        "TLS rows (TLS on both legs, see below): the bench role's backends during the runs "
        f"used {', '.join(f'`{k}`' for k in seen) or 'nothing recorded'} (pg_stat_ssl); "
        f"most backends seen at once without TLS: {plaintext}."
    ]


def iam_table(rows: Sequence[Row]) -> list[str]:
    """Sluice's `-S -C` row with SCRAM beside the one with IAM tokens over TLS, and the ratio."""
    scram = _find(rows, "select_connect", 32, "sluice")
    iam = _find(rows, "select_connect_iam", 32, "sluice")
    lines = [
        "| Client login (Sluice, `-S -C`, 32 clients) | tps | proxy CPU µs/connection "
        "| peak backends |",
        "|---|---|---|---|",
    ]
    for label, row in (("SCRAM, no TLS (`sluice proxy`)", scram),
                       ("IAM auth token over TLS (`sluice server` DB proxy)", iam)):  # fmt: skip
        lines.append(
            f"| {label} | {_cell(row, 'tps')} | {_cell(row, 'cpu_us_per_txn', 1)} "
            f"| {_cell(row, 'peak_backend_connections')} |"
        )
    ok = [r if r is not None and not r.get("error") else None for r in (scram, iam)]
    tps = [None if r is None else r.get("tps") for r in ok]
    cpu = [None if r is None else r.get("cpu_us_per_txn") for r in ok]
    lines.append(f"| IAM / SCRAM | {_ratio(tps[1], tps[0])} | {_ratio(cpu[1], cpu[0])} | |")
    return lines


def workers_table(rows: Sequence[Row]) -> list[str]:
    """Sluice on one CPU with one worker beside two CPUs with two workers."""
    lines = [
        "| Sluice | CPUs (taskset) | workers | clients | tps | proxy CPU µs/txn "
        "| proxy cores busy | ceiling: CPUs / CPU per txn | peak backends | max_connections |",
        "|" + "---|" * 10,
    ]
    found = {}
    for system, (workers, cpus) in WORKER_SYSTEMS_SETUP.items():
        for row in rows:
            if (row["workload"], row["system"]) != ("select_workers", system):
                continue
            found[system] = row
            lines.append(
                f"| {system} | {','.join(map(str, cpus))} | {workers} | {row['clients']} "
                f"| {_cell(row, 'tps')} | {_cell(row, 'cpu_us_per_txn', 1)} "
                f"| {_busy(row)} | {_ceiling(row, len(cpus))} "
                f"| {_cell(row, 'peak_backend_connections')} "
                f"| {_fmt(row.get('pool_max_connections'))} |"
            )
    one, two = (found.get(s) for s in WORKER_SYSTEMS)
    tps = [None if r is None or r.get("error") else r.get("tps") for r in (one, two)]
    ceilings = [None if r is None else _ceiling_tps(r, len(c)) for r, (_, c) in
                zip((one, two), WORKER_SYSTEMS_SETUP.values(), strict=True)]  # fmt: skip
    lines.append(
        f"| 2 workers / 1 | | | | {_ratio(tps[1], tps[0])} | | "
        f"| {_ratio(ceilings[1], ceilings[0])} | | |"
    )
    return lines


def _ceiling_tps(row: Row, cpus: int) -> float | None:
    """The transactions per second the proxy's CPUs would allow at its CPU per transaction."""
    cpu = row.get("cpu_us_per_txn")
    return None if row.get("error") or not cpu else cpus * 1e6 / cpu


def _ceiling(row: Row, cpus: int) -> str:
    return _fmt(_ceiling_tps(row, cpus))


def _busy(row: Row) -> str:
    """CPU the proxy used, in cores: transactions per second times CPU per transaction."""
    tps, cpu = row.get("tps"), row.get("cpu_us_per_txn")
    return "—" if row.get("error") or not tps or not cpu else f"{tps * cpu / 1e6:.2f}"


def idle_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| System | Clients asked | Clients held | RSS before | RSS after "
        "| Proxy memory per idle client | Peak backends |",
        "|" + "---|" * 7,
    ]
    for row in rows:
        if row["workload"] != "idle_clients":
            continue
        per = row.get("rss_bytes_per_idle_client")
        lines.append(
            f"| {row['system']} | {row['clients']:,} | {_fmt(row.get('idle_clients_opened'))} "
            f"| {_mib(row.get('rss_before_bytes'))} | {_mib(row.get('rss_after_bytes'))} "
            f"| {_fmt(per)} bytes | {_fmt(row.get('peak_backend_connections'))} |"
        )
    return lines


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 1048576:,.1f} MiB"


def failures(rows: Sequence[Row]) -> list[str]:
    lines: list[str] = []
    for row in rows:
        if row.get("error"):
            title = f"{row['workload']}, {row['clients']:,} clients, {row['system']}"
            lines += [f"**{title}**", "", "```", str(row["error"]).strip(), "```", ""]
    return lines or ["None: every row completed."]


def _m(meta: dict[str, Any], key: str) -> Any:
    value = meta.get(key)
    return "?" if value is None else value


def _engine_runs(
    rows: Sequence[Row], runs: Runs, engine: str
) -> list[tuple[dict[str, Any], list[Row]]]:
    """The runs that measured this engine's rows (oldest first), each with its rows."""
    by_run: dict[str, list[Row]] = {}
    for row in rows:
        if engine_of(row) == engine:
            by_run.setdefault(str(row.get("run") or _UNRECORDED), []).append(row)
    return [(runs.get(run_id, {}), mine) for run_id, mine in sorted(by_run.items())]


def _run_line(meta: dict[str, Any], rows: list[Row], only_run: bool) -> str:
    if only_run:
        which = f"all {len(rows)} rows of this section"
    else:
        which = "rows: " + ", ".join(f"{r['workload']} {r['clients']} {r['system']}" for r in rows)
    if not meta:
        return f"- Run: not recorded ({which})"
    return f"- Run: {_m(meta, 'run_id')}, `{_m(meta, 'command')}` ({which})"


def pg_run_lines(meta: dict[str, Any], rows: list[Row], only_run: bool) -> list[str]:
    lines = [_run_line(meta, rows, only_run)]
    if not meta:
        return lines
    tls = ", per 40 in the TLS rows" if any(r["workload"] in TLS_WORKLOADS for r in rows) else ""
    return [
        *lines,
        f"- Duration per row: {_m(meta, 'duration')} s of `pgbench -T` (plus 1 s per 125 "
        f"clients for their initial logins{tls}) after a {_m(meta, 'warmup')} s warm-up; pgbench "
        f"with `-j {_m(meta, 'threads')}`, `-C` rows with `-j {_m(meta, 'connect_threads')}`",
        f"- Pool size: {_m(meta, 'pool_size')} server connections for both PgBouncer and Sluice",
        f"- Data: `pgbench -i -s {_m(meta, 'scale')}`, then `VACUUM (ANALYZE, FREEZE)` and "
        f"`CHECKPOINT`; PostgreSQL max_connections = "
        f"{_m(meta, 'pg_max_connections')}",
    ]


def mysql_run_lines(meta: dict[str, Any], rows: list[Row], only_run: bool) -> list[str]:
    lines = [_run_line(meta, rows, only_run)]
    if not meta:
        return lines
    return [
        *lines,
        f"- Duration per row: {_m(meta, 'duration')} s of `sysbench --time` after a "
        f"{_m(meta, 'warmup')} s warm-up (with as many threads as the pool has connections, "
        "at most the row's); the `mariadb-slap` row runs a query count sized to last about "
        f"{_m(meta, 'duration')} s from a probe run of "
        f"{_m(meta, 'slap_probe_queries_per_client')} queries per client, which is its warm-up",
        f"- Pool size: {_m(meta, 'pool_size')} server connections for Sluice (transaction "
        "pooling, `max_connections` = `max_idle_connections`, borrow timeout 60 s)",
        f"- Data: `sysbench oltp_point_select prepare --tables={_m(meta, 'sysbench_tables')} "
        f"--table-size={_m(meta, 'sysbench_table_size')}`; {_m(meta, 'mariadb')}, "
        f"max_connections = {_m(meta, 'mysql_max_connections')}",
    ]


def machine_table(runs: Runs) -> list[str]:
    """The machine facts of every run, the newest run's values winning (a tool the
    newest run could not find keeps the version an earlier run measured with)."""
    machine: dict[str, str] = {}
    for _, meta in sorted(runs.items()):
        for key, value in meta.get("machine", {}).items():
            if value != "unavailable" or key not in machine:
                machine[key] = value
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in machine.items())]


def mysql_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| Workload | Clients | direct qps | sluice qps | sluice / direct "
        "| sluice CPU µs/query | sluice user | sluice sys "
        "| peak backends direct / sluice | sluice pool max |",
        "|" + "---|" * 10,
    ]
    keys: list[tuple[str, int]] = []
    for row in rows:
        if engine_of(row) == "mysql" and (row["workload"], row["clients"]) not in keys:
            keys.append((row["workload"], row["clients"]))
    for workload, clients in keys:
        by = {s: _find(rows, workload, clients, s) for s in MYSQL_SYSTEMS}
        qps = {s: None if r is None or r.get("error") else r["tps"] for s, r in by.items()}
        peaks = " / ".join(_cell(by[s], "peak_backend_connections") for s in MYSQL_SYSTEMS)
        sluice = by["sluice"]
        pool = "—" if sluice is None else _fmt(sluice.get("pool_max_connections"))
        lines.append(
            f"| {TITLES.get(workload, workload)} | {clients:,} "
            f"| {_cell(by['direct'], 'tps')} | {_cell(sluice, 'tps')} "
            f"| {_ratio(qps['sluice'], qps['direct'])} "
            f"| {_cpu_cells(sluice)} | {peaks} | {pool} |"
        )
    return lines


def attack_table(rows: Sequence[Row]) -> list[str]:
    """The under-attack row: what was held, how the good clients fared, the proxy's RSS."""
    lines = [
        "| Stalled logins held (asked) | Holding a largest pre-login message "
        "| Good logins PostgreSQL / MySQL | Slowest good login PostgreSQL / MySQL "
        "| RSS before | RSS peak | Within 1 s and 300 MB |",
        "|" + "---|" * 7,
    ]
    for row in rows:
        if row["workload"] != "under_attack" or row.get("attack_held_min") is None:
            continue
        held = row["attack_held_min"] - row["attack_big_messages"]
        worst = row.get("good_login_worst_s")
        peak = row.get("rss_peak_bytes") or 0
        met = (
            worst is not None and worst <= ATTACK_LOGIN_TARGET and peak < ATTACK_RSS_TARGET
            and not row.get("error")
        )  # fmt: skip
        lines.append(
            f"| {_fmt(held)} ({row['clients']:,}) | {row['attack_big_messages']} "
            f"| {row.get('good_logins_pg')} / {row.get('good_logins_mysql')} "
            f"| {_fmt(row.get('good_login_worst_pg_s'), 3)} s "
            f"/ {_fmt(row.get('good_login_worst_mysql_s'), 3)} s "
            f"| {_mib(row.get('rss_before_bytes'))} | {_mib(peak)} | {_ok(met)} |"
        )
    return lines


def attack_notes(rows: Sequence[Row]) -> list[str]:
    """Why fewer stalled logins were held than asked for, when so."""
    notes = []
    for row in rows:
        if row["workload"] != "under_attack" or row.get("attack_stalled_logins") is None:
            continue
        if row["attack_stalled_logins"] < row["clients"]:
            notes.append(
                f"Held {row['attack_stalled_logins']:,} stalled logins, not "
                f"{row['clients']:,}: this machine's hard open file limit is "
                f"{row['fd_hard_limit']:,} per process, and a proxy holds no more clients than "
                "its limit leaves room for beside its pools and a reserve (more are refused "
                'with "too many clients", good clients included, by design).'
            )
    return notes


def functions_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| Row | invocations | p50 ms | p99 ms | mean ms | Init Duration p50 ms (REPORT) "
        "| server CPU ms per invocation |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in ("function_cold_start", "function_warm_invoke"):
        row = _find(rows, workload, 1, "sluice")
        if row is None:
            continue
        lines.append(
            f"| {TITLES[workload]} | {_cell(row, 'invokes')} | {_cell(row, 'latency_p50_ms', 1)} "
            f"| {_cell(row, 'latency_p99_ms', 1)} | {_cell(row, 'latency_mean_ms', 1)} "
            f"| {_cell(row, 'init_duration_p50_ms', 1)} "
            f"| {_cell(row, 'server_cpu_ms_per_invoke', 2)} |"
        )
    return lines


def _ok(met: bool | None) -> str:
    return "not measured" if met is None else ("**yes**" if met else "**no**")


def mysql_targets(rows: Sequence[Row]) -> list[str]:
    """The targets for the MySQL rows, each with what was measured."""
    lines = ["| Target | Measured | Met |", "|---|---|---|"]
    direct = _find(rows, "mysql_point_select", 32, "direct")
    sluice = _find(rows, "mysql_point_select", 32, "sluice")
    ok = [r is not None and not r.get("error") and r.get("tps") for r in (direct, sluice)]
    if all(ok) and direct is not None and sluice is not None:
        ratio = sluice["tps"] / direct["tps"]
        measured = f"{ratio:.2f}x ({sluice['tps']:,.0f} / {direct['tps']:,.0f} qps)"
        met: bool | None = ratio >= POINT_SELECT_TARGET
    else:
        measured, met = "a row failed or is missing", None
    lines.append(
        f"| point-select throughput at 32 threads at least {POINT_SELECT_TARGET}x direct "
        f"| {measured} | {_ok(met)} |"
    )
    peaks = [
        r for r in rows
        if engine_of(r) == "mysql" and r["system"] == "sluice"
        and r.get("peak_backend_connections") is not None and r.get("pool_max_connections")
    ]  # fmt: skip
    measured = ", ".join(
        f"{r['workload']} {r['clients']}: {r['peak_backend_connections']} of "
        f"{r['pool_max_connections']}"
        for r in peaks
    )
    met = all(r["peak_backend_connections"] <= r["pool_max_connections"] for r in peaks)
    lines.append(
        "| backend connections never above the pool maximum (peak sampled every 100 ms) "
        f"| {measured or '—'} | {_ok(met if peaks else None)} |"
    )
    for (workload, clients), (pg_workload, pg_clients) in SAME_SHAPE.items():
        mine = _find(rows, workload, clients, "sluice")
        theirs = _find(rows, pg_workload, pg_clients, "sluice")
        a = None if mine is None or mine.get("error") else mine.get("cpu_us_per_txn")
        b = None if theirs is None or theirs.get("error") else theirs.get("cpu_us_per_txn")
        if a is None or b is None:
            measured, met = "a row failed or is missing", None
        else:
            measured, met = f"{a:.1f} vs {b:.1f} µs", a <= b
        lines.append(
            f"| Sluice CPU per query, {TITLES[workload].split(' (')[0]} at {clients:,}, no more "
            f"than per PostgreSQL transaction, {TITLES[pg_workload].split(' (')[0]} at "
            f"{pg_clients:,} | {measured} | {_ok(met)} |"
        )
    return lines


def write_markdown(rows: Sequence[Row], runs: Runs, path: Path) -> None:
    """The whole page, from every row kept and the runs that measured them."""
    nproc = next(
        (m["machine"]["nproc"] for _, m in sorted(runs.items(), reverse=True) if "machine" in m),
        "?",
    )
    pg_rows = [r for r in rows if engine_of(r) == "postgresql"]
    my_rows = [r for r in rows if engine_of(r) == "mysql"]
    attack_rows = [r for r in rows if engine_of(r) == BOTH_ENGINES]
    function_rows = [r for r in rows if engine_of(r) == FUNCTIONS_ENGINE]
    lines = [
        "# Benchmarks",
        "",
        "Generated by the benchmark harness (`bench/run.py`); do not edit by hand, run it again.",
        "`make bench` measures every row; `python -m bench.run --only WORKLOAD` measures some "
        "and keeps the others from earlier runs, so each section says which run its rows "
        "come from.",
        "",
        "## Machine",
        "",
        *machine_table(runs),
        "",
        f"**Caveat.** This machine is shared with other work and noisy: run-to-run "
        f"differences of 10-20% are normal. It has {nproc} cores, and the load generator "
        "(pgbench, sysbench, mariadb-slap), the proxy and the database server all compete for "
        "them, so a proxy's throughput here is bounded by the CPU it leaves to the others as "
        "much as by its own speed. Compare systems within one run, not across runs.",
        "",
        "Where Sluice's time goes, and what has been done about it: "
        "[performance.md](performance.md).",
        "",
    ]
    if pg_rows:
        lines += ["## PostgreSQL", ""]
        engine_runs = _engine_runs(rows, runs, "postgresql")
        for meta, mine in engine_runs:
            lines += pg_run_lines(meta, mine, len(engine_runs) == 1)
        lines += [
            "",
            "### Throughput, proxy CPU per transaction, backend connections",
            "",
            *throughput_table(rows),
            "",
            "CPU µs/txn is the proxy's user plus system time per transaction; the user and "
            "sys columns split it (rows measured before the split was recorded show —).",
            "",
        ]
        if any(r["workload"] in TLS_WORKLOADS for r in pg_rows):
            lines += [*tls_lines(rows), ""]
        if any(r["workload"] == "select_connect_iam" for r in pg_rows):
            lines += ["### IAM authentication, new connection per transaction", "",
                      *IAM_TEXT, "", *iam_table(rows), ""]  # fmt: skip
        if any(r["workload"] == "idle_clients" for r in pg_rows):
            lines += ["### Idle client connections", "", *idle_table(rows), ""]
        if any(r["workload"] == "select_workers" for r in pg_rows):
            lines += ["### Every core: worker processes", "", *WORKERS_TEXT, "",
                      *workers_table(rows), ""]  # fmt: skip
    if my_rows:
        lines += ["## MySQL (MariaDB)", ""]
        engine_runs = _engine_runs(rows, runs, "mysql")
        for meta, mine in engine_runs:
            lines += mysql_run_lines(meta, mine, len(engine_runs) == 1)
        lines += [
            f"- {NO_MYSQL_POOLER}",
            "",
            "### Throughput (queries per second), proxy CPU per query, backend connections",
            "",
            "The `tps` field of these rows in `latest.json` holds queries per second "
            "(`unit`: `queries/s`); in `oltp_point_select` a transaction is one query.",
            "",
            *mysql_table(rows),
            "",
            "### Targets",
            "",
            *mysql_targets(rows),
            "",
            "The CPU targets compare rows of different runs when the MySQL rows were measured "
            "with `--only`; both figures are per query and include the clients' logins.",
            "",
        ]
    if attack_rows:
        lines += ["## Under attack", ""]
        for meta, mine in _engine_runs(rows, runs, BOTH_ENGINES):
            lines.append(_run_line(meta, mine, True))
        lines += ["", *ATTACK_TEXT, "", *attack_table(rows), "", *attack_notes(rows), ""]
    if function_rows:
        lines += ["## Functions (Lambda)", ""]
        for meta, mine in _engine_runs(rows, runs, FUNCTIONS_ENGINE):
            lines.append(_run_line(meta, mine, True))
            lines.append(f"- Timed invocations: {_m(meta, 'cold_starts')} cold, "
                         f"{_m(meta, 'warm_invokes')} warm, one after another")  # fmt: skip
        sandboxes = sorted({str(r["sandbox"]) for r in function_rows if r.get("sandbox")})
        lines += [f"- Execution environments: {text}" for text in sandboxes]
        lines += ["", *FUNCTIONS_TEXT, "", *functions_table(function_rows), ""]
    lines += [
        "## Failed rows",
        "",
        *failures(rows),
        "",
        "## How each figure is measured",
        "",
        *METHOD,
        *(MYSQL_METHOD if my_rows else []),
        "",
        "## Where these numbers may mislead",
        "",
        *CAVEATS,
        *(MYSQL_CAVEATS if my_rows else []),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


FUNCTIONS_TEXT = [
    "`lambda.invoke` of a function whose handler returns its event (Python, 128 MB), timed "
    "with boto3 from the client's side: the HTTP round trip on loopback, SigV4 and IAM "
    "checks, and the invocation in an execution environment. Cold: before each call an "
    "untimed UpdateFunctionConfiguration makes every environment stale, so each call starts "
    "a new one (a process of the machine's Python, its sandbox where the host allows it: "
    "memory cgroup, mount namespace with the layers at /opt; the handler's module "
    "imported), as Lambda's first call after a deployment does; Init Duration is what the "
    "REPORT line says of that init phase. Warm: after one untimed call, every call reuses "
    "the same environment. Server CPU counts the server and its live environment, warm "
    "row only.",
]

WORKERS_TEXT = [
    "`-S`, 32 clients, with the proxy pinned (`sched_setaffinity`, as `taskset -c`) to CPU 0 "
    "with `workers = 1`, then to CPUs 0 and 1 with `workers = 2`; pgbench and PostgreSQL "
    "are not pinned and share the same cores. The pool is the same `max_connections` in "
    "both rows: with two workers each has half, and the peak of backend connections (from "
    "pg_stat_activity) shows that the database never saw more. Where the proxy is not what "
    "limits throughput (its cores not all busy: the database and pgbench share the same "
    "cores), the ceiling column is what its CPUs would allow at the CPU per transaction "
    "measured: derived, not measured.",
]

IAM_TEXT = [
    "Sluice's `-S -C` row with SCRAM (above) beside the same load whose password is an "
    "RDS IAM auth token sent over TLS, through a DB proxy that `sluice server` runs: the "
    "serverless pattern, a new connection per invocation. PgBouncer and PostgreSQL cannot "
    "check such tokens, so the IAM row has no direct or PgBouncer peer. With `-C` every "
    "transaction is one connection, so CPU µs/txn is CPU per connection. The two rows may "
    "come from different runs (see the Run lines above).",
]

ATTACK_TEXT = [
    "One `sluice proxy` with a PostgreSQL and a MySQL proxy (pools of 20) holds logins that "
    "stall: a third send a PostgreSQL startup packet for the bench database and then "
    "nothing, a third the same for the admin database, a third read the MySQL greeting and "
    "say nothing; 50 more hold the largest message allowed before login (16 KiB: a "
    "password message, a MySQL login packet) but for its last byte. They come from many "
    "loopback addresses (100 per address, under `max_logins_per_address`), from 4 "
    "attacker processes, and reconnect whenever the proxy closes them; the proxy's "
    "`login_timeout` is 60 s for this row (default 15 s) and its caps on clients and "
    "logins are raised, so the attack is held, not refused. With all of them in, a "
    "psycopg and a PyMySQL client log in from 127.0.0.1 and run `SELECT 1` once a second "
    "for 20 s. RSS is the proxy's VmRSS before the attack (after a first good login of "
    "each engine) and its peak, sampled about every 0.5 s. Target: every good "
    "login within 1 s, RSS under 300 MB.",
]

NO_MYSQL_POOLER = (
    "No MySQL pooler row: none is installable from this machine's package registries. "
    "ProxySQL, MariaDB MaxScale and MySQL Router are not in Debian's archive "
    "(`apt-cache policy proxysql maxscale mysql-router` shows no candidate); they ship "
    "only from their vendors' own repositories."
)

METHOD = [
    "- **tps**: pgbench's own figure, `tps = ... (without initial connection time)`; for "
    "`-C` rows the `(including reconnection times)` figure, since connecting is what "
    "that row measures. A row whose pgbench clients aborted is reported as failed.",
    "- **CPU µs/txn**: the proxy process's utime+stime (`/proc/PID/stat`, all threads; "
    "with worker processes, theirs added) "
    "read before and after the pgbench run, divided by pgbench's transaction count. "
    "It includes the clients' logins (1000 of them in the many-client rows, one per "
    "transaction with `-C`). The kernel counts CPU in 10 ms ticks, so a reading of "
    "under a second (short `--quick` rows, `-C` rows) is only roughly right. The **user** "
    "and **sys** columns split it into utime (the proxy's own code, and OpenSSL's "
    "encryption in the TLS rows) and stime (the kernel working for it: socket reads and "
    "writes, epoll, scheduling), each per transaction; the total is their sum.",
    "- **peak backends**: the bench role's client backends in `pg_stat_activity`, "
    "sampled every 100 ms during the run; a spike shorter than 100 ms can be missed.",
    "- **Proxy memory per idle client**: VmRSS of the proxy after all idle clients "
    "completed a SCRAM login and the proxy settled for 2 s, minus VmRSS after one "
    "warm-up client had run a query, divided by the clients held. RSS counts pages "
    "touched, not bytes allocated: allocator slack and freed-but-kept memory blur it, "
    "and the sockets' kernel buffers are not in it for either proxy. A sample of "
    "50 idle clients then runs `SELECT 1` to check they were usable.",
    "- Every system is started fresh for every row (same pool size, transaction "
    "pooling, SCRAM for clients, TLS off everywhere but in the TLS rows and the IAM row: "
    "PostgreSQL `ssl = off`, pgbench `PGSSLMODE=disable`, PgBouncer "
    "`client_tls_sslmode` and `server_tls_sslmode = disable`, Sluice's target "
    '`tls = "disable"`); rows run workload '
    "by workload with the three systems back to back, so slow drifts of the machine hit "
    "all three.",
    "- **TLS rows** (`, TLS`): TLS on both legs, required by both ends of each. The run "
    "makes one self-signed certificate (ECDSA P-256, for `localhost` and 127.0.0.1, made "
    "with `cryptography` as Sluice makes its own when none is configured), and PostgreSQL "
    "serves it with `ssl = on` for these rows only (`ALTER SYSTEM` and a reload before the "
    "first of them, `ssl = off` again before any other row). pgbench runs with "
    "`PGSSLMODE=require` (encrypted, the certificate not verified) against every system. "
    "Direct: pgbench to PostgreSQL. PgBouncer: `client_tls_sslmode = require` with the "
    "certificate as `client_tls_cert_file` / `client_tls_key_file`, and "
    "`server_tls_sslmode = require` to PostgreSQL. Sluice: `require_tls = true` with the "
    "certificate as `tls_cert_file` / `tls_key_file`, and the target's "
    '`tls = "require"`. Neither proxy verifies PostgreSQL\'s certificate (`require`, as '
    "libpq means it). The TLS version and cipher are each side's OpenSSL defaults; what "
    "the backends used is read from `pg_stat_ssl` with every 100 ms backend sample, and "
    "a row in which a bench backend without TLS is seen fails. With TLS, the handshakes "
    "are part of the logins: one per client for every system, plus one per server "
    "connection the proxy opens (its pool).",
    "- **IAM row**: a fresh `sluice server` per row; with boto3 against it, the bench's "
    "PostgreSQL is adopted as a DB instance and a DB proxy is made as on AWS (a secret with "
    "the bench role's password, a role allowed to read it, `IAMAuth: REQUIRED`, "
    "`RequireTLS`, security groups admitting the proxy to the database and 127.0.0.1 to "
    "the proxy, the target registered and `AVAILABLE`). pgbench then runs with one "
    "`generate_db_auth_token` token (admin credentials) as `PGPASSWORD` and "
    "`PGSSLMODE=require`. Its CPU figure is the `sluice server` process (which runs the "
    "proxy, and also the API and a target health check every 10 s); its pool is the "
    "target group's default (`MaxConnectionsPercent` 100 of PostgreSQL's max_connections), "
    "not `--pool-size`.",
    "- PgBouncer logs no connections (`log_connections = 0`) and Sluice runs at "
    "`log_level = warning`, so neither pays for per-connection log lines.",
]

CAVEATS = [
    "- The machine is shared: other jobs take CPU at random moments, so one row can be "
    "slowed by something unrelated. Rows are single runs of seconds, not medians.",
    "- pgbench, the proxy and PostgreSQL share the cores. A proxy that uses more CPU "
    "also starves pgbench and PostgreSQL, so tps differences overstate pure proxy speed "
    "differences, and direct runs have one process fewer competing.",
    "- pgbench connects synchronously, one client at a time per thread, so `-C` "
    "throughput is bounded by pgbench's own SCRAM work (a PBKDF2 per connection) and by "
    "how many threads it has; proxy differences there are damped.",
    "- The backend count is sampled every 100 ms; shorter spikes can be missed.",
    "- The IAM row against the SCRAM `-C` row changes the client's work too: pgbench makes "
    "a TLS handshake instead of a PBKDF2 per connection, so the tps ratio is not the "
    "proxy's alone; the CPU ratio is (the proxy's TLS handshake and token check against "
    "its SCRAM exchange).",
    "- The TLS rows add the client's TLS work to pgbench and the server's to PostgreSQL "
    "as well as the proxy's: on these shared cores, their tps falls for all three systems, "
    "not for the proxies alone. Direct has one TLS connection per client to PostgreSQL; "
    "a proxy has one per client to itself and one per pooled server connection, so it "
    "encrypts every message twice, and PostgreSQL decrypts as many.",
    "- PgBouncer before 1.21 cannot carry protocol-level prepared statements in "
    "transaction pooling, so its `-M prepared` row fails by design on such versions.",
    "- Idle memory is an RSS difference, see above; Python's allocator keeps freed "
    "memory, which makes Sluice's figure an upper bound for what live clients hold.",
]

MYSQL_METHOD = [
    "- **MySQL qps**: for `sysbench oltp_point_select` its own `queries: N (Q per sec.)` "
    "figure (one primary-key SELECT per transaction, so equal to its tps; the clock starts "
    "after all threads have connected and prepared). sysbench executes the SELECT as a "
    "binary-protocol prepared statement (`--db-ps-mode=auto`); through Sluice each "
    "execute may run on another pooled connection, where Sluice prepares the statement "
    "the first time. `oltp_read_write` counts the same way every query of its "
    "transactions (BEGIN, 10 point selects, 4 range selects of 100 rows, 2 UPDATEs, a "
    "DELETE, an INSERT, COMMIT: 20 per transaction); a transaction holds its pooled "
    "connection from BEGIN to COMMIT. For `mariadb-slap --detach=1`: clients times "
    "queries per client, "
    "over slap's `Average number of seconds to run all queries` (one iteration; it spans "
    "every client's connect, `SELECT 1` and disconnect). A sysbench or slap exit status "
    "other than 0 makes the row failed.",
    "- **MySQL CPU µs/query**: as for PostgreSQL, the proxy's utime+stime over the "
    "measured run divided by the queries run (and split into user and sys), logins "
    "included (1000 sysbench threads logging in and preparing in the many-thread row, "
    "one login per query with slap).",
    "- **MySQL peak backends**: the bench user's connections in "
    "`information_schema.PROCESSLIST`, sampled every 100 ms over one kept root connection "
    "on the unix socket.",
    "- MySQL clients: sysbench 1.0 (libmariadb) with `--mysql-ssl=off`, mariadb-slap with "
    "`--skip-ssl`, so TLS is off everywhere. Direct clients log in to MariaDB with "
    "mysql_native_password; Sluice's clients log in with its default, "
    "caching_sha2_password (fast path: Sluice knows the password), and Sluice logs in to "
    "MariaDB with mysql_native_password.",
]

MYSQL_CAVEATS = [
    "- MySQL: sysbench at 1000 threads runs 1000 OS threads on this machine's cores; the "
    "load generator is then a large share of the CPU for direct and Sluice rows alike.",
    "- MySQL connect rows compare a MariaDB login (a server thread from its thread cache) "
    "with a Sluice login (answered by the proxy, no new server connection); slap's timer "
    "has millisecond resolution and includes starting its client threads.",
]
