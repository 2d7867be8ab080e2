"""A throwaway PostgreSQL server for the tests, the demo and the benchmark.

Design: each `PgCluster` owns one base directory holding `data/` (the cluster),
`run/` (the unix socket) and `postgres.log` (kept outside `data/` so it stays
readable and can be quoted in errors). Durability is switched off for speed.
The server listens on 127.0.0.1 only, on a port we pick, so it never touches a
system PostgreSQL on 5432. Administrative SQL goes through `psql` over the unix
socket, where `pg_hba.conf` trusts everyone; TCP clients must use `auth`.
initdb and postgres refuse to run as root, so under euid 0 they run as the
`postgres` OS user (subprocess `user=`/`group=`) and the data dir is chowned
to it. Every subprocess gets an environment stripped of PG* variables.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

LOCALHOST = "127.0.0.1"
AUTH_METHODS = frozenset({"scram-sha-256", "md5", "password", "trust", "reject"})
STOP_MODES = frozenset({"smart", "fast", "immediate"})
PG_OS_USER = "postgres"
SUPERUSER = "postgres"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_START_ATTEMPTS = 3  # retries when an auto-picked port was taken meanwhile
_CMD_TIMEOUT = 120.0


class PgBinariesNotFound(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found."""


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    parts = re.findall(r"\d+", bin_dir.parent.name)
    return tuple(int(p) for p in parts)


