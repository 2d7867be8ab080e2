"""Authentication and TLS through the proxy, on both of its sides.

Client side: SCRAM-SHA-256 (the default), md5 and cleartext (TLS only), wrong
passwords and unknown users failing identically, the generated and a configured
certificate, `require_tls`, and the startup packets real drivers rarely send
(SSLRequest followed by plaintext, GSSENCRequest), sent on a bare socket.
libpq's `require_auth` makes the client itself check which method the proxy
asked for. SQLSTATEs of startup failures are read with asyncpg: libpq (and so
psycopg and psql) reports a connection failure as text only. Server side: a
PostgreSQL with `ssl = on` and a certificate from a test CA, reached with
`tls = "require"` and `"verify-full"`, checked from `pg_stat_ssl`.
Certificates are made on the fly with `cryptography`.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from certs import issue, make_ca
from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn, free_port, proxy_config
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.wire.pg import messages as m
from sluice.wire.pg.scram import ScramClient

pytestmark = pytest.mark.timeout(60)

DB_NAME = "db.sluice.test"  # the backend certificate's only name: verify-full needs tls_server_name


# ---------------------------------------------------------------- certificates


def read_message(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """One regular message from `sock`, or None at end of stream."""
    head = _read_exact(sock, 5)
    if head is None:
        return None
    kind, length = struct.unpack("!cI", head)
    body = _read_exact(sock, length - 4)
    return None if body is None else (kind, body)


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
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


def _recv_or_reset(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""


def read_all(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    out = []
    while (msg := read_message(sock)) is not None:
        out.append(msg)
    return out


def raw_scram_login(sock: socket.socket, user: str, password: str) -> list[tuple[bytes, bytes]]:
    """Startup and SCRAM on `sock`; return the messages after AuthenticationOk."""
    sock.sendall(m.startup_message({"user": user, "database": APP_DB}))
    scram = ScramClient(user, password)
    greeting: list[tuple[bytes, bytes]] = []
    while (msg := read_message(sock)) is not None:
        kind, body = msg
        assert kind != b"E", m.parse_error_fields(body)
        if kind == b"R":
            code, payload = m.parse_auth(body)
            if code == m.AUTH_SASL:
                sock.sendall(m.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
            elif code == m.AUTH_SASL_CONTINUE:
                sock.sendall(m.password_message(scram.handle_server_first(payload)))
            elif code == m.AUTH_SASL_FINAL:
                scram.verify_server_final(payload)
            continue
        greeting.append(msg)
        if kind == b"Z":
            return greeting
    raise AssertionError("connection closed during login")


def scram_server_first(port: int, user: str) -> dict[str, str]:
    """Start a SCRAM exchange as `user` and return the server-first attributes (r, s, i)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(m.startup_message({"user": user, "database": APP_DB}))
        msg = read_message(sock)
        assert msg is not None and msg[0] == b"R"
        assert m.parse_auth(msg[1]) == (m.AUTH_SASL, b"SCRAM-SHA-256\x00\x00")
        sock.sendall(m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abcdefghijklmnopqrstuvwx"))
        msg = read_message(sock)
        assert msg is not None and msg[0] == b"R", msg
        code, payload = m.parse_auth(msg[1])
        assert code == m.AUTH_SASL_CONTINUE
        return dict(part.split("=", 1) for part in payload.decode().split(","))


# ---------------------------------------------------------------- helpers


def port_of(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


def whoami(conninfo: str) -> tuple[Any, ...] | None:
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        return conn.execute("select current_user, 1 + 1").fetchone()


def connect_error(conninfo: str) -> psycopg.OperationalError:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(conninfo, connect_timeout=5).close()
    return info.value


def startup_failure(
    proc: SluiceProcess, user: str = APP_USER, password: str = APP_PASSWORD, ssl: str = "disable"
) -> asyncpg.PostgresError:
    """The error a login attempt gets, as asyncpg reports it (with SQLSTATE and severity)."""

    async def attempt() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=port_of(proc),
            user=user,
            password=password,
            database=APP_DB,
            ssl=ssl,
            timeout=5,
        )
        await conn.close()

    with pytest.raises(asyncpg.PostgresError) as info:
        asyncio.run(attempt())
    return info.value


def state_cert(proc: SluiceProcess) -> Path:
    return Path(str(proc.glob["state_dir"])) / "tls" / "sluice.crt"


# ---------------------------------------------------------------- password methods


def test_scram_is_the_default_with_psycopg(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice()
    assert whoami(dsn(proc, require_auth="scram-sha-256")) == (APP_USER, 2)
    error = connect_error(dsn(proc, require_auth="md5"))
    assert "scram" in str(error).lower() or "sasl" in str(error).lower(), error


def test_scram_with_psql(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    cmd = ["psql", "-X", "-A", "-t", "-c", "select current_user", dsn(proc)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == APP_USER
    bad = dsn(proc, password="nope")
    done = subprocess.run(
        ["psql", "-X", "-c", "select 1", bad], capture_output=True, text=True, timeout=20, env=env
    )
    assert done.returncode != 0
    assert "password authentication failed" in done.stderr, done.stderr


def test_md5(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice(auth_method="md5")
    assert whoami(dsn(proc, require_auth="md5")) == (APP_USER, 2)
    assert "password authentication failed" in str(connect_error(dsn(proc, password="wrong")))
    assert startup_failure(proc, password="wrong").sqlstate == "28P01"


def test_cleartext_needs_tls(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice(auth_method="cleartext")
    assert "TLS" in str(connect_error(dsn(proc)))
    refused = startup_failure(proc)
    assert (refused.sqlstate, refused.severity) == ("28000", "FATAL"), refused
    assert whoami(dsn(proc, sslmode="require", require_auth="password")) == (APP_USER, 2)
    assert startup_failure(proc, password="wrong", ssl="require").sqlstate == "28P01"


@pytest.mark.parametrize("method", ["scram-sha-256", "md5", "cleartext"])
def test_wrong_password_and_unknown_user_fail_alike(
    start_sluice: Callable[..., SluiceProcess], method: str
) -> None:
    proc = start_sluice(auth_method=method)
    mode = "require" if method == "cleartext" else "disable"
    wrong = startup_failure(proc, password="not-the-password", ssl=mode)
    ghost = startup_failure(proc, user="nobody", password="whatever", ssl=mode)
    for error, user in ((wrong, APP_USER), (ghost, "nobody")):
        assert (error.sqlstate, error.severity) == ("28P01", "FATAL"), error
        assert error.message.startswith("password authentication failed for user"), error
        assert user in error.message
    assert wrong.message.replace(APP_USER, "nobody") == ghost.message
    text = str(connect_error(dsn(proc, user="nobody", password="whatever", sslmode=mode)))
    assert "password authentication failed for user" in text, text


def test_auth_failure_text_matches_postgresql(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice()
    error = startup_failure(proc, password="not-the-password")
    assert error.message == f'password authentication failed for user "{APP_USER}"'


def test_scram_salt_does_not_reveal_unknown_users(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    """A real user's salt is stable; an unknown user's must be too (and look the same)."""
    port = port_of(start_sluice())
    known = [scram_server_first(port, APP_USER) for _ in range(2)]
    ghost = [scram_server_first(port, "nobody") for _ in range(2)]
    assert known[0]["s"] == known[1]["s"]
    assert ghost[0]["s"] == ghost[1]["s"]
    assert known[0]["i"] == ghost[0]["i"]
    assert len(known[0]["s"]) == len(ghost[0]["s"])
    assert known[0]["s"] != ghost[0]["s"]


# ---------------------------------------------------------------- client-side TLS


def test_tls_with_the_generated_certificate(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice()
    with psycopg.connect(dsn(proc, sslmode="require")) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    with psycopg.connect(dsn(proc)) as conn:
        assert not conn.info.pgconn.ssl_in_use
    root = str(state_cert(proc))
    for host in ("127.0.0.1", "localhost"):
        conninfo = dsn(proc, sslmode="verify-full", sslrootcert=root, host=host)
        with psycopg.connect(conninfo) as conn:
            assert conn.info.pgconn.ssl_in_use
            assert conn.execute("select current_user").fetchone() == (APP_USER,)


def test_tls_with_a_configured_certificate(
    start_sluice: Callable[..., SluiceProcess], tmp_path: Path
) -> None:
    crt = issue(None, "sluice-configured", ["localhost", "127.0.0.1"]).write(tmp_path, "proxy")
    other = issue(None, "someone-else", ["localhost", "127.0.0.1"]).write(tmp_path, "other")
    proc = start_sluice(tls_cert_file=str(crt), tls_key_file=str(tmp_path / "proxy.key"))
    conninfo = dsn(proc, sslmode="verify-full", sslrootcert=str(crt))
    with psycopg.connect(conninfo) as conn:
        assert conn.info.pgconn.ssl_in_use
    error = connect_error(dsn(proc, sslmode="verify-full", sslrootcert=str(other)))
    assert "certificate" in str(error).lower(), error


def test_require_tls(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice(require_tls=True)
    assert "FATAL" in str(connect_error(dsn(proc)))
    error = startup_failure(proc)
    assert (error.sqlstate, error.severity) == ("28000", "FATAL"), error
    with psycopg.connect(dsn(proc, sslmode="require")) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


def test_plaintext_after_ssl_request_is_refused(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice()
    with socket.create_connection(("127.0.0.1", port_of(proc)), timeout=5) as sock:
        sock.sendall(m.ssl_request() + m.startup_message({"user": APP_USER, "database": APP_DB}))
        reply = read_message(sock)  # never 'S': the injected bytes must not ride into TLS
        assert reply is not None and reply[0] == b"E", reply
        fields = m.parse_error_fields(reply[1])
        assert (fields["S"], fields["C"]) == ("FATAL", "08P01"), fields
        assert read_all(sock) == []
    with psycopg.connect(dsn(proc)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("then_tls", [False, True], ids=["then-plain", "then-tls"])
def test_gssenc_request_is_declined_then_startup_works(
    start_sluice: Callable[..., SluiceProcess], then_tls: bool
) -> None:
    """What libpq does with gssencmode=prefer: GSSENCRequest, 'N', then SSL or plain."""
    proc = start_sluice()
    sock: socket.socket = socket.create_connection(("127.0.0.1", port_of(proc)), timeout=5)
    try:
        sock.sendall(struct.pack("!II", 8, m.GSSENC_REQUEST_CODE))
        assert sock.recv(1) == b"N"
        if then_tls:
            sock.sendall(m.ssl_request())
            assert sock.recv(1) == b"S"
            ctx = ssl.create_default_context(cafile=str(state_cert(proc)))
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        greeting = raw_scram_login(sock, APP_USER, APP_PASSWORD)
        assert greeting[-1] == (b"Z", b"I")
        assert any(kind == b"K" for kind, _ in greeting)
        sock.sendall(m.query("select 'gss declined'"))
        replies = []
        while (msg := read_message(sock)) is not None and msg[0] != b"Z":
            replies.append(msg)
        assert any(kind == b"D" and b"gss declined" in body for kind, body in replies)
    finally:
        sock.close()


def test_failed_tls_handshake_closes_only_that_client(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice()
    with socket.create_connection(("127.0.0.1", port_of(proc)), timeout=5) as sock:
        sock.sendall(m.ssl_request())
        assert sock.recv(1) == b"S"
        sock.sendall(b"\x16\x03\x01\x00\x05hello-not-tls" * 4)
        received = b""
        while chunk := _recv_or_reset(sock):  # a TLS alert at most, then the close
            received += chunk
        assert len(received) < 64, received
    with psycopg.connect(dsn(proc, sslmode="require")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_database_refusing_the_proxy_credentials(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    server_secret = "wrong-server-secret-7"
    users = [{"name": APP_USER, "password": APP_PASSWORD, "server_password": server_secret}]
    proc = start_sluice(users=users)
    error = startup_failure(proc)
    assert error.sqlstate == "08004", error
    text = str(connect_error(dsn(proc)))
    for secret in (server_secret, APP_PASSWORD):
        assert secret not in text and secret not in error.message
    proc.stop()
    assert "28P01" in proc.log_text() or "credentials" in proc.log_text()
    assert server_secret not in proc.log_text() and APP_PASSWORD not in proc.log_text()


# ---------------------------------------------------------------- TLS to the database


@dataclass
class TlsBackend:
    cluster: PgCluster
    ca_file: Path
    wrong_ca_file: Path


@pytest.fixture(scope="module")
def tls_backend() -> Iterator[TlsBackend]:
    """A PostgreSQL with ssl=on and a certificate for DB_NAME only, from a test CA."""
    files = Path(tempfile.mkdtemp(prefix="sluice-tls-"))
    files.chmod(0o755)  # the postgres OS user must reach the key and certificate
    entry = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    owner = (entry.pw_uid, entry.pw_gid) if entry else None
    ca, wrong_ca = make_ca("sluice test CA"), make_ca("some other CA")
    crt = issue(ca, DB_NAME, [DB_NAME]).write(files, "server", owner)
    ca_file, wrong_ca_file = ca.write(files, "ca"), wrong_ca.write(files, "wrong-ca")
    settings = {"ssl": "on", "ssl_cert_file": str(crt), "ssl_key_file": str(files / "server.key")}
    try:
        with PgCluster(settings=settings) as cluster:
            cluster.create_user(APP_USER, APP_PASSWORD)
            cluster.create_database(APP_DB, owner=APP_USER)
            yield TlsBackend(cluster, ca_file, wrong_ca_file)
    finally:
        shutil.rmtree(files, ignore_errors=True)


@pytest.fixture
def start_for(tls_backend: TlsBackend) -> Iterator[Callable[..., SluiceProcess]]:
    """Like `start_sluice`, but in front of the TLS backend."""
    started: list[SluiceProcess] = []

    def start(**overrides: Any) -> SluiceProcess:
        config = proxy_config(tls_backend.cluster, free_port(), **overrides)
        proc = SluiceProcess([config])
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.stop()
        print(f"---- sluice log ({proc.workdir}) ----\n{proc.log_tail(60)}")


def backend_ssl(conninfo: str) -> tuple[Any, ...] | None:
    """Whether the proxy's backend connection serving this client uses TLS, and its version."""
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        sql = "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"
        return conn.execute(sql).fetchone()


def app_backends_ssl(cluster: PgCluster) -> set[str]:
    sql = (
        "select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) "
        f"where a.usename = '{APP_USER}'"
    )
    return set(cluster.psql(sql).split())


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_tls_to_the_database(
    start_for: Callable[..., SluiceProcess], tls_backend: TlsBackend, mode: str
) -> None:
    target: dict[str, Any] = {"tls": mode}
    if mode == "verify-full":
        target |= {"tls_ca_file": str(tls_backend.ca_file), "tls_server_name": DB_NAME}
    proc = start_for(target=target)
    row = backend_ssl(dsn(proc))
    assert row is not None and row[0] is True, row
    assert str(row[1]).startswith("TLSv1."), row
    assert app_backends_ssl(tls_backend.cluster) == {"t"}


@pytest.mark.parametrize(
    "target",
    [
        {"tls": "verify-full", "tls_server_name": DB_NAME, "wrong_ca": True},
        {"tls": "verify-full"},  # right CA, but 127.0.0.1 is not a name in the certificate
    ],
    ids=["wrong-ca", "wrong-name"],
)
def test_tls_to_the_database_refuses_an_unverified_server(
    start_for: Callable[..., SluiceProcess], tls_backend: TlsBackend, target: dict[str, Any]
) -> None:
    wrong = target.pop("wrong_ca", False)
    ca = tls_backend.wrong_ca_file if wrong else tls_backend.ca_file
    proc = start_for(target={**target, "tls_ca_file": str(ca)})
    assert "certificate verify failed" in str(connect_error(dsn(proc))).lower()
    assert startup_failure(proc).sqlstate.startswith("08")


def test_tls_required_but_the_database_has_none(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice(target={"tls": "require"})
    assert "does not accept TLS" in str(connect_error(dsn(proc)))
    assert startup_failure(proc).sqlstate.startswith("08")
