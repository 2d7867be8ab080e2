"""Failures through the MySQL proxy: what a client sees, and that nothing else is harmed.

Each test breaks one thing (a malformed or oversized packet, a command the proxy
cannot relay, a client or a backend killed mid-transaction or mid-query, a
KILL QUERY, a pool with nothing to lend, a plaintext login where TLS is
required, an idle client) and checks both sides: the client concerned gets a
prompt, correct MySQL error (or a closed connection) instead of a hang, and
every other client, the pool and the proxy process go on working. Pools have
one connection, so a connection leaked by a failure shows up at once as a
borrow timeout for the next client. Raw packets go over a bare socket, or over
the socket of a PyMySQL connection that has logged in.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeAlias

import pymysql
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    free_port,
    mysql_kwargs,
    mysql_proxy_config,
    wait_for,
)
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., SluiceProcess]
Conn: TypeAlias = "pymysql.connections.Connection[Any]"
Packet = tuple[int, bytes]

TABLE = "fault_rows"
COM_QUERY = 0x03
ERR = 0xFF


def connect(proc: SluiceProcess, **extra: Any) -> Conn:
    kwargs = {
        **mysql_kwargs(proc),
        "ssl_disabled": True,
        "autocommit": True,
        "connect_timeout": 10,
        "read_timeout": 30,
        "write_timeout": 30,
        **extra,
    }
    return pymysql.connect(**kwargs)


def one(conn: Conn, sql: str, args: Any = None) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        found = cur.fetchall()
    assert len(found) == 1, found
    return tuple(found[0])


def execute(conn: Conn, sql: str, args: Any = None) -> int:
    with conn.cursor() as cur:
        return int(cur.execute(sql, args))


def port_of(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


def assert_works(proc: SluiceProcess) -> None:
    """A new client logs in and queries at once (no leaked connection, proxy up)."""
    with connect(proc, read_timeout=10) as conn:
        assert one(conn, "select 6 * 7") == (42,)
    assert proc.proc is not None and proc.proc.poll() is None, proc.log_tail()


def err_of(payload: bytes) -> tuple[int, str, str]:
    """(error number, SQLSTATE, message) of an ERR payload."""
    assert payload[:1] == bytes((ERR,)), payload[:40]
    (code,) = struct.unpack_from("<H", payload, 1)
    if payload[3:4] == b"#":
        return code, payload[4:9].decode(), payload[9:].decode(errors="replace")
    return code, "", payload[3:].decode(errors="replace")


# ---------------------------------------------------------------- raw packets


def packet(payload: bytes, seq: int) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes((seq,)) + payload


def recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_packet(sock: socket.socket, timeout: float = 5.0) -> Packet | None:
    """The next packet, or None if the peer closed. Times out rather than hang."""
    sock.settimeout(timeout)
    head = recv_exactly(sock, 4)
    if head is None:
        return None
    size = head[0] | head[1] << 8 | head[2] << 16
    body = recv_exactly(sock, size)
    return None if body is None else (head[3], body)


def read_to_end(sock: socket.socket, timeout: float = 5.0) -> list[Packet]:
    """Every packet until the proxy closes the connection (socket.timeout if it never does)."""
    out = []
    while (got := read_packet(sock, timeout)) is not None:
        out.append(got)
    return out


def raw_greeting(proc: SluiceProcess) -> socket.socket:
    """A bare socket that has read the proxy's greeting (HandshakeV10)."""
    sock = socket.create_connection(("127.0.0.1", port_of(proc)), timeout=5)
    greeting = read_packet(sock)
    assert greeting is not None and greeting[1][:1] == b"\x0a", greeting
    return sock


ONE_CONNECTION = {"max_connections": 1, "borrow_timeout": 3}


@pytest.fixture
def proc(start_mysql_proxy: Start) -> SluiceProcess:
    """One backend connection: a connection leaked by a failure is a borrow timeout."""
    return start_mysql_proxy(pool=ONE_CONNECTION)


@pytest.fixture(scope="module")
def shared_proxy(mariadb: MariaDbCluster) -> Iterator[SluiceProcess]:
    with SluiceProcess([mysql_proxy_config(mariadb, free_port(), pool=ONE_CONNECTION)]) as proc:
        yield proc


@pytest.fixture
def shared(shared_proxy: SluiceProcess) -> Iterator[SluiceProcess]:
    """`proc`, one for all the malformed-packet tests: each must leave it unharmed (no
    connection leaked, no traceback in its log), which the next one checks again. The log
    lines of the test are printed after it."""
    start = len(shared_proxy.log_text())
    yield shared_proxy
    print(f"---- sluice log in this test ({shared_proxy.workdir}) ----")
    print(shared_proxy.log_text()[start:][-8000:])


