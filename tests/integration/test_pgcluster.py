"""The throwaway PostgreSQL server the other integration tests rely on."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, OTHER_PASSWORD, OTHER_USER, wait_for
from sluice.dbserver.postgres import PgCluster, quote_ident


@pytest.fixture
def own_pg() -> Iterator[PgCluster]:
    """A private cluster for tests that restart or reconfigure the server."""
    with PgCluster() as cluster:
        yield cluster


def test_cluster_runs_isolated_with_requested_settings(pg: PgCluster) -> None:
    assert pg.port != 5432
    assert pg.psql("select 1") == "1"
    assert pg.psql("show data_directory") == str(pg.data_dir)
    assert pg.psql("show port") == str(pg.port)
    assert pg.psql("show listen_addresses") == "127.0.0.1"
    assert pg.psql("show fsync") == "off"
    assert pg.psql("show max_connections") == "200"
    assert pg.psql("show password_encryption") == "scram-sha-256"
    assert pg.log_file.exists()


def test_scram_password_auth(pg: PgCluster) -> None:
    with psycopg.connect(pg.dsn(APP_USER, APP_PASSWORD, APP_DB)) as conn:
        row = conn.execute("select 1, current_user, current_database()").fetchone()
    assert row == (1, APP_USER, APP_DB)
    stored = pg.psql(f"select rolpassword from pg_authid where rolname = '{APP_USER}'")
    assert stored.startswith("SCRAM-SHA-256$")
    owner = pg.psql(f"select pg_get_userbyid(datdba) from pg_database where datname = '{APP_DB}'")
    assert owner == APP_USER
    with psycopg.connect(pg.dsn(OTHER_USER, OTHER_PASSWORD)) as conn:
        assert conn.execute("select current_user").fetchone() == (OTHER_USER,)


def test_wrong_password_fails(pg: PgCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn(APP_USER, "not-the-password", APP_DB))


def test_awkward_names_and_passwords_are_quoted(pg: PgCluster) -> None:
    user, password, db = 'o\'brien "x"', "it's a \\ :USER pass=word", "db 'quoted'"
    pg.create_user(user, password)
    pg.create_database(db, owner=user)
    try:
        with psycopg.connect(pg.dsn(user, password, db)) as conn:
            row = conn.execute("select current_user, current_database()").fetchone()
        assert row == (user, db)
    finally:
        pg.psql(f"drop database {quote_ident(db)}; drop role {quote_ident(user)}")


def test_psql_error_raises(pg: PgCluster) -> None:
    with pytest.raises(RuntimeError, match="no_such_table"):
        pg.psql("select * from no_such_table")


def test_backend_count_sees_open_connection(pg: PgCluster) -> None:
    before = pg.backend_count(user=APP_USER, dbname=APP_DB)
    conn = psycopg.connect(pg.dsn(APP_USER, APP_PASSWORD, APP_DB))
    try:
        assert pg.backend_count(user=APP_USER, dbname=APP_DB) == before + 1
        assert pg.backend_count(user=OTHER_USER, dbname=APP_DB) == 0
        assert pg.backend_count() >= before + 1
    finally:
        conn.close()
    assert wait_for(lambda: pg.backend_count(user=APP_USER, dbname=APP_DB) == before)


def test_terminate_backends(pg: PgCluster) -> None:
    conn = psycopg.connect(pg.dsn(OTHER_USER, OTHER_PASSWORD), autocommit=True)
    try:
        assert pg.terminate_backends(OTHER_USER) == 1
        assert pg.backend_count(user=OTHER_USER) == 0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()


def test_restart_keeps_data(own_pg: PgCluster) -> None:
    own_pg.create_user(APP_USER, APP_PASSWORD)
    own_pg.create_database(APP_DB, owner=APP_USER)
    dsn = own_pg.dsn(APP_USER, APP_PASSWORD, APP_DB)
    with psycopg.connect(dsn) as conn:
        conn.execute("create table kept (v text)")
        conn.execute("insert into kept values ('survives')")
    own_pg.restart()
    with psycopg.connect(own_pg.dsn(APP_USER, APP_PASSWORD, APP_DB)) as conn:
        assert conn.execute("select v from kept").fetchall() == [("survives",)]


def test_md5_auth_and_extra_settings() -> None:
    with PgCluster(auth="md5", settings={"work_mem": "8MB"}) as cluster:
        assert cluster.psql("show work_mem") == "8MB"
        cluster.create_user("md5user", "md5-secret")
        stored = cluster.psql("select rolpassword from pg_authid where rolname = 'md5user'")
        assert stored.startswith("md5")
        with psycopg.connect(cluster.dsn("md5user", "md5-secret")) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cluster.dsn("md5user", "wrong"))


def test_failed_start_reports_log_and_destroy_cleans_up() -> None:
    cluster = PgCluster(settings={"shared_buffers": "not-a-size"})
    try:
        with pytest.raises(RuntimeError, match="shared_buffers"):
            cluster.start()
        assert not cluster.running
    finally:
        cluster.destroy()
    assert not cluster.base_dir.exists()
    cluster.destroy()  # idempotent


def test_a_server_left_running_is_recognised_by_a_new_launcher() -> None:
    parent = Path(tempfile.mkdtemp(prefix="sluice-test-"))
    parent.chmod(0o755)  # the server's OS user, under root, must reach the base dir
    base = parent / "pg"
    first = PgCluster(base)
    first.start()
    try:
        second = PgCluster(base, port=first.port)  # a later process, same base directory
        assert second.running and second.server_pid() == first.server_pid()
        second.stop()
        assert not first.running
        second.start()
        assert second.psql("select 1") == "1"
        second.stop()
    finally:
        first.destroy()
    assert not base.exists()  # made by the first launcher, which removes it
    shutil.rmtree(parent)
