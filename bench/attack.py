"""Under attack: thousands of stalled logins on one proxy, and good clients logging in beside them.

One `sluice proxy` process runs a PostgreSQL and a MySQL proxy. Attackers open
logins and stall in them: a third send a PostgreSQL startup packet for the
bench database and then nothing (the proxy waits in the SCRAM exchange), a
third do the same for the admin database, a third read the MySQL greeting and
say nothing; `BIG` more hold the largest message a client may send before
login, all but its last byte (PostgreSQL: a password message, MySQL: a login
packet). They come from many loopback addresses (127.1.0.0/16, at most
`PER_ADDRESS` each), so the per-address cap refuses none of them and the proxy
really holds them all, and each reconnects when the proxy closes it (the login
timeout). They run in `WORKERS` child processes, each with its own open file
limit. Meanwhile a good client of each engine (psycopg, PyMySQL, from
127.0.0.1) logs in and runs a query once a second; the slowest of those logins
and the proxy's peak RSS are the result. The proxy's login timeout is set to
60 s (it defaults to 15 s), so the attackers are held the whole time, not
merely for a part of it.

A proxy process holds at most as many clients as its open file limit allows,
less its pools and a reserve: on a machine whose hard limit is below 20,000
plus that, the attack is scaled down to what fits (and the row says so), since
beyond it the proxy refuses every newcomer, good or not, with "too many
clients", by design.

`python -m bench.attack` runs it standalone against throwaway servers (the
harness's `--only under_attack` does the same and writes the row);
`--guess SECONDS` then tries wrong passwords from one address for that long
(`GUESSERS` connections at a time, each trying again as soon as it is
answered) and counts how many the proxy actually checked, with its default
throttling of failed logins; `python -m bench.attack worker SPEC` is one
attacker process.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from bench.procinfo import raise_nofile_limit, rss_bytes
from bench.systems import BENCH_DB, BENCH_USER, LOCALHOST, Endpoint
from sluice.dbserver.launcher import free_port
from sluice.devtools.runner import SluiceProcess
from sluice.fdlimit import RESERVE
from sluice.wire.pg import messages as m
from sluice.wire.pg.scram import MECHANISM, ScramClient

ATTACKERS = 20_000
BIG = 50
WORKERS = 4
PER_ADDRESS = 100
LOGIN_MESSAGE_MAX = 16 * 1024  # the proxy's bound on a message before login
_MARGIN = 200  # client places left for the good clients and the harness
_RAMP_TIMEOUT = 240.0
_MEASURE = 20.0  # seconds of good logins while the attack is held
_OPEN_AT_ONCE = 200  # per worker
_REPORT_EVERY = 0.5


# ---------------------------------------------------------------- the attackers (child side)


def _source(worker: int, index: int) -> str:
    """The loopback address attacker `index` of `worker` connects from."""
    slot = index // PER_ADDRESS
    return f"127.1.{worker * 50 + slot // 250}.{slot % 250 + 1}"


async def _stall(
    kind: str, port: int, source: str, counts: dict[str, int], first: asyncio.Event
) -> None:
    """One attacker: open a login, stall in it, and open another when the proxy closes it.
    `first` is set once the first login is held or refused."""
    while True:
        try:
            reader, writer = await asyncio.open_connection(LOCALHOST, port, local_addr=(source, 0))
        except OSError:
            counts["connect_errors"] += 1
            await asyncio.sleep(1.0)
            continue
        counts["opened"] += 1
        held = False
        try:
            held = await _open_login(kind, reader, writer)
            counts["held" if held else "refused"] += 1
            first.set()
            if held:
                await reader.read()  # until the proxy closes it (the login timeout)
        except (OSError, asyncio.IncompleteReadError):
            first.set()
        finally:
            if held:
                counts["held"] -= 1
            counts["closed"] += 1
            writer.close()
        await asyncio.sleep(0.5)


async def _open_login(
    kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    """Start a login of `kind` and stop in it; False if the proxy refused it."""
    if kind.startswith("pg"):
        database = "sluice" if kind == "pg-admin" else BENCH_DB
        writer.write(m.startup_message({"user": BENCH_USER, "database": database}))
        head = await reader.readexactly(5)
        if head[:1] != b"R":
            return False
        await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
        if kind == "pg-big":  # a password message of the largest size, less its last byte
            body = LOGIN_MESSAGE_MAX - 4
            writer.write(b"p" + struct.pack("!I", LOGIN_MESSAGE_MAX) + b"x" * (body - 1))
    else:
        head = await reader.readexactly(4)
        greeting = await reader.readexactly(head[0] | head[1] << 8 | head[2] << 16)
        if greeting[:1] == b"\xff":
            return False
        if kind == "mysql-big":  # a login packet of the largest size, less its last byte
            size = LOGIN_MESSAGE_MAX
            writer.write(struct.pack("<I", size)[:3] + b"\x01" + b"x" * (size - 1))
    await writer.drain()
    return True


async def _run_worker(spec: dict[str, Any]) -> None:
    counts = {"opened": 0, "held": 0, "refused": 0, "closed": 0, "connect_errors": 0}
    gate = asyncio.Semaphore(_OPEN_AT_ONCE)
    tasks = []
    index = 0

    async def start(kind: str, port: int, source: str) -> None:
        async with gate:  # the first connections go out a few hundred at a time
            first = asyncio.Event()
            tasks.append(asyncio.ensure_future(_stall(kind, port, source, counts, first)))
            await first.wait()

    starters = []
    for kind, port, count in spec["attackers"]:
        for _ in range(count):
            starters.append(start(kind, port, _source(spec["worker"], index)))
            index += 1
    feeder = asyncio.ensure_future(asyncio.gather(*starters))
    while True:
        print(json.dumps(counts), flush=True)
        await asyncio.sleep(_REPORT_EVERY)
        if feeder.done() and feeder.exception() is not None:
            raise feeder.exception()  # type: ignore[misc]


def worker_main(spec_json: str) -> None:
    raise_nofile_limit()
    asyncio.run(_run_worker(json.loads(spec_json)))


# ---------------------------------------------------------------- the harness (parent side)


@dataclass
class AttackResult:
    attackers: int  # stalled logins asked for (BIG more hold a large message)
    fd_hard_limit: int
    held_min: int = 0  # attackers held, least and most seen while the good clients ran
    held_max: int = 0
    refused: int = 0  # attacker connections the proxy refused (none expected)
    ramp_seconds: float = 0.0
    good_pg: list[float] = field(default_factory=list)  # seconds per login and query
    good_mysql: list[float] = field(default_factory=list)
    good_errors: list[str] = field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0

    @property
    def worst_login(self) -> float | None:
        both = self.good_pg + self.good_mysql
        return max(both) if both else None


def attackers_that_fit(wanted: int, pool_connections: int) -> tuple[int, int]:
    """(stalled logins to hold, the hard open file limit): `wanted`, or what the proxy
    process can hold beside its pools, the large-message attackers and the good clients."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return wanted, -1
    room = hard - RESERVE - pool_connections - BIG - _MARGIN
    return min(wanted, room), hard