@pytest.fixture
def bystander(shared: SluiceProcess) -> Iterator[Conn]:
    """A client logged in before the fault that must keep working after it."""
    conn = connect(shared)
    assert one(conn, "select 'before'") == ("before",)
    yield conn
    conn.close()


def assert_unharmed(proc: SluiceProcess, bystander: Conn) -> None:
    assert one(bystander, "select 'still here'") == ("still here",)
    assert_works(proc)
    assert "Traceback" not in proc.log_text(), proc.log_tail()


# ---------------------------------------------------------------- malformed login


@pytest.mark.parametrize(
    "payload",
    [
        b"\x85\xa6\x3f\x20\x00",  # capabilities and half a max-packet-size
        struct.pack("<IIB23x", 0x000FA685, 1 << 24, 45) + b"app",  # user name not terminated
        struct.pack("<IIB23x", 0x000FA685, 1 << 24, 45) + b"app\x00\x14abc",  # short auth data
    ],
    ids=["truncated-header", "unterminated-user", "short-auth-response"],
)
def test_malformed_handshake_response_refused(
    shared: SluiceProcess, bystander: Conn, payload: bytes
) -> None:
    sock = raw_greeting(shared)
    try:
        sock.sendall(packet(payload, 1))
        replies = read_to_end(sock)
    finally:
        sock.close()
    assert len(replies) == 1, replies
    code, state, _ = err_of(replies[0][1])
    assert code in (1043, 1045), replies  # bad handshake, or access denied
    assert state in ("08S01", "28000")
    assert_unharmed(shared, bystander)


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
    ids=["http-request", "tls-client-hello"],
)
def test_garbage_instead_of_a_handshake_response(
    shared: SluiceProcess, bystander: Conn, data: bytes
) -> None:
    """Bytes whose "length header" announces a packet that never comes complete."""
    sock = raw_greeting(shared)
    start = time.monotonic()
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the rest of the announced packet never comes
        replies = read_to_end(sock)
    finally:
        sock.close()
    assert time.monotonic() - start < 5
    for _, body in replies:
        assert body[:1] == bytes((ERR,)), replies
    assert_unharmed(shared, bystander)


def test_client_gone_in_the_middle_of_a_login_packet(
    shared: SluiceProcess, bystander: Conn
) -> None:
    sock = raw_greeting(shared)
    sock.sendall(struct.pack("<I", 200)[:3] + b"\x01" + b"\x85\xa6\x3f\x20")  # 4 of 200 bytes
    time.sleep(0.2)
    sock.close()
    time.sleep(0.2)
    assert_unharmed(shared, bystander)


# ---------------------------------------------------------------- malformed commands


def logged_in_socket(proc: SluiceProcess) -> tuple[Conn, socket.socket]:
    """A PyMySQL connection that has logged in, and its socket for raw packets."""
    conn = connect(proc)
    sock = conn._sock
    assert sock is not None
    return conn, sock


@pytest.mark.parametrize("in_transaction", [False, True], ids=["idle", "in-transaction"])
def test_empty_command_packet(
    shared: SluiceProcess, bystander: Conn, table: str, in_transaction: bool
) -> None:
    """MariaDB answers an empty command (read as COM_SLEEP) with 1047 and goes on; inside a
    transaction the proxy once raised IndexError and dropped the connection unanswered."""
    conn, sock = logged_in_socket(shared)
    try:
        execute(conn, f"delete from {table} where id = 71")
        if in_transaction:
            conn.begin()
            execute(conn, f"insert into {table} values (71, 1)")
        sock.sendall(packet(b"", 0))
        reply = read_packet(sock)
        assert reply is not None, "closed without an error packet"
        assert err_of(reply[1])[:2] == (1047, "08S01"), reply  # ER_UNKNOWN_COM_ERROR
        conn.commit()  # the transaction survived it
        assert one(conn, "select 'after the empty packet'") == ("after the empty packet",)
    finally:
        conn.close()
    assert_unharmed(shared, bystander)
    if in_transaction:
        with connect(shared) as check:
            assert one(check, f"select count(*) from {table} where id = 71") == (1,)


COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE = 0x17, 0x18, 0x19
COM_STMT_RESET, COM_STMT_FETCH = 0x1A, 0x1C
UNKNOWN_ID = struct.pack("<I", 99)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (bytes((COM_STMT_EXECUTE,)) + UNKNOWN_ID + b"\x00\x01\x00\x00\x00", 1243),
        (bytes((COM_STMT_EXECUTE,)) + UNKNOWN_ID, 1835),  # too short to be read at all
        (bytes((COM_STMT_EXECUTE,)), 1835),
        (bytes((COM_STMT_RESET,)) + UNKNOWN_ID, 1243),
        (bytes((COM_STMT_RESET,)), 1243),
        (bytes((COM_STMT_FETCH,)) + UNKNOWN_ID + b"\x01\x00\x00\x00", 1243),
        (bytes((COM_STMT_FETCH,)) + b"\x63", 1243),
        (bytes((COM_STMT_SEND_LONG_DATA,)) + UNKNOWN_ID + b"\x00\x00data", None),
        (bytes((COM_STMT_SEND_LONG_DATA,)), None),  # no reply, as from the server
        (bytes((COM_STMT_CLOSE,)) + UNKNOWN_ID, None),
        (bytes((COM_STMT_CLOSE,)) + b"\x63", None),
    ],
    ids=[
        "execute",
        "execute-no-flags",
        "execute-no-id",
        "reset",
        "reset-no-id",
        "fetch",
        "fetch-short-id",
        "send-long-data",
        "send-long-data-no-id",
        "close",
        "close-short-id",
    ],
)
@pytest.mark.parametrize("in_transaction", [False, True], ids=["idle", "in-transaction"])
def test_unknown_or_short_statement_command(
    shared: SluiceProcess, bystander: Conn, payload: bytes, error: int | None, in_transaction: bool
) -> None:
    """As MariaDB: 1243 for a statement id the client does not have, 1835 for a command
    too short for its fields, no reply where the server sends none; the session goes on
    (the proxy used to close it with 1043)."""
    conn, sock = logged_in_socket(shared)
    try:
        if in_transaction:
            conn.begin()
            one(conn, "select 'in a transaction'")
        sock.sendall(packet(payload, 0))
        if error is not None:
            reply = read_packet(sock)
            assert reply is not None, "closed without an error packet"
            assert err_of(reply[1])[:2] == (error, "HY000"), reply
        assert one(conn, "select 'after it'") == ("after it",)  # (no stray reply before)
        conn.commit()
    finally:
        conn.close()
    assert_unharmed(shared, bystander)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (b"\x00\x01\x00\x00\x00", 1210),  # one parameter: no null bitmap
        (b"\x00\x01\x00\x00\x00\x00\x01", 1210),  # types announced, not sent
        (b"\x00\x01\x00", 1835),
    ],
    ids=["no-bitmap", "no-types", "no-iterations"],
)
def test_malformed_execute_of_a_known_statement(
    shared: SluiceProcess, bystander: Conn, params: bytes, error: int
) -> None:
    conn, sock = logged_in_socket(shared)
    try:
        sql = b"select ?, 'malformed execute'"
        sock.sendall(packet(bytes((0x16,)) + sql, 0))  # COM_STMT_PREPARE
        prepared = read_to_ok_or_eof(sock)
        stmt_id = prepared[0][1][1:5]
        sock.sendall(packet(bytes((COM_STMT_EXECUTE,)) + stmt_id + params, 0))
        reply = read_packet(sock)
        assert reply is not None, "closed without an error packet"
        assert err_of(reply[1])[:2] == (error, "HY000"), reply
        assert one(conn, "select 'after it'") == ("after it",)
    finally:
        conn.close()
    assert_unharmed(shared, bystander)


def read_to_ok_or_eof(sock: socket.socket) -> list[Packet]:
    """A COM_STMT_PREPARE reply: its OK, then definitions ending in an EOF per block."""
    first = read_packet(sock)
    assert first is not None and first[1][:1] == b"\x00", first
    params, columns = struct.unpack_from("<HH", first[1], 5)
    out = [first]
    for block in (params, columns):
        for _ in range(block + (1 if block else 0)):  # definitions, then an EOF
            got = read_packet(sock)
            assert got is not None
            out.append(got)
    return out


