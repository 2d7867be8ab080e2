"""DB instances that are real servers: created, used, rebooted, restarted and deleted through
the RDS API of `sluice server`, with the aws CLI and boto3.

Every boto3 response is also checked against botocore's output shape of its
operation (`model_check`: members, types, enums), as the service unit tests do.
An instance listens on its own address in its subnet at the engine's standard
port, so each test keeps to one instance. Its security groups are enforced at
that address: a client no rule admits is refused in the engine's own words.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import psycopg
import pymysql
import pytest

from helpers import wait_for
from model_check import checked
from sluice.dbserver.mariadb import server_version as mariadb_version
from sluice.dbserver.postgres import server_version as postgres_version
from sluice.devtools.controlplane import SluiceServer

pytestmark = pytest.mark.timeout(300)

FAST = {"Delay": 1, "MaxAttempts": 90}


@pytest.fixture
def server() -> Iterator[SluiceServer]:
    with SluiceServer() as srv:
        yield srv
        print(f"---- sluice server log ----\n{srv.log_tail(120)}")
    shutil.rmtree(srv.data_dir, ignore_errors=True)  # instances' data included


def _statuses_until(rds: Any, name: str, final: str, timeout: float = 90) -> list[str]:
    """The statuses DescribeDBInstances shows, polled until `final`."""
    seen: list[str] = []

    def reached() -> bool:
        doc = checked(rds, "DescribeDBInstances", DBInstanceIdentifier=name)["DBInstances"][0]
        if not seen or seen[-1] != doc["DBInstanceStatus"]:
            seen.append(doc["DBInstanceStatus"])
        return bool(seen[-1] == final)

    assert wait_for(reached, timeout=timeout, interval=0.2), seen
    return seen


def _network(server: SluiceServer) -> tuple[str, list[str], list[str]]:
    """(VPC id, subnet ids, subnet CIDRs) of the default VPC."""
    ec2 = server.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets()["Subnets"]
    return vpc, [s["SubnetId"] for s in subnets], [s["CidrBlock"] for s in subnets]


def _in_subnets(address: str, cidrs: list[str]) -> bool:
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(c) for c in cidrs)


def test_mysql_instance_with_managed_secret_from_create_to_delete(server: SluiceServer) -> None:
    rds = server.client("rds")
    vpc, subnets, cidrs = _network(server)
    group = server.aws("rds", "create-db-subnet-group", "--db-subnet-group-name", "app-subnets",
                       "--db-subnet-group-description", "isolated", "--subnet-ids",
                       *subnets[:2])["DBSubnetGroup"]  # fmt: skip
    assert group["VpcId"] == vpc and len(group["Subnets"]) == 2
    listed = checked(rds, "DescribeDBSubnetGroups", DBSubnetGroupName="app-subnets")
    assert listed["DBSubnetGroups"][0]["SubnetGroupStatus"] == "Complete"
    sg = server.aws("ec2", "create-security-group", "--group-name", "db-sg", "--description",
                    "database", "--vpc-id", vpc, "--query", "GroupId",
                    "--output", "text")  # fmt: skip
    made = server.aws(
        "rds", "create-db-instance", "--db-instance-identifier", "app-db", "--engine", "mysql",
        "--db-instance-class", "db.t3.micro", "--allocated-storage", "20",
        "--master-username", "admin", "--manage-master-user-password", "--db-name", "appdb",
        "--vpc-security-group-ids", sg, "--db-subnet-group-name", "app-subnets",
        "--enable-iam-database-authentication",
    )["DBInstance"]  # fmt: skip
    assert made["DBInstanceStatus"] == "creating"
    assert made["MasterUserSecret"]["SecretStatus"] == "creating"
    assert made["IAMDatabaseAuthenticationEnabled"] is True
    seen = _statuses_until(rds, "app-db", "available")
    assert seen[0] == "creating" and seen[-1] == "available", seen
    assert set(seen) <= {"creating", "backing-up", "available"}, seen
    server.aws("rds", "wait", "db-instance-available", "--db-instance-identifier", "app-db")
    doc = checked(rds, "DescribeDBInstances", DBInstanceIdentifier="app-db")["DBInstances"][0]
    endpoint = doc["Endpoint"]
    assert endpoint["Port"] == 3306 and _in_subnets(endpoint["Address"], cidrs[:2])
    assert doc["EngineVersion"] == mariadb_version() and doc["Engine"] == "mysql"
    assert doc["AllocatedStorage"] == 20 and doc["DBName"] == "appdb"
    assert doc["DBSubnetGroup"]["DBSubnetGroupName"] == "app-subnets"
    assert doc["VpcSecurityGroups"] == [{"VpcSecurityGroupId": sg, "Status": "active"}]
    secret_arn = doc["MasterUserSecret"]["SecretArn"]
    assert doc["MasterUserSecret"]["SecretStatus"] == "active"
    sm = server.client("secretsmanager")
    login = json.loads(sm.get_secret_value(SecretId=secret_arn)["SecretString"])
    assert login["username"] == "admin"

    def connect(**source: Any) -> Any:
        return pymysql.connect(host=endpoint["Address"], port=3306, user="admin",
                               password=login["password"], database="appdb",
                               connect_timeout=5, **source)  # fmt: skip

    with pytest.raises(pymysql.err.OperationalError) as refused:  # db-sg has no rule yet
        connect()
    assert refused.value.args == (
        1130, "Host '127.0.0.1' is not allowed to connect to this MariaDB server")
    rule = ["--group-id", sg, "--protocol", "tcp", "--port", "3306", "--cidr", "127.0.0.1/32"]
    server.aws("ec2", "authorize-security-group-ingress", *rule)
    conn = connect()
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, item TEXT)")
        cur.execute("INSERT INTO orders VALUES (1, 'tea')")
        conn.commit()
        cur.execute("SELECT VERSION(), DATABASE(), CURRENT_USER()")
        version, database, user = cur.fetchone()
        cur.execute("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        (host,) = cur.fetchone()
    assert version.startswith(mariadb_version()) and database == "appdb" and user == "admin@%"
    assert host.rpartition(":")[0] == "127.0.0.1"  # the database sees the client's address
    server.aws("ec2", "revoke-security-group-ingress", *rule)
    with pytest.raises(pymysql.err.OperationalError, match="is not allowed to connect"):
        connect()
    # a member of a group the rules name: a client bound to an interface in that group
    client_sg = server.aws("ec2", "create-security-group", "--group-name", "app-sg",
                           "--description", "app", "--vpc-id", vpc, "--query", "GroupId",
                           "--output", "text")  # fmt: skip
    eni = server.aws("ec2", "create-network-interface", "--subnet-id", subnets[0], "--groups",
                     client_sg)["NetworkInterface"]["PrivateIpAddress"]  # fmt: skip
    with pytest.raises(pymysql.err.OperationalError, match=f"Host '{eni}' is not allowed"):
        connect(bind_address=eni)
    server.aws("ec2", "authorize-security-group-ingress", "--group-id", sg, "--protocol", "tcp",
               "--port", "3306", "--source-group", client_sg)  # fmt: skip
    with connect(bind_address=eni) as member, member.cursor() as cur:
        cur.execute("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        assert cur.fetchone()[0].rpartition(":")[0] == eni
    events = checked(rds, "DescribeEvents", SourceType="db-instance", SourceIdentifier="app-db")
    assert "DB instance created" in [e["Message"] for e in events["Events"]]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        rds.delete_db_subnet_group(DBSubnetGroupName="app-subnets")
    assert info.value.response["Error"]["Code"] == "InvalidDBSubnetGroupStateFault"

    with pytest.raises(botocore.exceptions.ClientError) as info:
        rds.delete_db_instance(DBInstanceIdentifier="app-db")
    assert info.value.response["Error"]["Code"] == "InvalidParameterCombination"
    gone = checked(rds, "DeleteDBInstance", DBInstanceIdentifier="app-db",
                   SkipFinalSnapshot=True)["DBInstance"]  # fmt: skip
    assert gone["DBInstanceStatus"] == "deleting"
    rds.get_waiter("db_instance_deleted").wait(DBInstanceIdentifier="app-db", WaiterConfig=FAST)
    server.aws("rds", "wait", "db-instance-deleted", "--db-instance-identifier", "app-db")
    assert not (server.data_dir / "db-instances" / "app-db").exists()
    with pytest.raises(botocore.exceptions.ClientError):
        sm.describe_secret(SecretId=secret_arn)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=endpoint["Address"], port=3306, user="admin",
                        password=login["password"], connect_timeout=3)  # fmt: skip
    checked(rds, "DeleteDBSubnetGroup", DBSubnetGroupName="app-subnets")
    assert checked(rds, "DescribeDBSubnetGroups")["DBSubnetGroups"] == []


def _allow_local(server: SluiceServer, port: int, revoke: bool = False) -> None:
    """A rule of the default security group admitting this host's unbound clients."""
    ec2 = server.client("ec2")
    group = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    call = ec2.revoke_security_group_ingress if revoke else ec2.authorize_security_group_ingress
    call(GroupId=group, IpPermissions=[_tcp(port, IpRanges=[{"CidrIp": "127.0.0.1/32"}])])