Target = tuple[str, int, str]  # a database's host, port, and the bench user's password


class AttackedProxy:
    """The system under attack: one `sluice proxy` with a PostgreSQL and a MySQL proxy (a
    fresh process for each row), limits raised so that the attack is held, not refused."""

    name = "sluice"
    LIMITS = {"login_timeout": 60, "max_client_connections": 30_000, "max_logins": 30_000}
    POOL = {"max_connections": 20, "max_idle_connections": 20}

    def __init__(self, workdir: Path, pg: Target, my: Target) -> None:
        self.workdir, self.targets = workdir, (pg, my)
        self.passwords = (pg[2], my[2])
        self.pg_port = self.my_port = 0
        self.proc: SluiceProcess | None = None
        self.runs = 0

    def _proxy(self, name: str, engine: str, port: int, target: Target) -> dict[str, Any]:
        host, target_port, password = target
        return {
            "name": name, "engine": engine, "listen": f"{LOCALHOST}:{port}",
            "target": {"host": host, "port": target_port}, "pool": self.POOL,
            "users": [{"name": BENCH_USER, "password": password}], **self.LIMITS,
        }  # fmt: skip

    def start(self) -> Endpoint:
        self.runs += 1
        self.pg_port, self.my_port = free_port(), free_port()
        rundir = self.workdir / f"sluice-attack-{self.runs}"
        rundir.mkdir(parents=True)
        pg, my = self.targets
        proxies = [
            self._proxy("pg", "postgresql", self.pg_port, pg),
            self._proxy("my", "mysql", self.my_port, my),
        ]
        glob = {"log_level": "warning", "admin_users": [BENCH_USER]}
        self.proc = SluiceProcess(proxies, glob=glob, workdir=rundir)
        self.proc.start()
        return Endpoint(LOCALHOST, self.pg_port, self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log_tail(self, lines: int = 20) -> str:
        return "" if self.proc is None else self.proc.log_tail(lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def good_pg(self) -> float:
        start = time.monotonic()
        dsn = (
            f"host={LOCALHOST} port={self.pg_port} user={BENCH_USER} dbname={BENCH_DB} "
            f"password={self.passwords[0]} sslmode=disable connect_timeout=10"
        )
        with psycopg.connect(dsn) as conn:
            conn.execute("select 1").fetchone()
        return time.monotonic() - start

    def good_mysql(self) -> float:
        start = time.monotonic()
        conn = pymysql.connect(
            host=LOCALHOST, port=self.my_port, user=BENCH_USER, password=self.passwords[1],
            database=BENCH_DB, connect_timeout=10, ssl_disabled=True,
        )  # fmt: skip
        try:
            with conn.cursor() as cur:
                cur.execute("select 1")
                cur.fetchone()
        finally:
            conn.close()
        return time.monotonic() - start


class Workers:
    """The attacker processes and their latest counts."""

    def __init__(self, proxy: AttackedProxy, attackers: int) -> None:
        """`attackers` stalled logins, and BIG more holding a large message."""
        third = attackers // 3
        plan = [
            ("pg", proxy.pg_port, third),
            ("pg-admin", proxy.pg_port, third),
            ("mysql", proxy.my_port, attackers - 2 * third),
            ("pg-big", proxy.pg_port, BIG // 2),
            ("mysql-big", proxy.my_port, BIG - BIG // 2),
        ]
        self.counts: list[dict[str, int]] = [{} for _ in range(WORKERS)]
        self.procs: list[subprocess.Popen[str]] = []
        for worker in range(WORKERS):
            share = [(kind, port, count // WORKERS + (worker < count % WORKERS))
                     for kind, port, count in plan]  # fmt: skip
            spec = json.dumps({"worker": worker, "attackers": share})
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.attack", "worker", spec],
                stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
            )  # fmt: skip
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(worker, proc), daemon=True).start()

    def _read(self, worker: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.counts[worker] = json.loads(line)

    def total(self, key: str) -> int:
        return sum(c.get(key, 0) for c in self.counts)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()


def attack(proxy: AttackedProxy, wanted: int = ATTACKERS) -> AttackResult:
    """Attack a started proxy with `wanted` stalled logins (or as many as fit) and BIG
    large messages; measure good logins and the proxy's RSS meanwhile."""
    pools = 2 * int(AttackedProxy.POOL["max_connections"])
    attackers, hard = attackers_that_fit(wanted, pools)
    result = AttackResult(attackers, hard)
    workers = None
    try:
        proxy.good_pg(), proxy.good_mysql()  # pools and imports warmed up
        time.sleep(1)
        result.rss_before = rss_bytes(proxy.pid)
        started = time.monotonic()
        workers = Workers(proxy, attackers)
        while (
            workers.total("held") < attackers + BIG and time.monotonic() - started < _RAMP_TIMEOUT
        ):
            time.sleep(0.5)
            result.rss_peak = max(result.rss_peak, rss_bytes(proxy.pid))
        result.ramp_seconds = round(time.monotonic() - started, 1)
        result.held_min = result.held_max = workers.total("held")
        _measure(proxy, workers, result)
        result.refused = workers.total("refused")
    finally:
        if workers is not None:
            workers.stop()
    return result


def _measure(proxy: AttackedProxy, workers: Workers, result: AttackResult) -> None:
    end = time.monotonic() + _MEASURE
    while time.monotonic() < end:
        tick = time.monotonic()
        for probe, into in ((proxy.good_pg, result.good_pg), (proxy.good_mysql, result.good_mysql)):
            try:
                into.append(round(probe(), 4))
            except Exception as exc:  # a refused or failed good login is the finding
                result.good_errors.append(f"{type(exc).__name__}: {exc}")
        held = workers.total("held")
        result.held_min, result.held_max = min(result.held_min, held), max(result.held_max, held)
        result.rss_peak = max(result.rss_peak, rss_bytes(proxy.pid))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


GUESSER = "127.0.0.3"
GUESSERS = 20


async def _guess_once(port: int) -> str:
    """One SCRAM login with a wrong password from GUESSER: the SQLSTATE it ends with."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port, local_addr=(GUESSER, 0))
    try:
        writer.write(m.startup_message({"user": BENCH_USER, "database": BENCH_DB}))
        scram = ScramClient(BENCH_USER, "a wrong guess")
        while True:
            head = await reader.readexactly(5)
            body = await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
            if head[:1] == b"E":
                return m.parse_error_fields(body).get("C", "?")
            if head[:1] != b"R":
                continue
            code, data = m.parse_auth(body)
            if code == m.AUTH_SASL:
                writer.write(m.sasl_initial_response(MECHANISM, scram.client_first()))
            elif code == m.AUTH_SASL_CONTINUE:
                writer.write(m.password_message(scram.handle_server_first(data)))
    finally:
        writer.close()


async def _guess(port: int, seconds: float) -> Counter[str]:
    answers: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def guesser() -> None:
        while time.monotonic() < end:
            try:
                answers[await asyncio.wait_for(_guess_once(port), end - time.monotonic())] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                answers["no answer"] += 1

    await asyncio.gather(*(guesser() for _ in range(GUESSERS)))
    return answers


def guess(proxy: AttackedProxy, seconds: float) -> dict[str, Any]:
    """Wrong passwords from one address for `seconds`: how many were checked (28P01),
    how many refused (28000); and a good login from another address at the end."""
    answers = asyncio.run(_guess(proxy.pg_port, seconds))
    checked = answers.get("28P01", 0)
    return {
        "guess_seconds": seconds,
        "guess_connections": GUESSERS,
        "wrong_passwords_checked": checked,
        "refused": answers.get("28000", 0),
        "other_answers": {k: v for k, v in answers.items() if k not in ("28P01", "28000")},
        "seconds_per_1000_checked_at_this_rate": round(seconds * 1000 / max(checked, 1)),
        "good_login_after_s": round(proxy.good_pg(), 4),
    }


def summary(result: AttackResult) -> dict[str, Any]:
    """The row fields of a result."""
    worst = result.worst_login
    return {
        "attack_stalled_logins": result.attackers,
        "attack_big_messages": BIG,
        "attack_held_min": result.held_min,
        "attack_held_max": result.held_max,
        "attack_refused": result.refused,
        "attack_ramp_seconds": result.ramp_seconds,
        "fd_hard_limit": result.fd_hard_limit,
        "good_logins_pg": len(result.good_pg),
        "good_logins_mysql": len(result.good_mysql),
        "good_login_worst_pg_s": max(result.good_pg, default=None),
        "good_login_worst_mysql_s": max(result.good_mysql, default=None),
        "good_login_worst_s": worst,
        "good_login_errors": result.good_errors[:3],
        "rss_before_bytes": result.rss_before,
        "rss_peak_bytes": result.rss_peak,
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        worker_main(argv[1])
        return 0
    import argparse
    import secrets
    import tempfile

    from sluice.dbserver.mariadb import MariaDbCluster
    from sluice.dbserver.postgres import PgCluster

    parser = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__)
    parser.add_argument("--attackers", type=int, default=ATTACKERS, help="stalled logins")
    parser.add_argument("--guess", type=float, default=0.0, help="seconds of password guessing")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="sluice-attack-"))
    workdir.chmod(0o755)  # the servers run as their own OS users
    password = secrets.token_urlsafe(18)
    with PgCluster(workdir / "pg") as pg, MariaDbCluster(workdir / "mariadb") as my:
        for cluster in (pg, my):
            cluster.create_user(BENCH_USER, password)
            cluster.create_database(BENCH_DB, owner=BENCH_USER)
        proxy = AttackedProxy(workdir, (pg.host, pg.port, password), (my.host, my.port, password))
        proxy.start()
        try:
            found = summary(attack(proxy, args.attackers)) if args.attackers else {}
            if args.guess:
                found.update(guess(proxy, args.guess))
        finally:
            proxy.stop()
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