def test_short_process_kill_is_answered_not_relayed(shared: SluiceProcess, bystander: Conn) -> None:
    """COM_PROCESS_KILL too short for a thread id is refused by the proxy, which owns thread
    ids, without a database connection (relayed, the server would read an id from beyond
    the packet): here the only connection is busy, and the answer comes at once."""
    conn, sock = logged_in_socket(shared)
    bystander.begin()
    try:
        one(bystander, "select 'holding the only connection'")
        start = time.monotonic()
        sock.sendall(packet(b"\x0c\x01", 0))  # COM_PROCESS_KILL with one byte of thread id
        reply = read_packet(sock)
        assert reply is not None, "closed without an error packet"
        assert err_of(reply[1])[:2] == (1094, "HY000"), reply  # ER_NO_SUCH_THREAD
        assert time.monotonic() - start < 2
        bystander.commit()
        assert one(conn, "select 'after it'") == ("after it",)
    finally:
        conn.close()
    assert_unharmed(shared, bystander)


def test_unknown_command_gets_an_error_and_the_session_goes_on(
    shared: SluiceProcess, bystander: Conn
) -> None:
    conn, sock = logged_in_socket(shared)
    try:
        sock.sendall(packet(b"\x99junk", 0))
        reply = read_packet(sock)
        assert reply is not None
        assert err_of(reply[1])[0] == 1047, reply  # ER_UNKNOWN_COM_ERROR, from the server
        assert one(conn, "select 'after unknown command'") == ("after unknown command",)
    finally:
        conn.close()
    assert_unharmed(shared, bystander)


@pytest.mark.parametrize("command", [0x12, 0x1E, 0xFE])
def test_command_the_proxy_does_not_relay(
    shared: SluiceProcess, bystander: Conn, command: int
) -> None:
    conn, sock = logged_in_socket(shared)
    try:
        sock.sendall(packet(bytes((command,)) + b"\x00" * 10, 0))
        reply = read_packet(sock)
        assert reply is not None, "closed without an error packet"
        assert err_of(reply[1])[:2] == (1047, "08S01"), reply  # ER_UNKNOWN_COM_ERROR
    finally:
        conn._force_close()
    assert_unharmed(shared, bystander)


def test_wrong_sequence_id_on_a_command(shared: SluiceProcess, bystander: Conn) -> None:
    """A command must start at sequence id 0; the proxy may refuse or renumber, not hang."""
    conn, sock = logged_in_socket(shared)
    try:
        sock.sendall(packet(b"\x03select 'seq 5'", 5))
        first = read_packet(sock)
        assert first is not None
        assert first[1][:1] == bytes((ERR,)) or first[1] == b"\x01", first  # ERR, or relayed
    finally:
        conn._force_close()
    assert_unharmed(shared, bystander)


def test_client_gone_in_the_middle_of_a_command_packet(
    shared: SluiceProcess, bystander: Conn
) -> None:
    conn, sock = logged_in_socket(shared)
    sock.sendall(struct.pack("<I", 100)[:3] + b"\x00" + b"\x03select")  # 7 of 100 bytes
    time.sleep(0.2)
    conn._force_close()
    time.sleep(0.2)
    assert_unharmed(shared, bystander)


# ---------------------------------------------------------------- oversized packets

MAX = 1024 * 1024


@pytest.fixture
def small_packets(start_mysql_proxy: Start) -> SluiceProcess:
    return start_mysql_proxy(
        glob={"max_packet_size": MAX}, pool={"max_connections": 1, "borrow_timeout": 3}
    )


def test_oversized_packet_refused_at_once(small_packets: SluiceProcess) -> None:
    """A header announcing more than max_packet_size is refused before any body arrives."""
    proc = small_packets
    bystander = connect(proc)
    conn, sock = logged_in_socket(proc)
    try:
        start = time.monotonic()
        sock.sendall(struct.pack("<I", MAX + 1)[:3] + b"\x00" + b"\x03select '")  # no body
        replies = read_to_end(sock)
        assert time.monotonic() - start < 3
        assert len(replies) <= 1, replies
        if replies:
            assert err_of(replies[0][1])[1] == "08S01", replies
        assert one(bystander, "select 'bystander'") == ("bystander",)
        assert_works(proc)
    finally:
        conn._force_close()
        bystander.close()


def test_oversized_login_packet_refused(small_packets: SluiceProcess) -> None:
    proc = small_packets
    sock = raw_greeting(proc)
    try:
        sock.sendall(b"\xff\xff\xff\x01" + b"\x85\xa6\x3f\x20")  # a 16 MB HandshakeResponse
        replies = read_to_end(sock)
    finally:
        sock.close()
    assert len(replies) <= 1, replies
    if replies:
        assert err_of(replies[0][1])[1] == "08S01", replies
    assert_works(proc)


