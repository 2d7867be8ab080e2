"""The throwaway MariaDB server the MySQL-engine integration tests rely on."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from certs import issue, make_ca
from helpers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    NATIVE_PASSWORD,
    NATIVE_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    wait_for,
)
from sluice.dbserver.mariadb import MYSQL_OS_USER, MariaDbCluster, account, quote_ident

pytestmark = pytest.mark.timeout(120)

ER_ACCESS_DENIED = 1045


def query(cluster: MariaDbCluster, user: str, password: str, sql: str, **kw: Any) -> Any:
    """Run `sql` over TCP with PyMySQL and return all rows."""
    conn = pymysql.connect(**cluster.connect_kwargs(user, password), **kw)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def login_error(cluster: MariaDbCluster, user: str, password: str, **kw: Any) -> int:
    """The MySQL error number of a failed PyMySQL login."""
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(**cluster.connect_kwargs(user, password), **kw)
    code: int = info.value.args[0]
    return code


def cli(
    cluster: MariaDbCluster, user: str, password: str, sql: str
) -> subprocess.CompletedProcess[str]:
    """The `mariadb` command-line client over TCP."""
    cmd = [
        str(cluster.binaries.client),
        "--no-defaults",
        "--protocol=TCP",
        f"--host={cluster.host}",
        f"--port={cluster.port}",
        f"--user={user}",
        "-N",
        "-B",
        "-e",
        sql,
    ]
    env = {**os.environ, "MYSQL_PWD": password}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def own_mariadb() -> Iterator[MariaDbCluster]:
    """A private server for tests that restart or reconfigure it."""
    with MariaDbCluster() as cluster:
        yield cluster


# ---------------------------------------------------------------- the server


def test_cluster_runs_isolated_with_requested_settings(mariadb: MariaDbCluster) -> None:
    assert mariadb.port != 3306
    assert mariadb.sql("SELECT 1") == "1"
    assert mariadb.sql("SELECT @@datadir").rstrip("/") == str(mariadb.data_dir)
    assert mariadb.sql("SELECT @@port, @@bind_address") == f"{mariadb.port}\t127.0.0.1"
    assert mariadb.sql("SELECT @@socket") == str(mariadb.socket_path)
    assert mariadb.sql("SELECT @@skip_networking, @@skip_name_resolve") == "0\t1"
    assert mariadb.sql("SELECT @@max_connections, @@local_infile") == "200\t1"
    assert mariadb.sql("SELECT @@performance_schema, @@have_ssl") == "0\tDISABLED"
    assert "MariaDB" in mariadb.version
    assert mariadb.sql("SELECT VERSION()") == mariadb.version
    assert mariadb.log_file.exists()
    assert "ready for connections" in mariadb.log_tail(200)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to the mysql OS user")
def test_server_runs_as_the_mysql_os_user(mariadb: MariaDbCluster) -> None:
    pid = int(mariadb.pid_file.read_text(encoding="ascii"))
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid_line.split()[1]) == pwd.getpwnam(MYSQL_OS_USER).pw_uid
    assert mariadb.data_dir.stat().st_uid == pwd.getpwnam(MYSQL_OS_USER).pw_uid


def test_root_is_socket_only_without_password(mariadb: MariaDbCluster) -> None:
    hosts = mariadb.sql("SELECT Host FROM mysql.user WHERE User = 'root' ORDER BY Host")
    assert hosts.splitlines() == ["127.0.0.1", "localhost"]
    assert login_error(mariadb, "root", "") == ER_ACCESS_DENIED
    rows = query(mariadb, "root", mariadb.superuser_password, "SELECT CURRENT_USER()")
    assert rows == (("root@127.0.0.1",),)


# ---------------------------------------------------------------- users and auth


def test_pymysql_password_login(mariadb: MariaDbCluster) -> None:
    sql = "SELECT 1, CURRENT_USER(), DATABASE()"
    conn = pymysql.connect(**mariadb.connect_kwargs(APP_USER, APP_PASSWORD, APP_DB))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            assert cur.fetchall() == ((1, f"{APP_USER}@%", APP_DB),)
    finally:
        conn.close()
    assert query(mariadb, OTHER_USER, OTHER_PASSWORD, "SELECT CURRENT_USER()") == (("other@%",),)
    rows = query(mariadb, NATIVE_USER, NATIVE_PASSWORD, "SELECT 1", database=APP_DB)
    assert rows == ((1,),)


def test_identified_by_defaults_to_native_password(mariadb: MariaDbCluster) -> None:
    sql = "SELECT User, plugin FROM mysql.user WHERE User IN ('app', 'other', 'native')"
    plugins = dict(line.split("\t") for line in mariadb.sql(sql).splitlines())
    assert plugins == {
        APP_USER: "mysql_native_password",
        OTHER_USER: "mysql_native_password",
        NATIVE_USER: "mysql_native_password",
    }


def test_wrong_password_and_unknown_user_fail_with_1045(mariadb: MariaDbCluster) -> None:
    assert login_error(mariadb, APP_USER, "not-the-password") == ER_ACCESS_DENIED
    assert login_error(mariadb, "nobody", APP_PASSWORD) == ER_ACCESS_DENIED


def test_ed25519_user_with_the_mariadb_client(mariadb: MariaDbCluster) -> None:
    mariadb.create_user("edward", "ed-secret", plugin="ed25519")
    try:
        plugin = mariadb.sql("SELECT plugin FROM mysql.user WHERE User = 'edward'")
        assert plugin == "ed25519"
        proc = cli(mariadb, "edward", "ed-secret", "SELECT CURRENT_USER()")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "edward@%"
        assert cli(mariadb, "edward", "wrong", "SELECT 1").returncode != 0
    finally:
        mariadb.sql("DROP USER 'edward'@'%'")


def test_caching_sha2_is_refused_as_mariadb_lacks_it(mariadb: MariaDbCluster) -> None:
    with pytest.raises(ValueError, match="caching_sha2_password"):
        mariadb.create_user("sha2", "secret", plugin="caching_sha2_password")


def test_awkward_names_and_passwords_are_quoted(mariadb: MariaDbCluster) -> None:
    user, password, db = 'o\'brien "x"', "it's a \\ pass%word_", "db_'quoted' `x`"
    mariadb.create_user(user, password)
    mariadb.create_database(db, owner=user)
    try:
        rows = query(mariadb, user, password, "SELECT CURRENT_USER(), DATABASE()", database=db)
        assert rows == ((f"{user}@%", db),)
        assert mariadb.sql("SELECT DATABASE()", db=db, user=user, password=password) == db
    finally:
        mariadb.sql(f"DROP DATABASE {quote_ident(db)}; DROP USER {account(user)}")


def test_sql_error_raises(mariadb: MariaDbCluster) -> None:
    with pytest.raises(RuntimeError, match="no_such_table"):
        mariadb.sql("SELECT * FROM no_such_table", db=APP_DB)


# ---------------------------------------------------------------- connections


def test_backend_count_sees_open_connection(mariadb: MariaDbCluster) -> None:
    before = mariadb.backend_count(user=APP_USER, db=APP_DB)
    conn = pymysql.connect(**mariadb.connect_kwargs(APP_USER, APP_PASSWORD, APP_DB))
    try:
        assert mariadb.backend_count(user=APP_USER, db=APP_DB) == before + 1
        assert mariadb.backend_count(user=OTHER_USER, db=APP_DB) == 0
        assert mariadb.backend_count() >= before + 1
        assert len(mariadb.backend_ids(user=APP_USER)) >= before + 1
    finally:
        conn.close()
    assert wait_for(lambda: mariadb.backend_count(user=APP_USER, db=APP_DB) == before)


def test_kill_connections(mariadb: MariaDbCluster) -> None:
    conn = pymysql.connect(**mariadb.connect_kwargs(OTHER_USER, OTHER_PASSWORD))
    try:
        assert mariadb.kill_connections(OTHER_USER) == 1
        assert mariadb.backend_count(user=OTHER_USER) == 0
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()
    assert mariadb.kill_connections(OTHER_USER) == 0


@pytest.mark.parametrize("use_pure", [True, False], ids=["pure", "c-extension"])
def test_mysql_connector(mariadb: MariaDbCluster, use_pure: bool) -> None:
    if not use_pure and not mysql.connector.HAVE_CEXT:
        pytest.skip("mysql-connector-python's C extension is not available here")
    kwargs = mariadb.connect_kwargs(APP_USER, APP_PASSWORD, APP_DB)
    conn: Any = mysql.connector.connect(use_pure=use_pure, **kwargs)
    try:
        expected = "MySQLConnection" if use_pure else "CMySQLConnection"
        assert type(conn).__name__ == expected
        cur = conn.cursor()
        cur.execute("SELECT 1, CURRENT_USER()")
        assert cur.fetchall() == [(1, f"{APP_USER}@%")]
        cur.close()
        prepared = conn.cursor(prepared=True)  # the binary protocol: COM_STMT_PREPARE/EXECUTE
        prepared.execute("SELECT ? + 1, ?", (41, "text"))
        assert prepared.fetchall() == [(42, "text")]
        prepared.close()
    finally:
        conn.close()


# ---------------------------------------------------------------- lifecycle


def test_restart_keeps_data(own_mariadb: MariaDbCluster) -> None:
    own_mariadb.create_user(APP_USER, APP_PASSWORD)
    own_mariadb.create_database(APP_DB, owner=APP_USER)
    own_mariadb.sql("CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('survives')", db=APP_DB)
    own_mariadb.restart()
    rows = query(own_mariadb, APP_USER, APP_PASSWORD, "SELECT v FROM kept", database=APP_DB)
    assert rows == (("survives",),)
    own_mariadb.stop("immediate")
    assert not own_mariadb.running
    own_mariadb.start()  # crash recovery
    assert own_mariadb.sql("SELECT COUNT(*) FROM kept", db=APP_DB) == "1"


def test_settings_and_limits() -> None:
    settings = {"wait_timeout": "77", "innodb-buffer-pool-size": "48M"}
    with MariaDbCluster(max_connections=15, local_infile=False, settings=settings) as cluster:
        sql = "SELECT @@max_connections, @@local_infile, @@wait_timeout, @@innodb_buffer_pool_size"
        assert cluster.sql(sql) == f"15\t0\t77\t{48 << 20}"


def test_failed_start_reports_log_and_destroy_cleans_up() -> None:
    cluster = MariaDbCluster(settings={"no_such_option": "1"})
    try:
        with pytest.raises(RuntimeError, match="no_such_option"):
            cluster.start()
        assert not cluster.running
    finally:
        cluster.destroy()
    assert not cluster.base_dir.exists()
    cluster.destroy()  # idempotent


# ---------------------------------------------------------------- TLS


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def settings(self) -> dict[str, str]:
        return {"ssl_ca": str(self.ca), "ssl_cert": str(self.cert), "ssl_key": str(self.key)}


@pytest.fixture
def tls_files() -> Iterator[TlsFiles]:
    """A CA and a server certificate for 127.0.0.1, readable by the mysql OS user."""
    directory = Path(tempfile.mkdtemp(prefix="sluice-mdb-tls-"))
    directory.chmod(0o755)
    owner = None
    if os.geteuid() == 0:
        entry = pwd.getpwnam(MYSQL_OS_USER)
        owner = (entry.pw_uid, entry.pw_gid)
    ca = make_ca("Sluice test CA")
    ca_crt = ca.write(directory, "ca", owner)
    crt = issue(ca, "127.0.0.1", ["127.0.0.1", "localhost"]).write(directory, "server", owner)
    try:
        yield TlsFiles(ca_crt, crt, directory / "server.key")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_tls_when_configured(tls_files: TlsFiles) -> None:
    with MariaDbCluster(settings=tls_files.settings()) as cluster:
        assert cluster.sql("SELECT @@have_ssl") == "YES"
        cluster.create_user("secure", "tls-secret")
        cluster.sql("ALTER USER 'secure'@'%' REQUIRE SSL")
        verify = {"ssl_ca": str(tls_files.ca), "ssl_verify_cert": True, "ssl_verify_identity": True}
        sql = "SHOW SESSION STATUS LIKE 'Ssl_version'"
        ((_, version),) = query(cluster, "secure", "tls-secret", sql, **verify)
        assert version.startswith("TLSv1.")
        # PyMySQL >= 1.2 prefers TLS when the server offers it, unless told not to.
        ((_, version),) = query(cluster, "secure", "tls-secret", sql)
        assert version.startswith("TLSv1.")
        plaintext = login_error(cluster, "secure", "tls-secret", ssl_disabled=True)
        assert plaintext == ER_ACCESS_DENIED
        kwargs = cluster.connect_kwargs("secure", "tls-secret")
        conn: Any = mysql.connector.connect(
            use_pure=True, ssl_ca=str(tls_files.ca), ssl_verify_identity=True, **kwargs
        )
        try:
            cur = conn.cursor()
            cur.execute(sql)
            assert cur.fetchall()[0][1].startswith("TLSv1.")
        finally:
            conn.close()


def test_unusable_tls_files_fail_the_start() -> None:
    cluster = MariaDbCluster(settings={"ssl_cert": "/nonexistent.crt", "ssl_key": "/no.key"})
    try:
        with pytest.raises(RuntimeError, match=r"Unable to get certificate|have_ssl"):
            cluster.start()
    finally:
        cluster.destroy()