def _pg(doc: dict[str, Any], password: str) -> psycopg.Connection[Any]:
    endpoint = doc["Endpoint"]
    return psycopg.connect(host=endpoint["Address"], port=endpoint["Port"], user="master",
                           password=password, dbname="shop", connect_timeout=5)  # fmt: skip


def _describe(rds: Any, name: str) -> dict[str, Any]:
    found: dict[str, Any] = checked(rds, "DescribeDBInstances", DBInstanceIdentifier=name)
    return dict(found["DBInstances"][0])


def test_postgres_instance_lives_through_restarts_and_changes(server: SluiceServer) -> None:
    rds = server.client("rds")
    made = checked(
        rds, "CreateDBInstance", DBInstanceIdentifier="shop-db", Engine="postgres",
        DBInstanceClass="db.t3.micro", AllocatedStorage=30, MasterUsername="master",
        MasterUserPassword="First-Password-1", DBName="shop",
    )["DBInstance"]  # fmt: skip
    assert made["DBSubnetGroup"]["DBSubnetGroupName"] == "default"
    rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier="shop-db",
                                                 WaiterConfig=FAST)  # fmt: skip
    doc = _describe(rds, "shop-db")
    assert doc["Endpoint"]["Port"] == 5432 and doc["EngineVersion"] == postgres_version()
    assert "MasterUserSecret" not in doc
    refused = re.escape('no pg_hba.conf entry for host "127.0.0.1", user "master", database "shop"')
    with pytest.raises(psycopg.OperationalError, match=refused):
        _pg(doc, "First-Password-1")  # the default group admits only its own members
    _allow_local(server, 5432)
    with _pg(doc, "First-Password-1") as conn:
        address = conn.execute("SELECT host(inet_client_addr())").fetchone()
        assert address == ("127.0.0.1",)  # the database sees the client's address
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives')")
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "master", "shop")

    server.restart()  # the instance comes back with `sluice server`
    rds = server.client("rds")
    doc = _describe(rds, "shop-db")
    assert doc["DBInstanceStatus"] == "available"
    with _pg(doc, "First-Password-1") as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]

    changed = checked(rds, "ModifyDBInstance", DBInstanceIdentifier="shop-db",
                      MasterUserPassword="Second-Password-2", ApplyImmediately=True)  # fmt: skip
    assert changed["DBInstance"]["DBInstanceStatus"] == "resetting-master-credentials"
    _statuses_until(rds, "shop-db", "available", timeout=30)
    with _pg(doc, "Second-Password-2") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _pg(doc, "First-Password-1")

    rebooted = checked(rds, "RebootDBInstance", DBInstanceIdentifier="shop-db")
    assert rebooted["DBInstance"]["DBInstanceStatus"] == "rebooting"
    _statuses_until(rds, "shop-db", "available", timeout=60)
    checked(rds, "StopDBInstance", DBInstanceIdentifier="shop-db")
    _statuses_until(rds, "shop-db", "stopped", timeout=60)
    with pytest.raises(psycopg.OperationalError):
        _pg(doc, "Second-Password-2")
    checked(rds, "StartDBInstance", DBInstanceIdentifier="shop-db")
    _statuses_until(rds, "shop-db", "available", timeout=60)

    pid_file = server.data_dir / "db-instances" / "shop-db" / "data" / "postmaster.pid"
    pid = int(pid_file.read_text(encoding="ascii").split()[0])
    os.kill(pid, signal.SIGKILL)  # the server dies: it is started again, and an event says so

    def answers() -> bool:
        try:
            with _pg(doc, "Second-Password-2") as conn:
                return conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]
        except psycopg.OperationalError:
            return False

    assert wait_for(answers, timeout=60, interval=0.5)
    messages = [e["Message"] for e in checked(rds, "DescribeEvents", SourceType="db-instance",
                                              SourceIdentifier="shop-db")["Events"]]  # fmt: skip
    assert any("had stopped" in m for m in messages), messages

    assert server.proc is not None
    server.proc.kill()  # sluice server dies; its database outlives it and is taken back
    server.proc.wait()
    assert _serving(server.data_dir / "db-instances" / "shop-db")
    server.start()
    rds = server.client("rds")
    assert _describe(rds, "shop-db")["DBInstanceStatus"] == "available"
    assert answers()
    _allow_local(server, 5432, revoke=True)  # revoked: the next connection is refused
    with pytest.raises(psycopg.OperationalError, match=refused):
        _pg(doc, "Second-Password-2")

    checked(rds, "DeleteDBInstance", DBInstanceIdentifier="shop-db", SkipFinalSnapshot=True)
    rds.get_waiter("db_instance_deleted").wait(DBInstanceIdentifier="shop-db", WaiterConfig=FAST)
    assert not (server.data_dir / "db-instances" / "shop-db").exists()
    assert not _serving(server.data_dir / "db-instances" / "shop-db")


