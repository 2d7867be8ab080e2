"""Run `sluice server` as a child process, and drive it with the real aws CLI and boto3.

A `SluiceServer` owns a data directory, starts `python -m sluice server` on a
free loopback port with its own VPC range (so several can run side by side
with the engines' standard ports), waits until the API answers, and can stop
and restart it on the same directory. `aws(...)` runs the aws CLI with the
profile the server wrote (plus `--endpoint-url`, as the recipe is run);
`session()` gives a boto3 session on the same profile. `build_iam_proxy` makes
the recipe's resources with boto3 in front of an existing database (for the
demo and the benchmark).
"""

from __future__ import annotations

import configparser
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.dbserver.launcher import free_port
from sluice.devtools.runner import ChildProcess


def random_vpc_cidr() -> str:
    """A /16 of the loopback range unlikely to be used by anything else here."""
    return f"127.{random.randint(21, 250)}.0.0/16"


class SluiceServer(ChildProcess):
    """`sluice server` in a child process, on its own data directory."""

    def __init__(self, data_dir: Path | None = None, vpc_cidr: str | None = None,
                 options: tuple[str, ...] = ()) -> None:  # fmt: skip
        self._own_dir = data_dir is None  # a directory it made is removed when it stops
        self.options = options  # more `sluice server` options
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="sluice-server-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.vpc_cidr = vpc_cidr or random_vpc_cidr()
        self.log_path = self.data_dir / "server.log"
        self.proc = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def profile(self) -> Path:
        return self.data_dir / "aws" / "config"

    def env(self) -> dict[str, str]:
        """The environment for the aws CLI and boto3: this server's profile and nothing else."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {
            **keep,
            "AWS_CONFIG_FILE": str(self.profile),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.data_dir / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
        }

    def start(self, timeout: float = 30.0) -> None:
        self._spawn([
            "server", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
            "--vpc-cidr", self.vpc_cidr, *self.options,
        ])  # fmt: skip
        self._wait_port("127.0.0.1", self.port, time.monotonic() + timeout)

    def restart(self) -> None:
        super().stop()
        self.start()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the server; remove the data directory if it made it (not on a restart)."""
        code = super().stop(timeout)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return code

    def aws(self, *args: str, check: bool = True, cwd: Path | None = None) -> Any:
        """Run `aws ARGS --endpoint-url URL`; the parsed JSON output (or text, or None)."""
        aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or "aws"
        proc = subprocess.run(
            [aws, *args, "--endpoint-url", self.endpoint],
            capture_output=True, text=True, env=self.env(), cwd=cwd, timeout=60,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AwsCliError(args, proc.returncode, proc.stderr)
        out = proc.stdout.strip()
        if not check:
            return proc
        try:
            return json.loads(out) if out else None
        except ValueError:
            return out

    def session(self, **credentials: str) -> Any:
        """A boto3 session with the admin's key (or the given credentials) and region."""
        import boto3

        profile = configparser.ConfigParser()
        profile.read(self.profile)
        section = profile["default"]
        return boto3.session.Session(
            aws_access_key_id=credentials.get("aws_access_key_id", section["aws_access_key_id"]),
            aws_secret_access_key=credentials.get(
                "aws_secret_access_key", section["aws_secret_access_key"]
            ),
            aws_session_token=credentials.get("aws_session_token"),
            region_name=section["region"],
        )

    def client(self, service: str, **credentials: str) -> Any:
        """A boto3 client of this server (endpoint_url given, as the recipe's code would)."""
        return self.session(**credentials).client(service, endpoint_url=self.endpoint)


class AwsCliError(Exception):
    def __init__(self, args: tuple[str, ...], code: int, stderr: str) -> None:
        super().__init__(f"aws {' '.join(args[:2])} exited {code}: {stderr.strip()}")
        self.code = code
        self.stderr = stderr


_PROXY_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "rds.amazonaws.com"},
         "Action": "sts:AssumeRole"}
    ],
}  # fmt: skip
_SECRETS_POLICY = "arn:aws:iam::aws:policy/SecretsManagerReadWrite"
_READY_TIMEOUT = 60.0


class ProxySetupError(RuntimeError):
    """The control plane did not build a usable proxy (the server's log says why)."""


@dataclass(frozen=True)
class Database:
    """An existing database server to put a proxy in front of, and its login."""

    engine: str  # "postgres", "mysql" or "mariadb"
    host: str
    port: int
    user: str
    password: str = field(repr=False)


