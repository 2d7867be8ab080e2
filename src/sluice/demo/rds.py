"""Part two of the demo: the same crowd through Sluice as a local RDS Proxy.

`sluice server` starts on a fresh data directory and the RDS Proxy recipe's
resources are made with boto3 against it: the demo database adopted as a DB
instance, its login in Secrets Manager, a role for the proxy that may read it,
security groups, a proxy with `IAMAuth: REQUIRED` and `RequireTLS`. The pool is
set to 20% of the database's max_connections with ModifyDBProxyTargetGroup.
Then one round of clients connects with an IAM auth token over TLS (the
endpoint's certificate verified against the server's CA), and one client with
a plain password is shown the door.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from sluice.dbserver.postgres import PgCluster
from sluice.demo.clients import BackendPoller, RoundResult, run_round
from sluice.demo.stage import DATABASE
from sluice.devtools.controlplane import Database, SluiceServer, build_iam_proxy

POOL_PERCENT = 20  # of the database's max_connections
ROUND_TIMEOUT = 30.0


@dataclass
class RdsPart:
    endpoint: str
    result: RoundResult
    peak: int
    refused: str
    secrets_logged: bool


def run(clients: int, pg: PgCluster, user: str, password: str, workdir: Path,
        stack: ExitStack) -> RdsPart:  # fmt: skip
    server = SluiceServer(workdir / "sluice-server")
    stack.callback(server.stop, 10.0)
    server.start()
    endpoint = build_iam_proxy(server, Database("postgres", pg.host, pg.port, user, password))
    rds = server.client("rds")
    rds.modify_db_proxy_target_group(
        DBProxyName="demo", TargetGroupName="default",
        ConnectionPoolConfig={"MaxConnectionsPercent": POOL_PERCENT},
    )  # fmt: skip
    time.sleep(1.5)  # the server applies a change to its running proxies within a second
    token = str(rds.generate_db_auth_token(endpoint, 5432, user))
    ca = server.data_dir / "tls" / "ca.pem"

    def conninfo(secret: str) -> str:
        return make_conninfo(
            host=endpoint, port="5432", user=user, password=secret, dbname=DATABASE,
            sslmode="verify-full", sslrootcert=str(ca), connect_timeout="10",
        )  # fmt: skip

    result, peak = asyncio.run(_round(pg, user, conninfo(token), clients))
    refused = _refusal(conninfo(password))
    log = server.log_text()
    return RdsPart(endpoint, result, peak, refused, token in log or password in log)


async def _round(pg: PgCluster, user: str, conninfo: str, clients: int) -> tuple[RoundResult, int]:
    async with BackendPoller(pg, user, DATABASE) as poller:
        result = await run_round(conninfo, clients, 0, ROUND_TIMEOUT)
    return result, poller.peak


def _refusal(conninfo: str) -> str:
    try:
        psycopg.connect(conninfo).close()
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[-1]
    return "(it got in: that is a bug)"