def _serving(base: Path) -> list[int]:
    """Pids of processes whose command line names a path under `base`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and str(base).encode() in cmdline:
            found.append(int(proc.name))
    return found


def _tcp(port: int, **source: Any) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}


def _proxy_in_front(
    server: SluiceServer, instance: dict[str, Any], proxy_sg: str, family: str = "MYSQL"
) -> dict[str, Any]:
    """A proxy (password logins, the instance's own secret) with the instance as its target;
    its document once available."""
    rds, iam = server.client("rds"), server.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "rds.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}  # fmt: skip
    role = iam.create_role(RoleName="proxy-role", AssumeRolePolicyDocument=json.dumps(trust))
    iam.attach_role_policy(RoleName="proxy-role",
                           PolicyArn="arn:aws:iam::aws:policy/SecretsManagerReadWrite")  # fmt: skip
    _, subnets, _ = _network(server)
    auth = [{"AuthScheme": "SECRETS", "SecretArn": instance["MasterUserSecret"]["SecretArn"],
             "IAMAuth": "DISABLED"}]  # fmt: skip
    rds.create_db_proxy(DBProxyName="app-proxy", EngineFamily=family, Auth=auth,
                        RoleArn=role["Role"]["Arn"], VpcSubnetIds=subnets,
                        VpcSecurityGroupIds=[proxy_sg])  # fmt: skip

    def proxy() -> dict[str, Any]:
        return dict(rds.describe_db_proxies(DBProxyName="app-proxy")["DBProxies"][0])

    assert wait_for(lambda: proxy()["Status"] == "available", timeout=30, interval=0.2)
    rds.register_db_proxy_targets(DBProxyName="app-proxy",
                                  DBInstanceIdentifiers=[instance["DBInstanceIdentifier"]])
    return proxy()


def _target_health(rds: Any) -> dict[str, str]:
    targets = rds.describe_db_proxy_targets(DBProxyName="app-proxy")["Targets"]
    return dict(targets[0].get("TargetHealth", {})) if targets else {}


def _target_state(rds: Any) -> str:
    return _target_health(rds).get("State", "")


def _connection_failed(rds: Any) -> bool:
    health = _target_health(rds)
    return (health.get("State"), health.get("Reason")) == ("UNAVAILABLE", "CONNECTION_FAILED")


def _step_6(server: SluiceServer, db_sg: str, proxy_sg: str, port: int, verb: str) -> None:
    """The recipe's step 6 (authorize) or its clean-up (revoke), with the aws CLI."""
    server.aws("ec2", f"{verb}-security-group-ingress", "--group-id", db_sg, "--protocol", "tcp",
               "--port", str(port), "--source-group", proxy_sg)  # fmt: skip


def _instance_in_its_group(
    server: SluiceServer, name: str, engine: str, user: str, database: str
) -> tuple[str, str, dict[str, Any]]:
    """A managed-secret instance in a group of its own, and a proxy group admitting this
    host's clients: (database group, proxy group, the instance once available)."""
    ec2, rds = server.client("ec2"), server.client("rds")
    vpc, _, _ = _network(server)
    db_sg, proxy_sg = (
        ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"]
        for n in ("db", "proxy")
    )
    port = 5432 if engine == "postgres" else 3306
    ec2.authorize_security_group_ingress(
        GroupId=proxy_sg, IpPermissions=[_tcp(port, IpRanges=[{"CidrIp": "127.0.0.1/32"}])])
    rds.create_db_instance(
        DBInstanceIdentifier=name, Engine=engine, DBInstanceClass="db.t3.micro",
        MasterUsername=user, ManageMasterUserPassword=True, DBName=database,
        VpcSecurityGroupIds=[db_sg], AllocatedStorage=20,
    )  # fmt: skip
    rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier=name,
                                                 WaiterConfig=FAST)  # fmt: skip
    return db_sg, proxy_sg, _describe(rds, name)


