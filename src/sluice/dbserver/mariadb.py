"""The MariaDB part of the server launcher (it serves RDS engines mysql and mariadb).

Design: `launcher.DbServer` runs mariadbd with `--defaults-file=my.cnf` (our
settings, rewritten at every start; /etc/mysql and ~/.my.cnf are never read)
and `mariadbd.log` as its log; `run/` holds the socket and the pid file. Every
other program gets `--no-defaults`. Accounts: `root@localhost` has no password
and is reachable only through the unix socket (skip_name_resolve makes TCP
clients match by IP), and is what `sql()` uses; `root@127.0.0.1` has
`superuser_password`; every other root account made by mariadb-install-db is
dropped. Stop modes: fast (SIGTERM, a clean shutdown), immediate (SIGKILL).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.dbserver.launcher import (
    LOCALHOST,
    BinariesNotFound,
    DbServer,
    binary_version,
    first_program,
)

MYSQL_OS_USER = "mysql"
SUPERUSER = "root"
# Server-side plugins create_user() knows. MariaDB has no caching_sha2_password
# (MySQL 8 does); `None` means the server default, mysql_native_password on 10.11.
AUTH_PLUGINS = frozenset({"mysql_native_password", "ed25519"})
_PLUGIN_LIBRARIES = {"ed25519": "auth_ed25519"}
_ER_NO_SUCH_THREAD = "ERROR 1094"
# Threads in the process list that are not client connections.
_SYSTEM_COMMANDS = ("Daemon", "Binlog Dump", "Slave_IO", "Slave_SQL", "Slave_worker")
_DIRS = ("/usr/sbin", "/usr/bin", "/usr/libexec", "/usr/local/bin", "/usr/local/sbin")


class MariaDbBinariesNotFound(BinariesNotFound):
    """No MariaDB server, install-db or client binaries were found."""


@dataclass(frozen=True)
class MariaDbBinaries:
    """Paths of the programs a server needs."""

    server: Path
    install_db: Path
    client: Path


def find_binaries() -> MariaDbBinaries:
    """mariadbd (or mysqld), mariadb-install-db (or mysql_install_db) and mariadb (or mysql)."""
    server = first_program(("mariadbd", "mysqld"), _DIRS)
    install_db = first_program(("mariadb-install-db", "mysql_install_db"), _DIRS)
    client = first_program(("mariadb", "mysql"), _DIRS)
    if server is None or install_db is None or client is None:
        raise MariaDbBinariesNotFound(
            "MariaDB binaries (mariadbd, mariadb-install-db, mariadb) not found "
            "(install them, e.g. `make system-mysql` or "
            "`apt-get install mariadb-server mariadb-client`)"
        )
    return MariaDbBinaries(server, install_db, client)


def server_version() -> str:
    """The version of the mariadbd binary a server would run ("10.11.19")."""
    return binary_version(find_binaries().server, r"Ver\s+(\d+(?:\.\d+)+)")


def quote_ident(name: str) -> str:
    """Quote an SQL identifier with backticks."""
    return "`" + name.replace("`", "``") + "`"


def quote_literal(value: str) -> str:
    """Quote an SQL string literal (backslashes escape, as in the default sql_mode)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def account(user: str, host: str = "%") -> str:
    """An account name: 'user'@'host'."""
    return f"{quote_literal(user)}@{quote_literal(host)}"


