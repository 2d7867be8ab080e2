"""Random and mutated byte streams against a running `sluice proxy`, both engines.

Each example opens a connection (before login, or after a real login), sends the
bytes in random pieces, closes its sending side and reads what comes back. The
proxy must answer in the engine's own framing (PostgreSQL messages, MySQL packets)
or close, and after every example: the process is up, a client that connected
before the attack still queries, no database connection has leaked (pools have
two), and the log holds no traceback (an exception that escaped a handler).
Examples are few so `make test` stays quick; SLUICE_FUZZ_EXAMPLES multiplies them.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pymysql
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzzing import chunks, examples, noise, sequences
from helpers import APP_DB, dsn, mysql_kwargs
from rawpg import RawClient
from sluice.devtools.runner import SluiceProcess
from sluice.wire.mysql import commands as my_cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import handshake as my_hs
from sluice.wire.mysql.packets import frame
from sluice.wire.pg import messages as m

pytestmark = pytest.mark.timeout(300)

WIRE = settings(
    max_examples=examples(25),
    deadline=None,  # sockets: the per-read timeouts below bound each example
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
POOL = {"max_connections": 2, "borrow_timeout": 2}
READ_TIMEOUT = 5.0  # the proxy closes at once after our EOF; longer means it hangs
CUTS = st.lists(st.integers(0, 400), max_size=4)
IN_TRANSACTION = st.booleans()  # after login: whether a transaction is open first


def port_of(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


def send_and_read(sock: socket.socket, stream: bytes, cuts: list[int]) -> bytes:
    """Send `stream` in pieces, close our side, and read until the proxy closes."""
    try:
        for piece in chunks(stream, cuts):
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the proxy closed already (it may refuse at the first bad byte)
    sock.settimeout(READ_TIMEOUT)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the proxy neither answered nor closed in {READ_TIMEOUT}s after EOF")
    finally:
        sock.close()
    return data


def log_size(proc: SluiceProcess) -> int:
    return len(proc.log_text())


def assert_unharmed(proc: SluiceProcess, check: Callable[[], None], log_from: int) -> None:
    """The proxy is up, `check` passes, and the log written since `log_from` is clean."""
    assert proc.proc is not None and proc.proc.poll() is None, proc.log_tail()
    check()
    log = proc.log_text()[log_from:]
    for mark in ("Traceback", "internal error"):
        at = log.find(mark)
        assert at < 0, log[max(0, at - 300) : at + 2500]


# ---------------------------------------------------------------- PostgreSQL

PG_BACKEND_TYPES = frozenset(b"123AcCdDEGHIKnNRsStTVWZv")
PG_STARTUP = [
    m.startup_message({"user": "app", "database": APP_DB}),
    m.startup_message({"user": "app", "database": APP_DB, "options": "-c search_path=x"}),
    m.ssl_request(),
    m.cancel_request(1, 2),
    struct.pack("!II", 8, 80877104),  # GSSENCRequest
    m.startup_message({"user": "app", "database": APP_DB})
    + m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=fuzznonce"),
]
PG_COMMANDS = [
    m.query("select 1"),
    m.query("begin"),
    m.query("commit"),
    m.query("select 'a'::text, 2"),
    m.query("set application_name = 'fuzz'"),
    m.parse(b"", b"select $1::int\x00\x00\x01\x00\x00\x00\x17"),
    m.parse(b"s1", b"select 1\x00\x00\x00"),
    m.message(b"B", b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x017\x00\x00"),
    m.message(b"B", b"\x00s1\x00\x00\x00\x00\x00\x00\x00"),
    m.message(b"D", b"Ss1\x00"),
    m.message(b"D", b"P\x00"),
    m.message(b"E", b"\x00\x00\x00\x00\x00"),
    m.close_statement(b"s1"),
    m.message(b"H"),
    m.message(b"S"),
    m.message(b"d", b"copy data"),
    m.message(b"F", b"\x00\x00\x04\xb0\x00\x00\x00\x00\x00\x00"),
]


def pg_reply_ok(data: bytes, *, relayed: bool) -> bool:
    """PostgreSQL framing: an optional one-byte answer to SSLRequest/GSSENCRequest ('N';
    'S' then TLS), then messages of backend types (a relayed reply may be cut short)."""
    if data[:1] == b"S":
        return True  # TLS follows: its records are not ours to check
    pos = 0
    while data[pos : pos + 1] == b"N" and not _pg_message_at(data, pos):
        pos += 1
    while pos < len(data):
        if len(data) - pos < 5:
            return relayed
        kind, length = data[pos], struct.unpack_from("!I", data, pos + 1)[0]
        if kind not in PG_BACKEND_TYPES or length < 4:
            return False
        if pos + 1 + length > len(data):
            return relayed
        pos += 1 + length
    return True


def _pg_message_at(data: bytes, pos: int) -> bool:
    if len(data) - pos < 5:
        return False
    length = struct.unpack_from("!I", data, pos + 1)[0]
    return 4 <= length <= len(data) - pos - 1


@pytest.fixture
def pg_proxy(start_sluice: Callable[..., SluiceProcess]) -> SluiceProcess:
    return start_sluice(pool=POOL)


@pytest.fixture
def pg_bystander(pg_proxy: SluiceProcess) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn(pg_proxy), autocommit=True, connect_timeout=5) as conn:
        yield conn


def pg_check(proc: SluiceProcess, bystander: psycopg.Connection[Any]) -> Callable[[], None]:
    def check() -> None:
        assert bystander.execute("select 'bystander'").fetchone() == ("bystander",)
        with psycopg.connect(dsn(proc), connect_timeout=5) as fresh:
            assert fresh.execute("select 6 * 7").fetchone() == (42,)

    return check


@WIRE
@given(stream=noise(PG_STARTUP), cuts=CUTS)
def test_pg_before_login(
    pg_proxy: SluiceProcess, pg_bystander: psycopg.Connection[Any], stream: bytes, cuts: list[int]
) -> None:
    log_from = log_size(pg_proxy)
    sock = socket.create_connection(("127.0.0.1", port_of(pg_proxy)), timeout=5)
    reply = send_and_read(sock, stream, cuts)
    assert pg_reply_ok(reply, relayed=False), reply[:200]
    assert_unharmed(pg_proxy, pg_check(pg_proxy, pg_bystander), log_from)


@WIRE
@given(stream=sequences(PG_COMMANDS), cuts=CUTS, in_transaction=IN_TRANSACTION)
def test_pg_after_login(
    pg_proxy: SluiceProcess,
    pg_bystander: psycopg.Connection[Any],
    stream: bytes,
    cuts: list[int],
    in_transaction: bool,
) -> None:
    log_from = log_size(pg_proxy)
    raw = RawClient(port_of(pg_proxy))
    raw.login()
    if in_transaction:
        assert raw.query("begin")[-1] == (b"Z", b"T")
    reply = send_and_read(raw.sock, stream, cuts)
    assert pg_reply_ok(reply, relayed=True), reply[:200]
    assert_unharmed(pg_proxy, pg_check(pg_proxy, pg_bystander), log_from)


# ---------------------------------------------------------------- MySQL

CAPS = (
    c.CLIENT_PROTOCOL_41
    | c.CLIENT_SECURE_CONNECTION
    | c.CLIENT_PLUGIN_AUTH
    | c.CLIENT_LONG_PASSWORD
    | c.CLIENT_TRANSACTIONS
)
MY_LOGIN = [
    frame(
        my_hs.build_handshake_response(
            my_hs.HandshakeResponse(
                capabilities=CAPS | c.CLIENT_CONNECT_WITH_DB | c.CLIENT_CONNECT_ATTRS,
                user="app",
                auth_response=b"\x01" * 20,
                database=APP_DB,
                auth_plugin=c.NATIVE_PASSWORD,
                attributes={"_client_name": "fuzz"},
            )
        ),
        1,
    ),
    frame(my_hs.build_handshake_response(my_hs.HandshakeResponse(CAPS, "app")), 1),
    frame(my_hs.build_ssl_request(CAPS | c.CLIENT_SSL, 1 << 24, 45), 1),
]
MY_COMMANDS = [
    frame(payload, 0)
    for payload in (
        my_cmd.query("select 1"),
        my_cmd.query("begin"),
        my_cmd.query("commit"),
        my_cmd.query("set @fuzz = 1"),
        my_cmd.PING,
        my_cmd.init_db(APP_DB),
        my_cmd.stmt_prepare("select ?"),
        bytes((c.COM_STMT_EXECUTE,))
        + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00"
        + b"\x07\x00\x00\x00\x00\x00\x00\x00",
        my_cmd.stmt_reset(1),
        my_cmd.stmt_close(1),
        bytes((c.COM_STMT_FETCH,)) + b"\x01\x00\x00\x00\x01\x00\x00\x00",
        bytes((c.COM_STMT_SEND_LONG_DATA,)) + b"\x01\x00\x00\x00\x00\x00data",
        bytes((c.COM_FIELD_LIST,)) + b"t\x00",
        bytes((c.COM_STATISTICS,)),
        my_cmd.set_option(1),
        my_cmd.RESET_CONNECTION,
        b"",  # an empty command packet
        b"\x99junk",  # no such command
    )
]
_TLS_RECORD = frozenset((0x14, 0x15, 0x16, 0x17))


def my_reply_ok(data: bytes, *, relayed: bool) -> bool:
    """MySQL framing: whole packets (3-byte length, sequence id); before login, the greeting
    first (protocol 10), then OK/ERR/auth packets or TLS records after an SSLRequest."""
    pos, first = 0, True
    while pos < len(data):
        if (
            first is False
            and not relayed
            and data[pos] in _TLS_RECORD
            and data[pos + 1 : pos + 2] == b"\x03"
        ):
            return True  # the client asked for TLS: records follow
        if len(data) - pos < 4:
            return relayed
        size = int.from_bytes(data[pos : pos + 3], "little")
        payload = data[pos + 4 : pos + 4 + size]
        if len(payload) < size:
            return relayed
        if not relayed and first and payload[:1] != b"\x0a":
            return False  # no greeting
        if not relayed and not first and payload[:1] not in (b"\x00", b"\xff", b"\xfe", b"\x01"):
            return False
        first = False
        pos += 4 + size
    return True


@pytest.fixture
def my_proxy(start_mysql_proxy: Callable[..., SluiceProcess]) -> SluiceProcess:
    return start_mysql_proxy(pool=POOL)


def my_connect(proc: SluiceProcess) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        **mysql_kwargs(proc), autocommit=True, connect_timeout=5, read_timeout=10
    )


@pytest.fixture
def my_bystander(my_proxy: SluiceProcess) -> Iterator[pymysql.connections.Connection[Any]]:
    conn = my_connect(my_proxy)
    yield conn
    conn.close()


def my_check(
    proc: SluiceProcess, bystander: pymysql.connections.Connection[Any]
) -> Callable[[], None]:
    def check() -> None:
        for conn in (bystander, my_connect(proc)):
            with conn.cursor() as cur:
                cur.execute("select 6 * 7")
                assert cur.fetchone() == (42,)
            if conn is not bystander:
                conn.close()

    return check


@WIRE
@given(stream=noise(MY_LOGIN), cuts=CUTS)
def test_mysql_before_login(
    my_proxy: SluiceProcess,
    my_bystander: pymysql.connections.Connection[Any],
    stream: bytes,
    cuts: list[int],
) -> None:
    log_from = log_size(my_proxy)
    sock = socket.create_connection(("127.0.0.1", port_of(my_proxy)), timeout=5)
    reply = send_and_read(sock, stream, cuts)
    assert my_reply_ok(reply, relayed=False), reply[:200]
    assert_unharmed(my_proxy, my_check(my_proxy, my_bystander), log_from)


@WIRE
@given(stream=sequences(MY_COMMANDS), cuts=CUTS, in_transaction=IN_TRANSACTION)
@example(stream=frame(b"", 0), cuts=[], in_transaction=True)  # IndexError, no answer
def test_mysql_after_login(
    my_proxy: SluiceProcess,
    my_bystander: pymysql.connections.Connection[Any],
    stream: bytes,
    cuts: list[int],
    in_transaction: bool,
) -> None:
    log_from = log_size(my_proxy)
    conn = my_connect(my_proxy)
    if in_transaction:
        conn.begin()
    sock = conn._sock
    assert sock is not None
    reply = send_and_read(sock, stream, cuts)
    assert my_reply_ok(reply, relayed=True), reply[:200]
    assert_unharmed(my_proxy, my_check(my_proxy, my_bystander), log_from)
