"""Part one of the demo: the RDS Proxy recipe on MySQL, from an empty data directory.

`sluice server` starts on a fresh data directory; examples/cookbook-403's
prerequisites.sh (the recipe's stack: a MariaDB DB instance with a managed
secret, a table, the function with its pymysql layer) and recipe.sh (steps 1-9
and the check) run as a reader runs them, with the aws CLI. The only change is
the waiters' polling interval (1 s instead of 30 s, through botocore's data
path), so the demo does not sit idle. Then many invocations of the recipe's
function run at once while the database's connections are counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from sluice.devtools.controlplane import SluiceServer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "cookbook-403"
CONCURRENCY = 20  # sluice server's default concurrency for the account's functions
WAITER_DELAY = 1  # seconds between a waiter's polls (the aws CLI's own is 30 for RDS)
SCRIPT_TIMEOUT = 600.0


class RecipeFailed(RuntimeError):
    """A script of the example failed; the message holds the end of its output."""


@dataclass
class Invocations:
    count: int
    concurrency: int
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    peak_connections: int = 0  # open at once, as the database counted them
    opened_connections: int = 0  # logins the database saw meanwhile


@dataclass
class RecipePart:
    """What part one saw: the recipe's answer, then the crowd of invocations."""

    timings: list[tuple[str, float]]
    answer: dict[str, Any]
    endpoint: str
    instance: str
    invocations: Invocations
    secrets_logged: bool


def run(
    invocations: int, workdir: Path, stack: ExitStack, say: Callable[[str], None]
) -> RecipePart:
    server = SluiceServer()  # a data directory of its own, removed when it stops
    stack.callback(server.stop, 30.0)
    server.start()
    env = _script_env(server, workdir)
    timings = [
        _script("prerequisites.sh", env, say),
        _script("recipe.sh", env, say, "recipe.sh: steps 1-9 and `aws lambda invoke`"),
    ]
    answer = json.loads((workdir / "cookbook-403-mysql" / "response.json").read_text())
    variables = _variables(workdir / "cookbook-403-mysql" / "recipe-vars.sh")
    say(f"  {invocations} invocations of the function, {CONCURRENCY} at a time ...")
    crowd = _crowd(server, variables, invocations)
    password = _master_password(server, variables["RDS_SECRET_ARN"])
    server.stop(30.0)  # its DB instance and function environments with it
    log = server.log_text()
    return RecipePart(
        timings, answer, variables["RDS_PROXY_ENDPOINT"], variables["RDS_ENDPOINT"], crowd,
        secrets_logged=password in log,
    )  # fmt: skip


def _script_env(server: SluiceServer, workdir: Path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {
        **server.env(),
        "ENDPOINT_URL": server.endpoint,
        "SLUICE_DATA_DIR": str(server.data_dir),
        "ENGINE": "mysql",
        "WORK_DIR": str(workdir / "cookbook-403-mysql"),
        "PYTHON": sys.executable,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "AWS_DATA_PATH": str(_quick_waiters(workdir / "botocore-data")),
    }


def _quick_waiters(root: Path) -> Path:
    """botocore's RDS waiters with a 1 s delay, where AWS_DATA_PATH makes the aws CLI find them."""
    import botocore.loaders

    loader = botocore.loaders.Loader()
    version = loader.determine_latest_version("rds", "waiters-2")
    model = loader.load_service_model("rds", "waiters-2", version)
    for waiter in model["waiters"].values():
        waiter["delay"] = WAITER_DELAY
        waiter["maxAttempts"] = 600
    target = root / "rds" / version / "waiters-2.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(model))
    return root


def _script(name: str, env: dict[str, str], say: Callable[[str], None],
            title: str = "") -> tuple[str, float]:  # fmt: skip
    """Run a script of the example; its progress lines ("-- ...") are shown as they come."""
    if title:
        say(f"  {title} ...")
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", str(EXAMPLE / name)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(proc.stdout or ()), daemon=True)
    reader.start()
    stderr: list[str] = []
    for line in proc.stderr or ():
        if line.startswith("-- "):
            say(f"  {line[3:].rstrip()} ...")
        else:
            stderr.append(line)
    code = proc.wait(SCRIPT_TIMEOUT)
    reader.join()
    if code != 0:
        tail = "".join(stdout[-20:] + stderr[-20:])
        raise RecipeFailed(f"{name} exited with status {code}:\n{tail}")
    return name, time.monotonic() - started


def _variables(path: Path) -> dict[str, str]:
    """The simple NAME=value lines of the scripts' variables file."""
    out = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        out[name] = value.replace("\\", "")
    return out


def _crowd(server: SluiceServer, variables: dict[str, str], count: int) -> Invocations:
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=64,
                    read_timeout=120)  # fmt: skip
    lam = server.session().client("lambda", endpoint_url=server.endpoint, config=config)
    name = variables["DB_APP_FUNCTION_NAME"]
    result = Invocations(count, CONCURRENCY)

    def invoke(_: int) -> str:
        try:
            reply = lam.invoke(FunctionName=name)
            body = json.loads(reply["Payload"].read())
        except Exception as exc:  # each failure is counted by its kind
            return type(exc).__name__
        if "FunctionError" in reply:
            return str(body.get("errorType", "FunctionError"))
        return "" if len(body.get("books", ())) == 3 else "wrong answer"

    with _connection_count(server, variables) as counts:
        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = list(pool.map(invoke, range(count)))
        result.elapsed = time.monotonic() - started
    result.peak_connections, result.opened_connections = counts()
    result.answered = outcomes.count("")
    result.errors = Counter(o for o in outcomes if o)
    return result


@contextmanager
def _connection_count(
    server: SluiceServer, variables: dict[str, str]
) -> Iterator[Callable[[], tuple[int, int]]]:
    """Poll the database's client connections (other than the poller's own) every 50 ms; give
    their peak and how many logins the database saw (its `Connections` status) meanwhile.

    The poller logs in with the master password from the instance's secret; the database's
    security group admits this machine's address for it, and only while it polls."""
    ec2 = server.client("ec2")
    rule = {"GroupId": variables["RDS_SG"], "IpProtocol": "tcp", "FromPort": 3306,
            "ToPort": 3306, "CidrIp": "127.0.0.1/32"}  # fmt: skip
    ec2.authorize_security_group_ingress(**rule)
    conn = pymysql.connect(
        host=variables["RDS_ENDPOINT"], port=3306, user="admin", database="appdb",
        password=_master_password(server, variables["RDS_SECRET_ARN"]), autocommit=True,
    )  # fmt: skip
    peak, done = [0], threading.Event()
    logins = _logins(conn)

    def poll() -> None:
        with conn.cursor() as cur:
            while not done.wait(0.05):
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                            "WHERE USER = 'admin' AND ID <> CONNECTION_ID()")  # fmt: skip
                row = cur.fetchone()
                peak[0] = max(peak[0], int(row[0]) if row else 0)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield lambda: (peak[0], logins)
    finally:
        done.set()
        poller.join()
        logins = _logins(conn) - logins
        conn.close()
        ec2.revoke_security_group_ingress(**rule)


def _logins(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
        row = cur.fetchone()
    return int(row[1]) if row else 0


def _master_password(server: SluiceServer, secret_arn: str) -> str:
    secret = server.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    return str(json.loads(secret["SecretString"])["password"])
