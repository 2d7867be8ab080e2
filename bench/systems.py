"""The database under test and the three ways to reach it: direct, PgBouncer, Sluice.

`BenchDatabase` is a throwaway PostgreSQL (PgCluster) tuned for benchmarking,
with a `bench` role and database initialised by `pgbench -i`. Each system
starts fresh for every measured row (`start()` returns where to connect and
which process to watch) and is stopped right after, so one row's leftovers
(memory, a crashed process) never leak into the next. PgBouncer refuses to run
as root, so under euid 0 it runs as the `postgres` OS user; it inherits the
harness's raised RLIMIT_NOFILE. Clients use SCRAM everywhere: PgBouncer gets
the role's stored SCRAM secret in its userlist (as PostgreSQL keeps it), Sluice
the password in its TOML (it derives and caches the verifier).

TLS: the run makes one self-signed certificate (`BenchCertificate`). PostgreSQL
has it configured from the start but `ssl = off`; `BenchDatabase.set_ssl` turns
it on (ALTER SYSTEM and a reload) for the TLS rows only, so every other row runs
against the server as it always did. A system built with `tls=True` then
requires TLS on both of its legs: from pgbench (`PGSSLMODE=require`) and to
PostgreSQL; without it, TLS is off on both.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sluice.dbserver.launcher import free_port
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.tls import ensure_self_signed

BENCH_USER = "bench"
BENCH_DB = "bench"
LOCALHOST = "127.0.0.1"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0
_INIT_TIMEOUT = 600.0
_RELOAD_TIMEOUT = 15.0

# Durability is already off in PgCluster; these keep checkpoints and the
# statistics collector out of the way and give the 1000-backend direct run room.
PG_SETTINGS = {
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "30min",
    "jit": "off",
    "log_min_messages": "warning",
    "log_connections": "off",
    "log_disconnections": "off",
}


@dataclass(frozen=True)
class Endpoint:
    """Where pgbench connects, and the proxy process to measure (None when direct).

    `password` replaces the database's password when the endpoint wants another
    one (an IAM auth token); it is kept out of the repr so it never reaches a log.
    `sslmode` is libpq's PGSSLMODE for this endpoint.
    """

    host: str
    port: int
    pid: int | None
    password: str | None = field(default=None, repr=False)
    sslmode: str = "disable"


class System(Protocol):
    name: str

    def start(self) -> Endpoint: ...

    def stop(self) -> None: ...

    def log_tail(self, lines: int = 20) -> str: ...


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Wait until `port` accepts connections; fail if `proc` dies or time runs out."""
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early (code {proc.returncode}):\n{tail(log)}")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}:\n{tail(log)}") from None
            time.sleep(0.05)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class BenchCertificate:
    """The run's self-signed certificate (ECDSA P-256, for localhost and 127.0.0.1) and key.

    Made once per run by `sluice.tls.ensure_self_signed`, as Sluice makes its own when
    none is configured. Under euid 0 both files belong to the `postgres` OS user, as
    PostgreSQL wants of its key (mode 0600, its owner) and as PgBouncer, running as that
    user, needs to read them; Sluice runs as root and reads them anyway.
    """

    cert_file: Path
    key_file: Path

    @classmethod
    def make(cls, workdir: Path) -> BenchCertificate:
        cert, key = ensure_self_signed(workdir)  # workdir/tls/sluice.{crt,key}
        if os.geteuid() == 0:
            for path in (Path(cert).parent, Path(cert), Path(key)):
                os.chown(path, *_postgres_ids())
        return cls(Path(cert), Path(key))


