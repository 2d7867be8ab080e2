"""PostgreSQL sides: psycopg sessions that run steps and record what a client observes,
and the target's fresh schemas, committed rows and proxy configuration.

A step's observation holds its rows and column names, the command status, the error
(SQLSTATE and primary message; a client-side error by its class only, since its text
names addresses), the notices and notifications (channel and payload: the sender's pid
is not deterministic) received while it ran, the transaction status and every
ParameterStatus value psycopg holds.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import ClientCursor
from psycopg.conninfo import make_conninfo

from sluice.dbserver.postgres import PgCluster

from .program import ClientSpec, Step
from .target import Endpoint, Observation, plain

REPORTED = (
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "is_superuser",
    "session_authorization",
    "standard_conforming_strings",
    "integer_datetimes",
    "server_encoding",
    "server_version",
    "in_hot_standby",
    "default_transaction_read_only",
    "search_path",
)

ROLE = "diff_role"
SCHEMA_SQL = f"""
DROP SCHEMA IF EXISTS diff_a, diff_b CASCADE;
CREATE SCHEMA diff_a;
CREATE SCHEMA diff_b;
CREATE TABLE diff_a.t (id int PRIMARY KEY, v text);
CREATE TABLE diff_b.t (id int PRIMARY KEY, v text);
CREATE TABLE diff_a.c (id serial PRIMARY KEY, v text);
CREATE TABLE diff_a.s (id int PRIMARY KEY, w int);
INSERT INTO diff_a.s VALUES (1, 10), (2, 20);
INSERT INTO diff_a.t VALUES (1, 'a1'), (2, 'a2');
INSERT INTO diff_b.t VALUES (1, 'b1'), (3, 'b3');
CREATE FUNCTION diff_a.setcfg(name text, value text) RETURNS text LANGUAGE sql
    AS $$SELECT set_config(name, value, false)$$;
CREATE FUNCTION diff_a.grab(k int) RETURNS void LANGUAGE sql AS $$SELECT pg_advisory_lock(k)$$;
GRANT USAGE ON SCHEMA diff_a TO {ROLE};
GRANT SELECT ON diff_a.t TO {ROLE};
"""
FINAL_SQL = {
    "diff_a.t": "SELECT id, v FROM diff_a.t ORDER BY id",
    "diff_b.t": "SELECT id, v FROM diff_b.t ORDER BY id",
    "diff_a.c": "SELECT id, v FROM diff_a.c ORDER BY id",
    "diff_a.s": "SELECT * FROM diff_a.s ORDER BY id",
    "diff_a.c_id_seq": "SELECT last_value, is_called FROM diff_a.c_id_seq",
}
OTHERS_SQL = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE usename = current_user AND datname = current_database() AND pid <> pg_backend_pid()"
)
KILL_SQL = (
    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
    "WHERE usename = current_user AND datname = current_database() AND pid <> pg_backend_pid()"
)


def conninfo(endpoint: Endpoint) -> str:
    return (
        f"host={endpoint.host} port={endpoint.port} user={endpoint.user} "
        f"password={endpoint.password} dbname={endpoint.database} sslmode=disable "
        "connect_timeout=10"
    )


class PgSession:
    """One psycopg client; every call records what it observed."""

    def __init__(self, spec: ClientSpec, endpoint: Endpoint) -> None:
        self.spec = spec
        self.endpoint = endpoint
        self.conn: psycopg.Connection[Any] | None = None
        self.notices: list[list[Any]] = []
        self.notifies: list[list[Any]] = []

    def open(self) -> Observation:
        obs: Observation = {}
        try:
            info = make_conninfo(conninfo(self.endpoint), **self.spec.options)
            conn = psycopg.connect(info, autocommit=self.spec.autocommit)
        except psycopg.Error as exc:
            obs["error"] = error_of(exc)
            return obs
        conn.add_notice_handler(
            lambda d: self.notices.append([d.severity_nonlocalized, d.sqlstate, d.message_primary])
        )
        conn.add_notify_handler(lambda n: self.notifies.append([n.channel, n.payload]))
        self.conn = conn
        return self._finish(obs)

    def run(self, step: Step) -> Observation:
        if step.action == "reconnect":
            self.close()
            return self.open()
        obs: Observation = {}
        if self.conn is None:
            obs["error"] = ["client", "not connected"]
            return obs
        try:
            self._do(self.conn, step, obs)
        except psycopg.Error as exc:
            obs["error"] = error_of(exc)
        return self._finish(obs)

    def _do(self, conn: psycopg.Connection[Any], step: Step, obs: Observation) -> None:
        if step.action == "commit":
            conn.commit()
            return
        if step.action == "rollback":
            conn.rollback()
            return
        if step.action in ("copy_in", "copy_out"):
            self._copy(conn, step, obs)
            return
        cur = ClientCursor(conn) if step.action == "simple" else conn.cursor()
        with cur:
            prepare = True if step.action == "prepared" else None
            cur.execute(step.sql, step.params, prepare=prepare)
            obs["status"] = cur.statusmessage
            if cur.description is not None:
                obs["cols"] = [col.name for col in cur.description]
                obs["rows"] = [plain(row) for row in cur.fetchall()]

    @staticmethod
    def _copy(conn: psycopg.Connection[Any], step: Step, obs: Observation) -> None:
        """COPY ... FROM STDIN of the step's rows (`params`), or COPY ... TO STDOUT."""
        with conn.cursor() as cur:
            with cur.copy(step.sql) as copy:
                if step.action == "copy_in":
                    for row in step.params or []:
                        copy.write_row(row)
                else:
                    obs["rows"] = [plain(row) for row in copy.rows()]
            obs["status"] = cur.statusmessage

    def _finish(self, obs: Observation) -> Observation:
        if self.notices:
            obs["notices"], self.notices = self.notices, []
        if self.notifies:
            obs["notifies"], self.notifies = self.notifies, []
        conn = self.conn
        if conn is None:
            return obs
        obs["tx"] = conn.info.transaction_status.name
        for name in REPORTED:
            obs[f"param.{name}"] = conn.info.parameter_status(name)
        return obs

    def close(self) -> None:
        # The client goes away as an application's would: the proxy must clean up after it.
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def error_of(exc: psycopg.Error) -> list[Any]:
    if exc.sqlstate is None:
        return ["client", type(exc).__name__]
    return [exc.sqlstate, exc.diag.message_primary]