def _grant_db_pattern(name: str) -> str:
    """A database name for GRANT, where `_` and `%` would otherwise be wildcards."""
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def _cnf_value(value: str) -> str:
    if value and not re.search(r"[\s#;'\"\\]", value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class MariaDbCluster(DbServer):
    """One MariaDB server; see the module docstring and `launcher.DbServer`."""

    os_user = MYSQL_OS_USER
    temp_prefix = "sluice-mdb"
    log_name = "mariadbd.log"
    socket_name = "mysqld.sock"
    env_prefixes = ("MYSQL", "MARIADB")
    stop_signals = {"fast": signal.SIGTERM, "immediate": signal.SIGKILL}
    port_taken_markers = ("Address already in use", "Bind on TCP/IP port")

    binaries: MariaDbBinaries
    socket_path: Path
    pid_file: Path
    config_file: Path

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        host: str = LOCALHOST,
        port: int | None = None,
        max_connections: int = 200,
        local_infile: bool = True,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.binaries = find_binaries()
        self.local_infile = local_infile
        super().__init__(
            base_dir, host=host, port=port, max_connections=max_connections,
            settings={k.replace("-", "_"): v for k, v in (settings or {}).items()},
        )  # fmt: skip
        self.config_file = self.base_dir / "my.cnf"
        self.socket_path = self.run_dir / "mysqld.sock"
        self.pid_file = self.run_dir / "mariadbd.pid"

    # ----------------------------------------------------------- the engine's part

    def _initialized(self) -> bool:
        return (self.data_dir / "mysql").is_dir()

    def _init_data(self) -> None:
        cmd = [
            str(self.binaries.install_db),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            "--innodb-log-file-size=16M",
            "--innodb-buffer-pool-size=32M",
        ]
        proc = self._run(cmd, as_server=True)
        if proc.returncode != 0:
            # A half-made data dir would be taken as installed by the next start().
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._prepare_dirs()
            raise self._fail("mariadb-install-db", proc.stdout + proc.stderr, proc.returncode)

    def _config_lines(self) -> dict[str, str]:
        conf = {
            "datadir": str(self.data_dir),
            "port": str(self.port),
            "bind_address": self.host,
            "skip_networking": "0",
            "socket": str(self.socket_path),
            "pid_file": str(self.pid_file),
            "log_error": str(self.log_file),
            "max_connections": str(self.max_connections),
            "local_infile": "1" if self.local_infile else "0",
            "skip_name_resolve": "1",
            "performance_schema": "0",
            "character_set_server": "utf8mb4",
            "collation_server": "utf8mb4_general_ci",
            "max_allowed_packet": "64M",
            "innodb_buffer_pool_size": "32M",
            "innodb_log_file_size": "16M",
            "innodb_flush_log_at_trx_commit": "0",
            "innodb_doublewrite": "0",
            "key_buffer_size": "1M",
            "aria_pagecache_buffer_size": "8M",
            "table_open_cache": "400",
            "query_cache_size": "0",
            "log_warnings": "1",
        }
        conf.update(self.settings)
        return conf

    def _write_config(self) -> None:
        body = "".join(f"{k} = {_cnf_value(v)}\n" for k, v in self._config_lines().items())
        self._write_file(
            self.config_file, "# written by sluice at every start\n[mariadbd]\n" + body
        )

    def _server_command(self) -> list[str]:
        return [
            str(self.binaries.server),
            f"--defaults-file={self.config_file}",  # must come first
            f"--datadir={self.data_dir}",  # also how server_pid() recognises it
        ]

    def _identity(self) -> list[bytes]:
        return [f"--datadir={self.data_dir}".encode()]

    def _pid_file(self) -> Path:
        return self.pid_file

    def _socket_file(self) -> Path:
        return self.socket_path

    def _probe(self) -> subprocess.CompletedProcess[str]:
        return self._client("SELECT VERSION()")

    def _after_start(self, fresh: bool) -> None:
        self._secure_root()
        self._check_tls()

    def _secure_root(self) -> None:
        """Keep root@localhost (socket, no password); root@127.0.0.1 gets our password."""
        others = self.sql(
            "SELECT Host FROM mysql.user WHERE User = 'root' "
            "AND Host NOT IN ('localhost', '127.0.0.1')"
        )
        tcp_root = account(SUPERUSER, LOCALHOST)
        statements = [f"DROP USER {account(SUPERUSER, host)};" for host in others.splitlines()]
        statements += [
            f"CREATE USER IF NOT EXISTS {tcp_root};",
            f"ALTER USER {tcp_root} IDENTIFIED BY {quote_literal(self.superuser_password)};",
            f"GRANT ALL PRIVILEGES ON *.* TO {tcp_root} WITH GRANT OPTION;",
        ]
        self.sql("\n".join(statements))

    def _check_tls(self) -> None:
        """MariaDB starts without TLS when it cannot load the files: make that an error."""
        if "ssl_cert" not in self.settings and "ssl_key" not in self.settings:
            return
        if self.sql("SELECT @@have_ssl") != "YES":
            raise self._fail("TLS setup", "ssl_cert/ssl_key were given but have_ssl is not YES")

    # ----------------------------------------------------------- SQL helpers

    def _client(
        self,
        sql: str,
        db: str | None = None,
        *,
        user: str = SUPERUSER,
        password: str | None = None,
        force: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(self.binaries.client),
            "--no-defaults",
            "--protocol=SOCKET",
            f"--socket={self.socket_path}",
            f"--user={user}",
            "--skip-column-names",
            "--batch",
        ]
        if force:
            cmd.append("--force")
        if db is not None:
            cmd.append(f"--database={db}")
        env = self._env()
        if password is not None:
            env["MYSQL_PWD"] = password  # not on the command line, where ps would show it
        return self._run(cmd, stdin=sql, env=env)

    def sql(
        self,
        text: str,
        db: str | None = None,
        *,
        user: str = SUPERUSER,
        password: str | None = None,
    ) -> str:
        """Run `text` through the mariadb client over the unix socket; return its output.

        The output is the client's batch format (`-N -B`: tab-separated, no
        header, special characters escaped), without the final newline. As
        root no password is needed; other users give theirs. Statements run one
        by one (autocommit) and the first error raises RuntimeError.
        """
        proc = self._client(text, db, user=user, password=password)
        if proc.returncode != 0:
            raise RuntimeError(f"mariadb failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.rstrip("\n")

    def create_user(
        self,
        name: str,
        password: str,
        plugin: str | None = "mysql_native_password",
        *,
        host: str = "%",
    ) -> None:
        """Create `name`@`host` authenticating with `plugin` (None: `IDENTIFIED BY`).

        MariaDB has no caching_sha2_password: tests of it rely on the proxy's
        client-facing side only.
        """
        who, secret = account(name, host), quote_literal(password)
        if plugin is None:
            self.sql(f"CREATE USER {who} IDENTIFIED BY {secret}")
            return
        if plugin not in AUTH_PLUGINS:
            raise ValueError(f"unsupported auth plugin {plugin!r} (MariaDB has {AUTH_PLUGINS})")
        self._ensure_plugin(plugin)
        self.sql(f"CREATE USER {who} IDENTIFIED VIA {plugin} USING PASSWORD({secret})")

    def create_admin(self, name: str, password: str) -> None:
        """`name`@'%' with every privilege, as RDS's master user (IDENTIFIED BY)."""
        self.create_user(name, password, plugin=None)
        self.sql(f"GRANT ALL PRIVILEGES ON *.* TO {account(name)} WITH GRANT OPTION")

    def set_password(self, name: str, password: str) -> None:
        """A new password for `name`@'%'."""
        self.sql(f"ALTER USER {account(name)} IDENTIFIED BY {quote_literal(password)}")

    def _ensure_plugin(self, plugin: str) -> None:
        library = _PLUGIN_LIBRARIES.get(plugin)
        if library is None:
            return
        loaded = self.sql(
            "SELECT COUNT(*) FROM information_schema.PLUGINS "
            f"WHERE PLUGIN_NAME = {quote_literal(plugin)} AND PLUGIN_STATUS = 'ACTIVE'"
        )
        if loaded == "0":
            self.sql(f"INSTALL SONAME {quote_literal(library)}")  # kept in mysql.plugin

    def create_database(self, name: str, owner: str | None = None) -> None:
        """Create a database; `owner` (a user at '%') gets all privileges on it."""
        self.sql(f"CREATE DATABASE {quote_ident(name)}")
        if owner is not None:
            self.grant(owner, database=name)

    def grant(
        self,
        user: str,
        privileges: str = "ALL PRIVILEGES",
        *,
        database: str | None = None,
        table: str | None = None,
        host: str = "%",
    ) -> None:
        """GRANT `privileges` ON database.table (None: every one) TO user@host."""
        db = "*" if database is None else quote_ident(_grant_db_pattern(database))
        tbl = "*" if table is None else quote_ident(table)
        self.sql(f"GRANT {privileges} ON {db}.{tbl} TO {account(user, host)}")

    def connect_kwargs(
        self, user: str, password: str, database: str | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for pymysql.connect / mysql.connector.connect over TCP."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": password,
        }
        if database is not None:
            kwargs["database"] = database
        return kwargs

    def _processlist_filter(self, user: str | None, db: str | None) -> str:
        commands = ", ".join(quote_literal(c) for c in _SYSTEM_COMMANDS)
        cond = f"ID <> CONNECTION_ID() AND COMMAND NOT IN ({commands}) AND USER <> 'system user'"
        if user is not None:
            cond += f" AND USER = {quote_literal(user)}"
        if db is not None:
            cond += f" AND DB = {quote_literal(db)}"
        return cond

    def backend_ids(self, user: str | None = None, db: str | None = None) -> list[int]:
        """Thread ids of client connections, not counting the querying session."""
        where = self._processlist_filter(user, db)
        out = self.sql(f"SELECT ID FROM information_schema.PROCESSLIST WHERE {where}")
        return [int(v) for v in out.split()]

    def backend_count(self, user: str | None = None, db: str | None = None) -> int:
        """Client connections in the process list (connections still logging in included)."""
        where = self._processlist_filter(user, db)
        return int(self.sql(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE {where}"))

    def kill_connections(self, user: str, timeout: float = 5.0) -> int:
        """KILL every connection of `user`, wait up to `timeout` s for them to go; how many."""
        ids = self.backend_ids(user)
        if not ids:
            return 0
        proc = self._client("".join(f"KILL CONNECTION {i};\n" for i in ids), force=True)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
        if any(not line.startswith(_ER_NO_SUCH_THREAD) for line in errors):
            raise RuntimeError(f"mariadb KILL failed: {proc.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while set(ids) & set(self.backend_ids(user)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(ids)
