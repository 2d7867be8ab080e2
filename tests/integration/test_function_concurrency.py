"""Many functions at once through one proxy: what the recipe's proxy is for.

200 invocations are sent at once, with boto3's retries off (a throttled call would fail the
test, not be tried again), to a function that runs a transaction through the proxy from its
VPC interface (a source-group rule on the proxy's group admits it, as the recipe's step 8
does). Every one must succeed; the database must never see more connections than the proxy's
pool (MaxConnectionsPercent of its max_connections); a second wave must be served by the
environments the first one started. The function logs in with the password of the proxy's
secret (IAMAuth DISABLED, no TLS): that is enough to exercise the pool, and keeps boto3 and an
SSL context out of 200 environments; the recipe's own function, with its IAM token over TLS,
is in test_control_plane.py.

`sluice server` here allows 250 concurrent executions (`--concurrent-executions`); a second,
small server shows what happens beyond the account's concurrency: Lambda does not queue a
synchronous invocation, it answers TooManyRequestsException.
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import json
import socket
import statistics
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
from botocore.config import Config

from lambda_kit import TRUST_LAMBDA, make_zip
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.devtools.controlplane import Database, SluiceServer, build_proxy

WAVE = 200
CONCURRENCY = 250
MAX_CONNECTIONS = 200  # the database's max_connections
POOL_PERCENT = 10  # the proxy's MaxConnectionsPercent: 20 connections
DB_USER, DB_PASSWORD = "app", "App-Secret-7"

# Its module-level ENV names the environment: a warm environment answers with the same one.
TRANSACTION = """
import os, socket, uuid
import pymysql

ENV = uuid.uuid4().hex

def handler(event, context):
    with socket.create_connection(tuple(event["barrier"])) as barrier:
        barrier.recv(1)  # released once every invocation of the wave is running
    conn = pymysql.connect(host=os.environ["DB_HOST"], user=os.environ["DB_USER"],
                           password=os.environ["DB_PASSWORD"], database="appdb")
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO visits (env, request) VALUES (%s, %s)",
                        (ENV, context.aws_request_id))
            cur.execute("SELECT COUNT(*) FROM visits WHERE env = %s", (ENV,))
            (mine,) = cur.fetchone()
        conn.commit()
    finally:
        conn.close()
    return {"env": ENV, "mine": mine, "pid": os.getpid()}