def test_oversized_query_from_pymysql(small_packets: SluiceProcess) -> None:
    """A real 2 MB query: an error for that client, the pool's only connection unharmed."""
    proc = small_packets
    conn = connect(proc)
    try:
        with pytest.raises(pymysql.err.OperationalError) as info:
            one(conn, "select length(%s)", ("x" * (2 * MAX),))
        # the ERR, or a reset while PyMySQL still writes the 2 MB (gone away / lost)
        assert info.value.args[0] in (1153, 1043, 2006, 2013), info.value
        time.sleep(0.1)
        assert_works(proc)
        with connect(proc) as ok:  # just under the limit still passes
            assert one(ok, "select length(%s)", ("x" * (MAX - 100),)) == (MAX - 100,)
    finally:
        conn.close()


def test_oversized_packet_error_number(small_packets: SluiceProcess) -> None:
    conn, sock = logged_in_socket(small_packets)
    try:
        sock.sendall(struct.pack("<I", MAX + 1)[:3] + b"\x00")
        replies = read_to_end(sock)
    finally:
        conn._force_close()
    assert len(replies) == 1, replies
    assert err_of(replies[0][1])[:2] == (1153, "08S01")


# ---------------------------------------------------------------- clients that vanish


@pytest.fixture(scope="module")
def table(mariadb: MariaDbCluster) -> str:
    mariadb.sql(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id int PRIMARY KEY, v int NOT NULL);"
        f"INSERT IGNORE INTO {TABLE} SELECT seq, 0 FROM seq_1_to_10",
        db=APP_DB,
    )
    return TABLE


def open_transactions(mariadb: MariaDbCluster) -> int:
    """InnoDB transactions open on the server.

    InnoDB refreshes INNODB_TRX only when it was not read for 100 ms: poll it more
    slowly than that (`transactions_drop_to`), or it shows the same rows forever.
    """
    return int(mariadb.sql("SELECT COUNT(*) FROM information_schema.INNODB_TRX"))


def transactions_drop_to(mariadb: MariaDbCluster, count: int, timeout: float) -> bool:
    return wait_for(lambda: open_transactions(mariadb) == count, timeout, interval=0.3)


def running(mariadb: MariaDbCluster, marker: str) -> list[int]:
    """Thread ids of backend connections whose running statement contains `marker`."""
    out = mariadb.sql(
        "SELECT ID FROM information_schema.PROCESSLIST "
        f"WHERE INFO LIKE '%{marker}%' AND ID <> CONNECTION_ID()"
    )
    return [int(v) for v in out.split()]


def no_lock_left(proc: SluiceProcess, table: str, row: int) -> None:
    """Another client updates the row within a few seconds (it is not locked any more)."""
    with connect(proc) as conn:
        execute(conn, "set session innodb_lock_wait_timeout = 5")
        conn.begin()
        start = time.monotonic()
        assert execute(conn, f"update {table} set v = v + 1 where id = %s", (row,)) == 1
        conn.commit()
        assert time.monotonic() - start < 5


def test_pymysql_socket_closed_mid_transaction(
    proc: SluiceProcess, mariadb: MariaDbCluster, table: str
) -> None:
    conn = connect(proc)
    conn.begin()
    execute(conn, f"update {table} set v = v + 1 where id = 1")
    assert open_transactions(mariadb) == 1
    assert conn._sock is not None
    conn._sock.shutdown(socket.SHUT_RDWR)  # no COM_QUIT: the socket just goes
    conn._sock.close()
    assert transactions_drop_to(mariadb, 0, 5), "the transaction lives on"
    no_lock_left(proc, table, 1)
    assert_works(proc)


def test_killed_mariadb_client_mid_transaction(
    proc: SluiceProcess, mariadb: MariaDbCluster, table: str
) -> None:
    cmd = [
        "mariadb",
        "--no-defaults",
        "--skip-ssl",
        "-h",
        "127.0.0.1",
        "-P",
        str(port_of(proc)),
        "-u",
        APP_USER,
        f"-p{APP_PASSWORD}",
        APP_DB,
    ]
    cli = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert cli.stdin is not None
        cli.stdin.write(f"begin;\nupdate {table} set v = v + 1 where id = 2;\n".encode())
        cli.stdin.flush()
        assert transactions_drop_to(mariadb, 1, 10)
    finally:
        cli.kill()
        cli.wait(5)
    assert transactions_drop_to(mariadb, 0, 5), "the transaction lives on"
    no_lock_left(proc, table, 2)
    assert_works(proc)