def test_a_proxy_in_front_of_an_instance_through_reboot_and_password_rotation(
    server: SluiceServer,
) -> None:
    rds, sm = server.client("rds"), server.client("secretsmanager")
    db_sg, proxy_sg, instance = _instance_in_its_group(server, "app-db", "mariadb", "admin",
                                                       "appdb")  # fmt: skip
    address = instance["Endpoint"]["Address"]
    proxy = _proxy_in_front(server, instance, proxy_sg)
    endpoint = proxy["Endpoint"]
    arn = instance["MasterUserSecret"]["SecretArn"]

    def login() -> dict[str, str]:
        return dict(json.loads(sm.get_secret_value(SecretId=arn)["SecretString"]))

    # no step 6 yet: the instance refuses the proxy's address, as any other
    assert wait_for(lambda: _connection_failed(rds), timeout=40, interval=0.2)

    def from_proxy_address(password: str) -> Any:
        return pymysql.connect(host=address, port=3306, user="admin", password=password,
                               bind_address=endpoint, connect_timeout=5)  # fmt: skip

    with pytest.raises(pymysql.err.OperationalError) as refused:
        from_proxy_address(login()["password"])
    assert refused.value.args[0] == 1130 and f"'{endpoint}'" in refused.value.args[1]
    _step_6(server, db_sg, proxy_sg, 3306, "authorize")
    assert wait_for(lambda: _target_state(rds) == "AVAILABLE", timeout=40, interval=0.2)

    def through_proxy(password: str) -> Any:
        return pymysql.connect(host=endpoint, port=3306, user="admin", password=password,
                               database="appdb", connect_timeout=5)  # fmt: skip

    client = through_proxy(login()["password"])
    with client.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)

    checked(rds, "RebootDBInstance", DBInstanceIdentifier="app-db")
    assert _target_state(rds) == "UNAVAILABLE"
    assert wait_for(lambda: _target_state(rds) == "AVAILABLE", timeout=60, interval=0.2)
    with client.cursor() as cur:  # the proxy's client lives through the reboot
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("appdb",)

    old = login()["password"]
    rotated = checked(rds, "ModifyDBInstance", DBInstanceIdentifier="app-db",
                      RotateMasterUserPassword=True, ApplyImmediately=True)  # fmt: skip
    assert rotated["DBInstance"]["DBInstanceStatus"] == "resetting-master-credentials"
    _statuses_until(rds, "app-db", "available", timeout=30)
    new = login()["password"]
    assert new != old
    with through_proxy(new) as fresh, fresh.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone() == ("admin@%",)
    with pytest.raises(pymysql.err.OperationalError):
        through_proxy(old)
    direct = from_proxy_address(new)  # step 6 admits the proxy's address, whoever binds it
    with direct, direct.cursor() as cur:  # the pool's connections go: new ones need `new`
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE USER = 'admin' AND ID <> CONNECTION_ID()")  # fmt: skip
        for (thread,) in cur.fetchall():
            cur.execute(f"KILL CONNECTION {int(thread)}")
    with client.cursor() as cur:
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)
    client.close()


