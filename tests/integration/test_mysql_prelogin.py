"""MySQL clients that have not logged in: what they may cost the proxy, what they are told.

The MySQL side of test_prelogin.py (caps, login timeout, failed logins), and
what is MySQL's own: the greeting never names mysql_clear_password (the bytes
the `mariadb` client sends to a listener without TLS are captured by a relay
and hold no password, whatever the listener's auth_method), a login packet
with a sequence id other than the protocol's is refused as the server refuses
it, and a user name that is not UTF-8 gets an error packet. Attackers are bare
sockets or PyMySQL bound to other loopback addresses (`bind_address`); good
clients are PyMySQL connecting from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, mysql_kwargs, wait_for
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., SluiceProcess]
Packet = tuple[int, bytes]
ATTACKER = "127.0.0.3"
# a HandshakeResponse41's first 32 bytes: PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, ...
HEAD = struct.pack("<IIB23x", 0x000FA685, 1 << 24, 45)


def response(user: bytes) -> bytes:
    """A HandshakeResponse41 payload for `user` with a (wrong) caching_sha2 answer."""
    return HEAD + user + b"\x00" + bytes((20,)) + b"\x01" * 20 + b"caching_sha2_password\x00"


def port_of(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


def packet(payload: bytes, seq: int) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes((seq,)) + payload


def read_packet(sock: socket.socket) -> Packet | None:
    head = _exactly(sock, 4)
    if head is None:
        return None
    body = _exactly(sock, head[0] | head[1] << 8 | head[2] << 16)
    return None if body is None else (head[3], body)


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def read_to_end(sock: socket.socket, timeout: float = 5.0) -> list[Packet]:
    sock.settimeout(timeout)
    out = []
    while (got := read_packet(sock)) is not None:
        out.append(got)
    return out


def err_of(payload: bytes) -> tuple[int, str, str]:
    assert payload[:1] == b"\xff", payload[:40]
    (code,) = struct.unpack_from("<H", payload, 1)
    return code, payload[4:9].decode(), payload[9:].decode(errors="replace")


def greeted(proc: SluiceProcess, source: str = "") -> socket.socket:
    """A bare socket (from `source`) that has read the proxy's greeting, and says nothing."""
    where = (source, 0) if source else None
    sock = socket.create_connection(("127.0.0.1", port_of(proc)), 5, where)
    first = read_packet(sock)
    assert first is not None and first[1][:1] == b"\x0a", first
    return sock


def connect(proc: SluiceProcess, **extra: Any) -> Any:
    kwargs = {**mysql_kwargs(proc), "ssl_disabled": True, "connect_timeout": 10, **extra}
    return pymysql.connect(**kwargs)


def good_login(proc: SluiceProcess) -> float:
    """Seconds a PyMySQL client from 127.0.0.1 takes to log in and run a query."""
    start = time.monotonic()
    with connect(proc) as conn, conn.cursor() as cur:
        cur.execute("select 6 * 7")
        assert cur.fetchone() == (42,)
    return time.monotonic() - start


def login_error(proc: SluiceProcess, **extra: Any) -> int:
    """The error number of a PyMySQL login that must fail."""
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proc, **extra).close()
    return int(info.value.args[0])


# ---------------------------------------------------------------- sizes before login