def find_bin_dir() -> Path:
    """The directory of initdb/pg_ctl/postgres: newest /usr/lib/postgresql/*/bin, else PATH."""
    tools = ("initdb", "pg_ctl", "postgres")
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    for bin_dir in reversed(candidates):
        if all((bin_dir / tool).is_file() for tool in tools):
            return bin_dir
    initdb = shutil.which("initdb")
    if initdb is not None:
        bin_dir = Path(initdb).resolve().parent
        if all((bin_dir / tool).is_file() for tool in tools):
            return bin_dir
    raise PgBinariesNotFound(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin or on PATH "
        "(install them, e.g. `make system-pg` or `apt-get install postgresql`)"
    )


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal (standard_conforming_strings is on)."""
    return "'" + value.replace("'", "''") + "'"


def _conf_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _dsn_value(value: str) -> str:
    if value and not re.search(r"[\s'\\=]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


class PgCluster:
    """One throwaway PostgreSQL server; see the module docstring."""

    host: str
    port: int
    base_dir: Path
    data_dir: Path
    socket_dir: Path
    log_file: Path
    bin_dir: Path
    superuser_password: str

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        host: str = LOCALHOST,
        port: int | None = None,
        auth: str = "scram-sha-256",
        max_connections: int = 200,
        settings: dict[str, str] | None = None,
    ) -> None:
        if auth not in AUTH_METHODS:
            raise ValueError(f"unsupported auth method {auth!r}")
        self.bin_dir = find_bin_dir()
        self.host = host
        self._auto_port = port is None
        self.port = free_port(host) if port is None else port
        self.auth = auth
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self.superuser_password = secrets.token_urlsafe(18)
        self._run_as = self._postgres_ids() if os.geteuid() == 0 else None
        self._owns_base = base_dir is None or not base_dir.exists()
        self.base_dir = self._make_base(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self.socket_dir = self.base_dir / "run"
        self._own_socket_dir = len(str(self.socket_dir / ".s.PGSQL.65535")) > _SOCKET_PATH_MAX
        if self._own_socket_dir:
            self._check_reachable(Path(tempfile.gettempdir()))
            self.socket_dir = Path(tempfile.mkdtemp(prefix="sluice-pgs-")).resolve()
        self._prepare_dirs()

    # ----------------------------------------------------------- filesystem

    @staticmethod
    def _postgres_ids() -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(PG_OS_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root but there is no {PG_OS_USER!r} OS user to run the server as"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _make_base(self, base_dir: Path | None) -> Path:
        """Resolve (or, if None, create under the temp dir) the base directory."""
        parent = Path(tempfile.gettempdir()) if base_dir is None else base_dir.resolve().parent
        self._check_reachable(parent)
        if base_dir is None:
            return Path(tempfile.mkdtemp(prefix="sluice-pg-")).resolve()
        return base_dir.resolve()

    def _check_reachable(self, directory: Path) -> None:
        """Under root, fail early if the postgres OS user cannot enter `directory`."""
        if self._run_as is None:
            return
        for path in [directory, *directory.parents]:
            if not path.exists():
                continue
            st = path.stat()
            if st.st_uid != self._run_as[0] and not st.st_mode & 0o001:
                raise RuntimeError(
                    f"the {PG_OS_USER!r} OS user cannot enter {path} (mode "
                    f"{st.st_mode & 0o777:o}); put the cluster's base dir somewhere it can reach"
                )

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, *self._run_as)

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        for path, mode in ((self.data_dir, 0o700), (self.socket_dir, 0o755)):
            path.mkdir(exist_ok=True)
            path.chmod(mode)
            self._chown(path)
        self.log_file.touch()
        self._chown(self.log_file)

    def _write_file(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        self._chown(path)

    # ----------------------------------------------------------- subprocess

    def _run(
        self, args: list[str], *, as_server: bool = False, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command; `as_server` commands run as the postgres OS user under root."""
        uid, gid = self._run_as if as_server and self._run_as is not None else (None, None)
        return subprocess.run(
            args,
            input=stdin,
            cwd=self.base_dir,
            env=_clean_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=_CMD_TIMEOUT,
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )

    def _tool(self, name: str) -> str:
        path = self.bin_dir / name
        if path.is_file():
            return str(path)
        return shutil.which(name) or name

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log (empty if there is none)."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, what: str, proc: subprocess.CompletedProcess[str]) -> RuntimeError:
        output = (proc.stdout + proc.stderr).strip()
        return RuntimeError(
            f"{what} failed (exit {proc.returncode}) for {self.data_dir}:\n{output}\n"
            f"--- tail of {self.log_file} ---\n{self.log_tail()}"
        )

    # ----------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """Whether a postmaster.pid exists (the server is up or died uncleanly)."""
        return (self.data_dir / "postmaster.pid").exists()

    def start(self) -> None:
        """initdb if needed, (re)write the configuration and start the server."""
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        for attempt in range(_START_ATTEMPTS):
            self._write_config()
            proc = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
            if proc.returncode == 0:
                break
            if not (self._auto_port and attempt + 1 < _START_ATTEMPTS and self._port_taken()):
                raise self._fail("pg_ctl start", proc)
            self.port = free_port(self.host)
        if not fresh:
            sql = f"ALTER ROLE {SUPERUSER} PASSWORD {quote_literal(self.superuser_password)}"
            self.psql(sql, user=SUPERUSER)

    def _port_taken(self) -> bool:
        tail = self.log_tail(10)
        return "could not bind" in tail or "already in use" in tail

    def _initdb(self) -> None:
        pwfile = self.base_dir / "initdb.pw"
        self._write_file(pwfile, self.superuser_password + "\n")
        try:
            proc = self._run(
                [
                    self._tool("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    f"--auth-host={self.auth}",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                as_server=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise self._fail("initdb", proc)

    def _config_lines(self) -> dict[str, str]:
        conf = {
            "port": str(self.port),
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "password_encryption": "md5" if self.auth == "md5" else "scram-sha-256",
        }
        conf.update(self.settings)
        return conf

    def _write_config(self) -> None:
        """Keep initdb's postgresql.conf; include our own file, rewritten every start."""
        main_conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'sluice.conf'\n"
        if include not in main_conf.read_text(encoding="utf-8"):
            with main_conf.open("a", encoding="utf-8") as fh:
                fh.write("\n# added by sluice.devtools.pgcluster\n" + include)
        body = "".join(f"{k} = {_conf_value(v)}\n" for k, v in self._config_lines().items())
        self._write_file(self.data_dir / "sluice.conf", body)
        hba = (
            "local all all trust\n"
            f"host all all 127.0.0.1/32 {self.auth}\n"
            f"host all all ::1/128 {self.auth}\n"
        )
        self._write_file(self.data_dir / "pg_hba.conf", hba)

    def _pg_ctl(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self._tool("pg_ctl"), action, "-D", str(self.data_dir), *args]
        return self._run(cmd, as_server=True)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (no-op if it is not running)."""
        if mode not in STOP_MODES:
            raise ValueError(f"unsupported stop mode {mode!r}")
        if not self.running:
            return
        proc = self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
        if proc.returncode != 0 and self.running:
            raise self._fail("pg_ctl stop", proc)

    def restart(self) -> None:
        """Stop (fast) and start again; data survives."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server, whatever state it is in, and remove what we created."""
        try:
            self.stop("fast")
        except (RuntimeError, subprocess.TimeoutExpired):
            if self.running:
                self._pg_ctl("stop", "-w", "-t", "30", "-m", "immediate")
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self._owns_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
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

    def psql(self, sql: str, db: str = "postgres", user: str = SUPERUSER) -> str:
        """Run `sql` through psql over the unix socket (trusted); return stdout, stripped.

        Statements are read from stdin and run one by one in autocommit mode,
        so e.g. CREATE DATABASE may follow other statements.
        """
        cmd = [
            self._tool("psql"),
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            user,
            "-d",
            f"dbname={_dsn_value(db)}",
            "-f",
            "-",
        ]
        proc = self._run(cmd, stdin=sql)
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip()

    def create_user(self, name: str, password: str, *, superuser: bool = False) -> None:
        """Create a login role with a password (hashed per password_encryption)."""
        extra = " SUPERUSER" if superuser else ""
        role, secret = quote_ident(name), quote_literal(password)
        self.psql(f"CREATE ROLE {role} LOGIN PASSWORD {secret}{extra}")

    def create_database(self, name: str, owner: str = SUPERUSER) -> None:
        """Create a database owned by `owner`."""
        self.psql(f"CREATE DATABASE {quote_ident(name)} OWNER {quote_ident(owner)}")

    def dsn(self, user: str, password: str, dbname: str = "postgres") -> str:
        """A libpq key=value DSN reaching this server over TCP."""
        parts = {
            "host": self.host,
            "port": str(self.port),
            "user": user,
            "password": password,
            "dbname": dbname,
        }
        return " ".join(f"{k}={_dsn_value(v)}" for k, v in parts.items())

    def _activity_filter(self, user: str | None, dbname: str | None) -> str:
        cond = "backend_type = 'client backend' AND pid <> pg_backend_pid()"
        if user is not None:
            cond += f" AND usename = {quote_literal(user)}"
        if dbname is not None:
            cond += f" AND datname = {quote_literal(dbname)}"
        return cond

    def backend_count(self, user: str | None = None, dbname: str | None = None) -> int:
        """Client backends in pg_stat_activity, not counting the querying session."""
        where = self._activity_filter(user, dbname)
        return int(self.psql(f"SELECT count(*) FROM pg_stat_activity WHERE {where}"))

    def terminate_backends(self, user: str) -> int:
        """Terminate `user`'s client backends, waiting up to 5 s each; return how many."""
        where = self._activity_filter(user, None)
        sql = (
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
            f"FROM pg_stat_activity WHERE {where}"
        )
        return int(self.psql(sql))