def test_the_recipes_step_6_rule_is_what_lets_a_postgres_proxy_in(server: SluiceServer) -> None:
    rds, sm = server.client("rds"), server.client("secretsmanager")
    db_sg, proxy_sg, instance = _instance_in_its_group(server, "pg-db", "postgres", "master",
                                                       "shop")  # fmt: skip
    secret = instance["MasterUserSecret"]["SecretArn"]
    password = json.loads(sm.get_secret_value(SecretId=secret)["SecretString"])["password"]
    endpoint = _proxy_in_front(server, instance, proxy_sg, "POSTGRESQL")["Endpoint"]

    def through_proxy() -> psycopg.Connection[Any]:
        return psycopg.connect(host=endpoint, port=5432, user="master", password=password,
                               dbname="shop", connect_timeout=5)  # fmt: skip

    assert wait_for(lambda: _connection_failed(rds), timeout=40, interval=0.2)
    with pytest.raises(psycopg.OperationalError):
        through_proxy()  # the instance turns the proxy's connection away
    _step_6(server, db_sg, proxy_sg, 5432, "authorize")
    assert wait_for(lambda: _target_state(rds) == "AVAILABLE", timeout=40, interval=0.2)
    with through_proxy() as conn:  # the database sees the proxy's own address
        assert conn.execute("SELECT host(inet_client_addr())").fetchone() == (endpoint,)
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(host=instance["Endpoint"]["Address"], port=5432, user="master",
                        password=password, dbname="shop", connect_timeout=5)  # fmt: skip
    _step_6(server, db_sg, proxy_sg, 5432, "revoke")
    assert wait_for(lambda: _connection_failed(rds), timeout=40, interval=0.2)