class BenchDatabase:
    """PostgreSQL with pgbench's tables at a given scale, owned by role `bench`.

    The certificate is configured but TLS is off until `set_ssl(True)`.
    """

    def __init__(self, workdir: Path, max_connections: int, scale: int) -> None:
        self.password = secrets.token_urlsafe(18)
        self.scale = scale
        self.certificate = BenchCertificate.make(workdir)
        settings = {
            **PG_SETTINGS,
            "ssl": "off",
            "ssl_cert_file": str(self.certificate.cert_file),
            "ssl_key_file": str(self.certificate.key_file),
        }
        self.cluster = PgCluster(workdir / "pg", max_connections=max_connections, settings=settings)
        self.ssl = False

    def start(self) -> None:
        self.cluster.start()
        self.cluster.create_user(BENCH_USER, self.password)
        self.cluster.create_database(BENCH_DB, owner=BENCH_USER)
        cmd = [
            "pgbench", "-i", "-q", "-s", str(self.scale),
            "-h", str(self.cluster.socket_dir), "-p", str(self.cluster.port),
            "-U", BENCH_USER, BENCH_DB,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_INIT_TIMEOUT, check=False, env=pg_env()
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench -i failed:\n{proc.stderr.strip()}")
        # Settle what the load left for later (statistics, hint bits, dirty pages) now, so
        # that autovacuum and a checkpoint do not land in whichever row runs first.
        self.cluster.psql("VACUUM (ANALYZE, FREEZE)", db=BENCH_DB)
        self.cluster.psql("CHECKPOINT")

    def set_ssl(self, on: bool) -> None:
        """Turn TLS on or off for new connections (ALTER SYSTEM, reload) and wait until a
        new backend sees it; nothing to do when it already is so."""
        if on == self.ssl:
            return
        value = "on" if on else "off"
        self.cluster.psql(f"ALTER SYSTEM SET ssl = {value}")
        self.cluster.psql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + _RELOAD_TIMEOUT
        while (seen := self.cluster.psql("SHOW ssl")) != value:
            if time.monotonic() > deadline:
                log = self.cluster.log_tail(5)
                raise RuntimeError(f"PostgreSQL ssl is still {seen}, not {value}:\n{log}")
            time.sleep(0.05)
        self.ssl = on

    def scram_secret(self) -> str:
        """The role's stored SCRAM-SHA-256 secret (what PgBouncer's userlist may hold)."""
        sql = f"SELECT rolpassword FROM pg_authid WHERE rolname = '{BENCH_USER}'"
        return self.cluster.psql(sql)

    def admin_conninfo(self) -> str:
        """A libpq DSN for the superuser over the unix socket (trusted)."""
        cluster = self.cluster
        return f"host={cluster.socket_dir} port={cluster.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        self.cluster.destroy()


def pg_env(password: str | None = None, sslmode: str = "disable") -> dict[str, str]:
    """An environment without the caller's PG* variables; GSS off, TLS off unless asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", PGSSLMODE=sslmode, PGGSSENCMODE="disable")
    if password is not None:
        env["PGPASSWORD"] = password
    return env


class DirectSystem:
    """pgbench straight to PostgreSQL: nothing to start."""

    name = "direct"

    def __init__(self, db: BenchDatabase, tls: bool = False) -> None:
        self.db, self.tls = db, tls

    def start(self) -> Endpoint:
        sslmode = "require" if self.tls else "disable"
        return Endpoint(self.db.cluster.host, self.db.cluster.port, None, sslmode=sslmode)

    def stop(self) -> None:
        pass

    def log_tail(self, lines: int = 20) -> str:
        return self.db.cluster.log_tail(lines)


class PgBouncerSystem:
    """PgBouncer in transaction pooling mode, one fresh process per row.

    With `tls`, clients must use TLS (`client_tls_sslmode = require`, the run's
    certificate) and so must its server connections (`server_tls_sslmode = require`);
    without, TLS is off on both sides.
    """

    name = "pgbouncer"

    def __init__(
        self, db: BenchDatabase, workdir: Path, pool_size: int, max_clients: int, tls: bool = False
    ) -> None:
        self.db, self.workdir = db, workdir
        self.pool_size, self.max_clients = pool_size, max_clients
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "pgbouncer.log"
        self.runs = 0
        self.rundir_prefix = "pgbouncer-tls" if tls else "pgbouncer"

    def _tls_lines(self) -> str:
        if not self.tls:
            return "client_tls_sslmode = disable\nserver_tls_sslmode = disable\n"
        cert = self.db.certificate
        return (
            "client_tls_sslmode = require\n"
            f"client_tls_cert_file = {cert.cert_file}\nclient_tls_key_file = {cert.key_file}\n"
            "server_tls_sslmode = require\n"
        )

    def _config(self, rundir: Path, port: int) -> Path:
        userlist = rundir / "userlist.txt"
        userlist.write_text(f'"{BENCH_USER}" "{self.db.scram_secret()}"\n')
        cluster = self.db.cluster
        ini = rundir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{BENCH_DB} = host={cluster.host} port={cluster.port} dbname={BENCH_DB}\n"
            "[pgbouncer]\n"
            f"listen_addr = {LOCALHOST}\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {userlist}\n"
            f"pool_mode = transaction\ndefault_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\nreserve_pool_size = 0\n"
            f"max_client_conn = {self.max_clients}\nlisten_backlog = 4096\n"
            "log_connections = 0\nlog_disconnections = 0\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"{self._tls_lines()}"
            f"pidfile = {rundir / 'pgbouncer.pid'}\n"
        )
        return ini

    def start(self) -> Endpoint:
        self.runs += 1
        rundir = self.workdir / f"{self.rundir_prefix}-{self.runs}"
        rundir.mkdir(parents=True)
        port = free_port()
        ini = self._config(rundir, port)
        ids = _postgres_ids() if os.geteuid() == 0 else None
        if ids is not None:
            for path in (rundir, *rundir.iterdir()):
                os.chown(path, *ids)
        self.log = rundir / "pgbouncer.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [pgbouncer_binary(), str(ini)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=None if ids is None else ids[0],
                group=None if ids is None else ids[1],
                extra_groups=None if ids is None else [],
                start_new_session=True,
            )
        wait_listening(port, self.proc, "pgbouncer", self.log)
        sslmode = "require" if self.tls else "disable"
        return Endpoint(LOCALHOST, port, self.proc.pid, sslmode=sslmode)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log, lines)


class SluiceProxySystem:
    """`sluice proxy` (SluiceProcess), one fresh process per row; subclasses say which proxy."""

    name = "sluice"
    rundir_prefix = "sluice"

    def __init__(
        self,
        workdir: Path,
        pool_size: int,
        max_clients: int,
        workers: int = 1,
        cpus: frozenset[int] | None = None,
        tls: bool = False,
    ) -> None:
        self.workdir, self.pool_size = workdir, pool_size
        self.workers, self.cpus = workers, cpus  # worker processes, and the CPUs they may use
        self.tls = tls  # TLS required from clients and to the database
        if cpus is not None:  # a folder of its own beside the unpinned system's
            self.rundir_prefix += f"-{workers}w-cpu" + "_".join(map(str, sorted(cpus)))
        if tls:
            self.rundir_prefix += "-tls"
        self.proc: SluiceProcess | None = None
        self.runs = 0
        # as PgBouncer's max_client_conn: the caps on clients are not what a row measures
        self.limits = {
            "max_client_connections": max_clients,
            "max_logins": max_clients,
            "max_logins_per_address": max_clients,
        }

    def proxy_config(self, port: int) -> dict[str, Any]:
        """The `[[proxy]]` table of this system's configuration."""
        raise NotImplementedError

    def start(self) -> Endpoint:
        self.runs += 1
        port = free_port()
        proxy = self.proxy_config(port)
        rundir = self.workdir / f"{self.rundir_prefix}-{self.runs}"
        rundir.mkdir(parents=True)
        glob = {"log_level": "warning", "workers": self.workers}
        self.proc = SluiceProcess([proxy], glob=glob, workdir=rundir, cpus=self.cpus)
        try:
            self.proc.start(timeout=_START_TIMEOUT)
            if self.workers > 1:
                self._wait_workers(time.monotonic() + _START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        sslmode = "require" if self.tls else "disable"
        return Endpoint(LOCALHOST, port, self.proc.pid, sslmode=sslmode)

    def _wait_workers(self, deadline: float) -> None:
        """Until every worker listens (the port opens with the first): each opens its peer
        socket (state_dir/workers/PID/N.sock) just before its listeners."""
        assert self.proc is not None
        sockets = self.proc.workdir / "state" / "workers"
        while len(list(sockets.glob("*/*.sock"))) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every worker started:\n{self.proc.log_tail()}")
            time.sleep(0.05)
        time.sleep(0.5)  # the listeners follow at once

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=_STOP_TIMEOUT)

    def log_tail(self, lines: int = 20) -> str:
        return "" if self.proc is None else self.proc.log_tail(lines)


class SluiceSystem(SluiceProxySystem):
    """Sluice in front of PostgreSQL with the same pool size as PgBouncer.

    With `tls`: `require_tls` with the run's certificate for clients, `tls = "require"`
    to the database; without, TLS is off on both sides (the target's default).
    """

    def __init__(
        self,
        db: BenchDatabase,
        workdir: Path,
        pool_size: int,
        max_clients: int,
        workers: int = 1,
        cpus: frozenset[int] | None = None,
        tls: bool = False,
    ) -> None:
        super().__init__(workdir, pool_size, max_clients, workers, cpus, tls)
        self.db = db

    def proxy_config(self, port: int) -> dict[str, Any]:
        target: dict[str, Any] = {"host": self.db.cluster.host, "port": self.db.cluster.port}
        tls: dict[str, Any] = {}
        if self.tls:
            target["tls"] = "require"
            cert = self.db.certificate
            tls = {
                "require_tls": True,
                "tls_cert_file": str(cert.cert_file),
                "tls_key_file": str(cert.key_file),
            }
        return {
            "name": "bench",
            "listen": f"{LOCALHOST}:{port}",
            **tls,
            "target": target,
            "pool": {
                "mode": "transaction",
                "max_connections": self.pool_size,
                "max_idle_connections": self.pool_size,
                "borrow_timeout": 120,
            },
            "users": [{"name": BENCH_USER, "password": self.db.password}],
            **self.limits,
        }


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("pgbouncer not found (make system-bench installs it)")
    return found


def _postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, wait, then SIGKILL: never leave a child behind."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(_STOP_TIMEOUT)