class PgTarget:
    """A throwaway PostgreSQL server and the login the clients use on it."""

    engine = "pg"
    pool_timeout: object = "53300"

    def __init__(self, cluster: PgCluster, user: str, password: str, database: str) -> None:
        self.cluster = cluster
        self.endpoint = Endpoint(cluster.host, cluster.port, user, password, database)
        self.cluster.psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') "
            f"THEN CREATE ROLE {ROLE} NOLOGIN; END IF; END$$;\n"
            f"GRANT {ROLE} TO {user};"
        )

    def session(self, spec: ClientSpec, endpoint: Endpoint) -> PgSession:
        return PgSession(spec, endpoint)

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo(self.endpoint), autocommit=True)

    def reset(self) -> None:
        """Fresh schemas, tables, functions and grants: every run starts from these."""
        with self._admin() as conn:
            deadline = time.monotonic() + 10
            while conn.execute(OTHERS_SQL).fetchone() != (0,) and time.monotonic() < deadline:
                time.sleep(0.02)  # the last run's sessions end after their clients closed
            conn.execute(SCHEMA_SQL.encode())

    def final_state(self) -> dict[str, Any]:
        """The committed rows of every table, read by a fresh direct connection."""
        with self._admin() as conn:
            return {
                name: [plain(row) for row in conn.execute(query.encode()).fetchall()]
                for name, query in FINAL_SQL.items()
            }

    def kill_clients(self) -> None:
        """End every other connection of the login (a step that waited forever)."""
        with self._admin() as conn:
            conn.execute(KILL_SQL.encode())

    def drop(self) -> None:
        """Remove the schemas (the role stays: a later run may still use it)."""
        with self._admin() as conn:
            conn.execute(b"DROP SCHEMA IF EXISTS diff_a, diff_b CASCADE")

    def proxy(self, port: int, pool_size: int) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "name": "diff",
            "listen": f"127.0.0.1:{port}",
            "target": {"host": ep.host, "port": ep.port},
            "pool": {"mode": "transaction", "max_connections": pool_size, "borrow_timeout": 4},
            "users": [{"name": ep.user, "password": ep.password}],
        }
