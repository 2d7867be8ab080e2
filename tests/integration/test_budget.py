"""One connection budget per target, seen from the database server and from real clients.

Several users (and for MySQL several capability profiles) through two proxies
that point at the same server: every pool draws from one budget, so the server
never sees more connections from Sluice than the limit, whatever the number of
pools, and every client still gets its turn. A thread polls the server's own
view (pg_stat_activity, information_schema.processlist) over a direct
connection while the clients run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import asyncpg
import psycopg
import pymysql
import pytest
from pymysql.constants import CLIENT

from helpers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    NATIVE_PASSWORD,
    NATIVE_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    PeakWatch,
    free_port,
    mysql_proxy_config,
    proxy_config,
    wait_for,
)
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import SUPERUSER, PgCluster
from sluice.devtools.runner import SluiceProcess

PG_USERS = [(f"budget{i}", f"budget-secret-{i}") for i in range(5)]



@pytest.fixture(scope="module")
def small_pg() -> Iterator[PgCluster]:
    """A throwaway server with max_connections 100 and five login roles."""
    with PgCluster(max_connections=100) as cluster:
        for user, password in PG_USERS:
            cluster.create_user(user, password)
        yield cluster


def two_pg_proxies(pg: PgCluster, limit: str) -> list[dict[str, object]]:
    """Two proxies in front of the same server, each allowed `limit`, each with every user."""
    users = [{"name": u, "password": p} for u, p in PG_USERS]
    return [
        proxy_config(pg, free_port(), name=name, users=users,
                     pool={"max_connections": limit, "borrow_timeout": 120})
        for name in ("pg-a", "pg-b")
    ]  # fmt: skip


def sluice_backends(pg: PgCluster) -> PeakWatch:
    direct = psycopg.connect(pg.dsn(SUPERUSER, pg.superuser_password), autocommit=True)
    names = [u for u, _ in PG_USERS]

    def count() -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)"
        row = direct.execute(sql, (names,)).fetchone()
        assert row is not None
        return int(row[0])

    return PeakWatch(count)


async def pg_client(proxy: dict[str, object], user: str, password: str) -> int:
    """Log in through `proxy`, run a few short transactions; how many committed."""
    host, _, port = str(proxy["listen"]).rpartition(":")
    conn = await asyncpg.connect(host=host, port=int(port), user=user, password=password,
                                 database="postgres", ssl=False, timeout=60)  # fmt: skip
    done = 0
    try:
        for _ in range(4):
            async with conn.transaction():
                await conn.execute("SELECT pg_sleep(0.01)")
            done += 1
    finally:
        await conn.close()
    return done


async def many_pg_clients(proxies: list[dict[str, object]], count: int) -> list[int]:
    jobs = []
    for i in range(count):
        user, password = PG_USERS[i % len(PG_USERS)]
        jobs.append(pg_client(proxies[(i // len(PG_USERS)) % 2], user, password))
    return await asyncio.gather(*jobs)


def test_many_users_and_two_proxies_stay_within_one_budget(small_pg: PgCluster) -> None:
    proxies = two_pg_proxies(small_pg, "50%")
    glob = {"admin_users": [PG_USERS[0][0]]}
    with SluiceProcess(proxies, glob=glob) as proc, sluice_backends(small_pg) as watch:
        results = asyncio.run(many_pg_clients(proxies, 300))
        assert results == [4] * 300  # every client finished every transaction
        assert watch.samples > 10
        print(f"peak {watch.peak} of 50 in {watch.samples} samples")
        assert 10 <= watch.peak <= 50, watch.peak  # 50% of the server's 100, all pools together
        targets = admin_show(proxies[0], "TARGETS")
    (target,) = [t for t in targets if t["target"] == f"{small_pg.host}:{small_pg.port}"]
    assert (target["max_connections"], target["server_max_connections"]) == ("50", "100")
    assert target["proxies"] == "pg-a,pg-b"
    assert "closed to make room for pool" in proc.log_text()


def admin_show(proxy: dict[str, object], what: str) -> list[dict[str, str | None]]:
    host, _, port = str(proxy["listen"]).rpartition(":")
    user, password = PG_USERS[0]
    with psycopg.connect(host=host, port=port, user=user, password=password,
                         dbname="sluice", sslmode="disable", autocommit=True) as admin:  # fmt: skip
        cur = admin.execute(f"SHOW {what}")
        assert cur.description is not None
        names = [col.name for col in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# ---- MySQL: users and capability profiles on one MariaDB ----

MY_USERS = [(APP_USER, APP_PASSWORD), (OTHER_USER, OTHER_PASSWORD), (NATIVE_USER, NATIVE_PASSWORD)]
PROFILES = [0, CLIENT.MULTI_STATEMENTS, CLIENT.FOUND_ROWS]


def my_proxies(mariadb: MariaDbCluster, limit: int) -> list[dict[str, object]]:
    users = [{"name": u, "password": p} for u, p in MY_USERS]
    return [
        mysql_proxy_config(mariadb, free_port(), name=name, users=users,
                           pool={"max_connections": limit, "borrow_timeout": 120})
        for name in ("my-a", "my-b")
    ]  # fmt: skip


def sluice_threads(mariadb: MariaDbCluster) -> PeakWatch:
    direct = pymysql.connect(host=mariadb.host, port=mariadb.port, user="root",
                             password=mariadb.superuser_password, autocommit=True)  # fmt: skip
    names = tuple(u for u, _ in MY_USERS)

    def count() -> int:
        with direct.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.processlist WHERE user IN %s",
                        (names,))  # fmt: skip
            (n,) = cur.fetchone()  # type: ignore[misc]
            return int(n)

    return PeakWatch(count)


def my_client(proxy: dict[str, object], index: int, results: list[int]) -> None:
    host, _, port = str(proxy["listen"]).rpartition(":")
    user, password = MY_USERS[index % len(MY_USERS)]
    flag = PROFILES[(index // len(MY_USERS)) % len(PROFILES)]
    conn = pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=APP_DB, client_flag=flag, connect_timeout=60,
                           read_timeout=120)  # fmt: skip
    try:
        for _ in range(4):
            conn.begin()
            with conn.cursor() as cur:
                cur.execute("SELECT SLEEP(0.01)")
            conn.commit()
            results[index] += 1
    finally:
        conn.close()


def test_mysql_users_and_profiles_stay_within_one_budget(mariadb: MariaDbCluster) -> None:
    direct_count = sluice_threads(mariadb)._count
    assert wait_for(lambda: direct_count() == 0, timeout=15)  # type: ignore[operator]
    proxies = my_proxies(mariadb, 6)
    results = [0] * 36
    with SluiceProcess(proxies) as proc, sluice_threads(mariadb) as watch:
        threads = [
            threading.Thread(target=my_client, args=(proxies[i % 2], i, results))
            for i in range(len(results))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        assert results == [4] * len(results)  # every client finished every transaction
        print(f"peak {watch.peak} of 6 in {watch.samples} samples")
        assert 3 <= watch.peak <= 6, watch.peak  # 18 pools (3 users x 3 profiles x 2 proxies)
    assert "closed to make room for pool" in proc.log_text()