def test_client_gone_mid_query_in_a_transaction(
    proc: SluiceProcess, mariadb: MariaDbCluster, table: str
) -> None:
    """The backend stops the query and rolls back: no lock held for the query's duration."""
    conn = connect(proc)
    conn.begin()
    execute(conn, f"update {table} set v = v + 1 where id = 3")
    conn._execute_command(COM_QUERY, "select sleep(30), 'gone-mid-query'")  # no reply read
    assert wait_for(lambda: len(running(mariadb, "gone-mid-query")) == 1)
    conn._force_close()
    start = time.monotonic()
    assert wait_for(lambda: running(mariadb, "gone-mid-query") == [], 8), "still sleeping"
    assert transactions_drop_to(mariadb, 0, 5)
    assert time.monotonic() - start < 8
    no_lock_left(proc, table, 3)
    assert_works(proc)


def test_client_gone_while_waiting_for_a_connection(proc: SluiceProcess) -> None:
    holder, waiter = connect(proc), connect(proc)  # PyMySQL's login runs SET NAMES
    try:
        holder.begin()
        one(holder, "select 'holding'")
        waiter._execute_command(COM_QUERY, "select 'queued'")
        time.sleep(0.3)  # waiting for the only connection
        waiter._force_close()
        time.sleep(0.2)
        holder.commit()
        assert_works(proc)
        assert one(holder, "select 2") == (2,)
    finally:
        holder.close()


# ---------------------------------------------------------------- backend failures


def in_thread(fn: Callable[[], Any]) -> Future[Any]:
    pool = ThreadPoolExecutor(1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    return fut


def kill_thread(mariadb: MariaDbCluster, thread_id: int) -> None:
    mariadb.sql(f"KILL CONNECTION {thread_id}")


def test_backend_killed_mid_query(proc: SluiceProcess, mariadb: MariaDbCluster) -> None:
    conn = connect(proc)
    try:
        fut = in_thread(lambda: one(conn, "select sleep(10), 'killed-backend-marker'"))
        assert wait_for(lambda: len(running(mariadb, "killed-backend-marker")) == 1)
        start = time.monotonic()
        kill_thread(mariadb, running(mariadb, "killed-backend-marker")[0])
        with pytest.raises(pymysql.err.OperationalError):
            fut.result(timeout=5)
        assert time.monotonic() - start < 5
    finally:
        conn.close()
    assert_works(proc)
    assert_works(proc)


def test_all_backends_killed(proc: SluiceProcess, mariadb: MariaDbCluster) -> None:
    """kill_connections('app') while one query runs: that client errs, new clients work."""
    idle_client = connect(proc)
    busy = connect(proc)
    try:
        assert one(idle_client, "select 'pooled'") == ("pooled",)
        fut = in_thread(lambda: one(busy, "select sleep(10), 'all-killed-marker'"))
        assert wait_for(lambda: len(running(mariadb, "all-killed-marker")) == 1)
        start = time.monotonic()
        assert mariadb.kill_connections(APP_USER) >= 1
        with pytest.raises(pymysql.err.OperationalError):
            fut.result(timeout=5)
        assert time.monotonic() - start < 5
        assert one(idle_client, "select 'new backend'") == ("new backend",)
    finally:
        idle_client.close()
        busy.close()
    assert_works(proc)


def test_backend_killed_while_client_idle_in_transaction(
    proc: SluiceProcess, mariadb: MariaDbCluster
) -> None:
    conn = connect(proc)
    try:
        conn.begin()
        (backend,) = one(conn, "select connection_id()")
        kill_thread(mariadb, backend)
        start = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError):
            one(conn, "select 'after kill'")
        assert time.monotonic() - start < 3
    finally:
        conn.close()
    assert_works(proc)


def test_pinned_gauge_recovers_when_the_backend_dies(
    start_mysql_proxy: Start, mariadb: MariaDbCluster
) -> None:
    port = free_port()
    proc = start_mysql_proxy(glob={"metrics_listen": f"127.0.0.1:{port}"})
    gauge = "sluice_database_connections_currently_session_pinned"
    conn = connect(proc)
    try:
        execute(conn, "set @pinned_by = 'a user variable'")
        (backend,) = one(conn, "select connection_id()")
        assert scrape(port, gauge) == 1
        kill_thread(mariadb, backend)
        with pytest.raises(pymysql.err.OperationalError):
            one(conn, "select 'after kill'")
        assert wait_for(lambda: scrape(port, gauge) == 0), "pinned gauge leaked"
    finally:
        conn.close()
    assert_works(proc)


