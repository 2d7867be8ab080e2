"""PostgreSQL clients that have not logged in: what they may cost the proxy, what they are told.

A connection before its login proves nothing, so it must cost little: its
messages are small (the startup packet as the server bounds it, a password
message a few KB), it has `login_timeout` to finish (the admin console
included), a proxy takes only so many of them (`max_logins`, and
`max_logins_per_address` from one address) and only so many clients at all
(`max_client_connections`), and failed logins from one address are spaced
then refused for a while. A good client from another address notices none of
it. Attackers are bare sockets bound to other loopback addresses (all of
127.0.0.0/8 is loopback on Linux); the good clients are psycopg and asyncpg
connecting from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import struct
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn, free_port, proxy_config, wait_for
from rawpg import Message, RawClient
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.session.admission import MAX_LINGERING, REFUSAL_WAIT
from sluice.wire.pg import messages as m

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., SluiceProcess]
ATTACKER = "127.0.0.3"


def port_of(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


def stalled(port: int, source: str = "", database: str = APP_DB) -> RawClient:
    """A client that sent its startup packet, got the SASL request, and says no more."""
    client = RawClient(port, source=source)
    client.send(m.startup_message({"user": APP_USER, "database": database}))
    first = client.read()
    assert first is not None and first[0] == b"R", first
    return client


def error_of(messages: list[Message]) -> dict[str, str]:
    errors = [m.parse_error_fields(body) for kind, body in messages if kind == b"E"]
    assert errors, messages
    return errors[0]


def refused_at_once(port: int, source: str) -> dict[str, str]:
    """The error a connection from `source` gets for its startup packet, without delay."""
    client = RawClient(port, timeout=3, source=source)
    try:
        began = time.monotonic()
        client.send(m.startup_message({"user": APP_USER, "database": APP_DB}))
        error = error_of(client.read_to_end())
        assert time.monotonic() - began < 1
        return error
    finally:
        client.close()


def good_login(proc: SluiceProcess) -> float:
    """Seconds a psycopg client from 127.0.0.1 takes to log in and run a query."""
    start = time.monotonic()
    with psycopg.connect(dsn(proc), connect_timeout=5) as conn:
        assert conn.execute("select 6 * 7").fetchone() == (42,)
    return time.monotonic() - start


# ---------------------------------------------------------------- sizes before login


def test_an_oversized_message_before_login_is_refused_before_its_body(start: Start) -> None:
    """Before login the cap is a few KB, not max_packet_size: a 1 MB header is refused at once."""
    proc = start()
    client = stalled(port_of(proc))
    began = time.monotonic()
    client.send(b"p" + struct.pack("!I", 1_000_000))  # the header of a huge password message
    error = error_of(client.read_to_end())
    assert time.monotonic() - began < 2
    assert error["C"] == "08P01" and "invalid message length" in error["M"], error
    assert good_login(proc) < 1


def test_a_large_startup_password_still_fits(start: Start) -> None:
    """A password message of 12 KB (a long IAM token would be a few KB) is still read."""
    proc = start(auth_method="md5")
    client = stalled(port_of(proc))
    client.send(m.password_message(b"x" * 12_000 + b"\x00"))
    error = error_of(client.read_to_end())
    assert error["C"] == "28P01", error  # read whole and checked: a wrong password


# ---------------------------------------------------------------- login timeout


@pytest.mark.parametrize("database", [APP_DB, "sluice"], ids=["app", "admin-console"])
def test_login_timeout_closes_a_stalled_login(start: Start, database: str) -> None:
    proc = start(login_timeout=1, glob={"admin_users": [APP_USER]})
    client = stalled(port_of(proc), database=database)
    client.sock.settimeout(10)
    began = time.monotonic()
    error = error_of(client.read_to_end())
    assert time.monotonic() - began < 4
    assert error["C"] == "08P01" and "did not complete its login in time" in error["M"]


def test_the_admin_console_is_not_timed_out_once_logged_in(start: Start) -> None:
    proc = start(login_timeout=1, glob={"admin_users": [APP_USER]})
    with psycopg.connect(dsn(proc, dbname="sluice"), autocommit=True) as admin:
        time.sleep(2.5)
        assert admin.execute("show pools").fetchall() is not None


# ---------------------------------------------------------------- caps


def test_logins_from_one_address_are_capped(start: Start) -> None:
    proc = start(max_logins_per_address=3)
    port = port_of(proc)
    held = [stalled(port, source=ATTACKER) for _ in range(3)]
    error = refused_at_once(port, ATTACKER)
    assert error["C"] == "53300", error
    assert "from this address" in error["M"] and "max_logins_per_address (3)" in error["D"]
    assert good_login(proc) < 1  # another address is not concerned
    held[0].close()
    assert wait_for(lambda: RawClient(port, source=ATTACKER).try_login() is None)
    for client in held[1:]:
        client.close()


def test_logins_are_capped_per_proxy_and_logged_in_clients_do_not_count(start: Start) -> None:
    proc = start(max_logins=2)
    port = port_of(proc)
    logged_in = [psycopg.connect(dsn(proc)) for _ in range(3)]
    held = [stalled(port, source=f"127.0.0.{i}") for i in (3, 4)]
    error = refused_at_once(port, "127.0.0.5")
    assert error["C"] == "53300" and "max_logins (2)" in error["D"], error
    for client in held:
        client.close()
    assert wait_for(lambda: RawClient(port, source="127.0.0.5").try_login() is None)
    for conn in logged_in:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.close()


def test_max_client_connections(start: Start) -> None:
    proc = start(max_client_connections=2)
    first, second = psycopg.connect(dsn(proc)), psycopg.connect(dsn(proc))

    async def third() -> None:
        host, port = "127.0.0.1", port_of(proc)
        conn = await asyncpg.connect(
            host=host, port=port, user=APP_USER, password=APP_PASSWORD, database=APP_DB, ssl=False
        )
        await conn.close()

    with pytest.raises(asyncpg.TooManyConnectionsError) as info:
        asyncio.run(third())
    assert "too many clients" in str(info.value)
    assert "max_client_connections (2)" in (info.value.detail or "")
    first.close()
    assert wait_for(lambda: good_login(proc) < 1)
    second.close()


# ---------------------------------------------------------------- failed logins


def attempt(port: int, source: str, password: str) -> str:
    """One login from `source`: "" if it succeeded, else the error's SQLSTATE."""
    client = RawClient(port, timeout=15, source=source)
    try:
        error = client.try_login(password=password)
    except OSError as exc:
        return f"{type(exc).__name__}"
    finally:
        client.close()
    return "" if error is None else error["C"]


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