def test_an_oversized_login_packet_is_refused_before_its_body(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy()  # max_packet_size at its default, 64 MB
    sock = greeted(proc)
    began = time.monotonic()
    sock.sendall(struct.pack("<I", 1_000_000)[:3] + b"\x01" + HEAD[:4])  # 1 MB announced
    replies = read_to_end(sock)
    assert time.monotonic() - began < 2
    assert [err_of(body)[:2] for _, body in replies] == [(1153, "08S01")], replies
    assert good_login(proc) < 1


def test_a_hundred_kb_user_name_is_refused_and_never_logged(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy()
    name = b"u" * 100_000
    sock = greeted(proc)
    sock.sendall(packet(response(name), 1))
    replies = read_to_end(sock)
    assert [err_of(body)[0] for _, body in replies] == [1153], replies
    sock = greeted(proc)  # one that fits in a login packet: refused, logged clipped
    sock.sendall(packet(response(b"v" * 15_000), 1))
    assert [err_of(body)[0] for _, body in read_to_end(sock)] == [1045]
    proc.stop()
    log = proc.log_text()
    assert "u" * 1000 not in log and "v" * 1000 not in log
    assert max(len(line) for line in log.splitlines()) < 4500


# ---------------------------------------------------------------- login timeout and caps


def test_login_timeout_closes_a_stalled_login(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(login_timeout=1)
    sock = greeted(proc)
    began = time.monotonic()
    replies = read_to_end(sock, timeout=10)
    assert time.monotonic() - began < 4
    code, _, text = err_of(replies[0][1])
    assert code == 1043 and "did not complete its login in time" in text


def test_logins_from_one_address_are_capped(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(max_logins_per_address=2)
    held = [greeted(proc, ATTACKER) for _ in range(2)]
    sock = socket.create_connection(("127.0.0.1", port_of(proc)), 5, (ATTACKER, 0))
    replies = read_to_end(sock)  # an ERR instead of the greeting, as a full server sends
    assert len(replies) == 1 and replies[0][0] == 0, replies
    code, state, text = err_of(replies[0][1])
    assert (code, state) == (1040, "08004") and "max_logins_per_address (2)" in text
    assert login_error(proc, bind_address=ATTACKER) == 1040
    assert good_login(proc) < 1
    for sock in held:
        sock.close()
    assert wait_for(lambda: connect(proc, bind_address=ATTACKER).open)


def test_max_client_connections(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(max_client_connections=2)
    first, second = connect(proc), connect(proc)
    assert login_error(proc) == 1040
    first.close()
    assert wait_for(lambda: good_login(proc) < 1)
    second.close()


# ---------------------------------------------------------------- failed logins


def attempt(proc: SluiceProcess, source: str, password: str) -> int:
    """One PyMySQL login from `source`: 0 if it succeeded, else the error number."""
    try:
        connect(proc, bind_address=source, password=password, read_timeout=15).close()
    except pymysql.err.OperationalError as exc:
        return int(exc.args[0])
    return 0


def test_failed_logins_from_one_address_are_spaced_then_refused(
    start_mysql_proxy: Start,
) -> None:
    proc = start_mysql_proxy(auth_failure_limit=4, pool={"max_connections": 1})
    wrong = "not-the-password-Zq7"
    with ThreadPoolExecutor(30) as pool:
        attack = [pool.submit(attempt, proc, ATTACKER, wrong) for _ in range(30)]
        time.sleep(0.3)
        assert good_login(proc) < 1  # served while the attacker's logins wait
        codes = Counter(f.result() for f in attack)
    assert codes[1045] <= 6, codes
    assert codes[1129] == 30 - codes[1045], codes  # ER_HOST_IS_BLOCKED
    assert attempt(proc, ATTACKER, APP_PASSWORD) == 1129
    assert good_login(proc) < 1
    log = proc.log_text()
    assert wrong not in log
    assert len(re.findall(rf"failed logins from {ATTACKER}.*refusing", log)) == 1, log


# ---------------------------------------------------------------- protocol


@pytest.mark.parametrize("seq", [0, 2, 7, 255])
def test_a_handshake_response_with_another_sequence_id_is_refused(
    start_mysql_proxy: Start, seq: int
) -> None:
    proc = start_mysql_proxy()
    sock = greeted(proc)
    sock.sendall(packet(response(APP_USER.encode()), seq))
    replies = read_to_end(sock)
    assert [err_of(body)[:2] for _, body in replies] == [(1156, "08S01")], replies
    assert good_login(proc) < 1


def test_a_user_name_that_is_not_utf8_gets_an_error_packet(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy()
    sock = greeted(proc)
    began = time.monotonic()
    sock.sendall(packet(response(b"\xff\xfeapp\xc3"), 1))
    replies = read_to_end(sock)
    assert time.monotonic() - began < 2
    assert [err_of(body)[:2] for _, body in replies] == [(1045, "28000")], replies
    assert good_login(proc) < 1
    assert "Traceback" not in proc.log_text()


# ---------------------------------------------------------------- no cleartext password


class Recorder:
    """A TCP relay in front of the proxy that keeps every byte the client sends."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sent = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def recorder() -> Iterator[Callable[[SluiceProcess], Recorder]]:
    made: list[Recorder] = []

    def make(proc: SluiceProcess) -> Recorder:
        made.append(Recorder(port_of(proc)))
        return made[-1]

    yield make
    for rec in made:
        rec.close()


def mariadb_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    cmd = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", APP_USER]
    cmd += [f"-p{APP_PASSWORD}", "--batch", "--skip-column-names", "--connect-timeout=10"]
    cmd += [*args, "-e", "select 6 * 7", APP_DB]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    "method", ["caching_sha2_password", "mysql_native_password", "mysql_clear_password"]
)
def test_the_mariadb_client_sends_no_password_without_tls(
    start_mysql_proxy: Start, recorder: Callable[[SluiceProcess], Recorder], method: str
) -> None:
    proc = start_mysql_proxy(auth_method=method)
    relay = recorder(proc)
    done = mariadb_cli(relay.port, "--skip-ssl")
    assert APP_PASSWORD.encode() not in relay.sent
    if method == "mysql_clear_password":  # refused before the client sends its password
        assert done.returncode != 0 and "requires TLS" in done.stderr, done
    else:
        assert done.returncode == 0 and done.stdout.strip() == "42", done


def test_mysql_clear_password_over_tls(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(auth_method="mysql_clear_password")
    done = mariadb_cli(port_of(proc), "--ssl", "--ssl-verify-server-cert=0")
    assert done.returncode == 0 and done.stdout.strip() == "42", done


def test_login_is_not_refused_for_a_right_sequence_after_tls(start_mysql_proxy: Start) -> None:
    """After an SSLRequest (id 1) the response comes with id 2: still accepted."""
    proc = start_mysql_proxy(require_tls=True)
    kwargs = {**mysql_kwargs(proc), "ssl": {"check_hostname": False}, "database": APP_DB}
    for _ in range(3):  # (PyMySQL's TLS logins fail now and then: test_mysql_faults)
        try:
            with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
                cur.execute("select 1")
                assert cur.fetchone() == (1,)
            return
        except pymysql.err.OperationalError as exc:
            assert exc.args[0] in (2013, 2006), exc
    pytest.fail("no TLS login succeeded")