@pytest.mark.skipif(os.geteuid() != 0, reason="the engines' OS users exist for root only")
def test_a_root_server_whose_data_dir_is_closed_to_the_engines_users(tmp_path: Path) -> None:
    """The default data directory of root is under /root (mode 700), which the `mysql` user
    cannot enter: the servers' directories then live under /var/lib/sluice, linked from it."""
    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    with SluiceServer(data_dir=closed / "sluice") as srv:
        rds = srv.client("rds")
        rds.create_db_instance(
            DBInstanceIdentifier="closed-db", Engine="mariadb", DBInstanceClass="db.t3.micro",
            AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="Closed-Pass-1",
        )  # fmt: skip
        try:
            rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier="closed-db",
                                                         WaiterConfig=FAST)  # fmt: skip
        except botocore.exceptions.WaiterError:
            pytest.fail(srv.log_tail(40))
        link = srv.data_dir / "db-instances"
        real = link.resolve()
        assert link.is_symlink() and real.is_relative_to("/var/lib/sluice")
        assert (real / "closed-db").is_dir()
        assert stat.S_IMODE(closed.stat().st_mode) == 0o700  # the home stays closed
        rds.delete_db_instance(DBInstanceIdentifier="closed-db", SkipFinalSnapshot=True)
        rds.get_waiter("db_instance_deleted").wait(DBInstanceIdentifier="closed-db",
                                                   WaiterConfig=FAST)  # fmt: skip
        assert not (real / "closed-db").exists()
    shutil.rmtree(real.parent, ignore_errors=True)