def test_failed_logins_from_one_address_are_spaced_then_refused(start: Start) -> None:
    metrics = free_port()
    proc = start(
        auth_failure_limit=4,
        pool={"max_connections": 1},
        glob={"metrics_listen": f"127.0.0.1:{metrics}"},
    )
    port = port_of(proc)
    wrong = "not-the-password-Zq7"
    with ThreadPoolExecutor(30) as pool:
        attack = [pool.submit(attempt, port, ATTACKER, wrong) for _ in range(30)]
        time.sleep(0.3)
        # the attacker's logins wait for their turn, holding no pool connection and not
        # blocking the proxy: a good client from another address is served at once
        assert good_login(proc) < 1
        codes = Counter(f.result() for f in attack)
    assert codes["28P01"] <= 6, codes  # checked one by one, then the address is refused
    assert codes["28000"] == 30 - codes["28P01"], codes
    assert attempt(port, ATTACKER, APP_PASSWORD) == "28000"  # even a right password, for now
    assert good_login(proc) < 1
    assert scrape(metrics, "sluice_auth_failures_total") == codes["28P01"]
    assert scrape(metrics, "sluice_client_connections_refused_total") >= 1
    log = proc.log_text()
    assert wrong not in log
    assert len(re.findall(rf"failed logins from {ATTACKER}.*refusing", log)) == 1, log
    assert "AuthFailed" not in log  # each failure is not logged at the info level


