"""The throwaway database server of one run, and the Sluice process in front of it.

Every run (suite x mode) gets a freshly initialised server with the same settings, so
no run sees what an earlier one left behind and the direct run and the runs through
Sluice differ only by Sluice. Servers get what the suites' own CI servers have:
password authentication (SCRAM for PostgreSQL, mysql_native_password for MariaDB), a
superuser with a password, TLS with a certificate (the suite's own when it ships one),
prepared transactions (psycopg2's two-phase tests) and the sql_mode, time zone and
packet size mysql-connector's harness writes into its my.cnf.

Sluice is configured like the server wherever the two could differ to a client: the
same certificate on its listener, the same password method, TLS to the server, a pool
big enough that no test waits for a connection, and packets as large as the server's.
Everything else is Sluice's default; only `pool.mode` changes between the two modes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from conformance.suites import Endpoint, Suite
from sluice.dbserver.launcher import free_port
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.tls import ensure_self_signed

LOCALHOST = "127.0.0.1"
SERVER_MAX_CONNECTIONS = 300
POOL_MAX_CONNECTIONS = 250  # per pool; below the server's, above any suite's concurrency
BORROW_TIMEOUT = 10  # seconds: a test starved of a connection errors instead of hanging
MAX_PACKET = 1024 * 1024 * 1024  # both servers accept up to 1 GiB messages; so does Sluice
MYSQL_MAX_ALLOWED_PACKET = "636870912"  # what mysql-connector's harness gives its servers

# Certificates the suites ship and verify against (relative to the unpacked tests).
SUITE_TLS = {
    "mysql-connector-python": (
        "tests/data/ssl/tests_server_cert.pem",
        "tests/data/ssl/tests_server_key.pem",
        "tests/data/ssl/tests_CA_cert.pem",
    ),
}


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and key (PEM), and the CA that issued it if not self-signed."""

    cert: Path
    key: Path
    ca: Path | None = None


def tls_files(suite: Suite, tests_dir: Path, work: Path) -> TlsFiles:
    """The suite's own server certificate if it ships one, else one generated once."""
    shipped = SUITE_TLS.get(suite.name)
    if shipped is not None:
        cert, key, ca = (tests_dir / name for name in shipped)
        return TlsFiles(cert, key, ca)
    cert_file, key_file = ensure_self_signed(work / "tls")
    return TlsFiles(Path(cert_file), Path(key_file))


def _server_ids(os_user: str) -> tuple[int, int] | None:
    """Under root, the uid and gid the server runs as (it must read its key)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(os_user)
    return entry.pw_uid, entry.pw_gid


def _copy(src: Path, dest: Path, mode: int, ids: tuple[int, int] | None) -> Path:
    path = dest / src.name
    shutil.copyfile(src, path)
    path.chmod(mode)
    if ids is not None:
        os.chown(path, *ids)
    return path


def _copy_for(os_user: str, tls: TlsFiles, dest: Path) -> TlsFiles:
    """Copies of the TLS files in `dest` that the server's OS user can read (key: only it)."""
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    ids = _server_ids(os_user)
    ca = None if tls.ca is None else _copy(tls.ca, dest, 0o644, ids)
    return TlsFiles(_copy(tls.cert, dest, 0o644, ids), _copy(tls.key, dest, 0o600, ids), ca)


class _Cluster(Protocol):
    host: str
    port: int
    superuser_password: str

    def start(self) -> None: ...

    def destroy(self) -> None: ...


class _ServerBase:
    """A started server in a temporary base folder (reachable by the server's OS user),
    stopped and removed on exit. Subclasses make `cluster` and say what follows a start."""

    engine = ""
    os_user = ""
    user = ""
    cluster: _Cluster

    def __init__(self, suite: Suite, tls: TlsFiles) -> None:
        self.suite = suite
        self.base = Path(tempfile.mkdtemp(prefix=f"sluice-conf-{suite.engine}-")).resolve()
        self.base.chmod(0o755)  # the server's OS user must reach its cluster folder
        self.tls = _copy_for(self.os_user, tls, self.base / "tls")

    def __enter__(self) -> Self:
        try:
            self.cluster.start()
            self._after_start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _after_start(self) -> None:
        pass

    def close(self) -> None:
        """Stop the server and remove its files (a run's server is never reused)."""
        self.cluster.destroy()
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def endpoint(self) -> Endpoint:
        """The superuser over TCP (for MariaDB root@127.0.0.1, which has the password)."""
        password = self.cluster.superuser_password
        return Endpoint(self.cluster.host, self.cluster.port, self.user, password)

    @property
    def version(self) -> str:
        raise NotImplementedError