def scrape(port: int, name: str) -> float:
    """The sum of a metric's samples on the proxy's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_pooled_idle_backend_killed(proc: SluiceProcess, mariadb: MariaDbCluster) -> None:
    conn = connect(proc)
    try:
        (backend,) = one(conn, "select connection_id()")
        kill_thread(mariadb, backend)
        time.sleep(0.2)
        assert one(conn, "select 'fresh connection'") == ("fresh connection",)
    finally:
        conn.close()
    assert_works(proc)


# ---------------------------------------------------------------- KILL from the client


@pytest.fixture
def two(start_mysql_proxy: Start) -> SluiceProcess:
    return start_mysql_proxy(pool={"max_connections": 2, "borrow_timeout": 5})


def test_kill_query_from_own_second_connection(two: SluiceProcess, mariadb: MariaDbCluster) -> None:
    proc = two
    victim, killer = connect(proc), connect(proc)
    try:
        fut = in_thread(lambda: one(victim, "select sleep(30), 'kill-query-marker'"))
        assert wait_for(lambda: len(running(mariadb, "kill-query-marker")) == 1)
        start = time.monotonic()
        execute(killer, f"KILL QUERY {victim.thread_id()}")
        try:
            result = fut.result(timeout=5)
        except pymysql.err.OperationalError as exc:
            assert exc.args[0] == 1317, exc  # ER_QUERY_INTERRUPTED
        else:
            assert result == (1, "kill-query-marker")  # MariaDB's SLEEP returns 1 when killed
        assert time.monotonic() - start < 5
        assert one(victim, "select 'victim goes on'") == ("victim goes on",)
        assert one(killer, "select 'killer goes on'") == ("killer goes on",)
    finally:
        victim.close()
        killer.close()


def test_kill_query_while_waiting_for_a_connection(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1, "borrow_timeout": 20})
    holder, waiter = connect(proc), connect(proc)
    try:
        holder.begin()
        one(holder, "select 'holding the only connection'")
        fut = in_thread(lambda: one(waiter, "select 'never ran'"))
        time.sleep(0.5)
        start = time.monotonic()
        execute(holder, f"KILL QUERY {waiter.thread_id()}")
        with pytest.raises(pymysql.err.OperationalError) as info:
            fut.result(timeout=5)
        assert info.value.args[0] == 1317
        assert time.monotonic() - start < 3
        holder.commit()
        assert one(waiter, "select 'after cancel'") == ("after cancel",)
    finally:
        holder.close()
        waiter.close()


def test_kill_connection_of_own_session(two: SluiceProcess) -> None:
    proc = two
    victim, killer = connect(proc), connect(proc)
    try:
        execute(killer, f"KILL {victim.thread_id()}")
        with pytest.raises(pymysql.err.OperationalError):
            one(victim, "select 'after kill'")
        assert one(killer, "select 'killer goes on'") == ("killer goes on",)
    finally:
        victim.close()
        killer.close()
    assert_works(proc)


def test_kill_of_another_users_session_is_refused(two: SluiceProcess) -> None:
    proc = two
    mine = connect(proc)
    theirs = connect(proc, user=OTHER_USER, password=OTHER_PASSWORD)
    try:
        for sql in (f"KILL QUERY {mine.thread_id()}", f"KILL {mine.thread_id()}", "KILL 12345"):
            with pytest.raises(pymysql.err.OperationalError) as info:
                execute(theirs, sql)
            assert info.value.args[0] == 1094, info.value  # ER_NO_SUCH_THREAD
        assert one(mine, "select 'untouched'") == ("untouched",)
    finally:
        mine.close()
        theirs.close()


# ---------------------------------------------------------------- pool limits


def test_borrow_timeout_9501_then_client_usable(start_mysql_proxy: Start, table: str) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1, "borrow_timeout": 1})
    holder, waiter = connect(proc), connect(proc)
    try:
        holder.begin()
        execute(holder, f"update {table} set v = 0 where id = 4")
        start = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info:
            execute(waiter, f"update {table} set v = -100 where id = 4")
        elapsed = time.monotonic() - start
        assert info.value.args[0] == 9501, info.value
        assert 0.8 <= elapsed <= 3.0, elapsed
        assert one(holder, f"select v from {table} where id = 4") == (0,)  # holder unharmed
        holder.commit()
        assert one(waiter, "select 'after timeout'") == ("after timeout",)
        time.sleep(0.3)
        assert one(holder, f"select v from {table} where id = 4") == (0,)  # never ran later
    finally:
        holder.close()
        waiter.close()


def test_borrow_timeout_error_packet(start_mysql_proxy: Start) -> None:
    """The raw ERR: 9501 with SQLSTATE HY000 (not class 08: drivers keep the connection)."""
    proc = start_mysql_proxy(pool={"max_connections": 1, "borrow_timeout": 1})
    holder = connect(proc)
    conn, sock = logged_in_socket(proc)
    try:
        holder.begin()
        one(holder, "select 1")
        sock.sendall(packet(b"\x03select 2", 0))
        reply = read_packet(sock)
        assert reply is not None
        assert reply[0] == 1
        code, state, message = err_of(reply[1])
        assert (code, state) == (9501, "HY000"), message
        holder.commit()
        assert one(conn, "select 'usable'") == ("usable",)
    finally:
        holder.close()
        conn.close()


# ---------------------------------------------------------------- TLS required


def test_require_tls_refuses_plaintext_with_3159(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(require_tls=True)
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proc)
    assert info.value.args[0] == 3159, info.value
    sock = raw_greeting(proc)  # the raw answer to a plaintext HandshakeResponse
    try:
        response = struct.pack("<IIB23x", 0x000FA685, 1 << 24, 45) + b"app\x00\x00"
        sock.sendall(packet(response, 1))
        replies = read_to_end(sock)
    finally:
        sock.close()
    assert len(replies) == 1 and replies[0][0] == 2, replies
    assert err_of(replies[0][1])[:2] == (3159, "HY000")
    assert proc.proc is not None and proc.proc.poll() is None
    # A TLS login is test_tls_client_hello_right_after_the_ssl_request's (PyMySQL's own
    # TLS logins fail now and then because of the bug that test shows).


def ssl_request(capabilities: int = 0x000FAA85) -> bytes:
    """An SSLRequest packet (CLIENT_SSL and CLIENT_PROTOCOL_41 among the capabilities)."""
    return packet(struct.pack("<IIB23x", capabilities, 1 << 24, 45), 1)


def client_hello() -> tuple[ssl.SSLObject, ssl.MemoryBIO, bytes]:
    """A TLS client in memory and its first flight (the ClientHello record)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return tls, incoming, outgoing.read()


