"""MySQL/MariaDB sides: PyMySQL and mysql-connector sessions that run steps and record what a
client observes, and the target's fresh databases, committed rows and proxy configuration.

A step's observation holds its rows and column names, the affected-row count, the last
insert id and warning count of its OK packet, the error (error number and message; a
client-side error, numbers 2000 to 2999, by its number only, since its text names
addresses) and the server status flags `in_trans` and `autocommit` as the client library
holds them after the step.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import mysql.connector
import pymysql

from sluice.dbserver.mariadb import MariaDbCluster

from .program import ClientSpec, Step
from .target import Endpoint, Observation, plain

ROLE = "diff_role"
IN_TRANS, AUTOCOMMIT = 0x1, 0x2
SCHEMA_SQL = [
    "DROP DATABASE IF EXISTS diff_a",
    "DROP DATABASE IF EXISTS diff_b",
    "CREATE DATABASE diff_a",
    "CREATE DATABASE diff_b",
    "CREATE TABLE diff_a.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
    "CREATE TABLE diff_b.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
    "INSERT INTO diff_a.t (id, v) VALUES (1, 'a1'), (2, 'a2')",
    "INSERT INTO diff_b.t (id, v) VALUES (1, 'b1'), (3, 'b3')",
]
FINAL_SQL = {
    "diff_a.t": "SELECT id, v FROM diff_a.t ORDER BY id",
    "diff_b.t": "SELECT id, v FROM diff_b.t ORDER BY id",
}
OTHERS_SQL = (
    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
    "WHERE USER = SUBSTRING_INDEX(USER(), '@', 1) AND ID <> CONNECTION_ID()"
)
DbError = (pymysql.MySQLError, mysql.connector.Error)


def error_of(exc: Exception) -> list[Any]:
    if isinstance(exc, mysql.connector.Error):
        errno, msg = exc.errno, exc.msg
    else:
        errno, msg = [*exc.args, None, None][:2]
    if not isinstance(errno, int) or 2000 <= errno < 3000 or errno <= 0:
        return ["client", errno]  # CR_* errors come from the client library itself
    return [errno, msg]


class MySession:
    """One client of either library; every call records what it observed."""

    def __init__(self, spec: ClientSpec, endpoint: Endpoint) -> None:
        self.spec = spec
        self.endpoint = endpoint
        self.conn: Any = None
        self.prepared: Any = None

    def _kwargs(self) -> dict[str, Any]:
        ep, options = self.endpoint, self.spec.options
        return {
            "host": ep.host,
            "port": ep.port,
            "user": ep.user,
            "password": ep.password,
            "database": options.get("database", ep.database),
            "charset": options.get("charset", "utf8mb4"),
            "autocommit": self.spec.autocommit,
        }

    def _connect(self) -> Any:
        kwargs = self._kwargs()
        if self.spec.library == "connector":
            return mysql.connector.connect(
                **kwargs, use_pure=False, ssl_disabled=True, connection_timeout=10
            )
        return pymysql.connect(**kwargs, connect_timeout=10, read_timeout=30, write_timeout=30)

    def open(self) -> Observation:
        try:
            self.conn = self._connect()
        except DbError as exc:
            return {"error": error_of(exc)}
        if self.spec.library == "connector":
            self.prepared = self.conn.cursor(prepared=True)
        return self._finish({})

    def run(self, step: Step) -> Observation:
        if step.action == "reconnect":
            self.close()
            return self.open()
        obs: Observation = {}
        if self.conn is None:
            obs["error"] = ["client", "not connected"]
            return obs
        try:
            self._do(step, obs)
        except DbError as exc:
            obs["error"] = error_of(exc)
        return self._finish(obs)

    def _do(self, step: Step, obs: Observation) -> None:
        conn, connector = self.conn, self.spec.library == "connector"
        if step.action in ("sql", "prepared"):
            self._query(step, obs)
        elif step.action == "begin":
            conn.start_transaction() if connector else conn.begin()
        elif step.action == "commit":
            conn.commit()
        elif step.action == "rollback":
            conn.rollback()
        elif step.action in ("autocommit_on", "autocommit_off"):
            on = step.action == "autocommit_on"
            if connector:
                conn.autocommit = on
            else:
                conn.autocommit(on)
        elif step.action == "ping":
            conn.ping(reconnect=False)
        elif step.action == "select_db":
            conn.cmd_init_db(step.sql) if connector else conn.select_db(step.sql)
        elif step.action == "reset_connection":
            obs["result"] = conn.cmd_reset_connection()
        else:
            raise ValueError(f"unknown MySQL action {step.action!r}")

    def _query(self, step: Step, obs: Observation) -> None:
        prepared = step.action == "prepared" and self.prepared is not None
        cur = self.prepared if prepared else self.conn.cursor()
        try:
            cur.execute(step.sql, step.params)
            if cur.description is not None and self._has_result(cur, prepared):
                obs["cols"] = [col[0] for col in cur.description]
                obs["rows"] = [plain(row) for row in cur.fetchall()]
            obs["rowcount"] = cur.rowcount
            obs["lastrowid"] = cur.lastrowid
            obs["warnings"] = cur.warning_count
        finally:
            if not prepared:
                cur.close()

    @staticmethod
    def _has_result(cur: Any, prepared: bool) -> bool:
        """Whether the statement returned rows: mysql-connector's prepared cursor keeps
        the description of its previous result set after a statement without one (an
        INSERT), which would make this step's observation depend on the one before."""
        stmt = getattr(cur, "_stmt", None) if prepared else None
        return stmt is None or bool(getattr(stmt, "have_result_set", True))

    def _finish(self, obs: Observation) -> Observation:
        if self.conn is not None:
            flags = self._flags()
            obs["in_trans"] = bool(flags & IN_TRANS)
            obs["autocommit"] = bool(flags & AUTOCOMMIT)
        return obs

    def _flags(self) -> int:
        if self.spec.library == "connector":
            return int(self.conn._server_status)
        return int(self.conn.server_status)

    def close(self) -> None:
        # The client goes away as an application's would: the proxy must clean up after it.
        conn, self.conn, self.prepared = self.conn, None, None
        if conn is not None:
            with contextlib.suppress(*DbError):  # already broken: the socket is gone anyway
                conn.close()


