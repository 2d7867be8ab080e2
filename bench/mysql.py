"""The MySQL side of the run: a throwaway MariaDB and the two ways to reach it.

`BenchMariaDb` is a MariaDbCluster sized for 1000 direct client threads, with
a `bench` user (mysql_native_password, the MariaDB default) that owns a `bench`
database holding sysbench's tables (`sysbench oltp_point_select prepare`).
The systems are `direct` (nothing to start) and `sluice` (a `sluice proxy`
with one MySQL proxy, a fresh process per row, the same pool size as for
PostgreSQL). No MySQL pooler is in Debian's archive (ProxySQL and MaxScale
ship only from their vendors' repositories), so there is no third system.

Backend connections are counted in information_schema.PROCESSLIST, the same
filter as `MariaDbCluster.backend_count`, but over one kept PyMySQL
connection as root on the unix socket: `backend_count` starts the `mariadb`
client for every call (about 5 ms of CPU), which at ten samples a second
would take a share of this machine's two cores from the measured systems.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pymysql  # type: ignore[import-untyped]

from bench.systems import (
    BENCH_DB,
    BENCH_USER,
    LOCALHOST,
    Endpoint,
    SluiceProxySystem,
)
from sluice.dbserver.mariadb import MariaDbCluster, quote_literal

_PREPARE_TIMEOUT = 600.0
_CONNECT_TIMEOUT = 10
# Threads in the process list that are not client connections (as in MariaDbCluster).
_SYSTEM_COMMANDS = ("Daemon", "Binlog Dump", "Slave_IO", "Slave_SQL", "Slave_worker")
_COUNT_SQL = (
    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
    f"AND COMMAND NOT IN ({', '.join(quote_literal(c) for c in _SYSTEM_COMMANDS)}) "
    "AND USER = %s"
)

# MariaDbCluster already runs without durability (innodb_flush_log_at_trx_commit = 0,
# no doublewrite). These give 1000 clients connecting at once room in the listen
# queue and keep a burst of connections from being refused or blocked.
MYSQL_SETTINGS = {
    "innodb_buffer_pool_size": "256M",
    "back_log": "2000",
    "max_connect_errors": "1000000",
    "thread_cache_size": "100",
    "table_open_cache": "2000",
}


class BenchMariaDb:
    """MariaDB with sysbench's tables, owned by user `bench` (with a password)."""

    def __init__(self, workdir: Path, max_connections: int, tables: int, table_size: int) -> None:
        self.password = secrets.token_urlsafe(18)
        self.tables, self.table_size = tables, table_size
        self.cluster = MariaDbCluster(
            workdir / "mariadb", max_connections=max_connections, settings=MYSQL_SETTINGS
        )

    def start(self) -> None:
        try:
            self.cluster.start()
        except RuntimeError as exc:
            # mariadb-install-db has failed here once on a temporary table in /tmp
            # while another MariaDB was being installed; a half-made data dir is removed
            # by the cluster, so one more try starts from scratch.
            first = str(exc).strip().splitlines()[0]
            print(f"bench: MariaDB did not start ({first}); trying once more", flush=True)
            self.cluster.start()
        self.cluster.create_user(BENCH_USER, self.password)
        self.cluster.create_database(BENCH_DB, owner=BENCH_USER)
        cmd = [
            *sysbench_base(Endpoint(self.cluster.host, self.cluster.port, None), self.password),
            f"--tables={self.tables}",
            f"--table-size={self.table_size}",
            "prepare",
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PREPARE_TIMEOUT, check=False
        )
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
            raise RuntimeError("sysbench prepare failed:\n" + "\n".join(output))

    def counter(self) -> MysqlBackendCounter:
        return MysqlBackendCounter(self.cluster)

    def stop(self) -> None:
        self.cluster.destroy()


def sysbench_base(endpoint: Endpoint, password: str, test: str = "oltp_point_select") -> list[str]:
    """`sysbench <test>` with the MySQL driver pointed at `endpoint`."""
    return [
        "sysbench",
        test,
        "--db-driver=mysql",
        f"--mysql-host={endpoint.host}",
        f"--mysql-port={endpoint.port}",
        f"--mysql-user={BENCH_USER}",
        f"--mysql-password={password}",
        f"--mysql-db={BENCH_DB}",
        "--mysql-ssl=off",
    ]


class MysqlBackendCounter:
    """The bench user's connections in the process list, over one kept root connection."""

    def __init__(self, cluster: MariaDbCluster) -> None:
        self.cluster = cluster
        self._conn: Any = None

    def count(self) -> int:
        try:
            if self._conn is None:
                self._conn = pymysql.connect(
                    unix_socket=str(self.cluster.socket_path),
                    user="root",
                    autocommit=True,
                    connect_timeout=_CONNECT_TIMEOUT,
                )
            with self._conn.cursor() as cur:
                cur.execute(_COUNT_SQL, (BENCH_USER,))
                row = cur.fetchone()
        except pymysql.MySQLError:
            self.close()
            raise
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(pymysql.MySQLError):
                self._conn.close()
        self._conn = None


class MysqlDirectSystem:
    """Clients straight to MariaDB: nothing to start."""

    name = "direct"

    def __init__(self, db: BenchMariaDb) -> None:
        self.db = db

    def start(self) -> Endpoint:
        return Endpoint(self.db.cluster.host, self.db.cluster.port, None)

    def stop(self) -> None:
        pass

    def log_tail(self, lines: int = 20) -> str:
        return self.db.cluster.log_tail(lines)


class MysqlSluiceSystem(SluiceProxySystem):
    """Sluice's MySQL proxy in front of MariaDB (transaction pooling, the default mode).

    Clients log in with Sluice's default client method, caching_sha2_password
    (its fast path: Sluice knows the password), Sluice logs in to MariaDB with
    the method the server asks for, mysql_native_password.
    """

    rundir_prefix = "sluice-mysql"

    def __init__(self, db: BenchMariaDb, workdir: Path, pool_size: int, max_clients: int) -> None:
        super().__init__(workdir, pool_size, max_clients)
        self.db = db

    def proxy_config(self, port: int) -> dict[str, Any]:
        return {
            "name": "my",
            "engine": "mysql",
            "listen": f"{LOCALHOST}:{port}",
            "target": {"host": self.db.cluster.host, "port": self.db.cluster.port},
            "pool": {
                "max_connections": self.pool_size,
                "max_idle_connections": self.pool_size,
                "borrow_timeout": 60,
            },
            "users": [{"name": BENCH_USER, "password": self.db.password}],
            **self.limits,
        }
