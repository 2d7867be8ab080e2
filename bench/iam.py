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

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.systems import BENCH_USER, BenchDatabase, Endpoint
from sluice.control.cli import call_own
from sluice.devtools.controlplane import SluiceServer

PROXY_NAME = "bench"
INSTANCE_ID = "bench-db"
PROXY_PORT = 5432  # the PostgreSQL endpoints' port (`sluice server --postgres-port`)
_READY_TIMEOUT = 60.0
_POLL = 0.2
_PROXY_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "rds.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
_SECRETS_POLICY = "arn:aws:iam::aws:policy/SecretsManagerReadWrite"


class IamSetupError(RuntimeError):
    """The control plane did not build a usable proxy (its log tail says why)."""


def _tcp_rule(port: int, **source: Any) -> list[dict[str, Any]]:
    """IpPermissions for one TCP port from a CIDR (`IpRanges`) or a group (`UserIdGroupPairs`)."""
    return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}]


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
        try:
            self.server.start()
            address = self._build_proxy(self.server)
            token = self._token(self.server, address)
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

    def _build_proxy(self, server: SluiceServer) -> str:
        """The recipe's resources, made with boto3; returns the proxy endpoint's address."""
        ec2, rds = server.client("ec2"), server.client("rds")
        vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
        db_sg, proxy_sg = self._security_groups(ec2, vpc)
        self._adopt(server, db_sg)
        secret = self._secret(server)
        rds.create_db_proxy(
            DBProxyName=PROXY_NAME,
            EngineFamily="POSTGRESQL",
            Auth=[{"AuthScheme": "SECRETS", "SecretArn": secret, "IAMAuth": "REQUIRED"}],
            RoleArn=self._proxy_role(server),
            VpcSubnetIds=subnets,
            VpcSecurityGroupIds=[proxy_sg],
            RequireTLS=True,
        )
        self._wait("proxy status available", lambda: self._proxy(rds)["Status"] == "available")
        rds.register_db_proxy_targets(DBProxyName=PROXY_NAME, DBInstanceIdentifiers=[INSTANCE_ID])
        self._wait("target health AVAILABLE", lambda: self._target_state(rds) == "AVAILABLE")
        return str(self._proxy(rds)["Endpoint"])

    def _security_groups(self, ec2: Any, vpc: str) -> tuple[str, str]:
        """(database group, proxy group): the first admits the second, which admits 127.0.0.1."""
        groups = []
        for name in ("bench-db-sg", "bench-proxy-sg"):
            made = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)
            groups.append(str(made["GroupId"]))
        db_sg, proxy_sg = groups
        from_host = _tcp_rule(PROXY_PORT, IpRanges=[{"CidrIp": "127.0.0.1/32"}])
        ec2.authorize_security_group_ingress(GroupId=proxy_sg, IpPermissions=from_host)
        from_proxy = _tcp_rule(self.db.cluster.port, UserIdGroupPairs=[{"GroupId": proxy_sg}])
        ec2.authorize_security_group_ingress(GroupId=db_sg, IpPermissions=from_proxy)
        return db_sg, proxy_sg

    def _adopt(self, server: SluiceServer, group: str) -> None:
        params = {
            "DBInstanceIdentifier": INSTANCE_ID,
            "Engine": "postgres",
            "Host": self.db.cluster.host,
            "Port": self.db.cluster.port,
            "VpcSecurityGroupIds": [group],
            "EngineVersion": "",
        }
        result = call_own(server.profile, "adopt-db-instance", params)
        if "Code" in result:
            raise IamSetupError(f"adopt-db-instance failed: {result.get('Code')}")

    def _secret(self, server: SluiceServer) -> str:
        value = json.dumps({"username": BENCH_USER, "password": self.db.password})
        made = server.client("secretsmanager").create_secret(
            Name="bench-secret", SecretString=value
        )
        return str(made["ARN"])

    @staticmethod
    def _proxy_role(server: SluiceServer) -> str:
        iam = server.client("iam")
        role = iam.create_role(
            RoleName="BenchRdsProxy", AssumeRolePolicyDocument=json.dumps(_PROXY_TRUST)
        )
        iam.attach_role_policy(RoleName="BenchRdsProxy", PolicyArn=_SECRETS_POLICY)
        return str(role["Role"]["Arn"])

    @staticmethod
    def _proxy(rds: Any) -> dict[str, Any]:
        proxy: dict[str, Any] = rds.describe_db_proxies(DBProxyName=PROXY_NAME)["DBProxies"][0]
        return proxy

    @staticmethod
    def _target_state(rds: Any) -> str | None:
        targets = rds.describe_db_proxy_targets(DBProxyName=PROXY_NAME)["Targets"]
        return targets[0].get("TargetHealth", {}).get("State") if targets else None

    @staticmethod
    def _wait(what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while not done():
            if time.monotonic() > deadline:
                raise IamSetupError(f"no {what} after {_READY_TIMEOUT:.0f} s")
            time.sleep(_POLL)

    @staticmethod
    def _token(server: SluiceServer, address: str) -> str:
        """An auth token for the bench user, signed with the admin's key (AdministratorAccess)."""
        rds = server.client("rds")
        return str(rds.generate_db_auth_token(address, PROXY_PORT, BENCH_USER))