@pytest.mark.parametrize(
    "together",
    [
        pytest.param(False, id="apart"),
        pytest.param(True, id="same-segment"),
    ],
)
def test_tls_client_hello_right_after_the_ssl_request(
    start_mysql_proxy: Start, together: bool
) -> None:
    """A MySQL client starts TLS right after its SSLRequest, without waiting for an answer,
    so the ClientHello often arrives in the same read: it belongs to the TLS handshake."""
    proc = start_mysql_proxy(require_tls=True)
    tls, incoming, hello = client_hello()
    sock = raw_greeting(proc)
    try:
        if together:
            sock.sendall(ssl_request() + hello)
        else:
            sock.sendall(ssl_request())
            time.sleep(0.2)
            sock.sendall(hello)
        sock.settimeout(5)
        answer = sock.recv(65536)
        assert answer[:1] == b"\x16", answer[:60]  # a TLS handshake record: the ServerHello
        while True:
            incoming.write(answer)
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                answer = sock.recv(65536)
                assert answer, "the proxy closed during the TLS handshake"
        assert tls.version() is not None
    finally:
        sock.close()
    assert proc.proc is not None and proc.proc.poll() is None


# ---------------------------------------------------------------- idle clients


def test_idle_client_timeout_closes_an_idle_client(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"idle_client_timeout": 1})
    idle = connect(proc)
    busy = connect(proc)
    in_transaction = connect(proc)
    stop = threading.Event()

    def keep_busy() -> None:
        while not stop.wait(0.3):
            one(busy, "select 'busy'")

    worker = threading.Thread(target=keep_busy)
    worker.start()
    try:
        assert one(idle, "select 'soon idle'") == ("soon idle",)
        in_transaction.begin()
        one(in_transaction, "select 'open transaction'")
        assert idle._sock is not None
        replies = read_to_end(idle._sock, timeout=5)  # the proxy closes it within ~2 s
        assert [err_of(body)[0] for _, body in replies] in ([], [1159]), replies
        with pytest.raises(pymysql.err.OperationalError):
            one(idle, "select 'too late'")
        assert one(in_transaction, "select 'still in transaction'") == ("still in transaction",)
        in_transaction.commit()
    finally:
        stop.set()
        worker.join(5)
        for conn in (idle, busy, in_transaction):
            conn.close()
    assert "idle client timeout" in proc.log_text()
    assert_works(proc)
