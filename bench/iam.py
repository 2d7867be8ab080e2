"""Sluice as an AWS RDS Proxy with IAM authentication: the system of the IAM-token row.

The other Sluice rows run `sluice proxy` from a TOML file with SCRAM and no
TLS. This one runs `sluice server` (the control plane, whose process also
runs the proxies it creates) and builds the proxy the way an AWS user does,
with boto3 calls against it: the bench's PostgreSQL adopted as a DB instance,
a secret with the bench role's password, a role for the proxy that may read
it, security groups (the database's admits the proxy's, the proxy's admits
127.0.0.1, where pgbench connects from), a proxy with `IAMAuth: REQUIRED`
and `RequireTLS`, its target registered and healthy. The client's password
is then an `rds-db` auth token from boto3's `generate_db_auth_token`, sent
in cleartext over TLS (`PGSSLMODE=require`): what a serverless function
opening a connection per invocation does. One token serves the whole row
(valid for 15 minutes), so the row measures the proxy verifying tokens, not
boto3 making them. The server starts afresh for every row, like the other
systems, and the proxy to measure is its process.
"""

from __future__ import annotations

from pathlib import Path

from bench.systems import BENCH_USER, BenchDatabase, Endpoint
from sluice.devtools.controlplane import Database, SluiceServer, build_iam_proxy

PROXY_NAME = "bench"
PROXY_PORT = 5432  # the PostgreSQL endpoints' port (`sluice server --postgres-port`)


class IamProxySystem:
    """A DB proxy of `sluice server` in front of the bench database, clients using IAM tokens."""

    name = "sluice"

    def __init__(self, db: BenchDatabase, workdir: Path) -> None:
        self.db, self.workdir = db, workdir
        self.server: SluiceServer | None = None
        self.runs = 0

    def start(self) -> Endpoint:
        """Start the server, build the proxy, wait for a healthy target; where to connect."""
        self.runs += 1
        data_dir = self.workdir / f"sluice-server-{self.runs}"
        data_dir.mkdir(parents=True)
        self.server = SluiceServer(data_dir)
        cluster = self.db.cluster
        target = Database("postgres", cluster.host, cluster.port, BENCH_USER, self.db.password)
        try:
            self.server.start()
            address = build_iam_proxy(self.server, target, PROXY_NAME)
            # one token for the whole row, signed with the admin's key (AdministratorAccess)
            rds = self.server.client("rds")
            token = str(rds.generate_db_auth_token(address, PROXY_PORT, BENCH_USER))
        except BaseException:
            self.stop()
            raise
        assert self.server.proc is not None
        return Endpoint(address, PROXY_PORT, self.server.proc.pid, token, "require")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def log_tail(self, lines: int = 20) -> str:
        return "" if self.server is None else self.server.log_tail(lines)
