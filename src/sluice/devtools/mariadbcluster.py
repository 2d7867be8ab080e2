"""A throwaway MariaDB server for the tests, the demo and the benchmark.

Design: the MySQL-family twin of `pgcluster.PgCluster`. Each `MariaDbCluster`
owns one base directory holding `data/` (made by mariadb-install-db), `run/`
(the unix socket and the pid file), `my.cnf` (our settings, rewritten at every
start) and `mariadbd.log` (kept outside `data/` so it can be quoted in errors).
The server listens on 127.0.0.1 only, on a port we pick, so it never touches a
system MariaDB on 3306; every program gets `--no-defaults` or our own
`--defaults-file`, so /etc/mysql and ~/.my.cnf are never read.
Accounts: `root@localhost` has no password and is reachable only through the
unix socket (skip_name_resolve makes TCP clients match by IP), and is what
`sql()` uses; `root@127.0.0.1` has `superuser_password`; every other root
account made by mariadb-install-db is dropped. Under euid 0 the server runs as
the `mysql` OS user (`--user=mysql`) and owns the data and run directories.
A server is only ever signalled after /proc shows our own data directory on its
command line.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sluice.devtools.pgcluster import free_port

LOCALHOST = "127.0.0.1"
MYSQL_OS_USER = "mysql"
SUPERUSER = "root"
STOP_MODES = frozenset({"fast", "immediate"})
# Server-side plugins create_user() knows. MariaDB has no caching_sha2_password
# (MySQL 8 does); `None` means the server default, mysql_native_password on 10.11.
AUTH_PLUGINS = frozenset({"mysql_native_password", "ed25519"})
_PLUGIN_LIBRARIES = {"ed25519": "auth_ed25519"}
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_START_ATTEMPTS = 3  # retries when an auto-picked port was taken meanwhile
_CMD_TIMEOUT = 120.0
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 60.0
_ER_NO_SUCH_THREAD = "ERROR 1094"
# Threads in the process list that are not client connections.
_SYSTEM_COMMANDS = ("Daemon", "Binlog Dump", "Slave_IO", "Slave_SQL", "Slave_worker")


class MariaDbBinariesNotFound(RuntimeError):
    """No MariaDB server, install-db or client binaries were found."""


@dataclass(frozen=True)
class MariaDbBinaries:
    """Paths of the programs a cluster runs."""

    server: Path
    install_db: Path
    client: Path


def _first_program(names: tuple[str, ...], dirs: tuple[str, ...]) -> Path | None:
    for name in names:
        for directory in dirs:
            path = Path(directory) / name
            if path.is_file() and os.access(path, os.X_OK):
                return path
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return None


def find_binaries() -> MariaDbBinaries:
    """mariadbd (or mysqld), mariadb-install-db (or mysql_install_db) and mariadb (or mysql)."""
    dirs = ("/usr/sbin", "/usr/bin", "/usr/libexec", "/usr/local/bin", "/usr/local/sbin")
    server = _first_program(("mariadbd", "mysqld"), dirs)
    install_db = _first_program(("mariadb-install-db", "mysql_install_db"), dirs)
    client = _first_program(("mariadb", "mysql"), dirs)
    if server is None or install_db is None or client is None:
        raise MariaDbBinariesNotFound(
            "MariaDB binaries (mariadbd, mariadb-install-db, mariadb) not found "
            "(install them, e.g. `make system-mysql` or "
            "`apt-get install mariadb-server mariadb-client`)"
        )
    return MariaDbBinaries(server, install_db, client)


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


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    env["LC_ALL"] = "C"
    return env


class MariaDbCluster:
    """One throwaway MariaDB server; see the module docstring."""

    host: str
    port: int
    base_dir: Path
    data_dir: Path
    run_dir: Path
    socket_path: Path
    pid_file: Path
    config_file: Path
    log_file: Path
    binaries: MariaDbBinaries
    superuser_password: str
    version: str

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
        self.host = host
        self._auto_port = port is None
        self.port = free_port(host) if port is None else port
        self.max_connections = max_connections
        self.local_infile = local_infile
        self.settings = {k.replace("-", "_"): v for k, v in (settings or {}).items()}
        self.superuser_password = secrets.token_urlsafe(18)
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as = self._mysql_ids() if os.geteuid() == 0 else None
        self._owns_base = base_dir is None or not base_dir.exists()
        self.base_dir = self._make_base(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "mariadbd.log"
        self.config_file = self.base_dir / "my.cnf"
        self.run_dir = self.base_dir / "run"
        self._own_run_dir = len(str(self.run_dir / "mysqld.sock")) > _SOCKET_PATH_MAX
        if self._own_run_dir:
            self._check_reachable(Path(tempfile.gettempdir()))
            self.run_dir = Path(tempfile.mkdtemp(prefix="sluice-mdbs-")).resolve()
        self.socket_path = self.run_dir / "mysqld.sock"
        self.pid_file = self.run_dir / "mariadbd.pid"
        self._prepare_dirs()

    # ----------------------------------------------------------- filesystem

    @staticmethod
    def _mysql_ids() -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(MYSQL_OS_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root but there is no {MYSQL_OS_USER!r} OS user to run the server as"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _make_base(self, base_dir: Path | None) -> Path:
        """Resolve (or, if None, create under the temp dir) the base directory."""
        parent = Path(tempfile.gettempdir()) if base_dir is None else base_dir.resolve().parent
        self._check_reachable(parent)
        if base_dir is None:
            return Path(tempfile.mkdtemp(prefix="sluice-mdb-")).resolve()
        return base_dir.resolve()

    def _check_reachable(self, directory: Path) -> None:
        """Under root, fail early if the mysql OS user cannot enter `directory`."""
        if self._run_as is None:
            return
        for path in [directory, *directory.parents]:
            if not path.exists():
                continue
            st = path.stat()
            if st.st_uid != self._run_as[0] and not st.st_mode & 0o001:
                raise RuntimeError(
                    f"the {MYSQL_OS_USER!r} OS user cannot enter {path} (mode "
                    f"{st.st_mode & 0o777:o}); put the cluster's base dir somewhere it can reach"
                )

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, *self._run_as)

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        for path, mode in ((self.data_dir, 0o700), (self.run_dir, 0o755)):
            path.mkdir(exist_ok=True)
            path.chmod(mode)
            self._chown(path)
        self.log_file.touch()
        self._chown(self.log_file)

    # ----------------------------------------------------------- subprocess

    def _run(
        self, args: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            input=stdin,
            cwd=self.base_dir,
            env=env or _clean_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=_CMD_TIMEOUT,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log (empty if there is none)."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, what: str, output: str, code: int | None = None) -> RuntimeError:
        status = "" if code is None else f" (exit {code})"
        return RuntimeError(
            f"{what} failed{status} for {self.data_dir}:\n{output.strip()}\n"
            f"--- tail of {self.log_file} ---\n{self.log_tail()}"
        )

    # ----------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """Whether our server process is alive."""
        return self._server_pid() is not None

    def start(self) -> None:
        """mariadb-install-db if needed, (re)write my.cnf, start the server and wait for it."""
        if self.running:
            raise RuntimeError(f"a server is already running on {self.data_dir}")
        if not (self.data_dir / "mysql").is_dir():
            self._install_db()
        for attempt in range(_START_ATTEMPTS):
            self._write_config()
            try:
                self._spawn_and_wait()
                break
            except RuntimeError:
                self._kill_leftover()
                if not (self._auto_port and attempt + 1 < _START_ATTEMPTS and self._port_taken()):
                    raise
                self.port = free_port(self.host)
        self._secure_root()
        self._check_tls()

    def _install_db(self) -> None:
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
        if self._run_as is not None:
            cmd.append(f"--user={MYSQL_OS_USER}")
        proc = self._run(cmd)
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
        self.config_file.write_text(
            "# written by sluice.devtools.mariadbcluster at every start\n[mariadbd]\n" + body,
            encoding="utf-8",
        )
        self._chown(self.config_file)

    def _spawn_and_wait(self) -> None:
        """Start mariadbd in its own session and wait until the socket answers."""
        cmd = [
            str(self.binaries.server),
            f"--defaults-file={self.config_file}",  # must come first
            f"--datadir={self.data_dir}",  # also how _server_pid() recognises it
        ]
        if self._run_as is not None:
            cmd.append(f"--user={MYSQL_OS_USER}")
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.base_dir,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise self._fail("mariadbd start", "the server exited", code)
            if self.socket_path.exists():
                proc = self._client("SELECT VERSION()")
                if proc.returncode == 0:
                    self.version = proc.stdout.strip()
                    return
                last = proc.stderr
            time.sleep(0.05)
        raise self._fail("mariadbd start", f"not ready after {_READY_TIMEOUT:.0f} s\n{last}")

    def _port_taken(self) -> bool:
        tail = self.log_tail(15)
        return "Address already in use" in tail or "Bind on TCP/IP port" in tail

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

    def _server_pid(self) -> int | None:
        """The pid of our mariadbd: the child we started, else the pid file's, if it is ours."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        mine = f"--datadir={self.data_dir}".encode()
        return pid if mine in cmdline else None

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        """Send `sig` to our server; True once it has exited within `timeout` seconds."""
        pid = self._server_pid()
        if pid is None:
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server_pid() is None:
                return True
            time.sleep(0.05)
        return False

    def _kill_leftover(self) -> None:
        """After a failed start: make sure the half-started server is gone."""
        self._signal_and_wait(signal.SIGKILL, 10.0)
        self._proc = None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` shuts down cleanly (SIGTERM), `immediate` kills it."""
        if mode not in STOP_MODES:
            raise ValueError(f"unsupported stop mode {mode!r}")
        sig = signal.SIGTERM if mode == "fast" else signal.SIGKILL
        if not self._signal_and_wait(sig, _STOP_TIMEOUT):
            raise self._fail(
                "mariadbd stop", f"still running {_STOP_TIMEOUT:.0f} s after {sig.name}"
            )
        self._proc = None

    def restart(self) -> None:
        """Stop (fast) and start again; data survives."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server, whatever state it is in, and remove what we created."""
        try:
            self.stop("fast")
        except RuntimeError:
            self._kill_leftover()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._owns_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> MariaDbCluster:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

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
        env = _clean_env()
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
