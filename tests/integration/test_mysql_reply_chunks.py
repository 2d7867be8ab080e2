"""Server replies that reach Sluice in pieces of any size, through real clients.

Sluice forwards the server's reply bytes as they came, walking only the packet
headers (`ReplyStream`), so how the server's stream is cut into reads must not
matter. A TCP hop between Sluice and MariaDB (`Dribble`) hands the server's bytes
on one at a time, each in its own send, so that a reply reaches Sluice cut at
(nearly) every byte boundary; or in pieces of random sizes, for values of 20 MB
(rows in several packets). Text results (PyMySQL, the mariadb client), binary
ones (mysql-connector's prepared statements), the compressed protocol, an error
and a transaction all go through unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, mysql_kwargs
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(300)

Start = Callable[..., SluiceProcess]
BIG = 20 * 1024 * 1024
HUNDRED = "select seq, concat('row-', seq), if(seq % 7, seq * 2, null) from seq_1_to_100"
HUNDRED_ROWS = [(i, f"row-{i}", None if i % 7 == 0 else i * 2) for i in range(1, 101)]


class Dribble:
    """A TCP hop to MariaDB that passes the client's bytes on as they come and the
    server's in pieces of `piece()` bytes, one send each (TCP_NODELAY, a short pause
    after each small one so that each is a read of its own on the other side)."""

    def __init__(self, port: int, piece: Callable[[], int]) -> None:
        self.port, self.piece = port, piece
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listen_port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.closed = False
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.port))
            for sock in (down, up):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [down, up]
            for args in ((down, up, False), (up, down, True)):
                self.threads.append(threading.Thread(target=self._pump, args=args, daemon=True))
                self.threads[-1].start()

    def _pump(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 20):
                if not cut:
                    dst.sendall(data)
                    continue
                pos = 0
                while pos < len(data):
                    size = self.piece()
                    dst.sendall(data[pos : pos + size])
                    pos += size
                    if size < 64:
                        time.sleep(0.0002)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close every connection, the server's side too (a socket closed while a thread
        waits in recv on it would stay connected)."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def dribbled(
    start_mysql_proxy: Start, mariadb: MariaDbCluster
) -> Iterator[Callable[[Callable[[], int]], SluiceProcess]]:
    hops: list[Dribble] = []

    def start(piece: Callable[[], int]) -> SluiceProcess:
        hop = Dribble(mariadb.port, piece)
        hops.append(hop)
        target = {"host": "127.0.0.1", "port": hop.listen_port}
        return start_mysql_proxy(target=target, pool={"max_connections": 1})

    yield start
    for hop in hops:
        hop.close()


def _pymysql(proc: SluiceProcess, **extra: Any) -> Any:
    return pymysql.connect(
        **mysql_kwargs(proc),
        autocommit=True,
        connect_timeout=30,
        read_timeout=60,
        client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
        **extra,
    )


def _connector(proc: SluiceProcess, **extra: Any) -> Any:
    return mysql.connector.connect(
        **mysql_kwargs(proc), ssl_disabled=True, autocommit=True, connection_timeout=60, **extra
    )


def _text_round(conn: Any) -> None:
    """A point select, 100 rows with NULLs, an error, a transaction, a multi-result."""
    with conn.cursor() as cur:
        cur.execute("select 42")
        assert cur.fetchall() == ((42,),)
        cur.execute(HUNDRED)
        assert [tuple(row) for row in cur.fetchall()] == HUNDRED_ROWS
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("select * from no_such_table_here")
        cur.execute("begin")
        cur.execute("select count(*) from seq_1_to_10")
        assert cur.fetchall() == ((10,),)
        cur.execute("commit")
        cur.execute("select 1; select 'two', 2")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == (("two", 2),)


def _binary_round(conn: Any) -> None:
    """The same through binary-protocol prepared statements."""
    cur = conn.cursor(prepared=True)
    cur.execute("select ? + 1", (41,))
    assert cur.fetchall() == [(42,)]
    cur.execute(HUNDRED + " where seq > ?", (0,))
    assert [(a, b.decode() if isinstance(b, bytes) else b, c) for a, b, c in cur.fetchall()] == (
        HUNDRED_ROWS
    )
    with pytest.raises(mysql.connector.Error):
        cur.execute("select * from no_such_table_here where 1 = ?", (1,))
    cur.execute("select ? as v", ("after the error",))
    assert cur.fetchall() == [("after the error",)]
    cur.close()


def test_replies_cut_at_every_byte(dribbled: Callable[[Callable[[], int]], SluiceProcess]) -> None:
    proc = dribbled(lambda: 1)
    conn = _pymysql(proc)
    try:
        _text_round(conn)
    finally:
        conn.close()
    conn = _connector(proc)
    try:
        _binary_round(conn)
    finally:
        conn.close()
    for use_pure in (True, False):  # the compressed protocol, both implementations
        conn = _connector(proc, compress=True, use_pure=use_pure)
        try:
            _binary_round(conn)
            cur = conn.cursor()
            cur.execute(HUNDRED)
            assert [tuple(row) for row in cur.fetchall()] == HUNDRED_ROWS
            cur.close()
        finally:
            conn.close()


def test_mariadb_client_with_replies_cut_at_every_byte(
    dribbled: Callable[[Callable[[], int]], SluiceProcess],
) -> None:
    proc = dribbled(lambda: 1)
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    for extra in ([], ["--compress"]):
        out = subprocess.run(
            ["mariadb", "-h", host, "-P", port, "-u", APP_USER, APP_DB, "-N", "-B", *extra],
            input=HUNDRED + "; select 'end';\n",
            env={**os.environ, "MYSQL_PWD": APP_PASSWORD},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        expected = [f"{a}\trow-{a}\t{'NULL' if c is None else c}" for a, _, c in HUNDRED_ROWS]
        assert out.splitlines() == [*expected, "end"]


def test_20mb_values_in_random_pieces(
    dribbled: Callable[[Callable[[], int]], SluiceProcess], mariadb: MariaDbCluster
) -> None:
    """Rows of 20 MB (several packets each) reach Sluice cut anywhere; text and binary."""
    rng = random.Random(1234)
    proc = dribbled(lambda: rng.choice((1, 3, 4, 5, 1000, 65536, 1 << 20, 3 << 20)))
    value = random.Random(5).randbytes(BIG)
    digest = hashlib.md5(value).hexdigest()
    mariadb.sql(
        f"DROP TABLE IF EXISTS {APP_DB}.chunk_values;"
        f"CREATE TABLE {APP_DB}.chunk_values (id int primary key, v longblob)"
    )
    try:
        conn = _pymysql(proc, max_allowed_packet=64 * 1024 * 1024)
        try:
            with conn.cursor() as cur:
                cur.execute("insert into chunk_values values (1, %s)", (value,))
                for _ in range(2):
                    cur.execute("select v, 'after' from chunk_values where id = 1")
                    assert cur.fetchall() == ((value, "after"),)
                    cur.execute("select length(v), md5(v) from chunk_values")
                    assert cur.fetchall() == ((BIG, digest),)
        finally:
            conn.close()
        conn = _connector(proc)
        try:
            cur = conn.cursor(prepared=True)
            for _ in range(2):
                cur.execute("select v, ? from chunk_values where id = 1", ("after",))
                assert cur.fetchall() == [(value, "after")]
            cur.close()
        finally:
            conn.close()
    finally:
        mariadb.sql(f"DROP TABLE IF EXISTS {APP_DB}.chunk_values")