def test_a_user_under_attack_still_logs_in_from_elsewhere(start: Start) -> None:
    proc = start(auth_failure_limit=4)
    port = port_of(proc)
    with ThreadPoolExecutor(12) as pool:
        sources = [f"127.0.1.{i}" for i in range(12)]  # many addresses, one user
        codes = Counter(pool.map(lambda s: attempt(port, s, "wrong"), sources))
    assert codes == {"28P01": 12}
    assert good_login(proc) < 1  # the same user, the right password: not slowed


# ---------------------------------------------------------------- protocol


def startup_packet(minor: int, params: dict[str, str]) -> bytes:
    body = struct.pack("!I", 3 << 16 | minor)
    body += b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in params.items())
    body += b"\x00"
    return struct.pack("!I", len(body) + 4) + body


@pytest.mark.parametrize(
    ("minor", "options"),
    [(1, []), (65535, []), (0, ["_pq_.test_option"]), (2, ["_pq_.a", "_pq_.b"])],
)
def test_newer_protocol_versions_are_negotiated(
    start: Start, minor: int, options: list[str]
) -> None:
    """As the server does: NegotiateProtocolVersion (3.0, the options not understood),
    then the login goes on."""
    proc = start()
    client = RawClient(port_of(proc))
    params = {"user": APP_USER, "database": APP_DB, **dict.fromkeys(options, "on")}
    assert client.try_login(startup=startup_packet(minor, params)) is None
    kind, body = client.seen[0]
    assert kind == b"v", client.seen[:2]
    newest, count = struct.unpack_from("!II", body)
    assert (newest, count) == (0, len(options))
    assert body[8:].split(b"\x00")[:-1] == [o.encode() for o in options]
    assert [k for k, _ in client.seen].count(b"v") == 1
    assert client.query("select 1")[-1][0] == b"Z"
    client.close()


def test_protocol_3_0_gets_no_negotiation(start: Start) -> None:
    proc = start()
    client = RawClient(port_of(proc))
    client.login()
    assert b"v" not in [kind for kind, _ in client.seen]
    client.close()


def test_log_lines_are_bounded(start: Start) -> None:
    proc = start()
    long_name = "u" * 9000  # what a startup packet (at most 10,000 bytes) can carry
    client = RawClient(port_of(proc))
    error = client.try_login(user=long_name)
    assert error is not None and error["C"] == "28P01"
    client.close()
    proc.stop()
    log = proc.log_text()
    assert long_name not in log
    assert max(len(line) for line in log.splitlines()) < 4500


# ---------------------------------------------------------------- open file limit


class LowFileLimit(SluiceProcess):
    """A proxy started with a soft open file limit of 1024, as many systems give."""

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        try:
            super()._spawn(args, env)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def soft_file_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open file limit")


def test_the_file_limit_is_raised_to_what_the_configuration_needs(pg_proxy: Any) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc = pg_proxy(LowFileLimit, max_client_connections=3000)
    assert soft_file_limit(proc.pid) >= min(3000, hard)
    assert "open file limit" not in proc.log_text()


def test_a_file_limit_too_low_is_reported(pg_proxy: Any) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc = pg_proxy(LowFileLimit, max_client_connections=hard + 1000)
    assert soft_file_limit(proc.pid) == hard
    assert wait_for(lambda: "is below what the configuration needs" in proc.log_text())
    assert good_login(proc) < 1


@pytest.fixture
def pg_proxy(pg: PgCluster) -> Iterator[Callable[..., SluiceProcess]]:
    """Start a proxy in front of `pg` as a given SluiceProcess class."""
    started: list[SluiceProcess] = []

    def make(kind: type[SluiceProcess], **overrides: Any) -> SluiceProcess:
        proc = kind([proxy_config(pg, free_port(), **overrides)])
        started.append(proc)
        proc.start()
        return proc

    yield make
    for proc in started:
        proc.stop()
        print(f"---- sluice log ({proc.workdir}) ----\n{proc.log_tail(80)}")


@pytest.fixture
def start(start_sluice: Start) -> Start:
    return start_sluice


# ---------------------------------------------------------------- refusals libpq shows