class MyTarget:
    """A throwaway MariaDB server and the login the clients use on it."""

    engine = "mysql"
    pool_timeout: object = 9501

    def __init__(self, cluster: MariaDbCluster, user: str, password: str, database: str) -> None:
        self.cluster = cluster
        self.endpoint = Endpoint(cluster.host, cluster.port, user, password, database)
        account = f"'{user}'@'%'"
        self.cluster.sql(
            f"CREATE ROLE IF NOT EXISTS {ROLE};\n"
            f"GRANT SELECT ON diff_a.* TO {ROLE};\n"
            f"GRANT {ROLE} TO {account};\n"
            f"GRANT ALL PRIVILEGES ON diff_a.* TO {account};\n"
            f"GRANT ALL PRIVILEGES ON diff_b.* TO {account};"
        )

    def session(self, spec: ClientSpec, endpoint: Endpoint) -> MySession:
        return MySession(spec, endpoint)

    def _admin(self) -> Any:
        ep = self.endpoint
        return pymysql.connect(
            host=ep.host, port=ep.port, user=ep.user, password=ep.password, autocommit=True
        )

    def reset(self) -> None:
        """Fresh databases and tables, once the last run's sessions (and locks) are gone."""
        with self._admin() as conn, conn.cursor() as cur:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cur.execute(OTHERS_SQL)
                if cur.fetchone() == (0,):
                    break
                time.sleep(0.02)
            for statement in SCHEMA_SQL:
                cur.execute(statement)

    def final_state(self) -> dict[str, Any]:
        """The committed rows of every table, read by a fresh direct connection."""
        with self._admin() as conn, conn.cursor() as cur:
            out = {}
            for name, query in FINAL_SQL.items():
                cur.execute(query)
                out[name] = [plain(row) for row in cur.fetchall()]
            return out

    def kill_clients(self) -> None:
        """End every connection of the login (a step that waited forever)."""
        self.cluster.kill_connections(self.endpoint.user)

    def drop(self) -> None:
        """Remove the databases (the role stays: a later run may still use it)."""
        with self._admin() as conn, conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS diff_a")
            cur.execute("DROP DATABASE IF EXISTS diff_b")

    def proxy(self, port: int, pool_size: int) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "name": "diff",
            "engine": "mysql",
            "listen": f"127.0.0.1:{port}",
            "target": {"host": ep.host, "port": ep.port},
            "pool": {"mode": "transaction", "max_connections": pool_size, "borrow_timeout": 4},
            "users": [{"name": ep.user, "password": ep.password}],
        }