"""


def pymysql_layer() -> bytes:
    """PyMySQL as a layer holds it: python/pymysql/... (what `pip install -t python` makes)."""
    source = Path(pymysql.__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, f"python/pymysql/{path.relative_to(source)}")
    return buffer.getvalue()


@dataclass
class Setup:
    server: SluiceServer
    db: MariaDbCluster
    function: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    options = ("--concurrent-executions", str(CONCURRENCY))
    with SluiceServer(options=options) as server:
        net = ipaddress.ip_network(server.vpc_cidr)
        host = str(net.network_address + 200 * 256 + 10)  # outside the default subnets
        with MariaDbCluster(host=host, port=3306, max_connections=MAX_CONNECTIONS) as db:
            db.create_user(DB_USER, DB_PASSWORD, host="%")
            db.create_database("appdb", owner=DB_USER)
            db.sql("CREATE TABLE visits (id INT AUTO_INCREMENT PRIMARY KEY, env CHAR(32), "
                   "request VARCHAR(64))", "appdb")  # fmt: skip
            built = build_proxy(server, Database("mariadb", db.host, db.port, DB_USER,
                                                 DB_PASSWORD), "pool", iam_auth=False)  # fmt: skip
            server.client("rds").modify_db_proxy_target_group(
                DBProxyName="pool", TargetGroupName="default",
                ConnectionPoolConfig={"MaxConnectionsPercent": POOL_PERCENT})  # fmt: skip
            yield Setup(server, db, _deploy(server, built.endpoint, built.security_group))
        print(f"---- sluice server log ----\n{server.log_tail(60)}")


def _deploy(server: SluiceServer, endpoint: str, proxy_sg: str) -> str:
    ec2, lam = server.client("ec2"), server.client("lambda")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
    fn_sg = ec2.create_security_group(GroupName="fn", Description="fn", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=proxy_sg, IpPermissions=[{  # step 8
        "IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
        "UserIdGroupPairs": [{"GroupId": fn_sg}]}])  # fmt: skip
    role = server.client("iam").create_role(
        RoleName="fn-role", AssumeRolePolicyDocument=json.dumps(TRUST_LAMBDA)
    )["Role"]["Arn"]
    layer = lam.publish_layer_version(LayerName="pymysql", Content={"ZipFile": pymysql_layer()},
                                      CompatibleRuntimes=["python3.11"])  # fmt: skip
    lam.create_function(
        FunctionName="visits", Runtime="python3.11", Role=role, Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": TRANSACTION})}, Timeout=120, MemorySize=128,
        Layers=[layer["LayerVersionArn"]],
        VpcConfig={"SubnetIds": subnets, "SecurityGroupIds": [fn_sg]},
        Environment={"Variables": {"DB_HOST": endpoint, "DB_USER": DB_USER,
                                   "DB_PASSWORD": DB_PASSWORD}},
    )  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName="visits")
    return "visits"


def strict_lambda(server: SluiceServer, workers: int) -> Any:
    """A Lambda client that never retries (a throttle is an error) and has a connection per
    thread."""
    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=workers,
                    read_timeout=300, connect_timeout=60)  # fmt: skip
    return server.session().client("lambda", endpoint_url=server.endpoint, config=config)


@dataclass
class Wave:
    answers: list[Any]  # the handler's results
    errors: list[str]
    init_ms: list[float]
    seconds: float

    @property
    def environments(self) -> set[str]:
        return {a["env"] for a in self.answers}


class Barrier:
    """A loopback server the wave's invocations connect to and wait on; it answers them all
    at once when `count` are waiting (then `on_full` has run), or after `timeout`."""

    def __init__(self, count: int, on_full: Callable[[], None], timeout: float = 120.0) -> None:
        self.count, self.on_full, self.timeout = count, on_full, timeout
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=count)
        self.address = list(self.listener.getsockname())
        self.waiting: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + self.timeout
        self.listener.settimeout(1.0)
        while len(self.waiting) < self.count and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                self.waiting.append(self.listener.accept()[0])
        if len(self.waiting) == self.count:
            self.on_full()
        for conn in self.waiting:
            with contextlib.suppress(OSError):
                conn.sendall(b"!")
            conn.close()
        self.listener.close()


def wave(server: SluiceServer, name: str, count: int, on_full: Callable[[], None] = lambda: None,
         running: int | None = None) -> Wave:  # fmt: skip
    """`count` invocations sent at once, each from its own thread; the handlers wait at a
    barrier until `running` (all) run, so each has an environment of its own."""
    lam = strict_lambda(server, count)
    barrier = Barrier(running or count, on_full)
    payload = json.dumps({"barrier": barrier.address}).encode()

    def one(_: int) -> tuple[Any, str, float | None]:
        try:
            out = lam.invoke(FunctionName=name, Payload=payload, LogType="Tail")
        except Exception as exc:  # throttled, or anything else: the test reports it
            return None, f"{type(exc).__name__}: {exc}", None
        body = json.loads(out["Payload"].read())
        if "FunctionError" in out:
            return None, json.dumps(body), None
        log = base64.b64decode(out["LogResult"]).decode()
        init = log.split("Init Duration: ")[1].split()[0] if "Init Duration: " in log else None
        return body, "", float(init) if init else None

    started = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    seconds = time.monotonic() - started
    barrier.thread.join()
    return Wave([r for r, _, _ in results if r is not None], [e for _, e, _ in results if e],
                [i for _, _, i in results if i is not None], seconds)  # fmt: skip


def environment_memory(server: SluiceServer) -> list[tuple[int, int]]:
    """(RSS, PSS) in KB of each execution environment (the server's child processes)."""
    assert server.proc is not None
    found: list[tuple[int, int]] = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            sizes = {}
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in ("Rss", "Pss"):
                        sizes[key] = int(value.split()[0])
            except OSError:
                continue  # gone meanwhile
            if sizes:
                found.append((sizes["Rss"], sizes["Pss"]))
    return found


def test_two_hundred_at_once_through_the_pool(setup: Setup) -> None:
    server, db = setup.server, setup.db
    db.sql("FLUSH STATUS")
    memory: list[tuple[int, int]] = []
    first = wave(server, setup.function, WAVE, lambda: memory.extend(environment_memory(server)))
    assert first.errors == [], first.errors[:3]
    assert len(first.answers) == WAVE
    assert len(first.environments) == WAVE  # all ran at once, each in its own environment

    pool_size = MAX_CONNECTIONS * POOL_PERCENT // 100
    used = int(db.sql("SHOW GLOBAL STATUS LIKE 'Max_used_connections'").split()[1])
    # The pool's connections, plus this test's own (the mariadb client) and the proxy's
    # health check, which logs in and out beside the pool.
    assert used <= pool_size + 2, f"{used} connections for a pool of {pool_size}"
    committed = db.sql("SELECT COUNT(*), COUNT(DISTINCT env) FROM visits", "appdb")
    assert committed.split() == [str(WAVE), str(WAVE)]

    second = wave(server, setup.function, WAVE)
    assert second.errors == [], second.errors[:3]
    assert second.environments == first.environments  # the warm ones, none started
    assert second.init_ms == []
    assert all(a["mine"] == 2 for a in second.answers)  # each environment's second visit

    rss = [r for r, _ in memory]
    pss = [p for _, p in memory]
    print(f"\nwave 1: {WAVE} cold in {first.seconds:.1f} s, Init Duration p50 "
          f"{statistics.median(first.init_ms):.0f} ms, max {max(first.init_ms):.0f} ms; "
          f"wave 2: {WAVE} warm in {second.seconds:.1f} s; database connections at most "
          f"{used}; {len(memory)} environments: RSS median {statistics.median(rss) / 1024:.1f} "
          f"MB, PSS total {sum(pss) / 1024:.0f} MB")  # fmt: skip
    assert len(memory) == WAVE
    # An environment of a PyMySQL handler is one Python process: 10.7 MB of its own here.
    # (With the server's site-packages on its path, PyMySQL also loaded cryptography: 13.5.)
    assert sum(pss) / len(pss) < 12 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    with SluiceServer(options=("--concurrent-executions", "3")) as server:
        yield server


def test_beyond_the_accounts_concurrency_invocations_are_throttled(small: SluiceServer) -> None:
    settings = small.aws("lambda", "get-account-settings")
    assert settings["AccountLimit"]["ConcurrentExecutions"] == 3
    assert settings["AccountLimit"]["UnreservedConcurrentExecutions"] == 3
    lam = small.client("lambda")
    role = small.client("iam").create_role(
        RoleName="r", AssumeRolePolicyDocument=json.dumps(TRUST_LAMBDA)
    )["Role"]["Arn"]
    code = (
        "import socket\ndef h(event, context):\n"
        "    socket.create_connection(tuple(event['barrier'])).recv(1)\n    return 1\n"
    )
    lam.create_function(FunctionName="slow", Runtime="python3.11", Role=role, Handler="m.h",
                        Code={"ZipFile": make_zip({"m.py": code})}, Timeout=30)  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName="slow")
    result = wave(small, "slow", 5, running=3)
    throttled = [e for e in result.errors if e.startswith("TooManyRequestsException")]
    assert len(result.answers) == 3 and len(throttled) == 2, result.errors
    usage = small.aws("lambda", "get-account-settings")["AccountUsage"]
    assert usage["FunctionCount"] == 1
