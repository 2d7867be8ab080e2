"""The PostgreSQL part of the server launcher.

Design: `launcher.DbServer` runs `postgres -D data/` itself (no pg_ctl), with
`postgres.log` as its log. initdb keeps its postgresql.conf, which includes our
`sluice.conf`, rewritten at every start: the address and port, the socket in
`run/`, durability off for speed (settings may turn it back on). Administrative
SQL goes through `psql` over the unix socket, where `pg_hba.conf` trusts
everyone; TCP clients must use the password method `auth`. Stop modes are
PostgreSQL's: smart (SIGTERM), fast (SIGINT), immediate (SIGQUIT).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

from sluice.dbserver.launcher import LOCALHOST, BinariesNotFound, DbServer, binary_version

AUTH_METHODS = frozenset({"scram-sha-256", "md5", "password", "trust", "reject"})
PG_OS_USER = "postgres"
SUPERUSER = "postgres"
_TOOLS = ("initdb", "postgres", "psql")


class PgBinariesNotFound(BinariesNotFound):
    """No PostgreSQL server binaries (initdb, postgres, psql) were found."""


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    parts = re.findall(r"\d+", bin_dir.parent.name)
    return tuple(int(p) for p in parts)


def find_bin_dir() -> Path:
    """The directory of initdb/postgres/psql: newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    for bin_dir in reversed(candidates):
        if all((bin_dir / tool).is_file() for tool in _TOOLS[:2]):
            return bin_dir
    initdb = shutil.which("initdb")
    if initdb is not None:
        bin_dir = Path(initdb).resolve().parent
        if all((bin_dir / tool).is_file() for tool in _TOOLS[:2]):
            return bin_dir
    raise PgBinariesNotFound(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin or on PATH "
        "(install them, e.g. `make system-pg` or `apt-get install postgresql`)"
    )


def server_version() -> str:
    """The version of the postgres binary a server would run ("15.20")."""
    return binary_version(find_bin_dir() / "postgres", r"(\d+(?:\.\d+)+)")


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


class PgCluster(DbServer):
    """One PostgreSQL server; see the module docstring and `launcher.DbServer`."""

    os_user = PG_OS_USER
    temp_prefix = "sluice-pg"
    log_name = "postgres.log"
    socket_name = ".s.PGSQL.65535"
    env_prefixes = ("PG",)
    stop_signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
    port_taken_markers = ("could not bind", "already in use")

    bin_dir: Path

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
        self.auth = auth
        super().__init__(
            base_dir, host=host, port=port, max_connections=max_connections,
            settings=dict(settings or {}),
        )  # fmt: skip

    @property
    def socket_dir(self) -> Path:
        """Where the unix socket is (psql -h)."""
        return self.run_dir

    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    # ----------------------------------------------------------- the engine's part

    def _initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _init_data(self) -> None:
        pwfile = self.base_dir / "initdb.pw"
        self._write_file(pwfile, self.superuser_password + "\n")
        try:
            proc = self._run(
                [
                    self._tool("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                    f"--pwfile={pwfile}", "--auth-local=trust", f"--auth-host={self.auth}",
                    "--no-sync", "-E", "UTF8", "--locale=C",
                ],
                as_server=True,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise self._fail("initdb", proc.stdout + proc.stderr, proc.returncode)

    def _config_lines(self) -> dict[str, str]:
        conf = {
            "port": str(self.port),
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.run_dir),
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
                fh.write("\n# added by sluice\n" + include)
        body = "".join(f"{k} = {_conf_value(v)}\n" for k, v in self._config_lines().items())
        self._write_file(self.data_dir / "sluice.conf", body)
        # the server listens on one address only; who may reach it is the network's business
        hba = f"local all all trust\nhost all all 0.0.0.0/0 {self.auth}\n"
        self._write_file(self.data_dir / "pg_hba.conf", hba + f"host all all ::/0 {self.auth}\n")

    def _server_command(self) -> list[str]:
        return [self._tool("postgres"), "-D", str(self.data_dir)]

    def _identity(self) -> list[bytes]:
        return [b"-D", str(self.data_dir).encode()]

    def _pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def _socket_file(self) -> Path:
        return self.run_dir / f".s.PGSQL.{self.port}"

    def _probe(self) -> subprocess.CompletedProcess[str]:
        return self._psql_proc("SHOW server_version", "postgres", SUPERUSER)

    def _after_start(self, fresh: bool) -> None:
        if not fresh:  # a new object has a new password: give it to the superuser
            sql = f"ALTER ROLE {SUPERUSER} PASSWORD {quote_literal(self.superuser_password)}"
            self.psql(sql, user=SUPERUSER)

    # ----------------------------------------------------------- SQL helpers

    def _psql_proc(self, sql: str, db: str, user: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            self._tool("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.run_dir), "-p", str(self.port), "-U", user,
            "-d", f"dbname={_dsn_value(db)}", "-f", "-",
        ]  # fmt: skip
        return self._run(cmd, stdin=sql)

    def psql(self, sql: str, db: str = "postgres", user: str = SUPERUSER) -> str:
        """Run `sql` through psql over the unix socket (trusted); return stdout, stripped.

        Statements are read from stdin and run one by one in autocommit mode,
        so e.g. CREATE DATABASE may follow other statements.
        """
        proc = self._psql_proc(sql, db, user)
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip()

    def create_user(self, name: str, password: str, *, superuser: bool = False) -> None:
        """Create a login role with a password (hashed per password_encryption)."""
        extra = " SUPERUSER" if superuser else ""
        role, secret = quote_ident(name), quote_literal(password)
        self.psql(f"CREATE ROLE {role} LOGIN PASSWORD {secret}{extra}")

    def create_admin(self, name: str, password: str) -> None:
        """A login that creates databases and roles and reads the server's statistics."""
        role, secret = quote_ident(name), quote_literal(password)
        self.psql(
            f"CREATE ROLE {role} LOGIN CREATEDB CREATEROLE PASSWORD {secret};\n"
            f"GRANT pg_monitor, pg_signal_backend TO {role};"
        )

    def set_password(self, name: str, password: str) -> None:
        self.psql(f"ALTER ROLE {quote_ident(name)} PASSWORD {quote_literal(password)}")

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