class PostgresServer(_ServerBase):
    """PostgreSQL 15 with SCRAM, TLS, prepared transactions; the suite's databases made."""

    engine = "postgresql"
    os_user = "postgres"
    user = "postgres"

    def __init__(self, suite: Suite, tls: TlsFiles) -> None:
        super().__init__(suite, tls)
        settings = {
            "ssl": "on",
            "ssl_cert_file": str(self.tls.cert),
            "ssl_key_file": str(self.tls.key),
            "max_prepared_transactions": "10",
            "jit": "off",  # asyncpg's harness turns it off: it skews timing tests
            "log_connections": "on",
        }
        self.pg = PgCluster(
            self.base / "cluster", max_connections=SERVER_MAX_CONNECTIONS, settings=settings
        )
        self.cluster = self.pg

    def _after_start(self) -> None:
        for name in self.suite.databases:
            self.pg.create_database(name)
        for database, sql in self.suite.setup_sql:
            self.pg.psql(sql, db=database)

    @property
    def version(self) -> str:
        return "PostgreSQL " + self.pg.psql("SHOW server_version")


class MariaDbServer(_ServerBase):
    """MariaDB 10.11 with TLS and the settings of mysql-connector's own test servers."""

    engine = "mysql"
    os_user = "mysql"
    user = "root"

    def __init__(self, suite: Suite, tls: TlsFiles) -> None:
        super().__init__(suite, tls)
        settings = {
            "ssl_cert": str(self.tls.cert),
            "ssl_key": str(self.tls.key),
            "sql_mode": "",
            "default_time_zone": "+00:00",
            "max_allowed_packet": MYSQL_MAX_ALLOWED_PACKET,
            "connect_timeout": "60",
        }
        if self.tls.ca is not None:
            settings["ssl_ca"] = str(self.tls.ca)
        self.mariadb = MariaDbCluster(
            self.base / "cluster", max_connections=SERVER_MAX_CONNECTIONS, settings=settings
        )
        self.cluster = self.mariadb

    @property
    def version(self) -> str:
        return "MariaDB " + self.mariadb.version


def make_server(suite: Suite, tls: TlsFiles) -> _ServerBase:
    """A server for `suite` (not started: use it as a context manager)."""
    if suite.engine == "postgresql":
        return PostgresServer(suite, tls)
    return MariaDbServer(suite, tls)


def proxy_config(
    suite: Suite, mode: str, server: Endpoint, tls: TlsFiles, port: int
) -> dict[str, Any]:
    """The `[[proxy]]` table in front of `server` for `suite` in pool mode `mode`."""
    mysql = suite.engine == "mysql"
    return {
        "name": suite.name.replace("-", "_"),
        "engine": suite.engine,
        "listen": f"{LOCALHOST}:{port}",
        "auth_method": "mysql_native_password" if mysql else "scram-sha-256",
        "tls_cert_file": str(tls.cert),
        "tls_key_file": str(tls.key),
        "target": {"host": server.host, "port": server.port, "tls": "require"},
        "pool": {
            "mode": mode,
            "max_connections": POOL_MAX_CONNECTIONS,
            "borrow_timeout": BORROW_TIMEOUT,
        },
        "users": [{"name": server.user, "password": server.password}],
    }


def start_sluice(
    suite: Suite, mode: str, server: Endpoint, tls: TlsFiles, workdir: Path
) -> tuple[SluiceProcess, Endpoint]:
    """A started Sluice in front of `server`, and the endpoint clients use instead."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proxy = proxy_config(suite, mode, server, tls, port)
    glob = {"log_level": "info", "max_packet_size": MAX_PACKET}
    proc = SluiceProcess([proxy], glob=glob, workdir=workdir)
    proc.start(timeout=30.0)
    return proc, Endpoint(LOCALHOST, port, server.user, server.password)