def build_iam_proxy(
    server: SluiceServer, db: Database, name: str = "demo", client_cidr: str = "127.0.0.1/32"
) -> str:
    """The recipe's resources, made with boto3: `db` adopted as a DB instance, a secret with its
    login, a proxy role that may read it, security groups (the database's admits the proxy's,
    the proxy's admits `client_cidr`), a proxy with IAMAuth REQUIRED and RequireTLS, its target
    registered and AVAILABLE. Returns the proxy endpoint's address."""
    return build_proxy(server, db, name, client_cidr).endpoint


@dataclass(frozen=True)
class BuiltProxy:
    """What `build_proxy` made: the endpoint's address and the proxy's security group."""

    endpoint: str
    security_group: str


def build_proxy(
    server: SluiceServer, db: Database, name: str, client_cidr: str = "", iam_auth: bool = True
) -> BuiltProxy:
    """As `build_iam_proxy`; without `iam_auth`, clients log in with the secret's password
    (IAMAuth DISABLED) and TLS is not required. An empty `client_cidr` admits no client yet
    (a rule for theirs is added to `security_group`)."""
    ec2, rds = server.client("ec2"), server.client("rds")
    family = "POSTGRESQL" if db.engine == "postgres" else "MYSQL"
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
    db_sg, proxy_sg = _groups(ec2, vpc, name, db, client_cidr)
    _adopt(server, db, f"{name}-db", db_sg)
    secret, role = _secret_and_role(server, db, name)
    iam = "REQUIRED" if iam_auth else "DISABLED"
    auth = [{"AuthScheme": "SECRETS", "SecretArn": secret, "IAMAuth": iam}]
    rds.create_db_proxy(
        DBProxyName=name, EngineFamily=family, RoleArn=role, RequireTLS=iam_auth, Auth=auth,
        VpcSubnetIds=subnets, VpcSecurityGroupIds=[proxy_sg],
    )  # fmt: skip

    def proxy() -> dict[str, Any]:
        return dict(rds.describe_db_proxies(DBProxyName=name)["DBProxies"][0])

    def target_state() -> str | None:
        targets = rds.describe_db_proxy_targets(DBProxyName=name)["Targets"]
        return targets[0].get("TargetHealth", {}).get("State") if targets else None

    _wait(server, "proxy status available", lambda: proxy()["Status"] == "available")
    rds.register_db_proxy_targets(DBProxyName=name, DBInstanceIdentifiers=[f"{name}-db"])
    _wait(server, "target health AVAILABLE", lambda: target_state() == "AVAILABLE")
    return BuiltProxy(str(proxy()["Endpoint"]), proxy_sg)


def _groups(ec2: Any, vpc: str, name: str, db: Database, client_cidr: str) -> tuple[str, str]:
    """(database group, proxy group): the first admits the second, which admits the clients."""
    port = 5432 if db.engine == "postgres" else 3306
    made = [
        ec2.create_security_group(GroupName=f"{name}-{part}", Description=part, VpcId=vpc)
        for part in ("db", "proxy")
    ]
    db_sg, proxy_sg = (str(m["GroupId"]) for m in made)
    if client_cidr:
        clients = _tcp(port, IpRanges=[{"CidrIp": client_cidr}])
        ec2.authorize_security_group_ingress(GroupId=proxy_sg, IpPermissions=[clients])
    proxies = _tcp(db.port, UserIdGroupPairs=[{"GroupId": proxy_sg}])
    ec2.authorize_security_group_ingress(GroupId=db_sg, IpPermissions=[proxies])
    return db_sg, proxy_sg


def _adopt(server: SluiceServer, db: Database, identifier: str, group: str) -> None:
    from sluice.control.cli import call_own

    params = {"DBInstanceIdentifier": identifier, "Engine": db.engine, "Host": db.host,
              "Port": db.port, "VpcSecurityGroupIds": [group]}  # fmt: skip
    adopted = call_own(server.profile, "adopt-db-instance", params)
    if "Code" in adopted:
        raise ProxySetupError(f"adopt-db-instance failed: {adopted['Code']}")


def _secret_and_role(server: SluiceServer, db: Database, name: str) -> tuple[str, str]:
    """The secret with the database login, and a proxy role allowed to read it."""
    login = json.dumps({"username": db.user, "password": db.password})
    secret = server.client("secretsmanager").create_secret(Name=f"{name}-login", SecretString=login)
    iam, role_name = server.client("iam"), f"{name}-proxy-role"
    trust = json.dumps(_PROXY_TRUST)
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.attach_role_policy(RoleName=role_name, PolicyArn=_SECRETS_POLICY)
    return str(secret["ARN"]), str(role)


def _tcp(port: int, **source: Any) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}


def _wait(server: SluiceServer, what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            raise ProxySetupError(f"no {what} after {_READY_TIMEOUT:.0f} s:\n{server.log_tail()}")
        time.sleep(0.2)
