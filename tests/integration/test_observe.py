"""The admin console (psql, psycopg) and the Prometheus endpoint, against a running proxy.

Every test starts `sluice proxy` with `admin_users = ["app"]` and a metrics
listener, drives it with real clients, and checks what the console and the
exporter report against what the clients did and what PostgreSQL itself sees.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    dsn,
    free_port,
    wait_for,
)
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess

ADMIN_DB = "sluice"
POOL = {"proxy": "pg", "engine": "postgresql", "database": APP_DB, "user": APP_USER}
PROXY = {"proxy": "pg", "engine": "postgresql"}
PSQL = ("psql", "-X", "-A", "-F", "\t", "-P", "footer=off", "-v", "ON_ERROR_STOP=1")


@dataclass
class Observed:
    proc: SluiceProcess
    metrics_port: int

    def admin(self, user: str = APP_USER, password: str = APP_PASSWORD) -> psycopg.Connection:
        conn_dsn = dsn(self.proc, user=user, password=password, dbname=ADMIN_DB)
        return psycopg.connect(conn_dsn, autocommit=True, connect_timeout=5)

    def client(self, autocommit: bool = False) -> psycopg.Connection:
        return psycopg.connect(dsn(self.proc), autocommit=autocommit, connect_timeout=5)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.scrape()[(name, frozenset(labels.items()))]


@pytest.fixture
def observed(start_sluice: Callable[..., SluiceProcess]) -> Observed:
    port = free_port()
    proc = start_sluice(glob={"admin_users": [APP_USER], "metrics_listen": f"127.0.0.1:{port}"})
    obs = Observed(proc, port)
    assert wait_for(lambda: _accepts(port)), "metrics endpoint did not start"
    return obs


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def show(conn: psycopg.Connection, what: str) -> list[dict[str, str | None]]:
    cur = conn.execute(f"SHOW {what}")
    assert cur.description is not None
    names = [col.name for col in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def app_pool(conn: psycopg.Connection) -> dict[str, str | None]:
    (row,) = [r for r in show(conn, "POOLS") if (r["database"], r["user"]) == (APP_DB, APP_USER)]
    return row


def psql_admin(proc: SluiceProcess, sql: str) -> list[dict[str, str]]:
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    out = subprocess.run(
        [*PSQL, "-h", host, "-p", port, "-U", APP_USER, "-d", ADMIN_DB, "-c", sql],
        env={**os.environ, "PGPASSWORD": APP_PASSWORD, "PGCONNECT_TIMEOUT": "5"},
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    header, *lines = out.stdout.splitlines()
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines]


# ---- admin console ----


def test_psql_show_pools_reflects_an_open_transaction(observed: Observed) -> None:
    with observed.client() as conn:
        conn.execute("select 1")  # psycopg opened a transaction: the connection is borrowed
        (row,) = [r for r in psql_admin(observed.proc, "SHOW POOLS") if r["database"] == APP_DB]
        assert (row["user"], row["cl_active"], row["cl_waiting"]) == (APP_USER, "1", "0")
        assert (row["sv_active"], row["sv_idle"], row["pool_mode"]) == ("1", "0", "transaction")
        conn.commit()
        (row,) = [r for r in psql_admin(observed.proc, "show pools;") if r["database"] == APP_DB]
        assert (row["sv_active"], row["sv_idle"], row["pinned"]) == ("0", "1", "0")


def test_show_clients_servers_and_stats(observed: Observed, stack: ExitStack) -> None:
    admin = stack.enter_context(observed.admin())
    conn = stack.enter_context(observed.client())
    row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    pid = str(row[0])

    clients = show(admin, "CLIENTS")
    (app_client,) = [c for c in clients if c["database"] == APP_DB]
    assert (app_client["user"], app_client["state"], app_client["server_pid"]) == (
        APP_USER,
        "active",
        pid,
    )
    assert app_client["addr"] == "127.0.0.1" and app_client["pinned"] == ""
    assert [c["state"] for c in clients if c["database"] == ADMIN_DB] == ["admin"]

    (server,) = show(admin, "SERVERS")
    assert (server["pid"], server["state"], server["database"]) == (pid, "active", APP_DB)
    assert server["link"] == f"{app_client['addr']}:{app_client['port']}"

    conn.commit()
    for i in range(3):
        conn.execute("select %s::int", [i])
        conn.commit()
    (stats,) = [s for s in show(admin, "STATS") if s["database"] == APP_DB]
    assert stats["total_xact_count"] == "4"
    assert stats["server_connects"] == "1" and stats["borrow_timeouts"] == "0"
    assert int(stats["total_borrow_count"] or 0) >= 4
    (server,) = show(admin, "SERVERS")
    assert (server["state"], server["link"]) == ("idle", "")


def test_pinned_client_is_shown(observed: Observed, stack: ExitStack) -> None:
    admin = stack.enter_context(observed.admin())
    conn = stack.enter_context(observed.client(autocommit=True))
    conn.execute("PREPARE two AS SELECT 2")
    assert app_pool(admin)["pinned"] == "1"
    (client,) = [c for c in show(admin, "CLIENTS") if c["database"] == APP_DB]
    assert client["pinned"] and client["state"] == "active"
    (stats,) = [s for s in show(admin, "STATS") if s["database"] == APP_DB]
    assert stats["pins"] == "1"
    assert observed.metric("sluice_database_connections_currently_session_pinned", **POOL) == 1
    assert observed.metric("sluice_pins_total", **POOL) == 1


def test_show_targets_counts_every_user_against_the_budget(
    observed: Observed, pg: PgCluster, stack: ExitStack
) -> None:
    admin = stack.enter_context(observed.admin())
    users = [(APP_USER, APP_PASSWORD), (OTHER_USER, OTHER_PASSWORD)]
    for user, password in users:
        conn = stack.enter_context(
            psycopg.connect(dsn(observed.proc, user=user, password=password), connect_timeout=5)
        )
        conn.execute("select 1")  # each user's pool holds one connection, in a transaction
    (row,) = [t for t in show(admin, "TARGETS") if t["target"] == f"{pg.host}:{pg.port}"]
    assert (row["sv_used"], row["max_connections"], row["proxies"]) == ("2", "10", "pg")
    assert row["server_max_connections"] == str(pg.max_connections)


def test_version_lists_and_config(observed: Observed, stack: ExitStack) -> None:
    admin = stack.enter_context(observed.admin())
    assert admin.info.parameter_status("server_version") == "15.0 (sluice)"
    (version,) = show(admin, "VERSION")
    assert str(version["version"]).startswith("Sluice ")
    lists = {r["list"]: r["items"] for r in show(admin, "LISTS")}
    assert (lists["proxies"], lists["users"], lists["admin_clients"]) == ("1", "2", "1")
    config = {r["key"]: r["value"] for r in show(admin, "CONFIG")}
    assert config["admin_users"] == APP_USER
    assert config["proxy.pg.pool.max_connections"] == "10"
    assert not any(APP_PASSWORD in str(v) or OTHER_PASSWORD in str(v) for v in config.values())


def test_non_admin_and_wrong_password_are_refused(observed: Observed) -> None:
    before = observed.metric("sluice_client_connections_setup_failed_auth_total", **PROXY)
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        observed.admin(user=OTHER_USER, password=OTHER_PASSWORD)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        observed.admin(password="wrong-password")
    after = observed.metric("sluice_client_connections_setup_failed_auth_total", **PROXY)
    assert after == before + 2
    other_dsn = dsn(observed.proc, user=OTHER_USER, password=OTHER_PASSWORD)
    with psycopg.connect(other_dsn, autocommit=True) as conn:  # fine outside the console
        assert conn.execute("select current_user").fetchone() == (OTHER_USER,)


def test_unknown_command_errors_and_the_session_goes_on(observed: Observed) -> None:
    with observed.admin() as admin:
        with pytest.raises(psycopg.errors.SyntaxError, match="unknown command"):
            admin.execute("FROBNICATE everything")
        with pytest.raises(psycopg.errors.SyntaxError, match="SHOW expects"):
            admin.execute("SHOW TABLES")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            admin.execute("SHOW POOLS", prepare=True)  # the extended protocol is refused
        with pytest.raises(psycopg.errors.SyntaxError):
            admin.execute("SELECT 1")  # never relayed to a database
        assert show(admin, "version")[0]["version"]
        assert not admin.closed
    # the session ended with Terminate: nothing of it is left in the proxy
    assert wait_for(lambda: observed.metric("sluice_client_connections", **PROXY) == 0)


def test_pause_waits_for_borrowed_connections_and_resume_lets_waiters_run(
    observed: Observed, stack: ExitStack
) -> None:
    admin = stack.enter_context(observed.admin())
    pauser = stack.enter_context(observed.admin())
    holder = stack.enter_context(observed.client())
    late = stack.enter_context(observed.client(autocommit=True))
    holder.execute("select 1")  # a transaction holds a connection

    paused = _in_thread(lambda: pauser.execute("PAUSE"))
    time.sleep(0.5)
    assert paused.is_alive(), "PAUSE returned while a connection was still borrowed"
    holder.commit()
    paused.join(5)
    assert not paused.is_alive() and paused.error is None
    assert app_pool(admin)["paused"] == "yes"

    answer: list[object] = []
    query = _in_thread(lambda: answer.extend(late.execute("select 42").fetchall()))
    assert wait_for(lambda: app_pool(admin)["cl_waiting"] == "1")
    assert observed.metric("sluice_clients_waiting", **POOL) == 1
    assert query.is_alive() and answer == []
    admin.execute("RESUME")
    query.join(5)
    assert not query.is_alive() and query.error is None
    assert answer == [(42,)]
    assert app_pool(admin)["paused"] == "no"


def test_reload_applies_the_new_file_and_reports_a_bad_one(
    observed: Observed, stack: ExitStack
) -> None:
    admin = stack.enter_context(observed.admin())
    with observed.client(autocommit=True) as conn:
        conn.execute("select 1")
    assert observed.metric("sluice_max_database_connections_allowed", **POOL) == 10
    observed.proc.proxies[0]["pool"]["max_connections"] = 7
    observed.proc.write_config()
    admin.execute("RELOAD")
    assert app_pool(admin)["max_connections"] == "7"
    assert observed.metric("sluice_max_database_connections_allowed", **POOL) == 7

    observed.proc.config_path.write_text("[sluice]\nnot valid toml ===\n")
    with pytest.raises(psycopg.Error) as info:
        admin.execute("RELOAD")
    assert info.value.sqlstate == "F0000"
    assert app_pool(admin)["max_connections"] == "7"  # the running configuration stays
    observed.proc.write_config()


# ---- metrics ----


def test_metrics_follow_clients_and_database_connections(
    observed: Observed, pg: PgCluster, stack: ExitStack
) -> None:
    received = observed.metric("sluice_client_connections_received_total", **PROXY)
    succeeded = observed.metric("sluice_client_connections_setup_succeeded_total", **PROXY)
    conns = [stack.enter_context(observed.client()) for _ in range(3)]
    for conn in conns:
        conn.execute("select 1")  # three open transactions, three borrowed connections
    m = observed.scrape()
    assert m[("sluice_client_connections_received_total", frozenset(PROXY.items()))] == received + 3
    sample = m[("sluice_client_connections_setup_succeeded_total", frozenset(PROXY.items()))]
    assert sample == succeeded + 3
    assert m[("sluice_client_connections", frozenset(PROXY.items()))] == 3

    def pool_value(name: str) -> float:
        return m[(name, frozenset(POOL.items()))]

    assert pool_value("sluice_database_connections") == pg.backend_count(user=APP_USER) == 3
    assert pool_value("sluice_database_connections_currently_borrowed") == 3
    assert pool_value("sluice_database_connections_currently_in_transaction") == 3
    assert pool_value("sluice_database_connections_setup_succeeded_total") == 3
    assert pool_value("sluice_max_database_connections_allowed") == 10
    target = frozenset({"target": f"{pg.host}:{pg.port}"}.items())
    assert m[("sluice_target_database_connections", target)] == 3
    assert m[("sluice_target_max_database_connections", target)] == 10
    for conn in conns:
        conn.commit()
    assert observed.metric("sluice_database_connections_currently_borrowed", **POOL) == 0
    assert observed.metric("sluice_transactions_total", **POOL) == 3
    for conn in conns:
        conn.close()
    assert wait_for(lambda: observed.metric("sluice_client_connections", **PROXY) == 0)


def test_latency_histograms_are_well_formed(observed: Observed) -> None:
    with observed.client(autocommit=True) as conn:
        conn.execute("select 1")
    m = observed.scrape()
    for name in (
        "sluice_database_connections_borrow_latency_seconds",
        "sluice_query_database_response_latency_seconds",
    ):
        buckets = sorted(
            (float(dict(labels)["le"]), value)
            for (sample, labels), value in m.items()
            if sample == f"{name}_bucket" and ("database", APP_DB) in labels
        )
        assert len(buckets) > 10 and buckets[-1][0] == float("inf")
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)  # cumulative
        assert buckets[-1][1] == m[(f"{name}_count", frozenset(POOL.items()))]


def test_query_requests_grow(observed: Observed) -> None:
    with observed.client(autocommit=True) as conn:
        conn.execute("select 1")
        before = observed.metric("sluice_query_requests_total", **POOL)
        for i in range(5):
            conn.execute("select %s::int", [i])
    assert wait_for(lambda: observed.metric("sluice_query_requests_total", **POOL) >= before + 5)


def _raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):  # the server closes after one answer
            chunks.append(chunk)
    return b"".join(chunks)


def test_metrics_http_edges(observed: Observed) -> None:
    port = observed.metrics_port
    answer = _raw_http(port, b"GET /metrics HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in head
    assert b"sluice_client_connections_received_total{" in body
    assert f"Content-Length: {len(body)}".encode() in head
    accept = b"Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n"
    answer = _raw_http(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n" + accept + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/openmetrics-text" in head and body.endswith(b"# EOF\n")
    head_only = _raw_http(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head_only.startswith(b"HTTP/1.1 200 ") and head_only.endswith(b"\r\n\r\n")
    assert _raw_http(port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    too_large = b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 1500  # over 8 KiB, no end
    assert _raw_http(port, too_large).startswith(b"HTTP/1.1 431 ")
    assert _raw_http(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    assert info.value.code == 404
    assert observed.metric("sluice_client_connections", **PROXY) == 0  # still serving


# ---- helpers ----


class _Worker(threading.Thread):
    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:
            self.error = exc


def _in_thread(fn: Callable[[], object]) -> _Worker:
    worker = _Worker(fn)
    worker.start()
    return worker