def settled(port: int) -> None:
    """Wait until the proxy's readiness probe has left: a login gets through and leaves."""

    def logs_in() -> bool:
        client = RawClient(port, source="127.0.0.5")
        try:
            return client.try_login() is None
        finally:
            client.close()

    assert wait_for(logs_in)


def psql_error(proc: SluiceProcess, sslmode: str = "prefer") -> str:
    """What psql prints when its connection is refused (it asks for TLS first, by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = APP_PASSWORD
    done = subprocess.run(
        ["psql", "-X", "-c", "select 1", dsn(proc, sslmode=sslmode)],
        capture_output=True, text=True, timeout=20, env=env, check=False,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    return done.stderr


def psycopg_error(proc: SluiceProcess) -> psycopg.OperationalError:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn(proc, sslmode="prefer"), connect_timeout=5).close()
    return info.value


def asyncpg_error(proc: SluiceProcess) -> asyncpg.PostgresError:
    async def attempt() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port_of(proc), user=APP_USER, password=APP_PASSWORD,
            database=APP_DB, ssl="prefer", timeout=5,
        )  # fmt: skip
        await conn.close()

    with pytest.raises(asyncpg.PostgresError) as info:
        asyncio.run(attempt())
    return info.value


def refused_as_libpq_shows(proc: SluiceProcess, text: str, sqlstate: str) -> None:
    """psql and psycopg, asking for TLS first as libpq does by default, show the refusal's
    own message, not "server sent an error response during SSL exchange"; asyncpg (which
    asks for TLS first too, and reports SQLSTATEs of failed logins) its SQLSTATE."""
    shown = psql_error(proc)
    assert f"FATAL:  {text}" in shown and "SSL exchange" not in shown, shown
    error = psycopg_error(proc)
    assert f"FATAL:  {text}" in str(error) and "SSL exchange" not in str(error), error
    raised = asyncpg_error(proc)
    assert (raised.sqlstate, raised.severity) == (sqlstate, "FATAL"), raised
    assert text in str(raised), raised


def test_libpq_shows_why_a_cap_refused_it(start: Start) -> None:
    proc = start(max_logins=1)
    port = port_of(proc)
    settled(port)
    held = stalled(port, source=ATTACKER)
    refused_as_libpq_shows(proc, "sorry, too many clients are logging in", "53300")
    held.close()
    assert wait_for(lambda: good_login(proc) < 1)


def test_libpq_shows_why_max_client_connections_refused_it(start: Start) -> None:
    proc = start(max_client_connections=1)
    settled(port_of(proc))
    with psycopg.connect(dsn(proc)):
        refused_as_libpq_shows(proc, "sorry, too many clients already", "53300")


def test_libpq_shows_why_a_blocked_address_is_refused(start: Start) -> None:
    proc = start(auth_failure_limit=2)
    port = port_of(proc)
    codes = [attempt(port, "127.0.0.1", "wrong") for _ in range(4)]
    assert codes[:2] == ["28P01"] * 2 and codes[-1] == "28000", codes  # (scores leak a little)
    refused_as_libpq_shows(proc, "too many failed logins from 127.0.0.1", "28000")


def test_refused_clients_awaited_for_their_startup_packet_are_bounded(start: Start) -> None:
    """Refused clients that send nothing are told after REFUSAL_WAIT seconds; at most
    MAX_LINGERING of them wait at a time, the next is told at once."""
    proc = start(max_logins=1)
    port = port_of(proc)
    settled(port)
    held = stalled(port, source=ATTACKER)
    silent = [RawClient(port, timeout=10, source=ATTACKER) for _ in range(MAX_LINGERING)]
    began = time.monotonic()
    extra = RawClient(port, timeout=10, source=ATTACKER)  # sends nothing either
    assert error_of(extra.read_to_end())["C"] == "53300"
    assert time.monotonic() - began < 1
    assert error_of(silent[0].read_to_end())["C"] == "53300"
    assert REFUSAL_WAIT - 0.5 < time.monotonic() - began < REFUSAL_WAIT + 2
    for client in [held, extra, *silent]:
        client.close()
    assert wait_for(lambda: good_login(proc) < 1)
