"""`Runtime.config_for` / `target_of`, and the health-check decisions made before any I/O.

A real `ControlPlane` on a temporary directory (no listener, no runtime task)
holds proxies made through the RDS handlers; the runtime's mapping of a proxy
document to the `ProxyConfig` the data plane runs is checked field by field,
the endpoint certificates with `cryptography` (issued by the data directory's
CA, naming the endpoint's address). `check_target` is checked for its
decisions that need no database (missing instance, security groups, unreadable
secret) and for a refused TCP connection to a closed loopback port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from sluice.auth.base import CLEARTEXT, MD5, MYSQL_CLEAR, MYSQL_NATIVE, MYSQL_SHA2, SCRAM
from sluice.config import Limit, PoolConfig, ProxyConfig, TargetConfig
from sluice.control.context import Call, Principal
from sluice.control.health import check_target
from sluice.control.plane import ControlPlane, ServerSettings
from sluice.control.registry import Listener, held_by, proxy_listeners, resource_id, target_of
from sluice.control.services.rds import adopt_instance

DB_PORT = 15432


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@dataclass
class World:
    plane: ControlPlane
    admin: Principal
    proxy_sg: str = ""
    db_sg: str = ""
    secret_arn: str = ""
    role_arn: str = ""

    def run(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        call = Call(self.admin, self.plane.region, "req-test", time.time())
        result: dict[str, Any] = getattr(self.plane.services[service], operation)(call, params)
        return result

    def subnets(self) -> list[str]:
        return [s["SubnetId"] for s in self.plane.store.all("subnet")]

    def proxy(self, name: str, family: str = "POSTGRESQL", **auth: str) -> dict[str, Any]:
        """An "available" proxy on the secret (Auth members as given); its document."""
        item = {"AuthScheme": "SECRETS", "SecretArn": self.secret_arn, **auth}
        self.run(
            "rds", "CreateDBProxy", DBProxyName=name, EngineFamily=family, Auth=[item],
            RoleArn=self.role_arn, VpcSubnetIds=self.subnets(), VpcSecurityGroupIds=[self.proxy_sg],
        )  # fmt: skip
        self.plane.store.put("db_proxy", name, {**self.doc(name), "Status": "available"})
        return self.doc(name)

    def doc(self, name: str) -> dict[str, Any]:
        found = self.plane.store.get("db_proxy", name)
        assert found is not None
        return found

    def register(self, proxy: str, instance: str) -> dict[str, Any]:
        self.run("rds", "RegisterDBProxyTargets", DBProxyName=proxy,
                 DBInstanceIdentifiers=[instance])  # fmt: skip
        target = self.plane.store.get("db_proxy_target", f"{proxy}/{instance}")
        assert target is not None
        return target

    def config(self, name: str) -> ProxyConfig:
        """What the runtime makes of the proxy's own endpoint."""
        doc = self.doc(name)
        return self.plane.runtime.config_for(doc, name, self.listener(doc))

    def listener(self, doc: dict[str, Any]) -> Listener:
        return dict(proxy_listeners(self.plane.store, doc))[doc["DBProxyName"]]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    plane = ControlPlane(ServerSettings(data_dir=tmp_path, vpc_cidr="127.77.0.0/16"))
    key = next(k for k in plane.store.all("access_key") if k["UserName"] == "admin")
    info = plane.principals.lookup(key["AccessKeyId"])
    assert info is not None
    w = World(plane, info.principal)
    w.proxy_sg = w.run("ec2", "CreateSecurityGroup", GroupName="proxy", Description="p")["GroupId"]
    w.db_sg = w.run("ec2", "CreateSecurityGroup", GroupName="db", Description="d")["GroupId"]
    perm = {"IpProtocol": "tcp", "FromPort": DB_PORT, "ToPort": DB_PORT,
            "UserIdGroupPairs": [{"GroupId": w.proxy_sg}]}  # fmt: skip
    w.run("ec2", "AuthorizeSecurityGroupIngress", GroupId=w.db_sg, IpPermissions=[perm])
    adopt_instance(plane, "pgdb", "postgres", "127.0.0.1", DB_PORT, [w.db_sg])
    adopt_instance(plane, "mydb", "mysql", "127.0.0.1", DB_PORT, [w.db_sg])
    value = json.dumps({"username": "app", "password": "Pw-123-abc"})
    w.secret_arn = w.run("secretsmanager", "CreateSecret", Name="db", SecretString=value)["ARN"]
    trust = {"Effect": "Allow", "Principal": {"Service": "rds.amazonaws.com"},
             "Action": "sts:AssumeRole"}  # fmt: skip
    role = w.run("iam", "CreateRole", RoleName="proxy-role", AssumeRolePolicyDocument=policy(trust))
    w.role_arn = role["Role"]["Arn"]
    read = {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": w.secret_arn}
    w.run("iam", "PutRolePolicy", RoleName="proxy-role", PolicyName="read",
          PolicyDocument=policy(read))  # fmt: skip
    yield w
    plane.store.close()


# ---- config_for ----


def test_postgres_iam_proxy_config(world: World) -> None:
    doc = world.proxy("pg", IAMAuth="REQUIRED")
    world.register("pg", "pgdb")
    config = world.config("pg")
    assert (config.name, config.engine, config.auth_method) == ("pg", "postgresql", CLEARTEXT)
    assert (config.listen_host, config.listen_port) == (doc["Endpoint"], 5432)
    assert config.target == TargetConfig(host="127.0.0.1", port=DB_PORT, tls="prefer")
    assert config.users == ()
    assert config.require_tls is False
    assert config.pool == PoolConfig(
        mode="transaction", max_connections=Limit(100, percent=True),
        max_idle_connections=Limit(50, percent=True), borrow_timeout=120.0,
        idle_client_timeout=1800.0, idle_transaction_timeout=1800.0, init_query="",
        exclude_variable_sets=False,
    )  # fmt: skip


def test_mysql_iam_proxy_config(world: World) -> None:
    doc = world.proxy("my", family="MYSQL", IAMAuth="REQUIRED")
    world.register("my", "mydb")
    config = world.config("my")
    assert (config.engine, config.auth_method) == ("mysql", MYSQL_CLEAR)
    assert (config.listen_host, config.listen_port) == (doc["Endpoint"], 3306)
    assert (config.target.host, config.target.port) == ("127.0.0.1", DB_PORT)


@pytest.mark.parametrize(
    "family, password_type, method",
    [
        ("POSTGRESQL", "POSTGRES_SCRAM_SHA_256", SCRAM),
        ("POSTGRESQL", "POSTGRES_MD5", MD5),
        ("MYSQL", "MYSQL_NATIVE_PASSWORD", MYSQL_NATIVE),
        ("MYSQL", "MYSQL_CACHING_SHA2_PASSWORD", MYSQL_SHA2),
        ("POSTGRESQL", None, SCRAM),  # the API's default for the family
        ("MYSQL", None, MYSQL_SHA2),
    ],
)
def test_client_password_auth_type(
    world: World, family: str, password_type: str | None, method: str
) -> None:
    auth = {"IAMAuth": "DISABLED"}
    if password_type is not None:
        auth["ClientPasswordAuthType"] = password_type
    world.proxy("px", family=family, **auth)
    assert world.config("px").auth_method == method


@pytest.mark.parametrize("family, method", [("POSTGRESQL", SCRAM), ("MYSQL", MYSQL_NATIVE)])
def test_auth_method_of_a_document_without_password_type(
    world: World, family: str, method: str
) -> None:
    doc = world.proxy("px", family=family)
    bare = {**doc, "Auth": [{"AuthScheme": "SECRETS", "SecretArn": world.secret_arn}]}
    assert world.plane.runtime.config_for(bare, "px", world.listener(doc)).auth_method == method
    empty = {**doc, "Auth": []}
    assert world.plane.runtime.config_for(empty, "px", world.listener(doc)).auth_method == method


def test_any_iam_required_item_means_tokens(world: World) -> None:
    value = json.dumps({"username": "other", "password": "Pw-456-def"})
    second = world.run("secretsmanager", "CreateSecret", Name="db2", SecretString=value)["ARN"]
    doc = world.proxy("px", IAMAuth="DISABLED", ClientPasswordAuthType="POSTGRES_MD5")
    auth = [*doc["Auth"], {"AuthScheme": "SECRETS", "SecretArn": second, "IAMAuth": "REQUIRED"}]
    config = world.plane.runtime.config_for({**doc, "Auth": auth}, "px", world.listener(doc))
    assert config.auth_method == CLEARTEXT


def test_pool_settings_from_target_group(world: World) -> None:
    world.proxy("pg")
    pool = {"MaxConnectionsPercent": 40, "MaxIdleConnectionsPercent": 10,
            "ConnectionBorrowTimeout": 30, "InitQuery": "SET TIME ZONE 'UTC'",
            "SessionPinningFilters": ["EXCLUDE_VARIABLE_SETS"]}  # fmt: skip
    world.run("rds", "ModifyDBProxyTargetGroup", DBProxyName="pg", TargetGroupName="default",
              ConnectionPoolConfig=pool)  # fmt: skip
    got = world.config("pg").pool
    assert got.max_connections == Limit(40, percent=True)
    assert got.max_idle_connections == Limit(25, percent=True)  # 10% of the database = 25% of 40%
    assert got.borrow_timeout == 30.0
    assert got.init_query == "SET TIME ZONE 'UTC'"
    assert got.exclude_variable_sets is True
    assert got.mode == "transaction"


def test_default_pool_limits_against_database_maximum(world: World) -> None:
    world.proxy("pg")
    sizes = world.config("pg").pool.sizes(1000)  # the database's max_connections
    assert sizes == (1000, 500)


def test_idle_percent_is_of_the_database_maximum(world: World) -> None:
    world.proxy("pg")
    pool = {"MaxConnectionsPercent": 40, "MaxIdleConnectionsPercent": 10}
    world.run("rds", "ModifyDBProxyTargetGroup", DBProxyName="pg", TargetGroupName="default",
              ConnectionPoolConfig=pool)  # fmt: skip
    max_size, max_idle = world.config("pg").pool.sizes(1000)
    assert max_size == 400
    assert max_idle == 100  # 10% of 1000, as the RDS API documents; not 10% of 400


def test_require_tls_and_idle_client_timeout(world: World) -> None:
    world.proxy("pg")
    world.run("rds", "ModifyDBProxy", DBProxyName="pg", RequireTLS=True, IdleClientTimeout=90)
    config = world.config("pg")
    assert config.require_tls is True
    assert config.pool.idle_client_timeout == 90.0
    # RDS Proxy's idle timeout also ends a client idle inside a transaction
    assert config.pool.idle_transaction_timeout == 90.0


def test_debug_logging_follows_the_proxy(world: World) -> None:
    world.proxy("pg")
    assert world.config("pg").debug_logging is False
    world.run("rds", "ModifyDBProxy", DBProxyName="pg", DebugLogging=True)
    assert world.config("pg").debug_logging is True
    world.plane.store.put("db_proxy", "pg", {**world.doc("pg"), "Status": "available"})
    world.run("rds", "ModifyDBProxy", DBProxyName="pg", DebugLogging=False)
    assert world.config("pg").debug_logging is False


def _certificate(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _check_issued_for(world: World, config: ProxyConfig, address: str) -> x509.Certificate:
    cert = _certificate(config.tls_cert_file)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(address)]
    ca = _certificate(str(world.plane.certificates.ca_file))
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert Path(config.tls_key_file).stat().st_mode & 0o077 == 0
    return cert


def test_tls_certificate_per_endpoint_address(world: World) -> None:
    doc = world.proxy("pg")
    main = world.config("pg")
    main_cert = _check_issued_for(world, main, doc["Endpoint"])
    world.run("rds", "CreateDBProxyEndpoint", DBProxyName="pg", DBProxyEndpointName="second",
              VpcSubnetIds=world.subnets()[1:])  # fmt: skip
    ep = world.plane.store.get("db_proxy_endpoint", "second")
    assert ep is not None and ep["Endpoint"] != doc["Endpoint"]
    held = held_by(world.plane.store, resource_id(ep["DBProxyEndpointArn"]))
    assert held is not None and held.port == 5432
    listener = Listener("pg", resource_id(doc["DBProxyArn"]), held.address, held.port, ())
    other = world.plane.runtime.config_for(doc, "pg/second", listener)
    assert (other.name, other.listen_host) == ("pg/second", ep["Endpoint"])
    assert other.tls_cert_file != main.tls_cert_file
    _check_issued_for(world, other, ep["Endpoint"])
    again = world.config("pg")  # kept, not made again
    assert _certificate(again.tls_cert_file).serial_number == main_cert.serial_number


def test_target_of(world: World) -> None:
    world.proxy("pg")
    store = world.plane.store
    assert target_of(store, "pg") is None
    assert world.config("pg").target == TargetConfig(host="", port=0)
    world.register("pg", "pgdb")
    assert target_of(store, "pg") == "pgdb"
    assert target_of(store, "p") is None  # not a prefix match of "pg"
    adopt_instance(world.plane, "pgdb", "postgres", "127.0.0.9", 6543, [world.db_sg])
    assert world.config("pg").target == TargetConfig(host="127.0.0.9", port=6543, tls="prefer")


# ---- health decisions ----


def _health(world: World, proxy: str, target: Any) -> dict[str, str]:
    return asyncio.run(check_target(world.plane, world.doc(proxy), target))


def test_missing_instance_is_unreachable(world: World) -> None:
    world.proxy("pg")
    for target in (None, {"RdsResourceId": "gone"}):
        health = _health(world, "pg", target)
        assert (health["State"], health["Reason"]) == ("UNAVAILABLE", "UNREACHABLE")


def test_groups_not_admitting_proxy(world: World) -> None:
    world.proxy("pg")
    target = world.register("pg", "pgdb")
    adopt_instance(world.plane, "pgdb", "postgres", "127.0.0.1", DB_PORT + 1, [world.db_sg])
    health = _health(world, "pg", world.plane.store.get("db_proxy_target", "pg/pgdb"))
    assert (health["State"], health["Reason"]) == ("UNAVAILABLE", "CONNECTION_FAILED")
    assert str(DB_PORT + 1) in health["Description"]
    adopt_instance(world.plane, "pgdb", "postgres", "127.0.0.1", DB_PORT, [])  # no groups
    assert _health(world, "pg", target)["Reason"] == "CONNECTION_FAILED"


def test_unreadable_secret_is_auth_failure(world: World) -> None:
    world.proxy("pg")
    target = world.register("pg", "pgdb")
    world.run("iam", "DeleteRolePolicy", RoleName="proxy-role", PolicyName="read")
    health = _health(world, "pg", target)
    assert (health["State"], health["Reason"]) == ("UNAVAILABLE", "AUTH_FAILURE")
    assert "Pw-123-abc" not in json.dumps(health)


def test_secret_without_password_is_auth_failure(world: World) -> None:
    world.proxy("pg")
    target = world.register("pg", "pgdb")
    world.run("secretsmanager", "PutSecretValue", SecretId=world.secret_arn,
              SecretString=json.dumps({"username": "app"}))  # fmt: skip
    assert _health(world, "pg", target)["Reason"] == "AUTH_FAILURE"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "family, proxy_name, instance", [("POSTGRESQL", "pg", "pgdb"), ("MYSQL", "my", "mydb")]
)
def test_refused_connection_is_unreachable(
    world: World, family: str, proxy_name: str, instance: str
) -> None:
    port = _closed_port()
    perm = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": world.proxy_sg}]}  # fmt: skip
    world.run("ec2", "AuthorizeSecurityGroupIngress", GroupId=world.db_sg, IpPermissions=[perm])
    engine = "postgres" if family == "POSTGRESQL" else "mysql"
    adopt_instance(world.plane, instance, engine, "127.0.0.1", port, [world.db_sg])
    world.proxy(proxy_name, family=family)
    target = world.register(proxy_name, instance)
    started = time.monotonic()
    health = _health(world, proxy_name, target)
    assert (health["State"], health["Reason"]) == ("UNAVAILABLE", "UNREACHABLE")
    assert f"127.0.0.1:{port}" in health["Description"]
    assert time.monotonic() - started < 3.0  # refused at once, not timed out


def test_runtime_records_target_health(world: World) -> None:
    world.proxy("pg")
    assert world.register("pg", "pgdb")["TargetHealth"] == {"State": "REGISTERING"}
    world.run("iam", "DeleteRolePolicy", RoleName="proxy-role", PolicyName="read")
    asyncio.run(world.plane.runtime.check_targets())
    stored = world.plane.store.get("db_proxy_target", "pg/pgdb")
    assert stored is not None
    assert stored["TargetHealth"]["Reason"] == "AUTH_FAILURE"
    described = world.run("rds", "DescribeDBProxyTargets", DBProxyName="pg")["Targets"]
    assert described[0]["TargetHealth"]["Reason"] == "AUTH_FAILURE"
