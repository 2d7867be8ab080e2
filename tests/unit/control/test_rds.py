"""The RDS service: DB proxies, target groups, targets, endpoints, adopted DB instances, tags.

Handlers are called directly (no HTTP) on a real Store and Vault with a fake
plane; IAM roles, secrets, subnets and security groups are put into the store
in the shapes the other services write. Every output is checked against
botocore's own output shape of the operation, and every fault's HTTP status
against the status botocore's model gives that fault code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from fakeplane import FakePlane

from model_check import check_output
from sluice.control.context import Call, Principal
from sluice.control.errors import ApiError
from sluice.control.services.rds import Rds, adopt_instance, forget_instance
from sluice.control.store import Store
from sluice.control.vault import Vault

ACCOUNT = "123456789012"
REGION = "us-east-1"
VPC = "vpc-0123456789abcdef0"
OTHER_VPC = "vpc-0fedcba9876543210"
SUBNETS = {"subnet-a": "127.20.0.0/20", "subnet-b": "127.20.16.0/20", "subnet-c": "127.20.32.0/20"}
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/service-role/proxy-role"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-app-AbCdEf"
SECRET2_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-other-GhIjKl"
MODEL = botocore.session.get_session().get_service_model("rds")


def _fault_statuses() -> dict[str, int]:
    statuses = {}
    for name in MODEL.shape_names:
        error = MODEL.shape_for(name).metadata.get("error")
        if error:
            statuses[error["code"]] = error["httpStatusCode"]
    return statuses


FAULT_STATUS = _fault_statuses()




def _seed(store: Store) -> None:
    store.put("vpc", VPC, {"VpcId": VPC, "CidrBlock": "127.20.0.0/16", "IsDefault": True})
    for (subnet_id, cidr), zone in zip(SUBNETS.items(), "abc", strict=True):
        store.put(
            "subnet",
            subnet_id,
            {
                "SubnetId": subnet_id,
                "VpcId": VPC,
                "CidrBlock": cidr,
                "AvailabilityZone": REGION + zone,
                "DefaultForAz": True,
            },
        )
    store.put(
        "subnet",
        "subnet-other",
        {
            "SubnetId": "subnet-other",
            "VpcId": OTHER_VPC,
            "CidrBlock": "127.21.0.0/20",
            "AvailabilityZone": REGION + "a",
        },
    )
    for group_id, name, vpc in [
        ("sg-default", "default", VPC),
        ("sg-proxy", "proxy", VPC),
        ("sg-db", "db", VPC),
        ("sg-elsewhere", "x", OTHER_VPC),
    ]:
        store.put(
            "security_group",
            group_id,
            {
                "GroupId": group_id,
                "GroupName": name,
                "Description": name,
                "VpcId": vpc,
                "OwnerId": ACCOUNT,
                "IpPermissions": [],
                "IpPermissionsEgress": [],
                "Tags": [],
            },
        )
    store.put(
        "iam_role",
        "proxy-role",
        {
            "RoleName": "proxy-role",
            "RoleId": "AROAEXAMPLEEXAMPLE1",
            "Arn": ROLE_ARN,
            "Path": "/service-role/",
            "CreateDate": 1.0,
            "AssumeRolePolicyDocument": {},
            "MaxSessionDuration": 3600,
            "AttachedPolicies": [],
            "InlinePolicies": {},
            "Tags": [],
        },
    )
    for arn in (SECRET_ARN, SECRET2_ARN):
        store.put(
            "secret",
            arn,
            {
                "ARN": arn,
                "Name": arn.split(":")[-1][:-7],
                "CreatedDate": 1.0,
                "_versions": {},
                "_deleted": None,
            },
        )


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[FakePlane]:
    store = Store(tmp_path / "state.db")
    _seed(store)
    yield FakePlane(store, Vault(tmp_path / "keys" / "secrets.key"))
    store.close()


@pytest.fixture
def rds(plane: FakePlane) -> Rds:
    return Rds(plane)


NOW = 1_700_000_000.0
CALL = Call(
    Principal(
        ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/admin", "AIDAEXAMPLE", "user", "admin", "AKIAEXAMPLE"
    ),
    REGION,
    "req-1",
    NOW,
)


def run(rds: Rds, operation: str, **params: Any) -> dict[str, Any]:
    """Call an operation and check its output against botocore's output shape."""
    result: dict[str, Any] = getattr(rds, operation)(CALL, params)
    check_output(MODEL.operation_model(operation).output_shape, result, operation)
    return result


def fails(code: str, rds: Rds, operation: str, **params: Any) -> ApiError:
    """The operation raises ApiError `code` with the HTTP status botocore's model gives it."""
    with pytest.raises(ApiError) as caught:
        getattr(rds, operation)(CALL, params)
    assert caught.value.code == code, caught.value
    assert caught.value.status == FAULT_STATUS.get(code, 400)
    return caught.value


def recipe(**overrides: Any) -> dict[str, Any]:
    """The recipe's create-db-proxy: MYSQL, a secret with IAM auth required, TLS required."""
    params: dict[str, Any] = {
        "DBProxyName": "app-proxy",
        "EngineFamily": "MYSQL",
        "Auth": [{"AuthScheme": "SECRETS", "SecretArn": SECRET_ARN, "IAMAuth": "REQUIRED"}],
        "RoleArn": ROLE_ARN,
        "VpcSubnetIds": ["subnet-a", "subnet-b"],
        "VpcSecurityGroupIds": ["sg-proxy"],
        "RequireTLS": True,
    }
    params.update(overrides)
    return params


def make_available(plane: FakePlane, name: str = "app-proxy", kind: str = "db_proxy") -> None:
    """What the runtime does once the listener is open."""
    doc = plane.store.get(kind, name)
    assert doc is not None
    plane.store.put(kind, name, {**doc, "Status": "available"})


def adopt(plane: FakePlane, name: str = "app-db", engine: str = "mysql", port: int = 3307) -> None:
    adopt_instance(plane, name, engine, "127.0.0.1", port, ["sg-db"], "8.0.36")


# ---- CreateDBProxy ----


def test_create_db_proxy_as_the_recipe_does(rds: Rds, plane: FakePlane) -> None:
    proxy = run(rds, "CreateDBProxy", **recipe())["DBProxy"]
    assert proxy["DBProxyName"] == "app-proxy"
    assert proxy["Status"] == "creating"
    assert re.fullmatch(
        rf"arn:aws:rds:{REGION}:{ACCOUNT}:db-proxy:prx-[0-9a-f]{{17}}", proxy["DBProxyArn"]
    )
    assert proxy["Auth"] == [
        {
            "AuthScheme": "SECRETS",
            "SecretArn": SECRET_ARN,
            "IAMAuth": "REQUIRED",
            "ClientPasswordAuthType": "MYSQL_CACHING_SHA2_PASSWORD",
        }
    ]
    assert proxy["RequireTLS"] is True and proxy["DebugLogging"] is False
    assert proxy["IdleClientTimeout"] == 1800
    assert proxy["VpcId"] == VPC and proxy["VpcSubnetIds"] == ["subnet-a", "subnet-b"]
    assert proxy["CreatedDate"] == datetime.fromtimestamp(NOW).astimezone()
    assert not any(key.startswith("_") for key in proxy)
    doc = plane.store.get("db_proxy", "app-proxy")
    assert doc is not None
    assert not any(key.startswith("_") and key != "_tags" for key in doc)
    address = plane.store.get("address", proxy["Endpoint"])
    assert address == {
        "Address": proxy["Endpoint"], "SubnetId": "subnet-a", "VpcId": VPC,
        "Owner": proxy["DBProxyArn"].split(":")[6], "Holder": "db-proxy", "Port": 3306,
        "Groups": ["sg-proxy"],
    }  # fmt: skip
    assert plane.changes == ["rds"]


def test_create_makes_the_default_target_group(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    group = plane.store.get("db_proxy_target_group", "app-proxy/default")
    assert group is not None
    assert re.fullmatch(
        rf"arn:aws:rds:{REGION}:{ACCOUNT}:target-group:prx-tg-[0-9a-f]{{17}}",
        group["TargetGroupArn"],
    )
    assert group["IsDefault"] is True and group["Status"] == "available"
    assert group["ConnectionPoolConfig"] == {
        "MaxConnectionsPercent": 100,
        "MaxIdleConnectionsPercent": 50,
        "ConnectionBorrowTimeout": 120,
        "SessionPinningFilters": [],
        "InitQuery": "",
    }


def test_postgresql_defaults_and_the_vpc_default_group(rds: Rds, plane: FakePlane) -> None:
    params = recipe(EngineFamily="POSTGRESQL", Auth=[{"SecretArn": SECRET_ARN}])
    del params["VpcSecurityGroupIds"]
    proxy = run(rds, "CreateDBProxy", **params)["DBProxy"]
    assert proxy["Auth"][0]["ClientPasswordAuthType"] == "POSTGRES_SCRAM_SHA_256"
    assert proxy["Auth"][0]["IAMAuth"] == "DISABLED"
    assert proxy["VpcSecurityGroupIds"] == ["sg-default"]
    assert plane.store.get("address", proxy["Endpoint"])["Port"] == 5432  # type: ignore[index]


def test_two_proxies_get_different_addresses(rds: Rds) -> None:
    first = run(rds, "CreateDBProxy", **recipe())["DBProxy"]
    second = run(rds, "CreateDBProxy", **recipe(DBProxyName="Other"))["DBProxy"]
    assert second["DBProxyName"] == "other"  # RDS keeps identifiers in lower case
    assert first["Endpoint"] != second["Endpoint"]
    assert first["DBProxyArn"] != second["DBProxyArn"]


@pytest.mark.parametrize("name", ["1proxy", "a--b", "proxy-", "a" * 64, "under_score", "-x"])
def test_proxy_name_rules(rds: Rds, name: str) -> None:
    fails("InvalidParameterValue", rds, "CreateDBProxy", **recipe(DBProxyName=name))


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"EngineFamily": "SQLSERVER"}, "InvalidParameterValue", "not supported by Sluice"),
        ({"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/missing"}, "InvalidParameterValue", "role"),
        (
            {"RoleArn": "arn:aws:iam::999999999999:role/service-role/proxy-role"},
            "InvalidParameterValue",
            "role",
        ),
        ({"Auth": [{"SecretArn": SECRET_ARN + "x"}]}, "InvalidParameterValue", "secret"),
        (
            {"Auth": [{"SecretArn": SECRET_ARN}, {"SecretArn": SECRET_ARN}]},
            "InvalidParameterValue",
            "more than once",
        ),
        ({"Auth": []}, "InvalidParameterValue", "Auth"),
        (
            {"Auth": [{"SecretArn": SECRET_ARN, "IAMAuth": "ENABLED"}]},
            "InvalidParameterValue",
            "SQL Server",
        ),
        (
            {"Auth": [{"SecretArn": SECRET_ARN, "ClientPasswordAuthType": "POSTGRES_MD5"}]},
            "InvalidParameterValue",
            "MYSQL",
        ),
        ({"DefaultAuthScheme": "IAM_AUTH"}, "InvalidParameterValue", "not supported by Sluice"),
        ({"VpcSubnetIds": ["subnet-a"]}, "InvalidParameterValue", "Availability Zones"),
        ({"VpcSubnetIds": ["subnet-a", "subnet-a"]}, "InvalidParameterValue", "Availability"),
        ({"VpcSubnetIds": ["subnet-a", "subnet-nope"]}, "InvalidSubnet", "subnet-nope"),
        ({"VpcSubnetIds": ["subnet-a", "subnet-other"]}, "InvalidSubnet", "same VPC"),
        ({"VpcSecurityGroupIds": ["sg-nope"]}, "InvalidParameterValue", "sg-nope"),
        ({"VpcSecurityGroupIds": ["sg-elsewhere"]}, "InvalidParameterValue", "not in the VPC"),
        ({"IdleClientTimeout": 0}, "InvalidParameterValue", "IdleClientTimeout"),
        ({"EndpointNetworkType": "IPV6"}, "InvalidParameterValue", "IPV4"),
        ({"Tags": [{"Key": "aws:reserved", "Value": "x"}]}, "InvalidParameterValue", "aws:"),
    ],
)
def test_create_validation(
    rds: Rds, plane: FakePlane, overrides: dict[str, Any], code: str, words: str
) -> None:
    error = fails(code, rds, "CreateDBProxy", **recipe(**overrides))
    assert words in error.message
    assert plane.store.all("db_proxy") == [] and plane.store.all("address") == []
    assert plane.changes == []


def test_proxy_names_are_unique(rds: Rds) -> None:
    run(rds, "CreateDBProxy", **recipe())
    fails("DBProxyAlreadyExistsFault", rds, "CreateDBProxy", **recipe(DBProxyName="APP-proxy"))


def test_proxy_quota(rds: Rds) -> None:
    for n in range(20):
        run(rds, "CreateDBProxy", **recipe(DBProxyName=f"p{n}"))
    fails("DBProxyQuotaExceededFault", rds, "CreateDBProxy", **recipe(DBProxyName="p20"))


# ---- DescribeDBProxies ----


def test_describe_by_name_and_not_found(rds: Rds) -> None:
    created = run(rds, "CreateDBProxy", **recipe())["DBProxy"]
    run(rds, "CreateDBProxy", **recipe(DBProxyName="second"))
    found = run(rds, "DescribeDBProxies", DBProxyName="App-Proxy")["DBProxies"]
    assert found == [created]
    error = fails("DBProxyNotFoundFault", rds, "DescribeDBProxies", DBProxyName="nope")
    assert "nope" in error.message
    everything = run(rds, "DescribeDBProxies")
    assert [p["DBProxyName"] for p in everything["DBProxies"]] == ["app-proxy", "second"]
    assert "Marker" not in everything


def test_describe_proxies_in_pages(rds: Rds) -> None:
    names = [f"proxy-{n:02}" for n in range(20)]
    for name in reversed(names):
        run(rds, "CreateDBProxy", **recipe(DBProxyName=name))
    first = run(rds, "DescribeDBProxies", MaxRecords=20)
    assert [p["DBProxyName"] for p in first["DBProxies"]] == names
    assert "Marker" not in first
    fails("InvalidParameterValue", rds, "DescribeDBProxies", Marker="%%%")
    fails("InvalidParameterValue", rds, "DescribeDBProxies", MaxRecords=101)


# ---- ModifyDBProxy ----


def test_modify_needs_an_available_proxy(rds: Rds) -> None:
    run(rds, "CreateDBProxy", **recipe())
    fails("InvalidDBProxyStateFault", rds, "ModifyDBProxy", DBProxyName="app-proxy")
    fails("DBProxyNotFoundFault", rds, "ModifyDBProxy", DBProxyName="nope")


def test_modify_settings(rds: Rds, plane: FakePlane) -> None:
    created = run(rds, "CreateDBProxy", **recipe())["DBProxy"]
    make_available(plane)
    later = Call(CALL.principal, REGION, "req-2", NOW + 60)
    result = Rds(plane).ModifyDBProxy(
        later,
        {
            "DBProxyName": "app-proxy",
            "RequireTLS": False,
            "IdleClientTimeout": 600,
            "DebugLogging": True,
            "SecurityGroups": ["sg-default", "sg-proxy"],
            "Auth": [{"SecretArn": SECRET2_ARN, "ClientPasswordAuthType": "MYSQL_NATIVE_PASSWORD"}],
        },
    )["DBProxy"]
    assert result["Status"] == "modifying"
    assert (result["RequireTLS"], result["IdleClientTimeout"], result["DebugLogging"]) == (
        False,
        600,
        True,
    )
    assert result["Auth"] == [
        {
            "AuthScheme": "SECRETS",
            "SecretArn": SECRET2_ARN,
            "IAMAuth": "DISABLED",
            "ClientPasswordAuthType": "MYSQL_NATIVE_PASSWORD",
        }
    ]
    assert result["VpcSecurityGroupIds"] == ["sg-default", "sg-proxy"]
    assert plane.store.get("address", created["Endpoint"])["Groups"] == ["sg-default", "sg-proxy"]  # type: ignore[index]
    assert result["UpdatedDate"] > result["CreatedDate"]
    assert result["DBProxyArn"] == created["DBProxyArn"]
    assert plane.changes == ["rds", "rds"]


@pytest.mark.parametrize(
    "params",
    [
        {"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/missing"},
        {"SecurityGroups": ["sg-elsewhere"]},
        {"Auth": [{"SecretArn": SECRET_ARN, "ClientPasswordAuthType": "POSTGRES_MD5"}]},
        {"IdleClientTimeout": 28801},
        {"NewDBProxyName": "bad--name"},
    ],
)
def test_modify_validation(rds: Rds, plane: FakePlane, params: dict[str, Any]) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    fails("InvalidParameterValue", rds, "ModifyDBProxy", DBProxyName="app-proxy", **params)
    assert plane.store.get("db_proxy", "app-proxy")["Status"] == "available"  # type: ignore[index]


def test_rename_moves_the_documents(rds: Rds, plane: FakePlane) -> None:
    created = run(rds, "CreateDBProxy", **recipe())["DBProxy"]
    make_available(plane)
    adopt(plane)
    run(rds, "RegisterDBProxyTargets", DBProxyName="app-proxy", DBInstanceIdentifiers=["app-db"])
    run(
        rds,
        "CreateDBProxyEndpoint",
        DBProxyName="app-proxy",
        DBProxyEndpointName="reader",
        VpcSubnetIds=["subnet-b", "subnet-c"],
    )
    renamed = run(rds, "ModifyDBProxy", DBProxyName="app-proxy", NewDBProxyName="new-proxy")
    assert renamed["DBProxy"]["DBProxyName"] == "new-proxy"
    assert renamed["DBProxy"]["DBProxyArn"] == created["DBProxyArn"]
    store = plane.store
    assert store.get("db_proxy", "app-proxy") is None
    assert store.get("db_proxy", "new-proxy") is not None
    assert store.keys("db_proxy_target_group") == ["new-proxy/default"]
    assert store.get("db_proxy_target_group", "new-proxy/default")["DBProxyName"] == "new-proxy"  # type: ignore[index]
    assert store.keys("db_proxy_target") == ["new-proxy/app-db"]
    assert store.get("db_proxy_endpoint", "reader")["DBProxyName"] == "new-proxy"  # type: ignore[index]
    fails("DBProxyNotFoundFault", rds, "DescribeDBProxies", DBProxyName="app-proxy")


def test_rename_to_a_taken_name(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    run(rds, "CreateDBProxy", **recipe(DBProxyName="taken"))
    make_available(plane)
    fails(
        "DBProxyAlreadyExistsFault",
        rds,
        "ModifyDBProxy",
        DBProxyName="app-proxy",
        NewDBProxyName="taken",
    )


# ---- DeleteDBProxy ----


def test_delete_marks_the_proxy_and_its_endpoints_deleting(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    run(
        rds,
        "CreateDBProxyEndpoint",
        DBProxyName="app-proxy",
        DBProxyEndpointName="extra",
        VpcSubnetIds=["subnet-a", "subnet-c"],
    )
    deleted = run(rds, "DeleteDBProxy", DBProxyName="app-proxy")["DBProxy"]
    assert deleted["Status"] == "deleting"
    assert plane.store.get("db_proxy", "app-proxy")["Status"] == "deleting"  # type: ignore[index]
    assert plane.store.get("db_proxy_endpoint", "extra")["Status"] == "deleting"  # type: ignore[index]
    assert len(plane.store.all("address")) == 2  # the runtime releases them
    fails("InvalidDBProxyStateFault", rds, "DeleteDBProxy", DBProxyName="app-proxy")
    fails("DBProxyNotFoundFault", rds, "DeleteDBProxy", DBProxyName="nope")


# ---- Target groups ----


def test_describe_target_groups(rds: Rds) -> None:
    run(rds, "CreateDBProxy", **recipe())
    groups = run(rds, "DescribeDBProxyTargetGroups", DBProxyName="app-proxy")["TargetGroups"]
    assert [(g["TargetGroupName"], g["IsDefault"]) for g in groups] == [("default", True)]
    named = run(
        rds, "DescribeDBProxyTargetGroups", DBProxyName="app-proxy", TargetGroupName="default"
    )
    assert named["TargetGroups"] == groups
    fails(
        "DBProxyTargetGroupNotFoundFault",
        rds,
        "DescribeDBProxyTargetGroups",
        DBProxyName="app-proxy",
        TargetGroupName="other",
    )
    fails("DBProxyNotFoundFault", rds, "DescribeDBProxyTargetGroups", DBProxyName="nope")


def test_modify_target_group_pool(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    fails(
        "InvalidDBProxyStateFault",
        rds,
        "ModifyDBProxyTargetGroup",
        DBProxyName="app-proxy",
        TargetGroupName="default",
    )
    make_available(plane)
    group = run(
        rds,
        "ModifyDBProxyTargetGroup",
        DBProxyName="app-proxy",
        TargetGroupName="default",
        ConnectionPoolConfig={
            "MaxConnectionsPercent": 80,
            "MaxIdleConnectionsPercent": 20,
            "ConnectionBorrowTimeout": 30,
            "SessionPinningFilters": ["EXCLUDE_VARIABLE_SETS"],
            "InitQuery": "SET time_zone = '+00:00'",
        },
    )["DBProxyTargetGroup"]
    assert group["ConnectionPoolConfig"] == {
        "MaxConnectionsPercent": 80,
        "MaxIdleConnectionsPercent": 20,
        "ConnectionBorrowTimeout": 30,
        "SessionPinningFilters": ["EXCLUDE_VARIABLE_SETS"],
        "InitQuery": "SET time_zone = '+00:00'",
    }
    stored = plane.store.get("db_proxy_target_group", "app-proxy/default")
    assert stored is not None and stored["ConnectionPoolConfig"] == group["ConnectionPoolConfig"]
    lowered = run(
        rds,
        "ModifyDBProxyTargetGroup",
        DBProxyName="app-proxy",
        TargetGroupName="default",
        ConnectionPoolConfig={"MaxConnectionsPercent": 10},
    )
    pool = lowered["DBProxyTargetGroup"]["ConnectionPoolConfig"]
    assert (pool["MaxConnectionsPercent"], pool["MaxIdleConnectionsPercent"]) == (10, 5)


@pytest.mark.parametrize(
    "pool",
    [
        {"MaxConnectionsPercent": 0},
        {"MaxConnectionsPercent": 101},
        {"MaxConnectionsPercent": 40, "MaxIdleConnectionsPercent": 41},
        {"MaxIdleConnectionsPercent": -1},
        {"ConnectionBorrowTimeout": 3601},
        {"SessionPinningFilters": ["EXCLUDE_EVERYTHING"]},
    ],
)
def test_pool_validation(rds: Rds, plane: FakePlane, pool: dict[str, Any]) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    fails(
        "InvalidParameterValue",
        rds,
        "ModifyDBProxyTargetGroup",
        DBProxyName="app-proxy",
        TargetGroupName="default",
        ConnectionPoolConfig=pool,
    )


def test_target_group_keeps_its_name(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    fails(
        "InvalidParameterValue",
        rds,
        "ModifyDBProxyTargetGroup",
        DBProxyName="app-proxy",
        TargetGroupName="default",
        NewName="renamed",
    )
    same = run(
        rds,
        "ModifyDBProxyTargetGroup",
        DBProxyName="app-proxy",
        TargetGroupName="default",
        NewName="default",
    )
    assert same["DBProxyTargetGroup"]["TargetGroupName"] == "default"


# ---- Targets ----


def test_register_describe_deregister_targets(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    adopt(plane, "App-DB", "mariadb")
    registered = run(
        rds, "RegisterDBProxyTargets", DBProxyName="app-proxy", DBInstanceIdentifiers=["app-db"]
    )["DBProxyTargets"]
    instance = plane.store.get("db_instance", "app-db")
    assert instance is not None
    assert registered == [
        {
            "TargetArn": instance["DBInstanceArn"],
            "Endpoint": "127.0.0.1",
            "RdsResourceId": "app-db",
            "Port": 3307,
            "Type": "RDS_INSTANCE",
            "Role": "READ_WRITE",
            "TargetHealth": {"State": "REGISTERING"},
        }
    ]
    assert plane.store.get("db_proxy_target", "app-proxy/app-db")["_target_group"] == "default"  # type: ignore[index]
    described = run(rds, "DescribeDBProxyTargets", DBProxyName="app-proxy")
    assert described["Targets"] == registered
    fails(
        "DBProxyTargetAlreadyRegisteredFault",
        rds,
        "RegisterDBProxyTargets",
        DBProxyName="app-proxy",
        DBInstanceIdentifiers=["app-db"],
    )
    run(rds, "DeregisterDBProxyTargets", DBProxyName="app-proxy", DBInstanceIdentifiers=["app-db"])
    assert run(rds, "DescribeDBProxyTargets", DBProxyName="app-proxy")["Targets"] == []
    fails(
        "DBProxyTargetNotFoundFault",
        rds,
        "DeregisterDBProxyTargets",
        DBProxyName="app-proxy",
        DBInstanceIdentifiers=["app-db"],
    )


def test_register_errors(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    adopt(plane, "app-db")
    adopt(plane, "pg-db", "postgres", 5433)
    adopt(plane, "second-db")
    args = {"DBProxyName": "app-proxy"}
    fails(
        "InvalidDBProxyStateFault",
        rds,
        "RegisterDBProxyTargets",
        **args,
        DBInstanceIdentifiers=["app-db"],
    )
    make_available(plane)
    fails(
        "InvalidParameterValue",
        rds,
        "RegisterDBProxyTargets",
        **args,
        DBInstanceIdentifiers=["pg-db"],
    )
    fails(
        "DBInstanceNotFound", rds, "RegisterDBProxyTargets", **args, DBInstanceIdentifiers=["nope"]
    )
    fails(
        "DBClusterNotFoundFault",
        rds,
        "RegisterDBProxyTargets",
        **args,
        DBClusterIdentifiers=["cluster-1"],
    )
    fails("InvalidParameterValue", rds, "RegisterDBProxyTargets", **args)
    fails(
        "DBProxyTargetGroupNotFoundFault",
        rds,
        "RegisterDBProxyTargets",
        **args,
        TargetGroupName="other",
        DBInstanceIdentifiers=["app-db"],
    )
    fails(
        "InvalidParameterValue",
        rds,
        "RegisterDBProxyTargets",
        **args,
        DBInstanceIdentifiers=["app-db", "second-db"],
    )
    run(rds, "RegisterDBProxyTargets", **args, DBInstanceIdentifiers=["app-db"])
    error = fails(
        "InvalidParameterValue",
        rds,
        "RegisterDBProxyTargets",
        **args,
        DBInstanceIdentifiers=["second-db"],
    )
    assert "only one" in error.message
    assert plane.store.keys("db_proxy_target") == ["app-proxy/app-db"]


def test_describe_targets_of_unknown_things(rds: Rds) -> None:
    fails("DBProxyNotFoundFault", rds, "DescribeDBProxyTargets", DBProxyName="nope")
    run(rds, "CreateDBProxy", **recipe())
    fails(
        "DBProxyTargetGroupNotFoundFault",
        rds,
        "DescribeDBProxyTargets",
        DBProxyName="app-proxy",
        TargetGroupName="other",
    )


# ---- Proxy endpoints ----


def test_create_and_describe_endpoints(rds: Rds, plane: FakePlane) -> None:
    proxy = run(rds, "CreateDBProxy", **recipe())["DBProxy"]
    fails(
        "InvalidDBProxyStateFault",
        rds,
        "CreateDBProxyEndpoint",
        DBProxyName="app-proxy",
        DBProxyEndpointName="extra",
        VpcSubnetIds=["subnet-a", "subnet-b"],
    )
    make_available(plane)
    endpoint = run(
        rds,
        "CreateDBProxyEndpoint",
        DBProxyName="app-proxy",
        DBProxyEndpointName="Extra",
        VpcSubnetIds=["subnet-c", "subnet-a"],
        VpcSecurityGroupIds=["sg-db"],
    )["DBProxyEndpoint"]
    assert endpoint["DBProxyEndpointName"] == "extra" and endpoint["Status"] == "creating"
    assert re.fullmatch(
        rf"arn:aws:rds:{REGION}:{ACCOUNT}:db-proxy-endpoint:prx-endpoint-[0-9a-f]{{17}}",
        endpoint["DBProxyEndpointArn"],
    )
    assert endpoint["TargetRole"] == "READ_WRITE" and endpoint["IsDefault"] is False
    assert endpoint["Endpoint"] != proxy["Endpoint"]
    address = plane.store.get("address", endpoint["Endpoint"])
    stored = plane.store.get("db_proxy_endpoint", "extra")
    assert address is not None and stored is not None
    assert address["SubnetId"] == "subnet-c" and address["Groups"] == ["sg-db"]
    assert address["Owner"] == endpoint["DBProxyEndpointArn"].split(":")[6]
    assert (address["Holder"], address["Port"]) == ("db-proxy-endpoint", 3306)
    listed = run(rds, "DescribeDBProxyEndpoints", DBProxyName="app-proxy")["DBProxyEndpoints"]
    default = listed[0]
    assert (default["DBProxyEndpointName"], default["IsDefault"]) == ("default", True)
    assert default["Endpoint"] == proxy["Endpoint"] and default["DBProxyName"] == "app-proxy"
    assert listed[1] == endpoint
    by_name = run(rds, "DescribeDBProxyEndpoints", DBProxyEndpointName="extra")
    assert by_name["DBProxyEndpoints"] == [endpoint]
    fails(
        "DBProxyEndpointNotFoundFault", rds, "DescribeDBProxyEndpoints", DBProxyEndpointName="nope"
    )
    fails("DBProxyNotFoundFault", rds, "DescribeDBProxyEndpoints", DBProxyName="nope")


def test_endpoint_creation_errors(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    args = {"DBProxyName": "app-proxy", "VpcSubnetIds": ["subnet-a", "subnet-b"]}
    run(rds, "CreateDBProxyEndpoint", DBProxyEndpointName="extra", **args)
    fails(
        "DBProxyEndpointAlreadyExistsFault",
        rds,
        "CreateDBProxyEndpoint",
        DBProxyEndpointName="EXTRA",
        **args,
    )
    for name in ("default", "bad--name"):
        fails(
            "InvalidParameterValue", rds, "CreateDBProxyEndpoint", DBProxyEndpointName=name, **args
        )
    fails(
        "InvalidSubnet",
        rds,
        "CreateDBProxyEndpoint",
        DBProxyEndpointName="more",
        DBProxyName="app-proxy",
        VpcSubnetIds=["subnet-a", "subnet-x"],
    )
    fails(
        "DBProxyNotFoundFault",
        rds,
        "CreateDBProxyEndpoint",
        DBProxyEndpointName="more",
        DBProxyName="nope",
        VpcSubnetIds=["subnet-a", "subnet-b"],
    )


def test_read_only_endpoint_is_refused_until_read_replicas_exist(
    rds: Rds, plane: FakePlane
) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    args = {"DBProxyName": "app-proxy", "VpcSubnetIds": ["subnet-a", "subnet-b"]}
    addresses, changes = len(plane.store.all("address")), len(plane.changes)
    error = fails(
        "InvalidParameterCombination",
        rds,
        "CreateDBProxyEndpoint",
        DBProxyEndpointName="reader",
        TargetRole="READ_ONLY",
        **args,
    )
    assert "READ_ONLY is not supported yet" in error.message and "read replicas" in error.message
    assert plane.store.get("db_proxy_endpoint", "reader") is None  # nothing recorded
    assert (len(plane.store.all("address")), len(plane.changes)) == (addresses, changes)
    explicit = run(
        rds, "CreateDBProxyEndpoint", DBProxyEndpointName="writer", TargetRole="READ_WRITE", **args
    )
    assert explicit["DBProxyEndpoint"]["TargetRole"] == "READ_WRITE"


def test_endpoint_quota(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    args = {"DBProxyName": "app-proxy", "VpcSubnetIds": ["subnet-a", "subnet-b"]}
    for n in range(20):
        run(rds, "CreateDBProxyEndpoint", DBProxyEndpointName=f"e{n}", **args)
    fails(
        "DBProxyEndpointQuotaExceededFault",
        rds,
        "CreateDBProxyEndpoint",
        DBProxyEndpointName="e20",
        **args,
    )
    page = run(rds, "DescribeDBProxyEndpoints", DBProxyName="app-proxy", MaxRecords=20)
    rest = run(
        rds,
        "DescribeDBProxyEndpoints",
        DBProxyName="app-proxy",
        MaxRecords=20,
        Marker=page["Marker"],
    )
    names = [e["DBProxyEndpointName"] for e in page["DBProxyEndpoints"] + rest["DBProxyEndpoints"]]
    assert len(names) == 21 and len(set(names)) == 21 and names[0] == "default"
    assert "Marker" not in rest


def test_modify_and_delete_endpoint(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    created = run(
        rds,
        "CreateDBProxyEndpoint",
        DBProxyName="app-proxy",
        DBProxyEndpointName="extra",
        VpcSubnetIds=["subnet-a", "subnet-b"],
    )["DBProxyEndpoint"]
    assert created["VpcSecurityGroupIds"] == ["sg-default"]
    fails(
        "InvalidDBProxyEndpointStateFault",
        rds,
        "ModifyDBProxyEndpoint",
        DBProxyEndpointName="extra",
    )
    make_available(plane, "extra", "db_proxy_endpoint")
    modified = run(
        rds,
        "ModifyDBProxyEndpoint",
        DBProxyEndpointName="extra",
        NewDBProxyEndpointName="renamed",
        VpcSecurityGroupIds=["sg-proxy"],
    )["DBProxyEndpoint"]
    assert (modified["DBProxyEndpointName"], modified["Status"]) == ("renamed", "modifying")
    assert modified["DBProxyEndpointArn"] == created["DBProxyEndpointArn"]
    assert plane.store.keys("db_proxy_endpoint") == ["renamed"]
    assert plane.store.get("address", created["Endpoint"])["Groups"] == ["sg-proxy"]  # type: ignore[index]
    fails("DBProxyEndpointNotFoundFault", rds, "ModifyDBProxyEndpoint", DBProxyEndpointName="extra")
    deleted = run(rds, "DeleteDBProxyEndpoint", DBProxyEndpointName="renamed")["DBProxyEndpoint"]
    assert deleted["Status"] == "deleting"
    fails(
        "InvalidDBProxyEndpointStateFault",
        rds,
        "DeleteDBProxyEndpoint",
        DBProxyEndpointName="renamed",
    )
    fails("DBProxyEndpointNotFoundFault", rds, "DeleteDBProxyEndpoint", DBProxyEndpointName="x")


# ---- DB instances ----


def test_adopt_and_describe_instances(rds: Rds, plane: FakePlane) -> None:
    doc = adopt_instance(plane, "App-DB", "postgres", "db.local", 5433, ["sg-db"], "16.2")
    assert doc["DBInstanceIdentifier"] == "app-db"
    assert doc["DBInstanceArn"] == f"arn:aws:rds:{REGION}:{ACCOUNT}:db:app-db"
    assert re.fullmatch(r"db-[A-Z0-9]{26}", str(doc["DbiResourceId"]))
    assert plane.changes == ["rds"]
    found = run(rds, "DescribeDBInstances", DBInstanceIdentifier="app-db")["DBInstances"]
    assert len(found) == 1
    instance = found[0]
    assert instance["Endpoint"] == {"Address": "db.local", "Port": 5433}
    assert instance["Engine"] == "postgres" and instance["EngineVersion"] == "16.2"
    assert instance["DBInstanceClass"] == "db.sluice.adopted"
    assert instance["DBInstanceStatus"] == "available"
    assert instance["VpcSecurityGroups"] == [{"VpcSecurityGroupId": "sg-db", "Status": "active"}]
    assert isinstance(instance["InstanceCreateTime"], datetime)
    by_arn = run(rds, "DescribeDBInstances", DBInstanceIdentifier=doc["DBInstanceArn"])
    assert by_arn["DBInstances"] == found
    fails("DBInstanceNotFound", rds, "DescribeDBInstances", DBInstanceIdentifier="nope")


def test_describe_instances_filters_and_pages(rds: Rds, plane: FakePlane) -> None:
    for n in range(45):
        adopt(plane, f"db-{n:02}", "postgres" if n % 3 == 0 else "mysql")
    pages, marker = [], None
    while True:
        params: dict[str, Any] = {"MaxRecords": 20}
        if marker:
            params["Marker"] = marker
        result = run(rds, "DescribeDBInstances", **params)
        pages.append([i["DBInstanceIdentifier"] for i in result["DBInstances"]])
        marker = result.get("Marker")
        if marker is None:
            break
    assert [len(p) for p in pages] == [20, 20, 5]
    assert [name for page in pages for name in page] == [f"db-{n:02}" for n in range(45)]
    postgres = run(rds, "DescribeDBInstances", Filters=[{"Name": "engine", "Values": ["postgres"]}])
    assert len(postgres["DBInstances"]) == 15
    by_id = run(
        rds,
        "DescribeDBInstances",
        Filters=[
            {"Name": "db-instance-id", "Values": ["db-01", "db-02"]},
            {"Name": "engine", "Values": ["mysql"]},
        ],
    )
    assert [i["DBInstanceIdentifier"] for i in by_id["DBInstances"]] == ["db-01", "db-02"]
    fails(
        "InvalidParameterValue",
        rds,
        "DescribeDBInstances",
        Filters=[{"Name": "colour", "Values": ["red"]}],
    )
    fails("InvalidParameterValue", rds, "DescribeDBInstances", MaxRecords=5)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("9db", "mysql", "h", 1, []), "DBInstanceIdentifier"),
        (("db", "oracle-ee", "h", 1, []), "oracle-ee"),
        (("db", "mysql", "", 1, []), "host"),
        (("db", "mysql", "h", 70000, []), "port"),
        (("db", "mysql", "h", 1, ["sg-nope"]), "sg-nope"),
    ],
)
def test_adopt_validation(plane: FakePlane, args: tuple[Any, ...], words: str) -> None:
    with pytest.raises(ApiError) as caught:
        adopt_instance(plane, *args)
    assert caught.value.code == "InvalidParameterValue" and words in caught.value.message
    assert plane.store.all("db_instance") == []


def test_readopt_moves_targets_and_forget(rds: Rds, plane: FakePlane) -> None:
    run(rds, "CreateDBProxy", **recipe())
    make_available(plane)
    adopt(plane)
    first = plane.store.get("db_instance", "app-db")
    run(rds, "RegisterDBProxyTargets", DBProxyName="app-proxy", DBInstanceIdentifiers=["app-db"])
    again = adopt_instance(plane, "app-db", "mysql", "10.0.0.9", 3310, ["sg-db"])
    assert first is not None
    assert again["DbiResourceId"] == first["DbiResourceId"]
    assert again["Endpoint"] == {"Address": "10.0.0.9", "Port": 3310}
    assert "EngineVersion" not in again
    target = plane.store.get("db_proxy_target", "app-proxy/app-db")
    assert target is not None and (target["Endpoint"], target["Port"]) == ("10.0.0.9", 3310)
    with pytest.raises(ApiError) as wrong_engine:
        adopt_instance(plane, "app-db", "postgres", "10.0.0.9", 5432, [])
    assert wrong_engine.value.code == "InvalidParameterValue"
    with pytest.raises(ApiError) as in_use:
        forget_instance(plane, "app-db")
    assert (in_use.value.code, in_use.value.status) == ("InvalidDBInstanceState", 400)
    run(rds, "DeregisterDBProxyTargets", DBProxyName="app-proxy", DBInstanceIdentifiers=["app-db"])
    forget_instance(plane, "APP-DB")
    assert plane.store.get("db_instance", "app-db") is None
    with pytest.raises(ApiError) as gone:
        forget_instance(plane, "app-db")
    assert (gone.value.code, gone.value.status) == ("DBInstanceNotFound", 404)


# ---- Tags ----


def test_tags_on_a_proxy(rds: Rds, plane: FakePlane) -> None:
    arn = run(rds, "CreateDBProxy", **recipe(Tags=[{"Key": "team", "Value": "a"}]))["DBProxy"][
        "DBProxyArn"
    ]
    assert run(rds, "ListTagsForResource", ResourceName=arn)["TagList"] == [
        {"Key": "team", "Value": "a"}
    ]
    run(
        rds,
        "AddTagsToResource",
        ResourceName=arn,
        Tags=[{"Key": "team", "Value": "b"}, {"Key": "env", "Value": "dev"}],
    )
    assert run(rds, "ListTagsForResource", ResourceName=arn)["TagList"] == [
        {"Key": "team", "Value": "b"},
        {"Key": "env", "Value": "dev"},
    ]
    run(rds, "RemoveTagsFromResource", ResourceName=arn, TagKeys=["team", "absent"])
    assert run(rds, "ListTagsForResource", ResourceName=arn)["TagList"] == [
        {"Key": "env", "Value": "dev"}
    ]
    missing = arn[:-3] + "000"
    fails("DBProxyNotFoundFault", rds, "ListTagsForResource", ResourceName=missing)
    fails("InvalidParameterValue", rds, "ListTagsForResource", ResourceName="not-an-arn")
    fails(
        "InvalidParameterValue",
        rds,
        "AddTagsToResource",
        ResourceName=arn,
        Tags=[{"Key": "aws:x", "Value": "y"}],
    )


def test_tags_on_an_instance_show_in_its_tag_list(rds: Rds, plane: FakePlane) -> None:
    adopt(plane)
    arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:db:app-db"
    run(rds, "AddTagsToResource", ResourceName=arn, Tags=[{"Key": "k", "Value": "v"}])
    instance = run(rds, "DescribeDBInstances", DBInstanceIdentifier="app-db")["DBInstances"][0]
    assert instance["TagList"] == [{"Key": "k", "Value": "v"}]
    fails(
        "DBInstanceNotFound",
        rds,
        "ListTagsForResource",
        ResourceName=f"arn:aws:rds:{REGION}:{ACCOUNT}:db:nope",
    )


# ---- DB instances Sluice runs: what is refused before any server starts ----


def _create(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "DBInstanceIdentifier": "new-db", "Engine": "mysql", "DBInstanceClass": "db.t3.micro",
        "MasterUsername": "admin", "ManageMasterUserPassword": True,
    }  # fmt: skip
    params.update(overrides)
    return params


def test_create_instance_refuses_bad_credentials_and_engines(rds: Rds, plane: FakePlane) -> None:
    fails("InvalidParameterCombination", rds, "CreateDBInstance",
          **_create(MasterUserPassword="Long-Enough-1"))  # fmt: skip
    fails("InvalidParameterValue", rds, "CreateDBInstance",
          **_create(ManageMasterUserPassword=False))  # fmt: skip
    fails("InvalidParameterValue", rds, "CreateDBInstance",
          **_create(ManageMasterUserPassword=False, MasterUserPassword="short"))  # fmt: skip
    fails("InvalidParameterValue", rds, "CreateDBInstance",
          **_create(ManageMasterUserPassword=False, MasterUserPassword="has @ sign"))  # fmt: skip
    fails("InvalidParameterValue", rds, "CreateDBInstance", **_create(MasterUsername="1st"))
    fails("InvalidParameterValue", rds, "CreateDBInstance", **_create(Engine="oracle-ee"))
    fails("InvalidParameterValue", rds, "CreateDBInstance", **_create(DBName="no-hyphens"))
    adopt(plane)
    fails("DBInstanceAlreadyExists", rds, "CreateDBInstance",
          **_create(DBInstanceIdentifier="app-db"))  # fmt: skip
    assert not [s for s in plane.store.all("secret") if s["Name"].startswith("rds!")]
    assert plane.store.get("db_instance", "new-db") is None


def test_subnet_groups_need_two_zones_of_one_vpc(rds: Rds) -> None:
    fails("InvalidParameterValue", rds, "CreateDBSubnetGroup", DBSubnetGroupName="one",
          DBSubnetGroupDescription="d", SubnetIds=["subnet-a"])  # fmt: skip
    fails("InvalidSubnet", rds, "CreateDBSubnetGroup", DBSubnetGroupName="two",
          DBSubnetGroupDescription="d", SubnetIds=["subnet-a", "subnet-other"])  # fmt: skip
    made = run(rds, "CreateDBSubnetGroup", DBSubnetGroupName="Two", DBSubnetGroupDescription="d",
               SubnetIds=["subnet-a", "subnet-b", "subnet-a"])["DBSubnetGroup"]  # fmt: skip
    assert made["DBSubnetGroupName"] == "two" and made["VpcId"] == VPC
    assert [s["SubnetIdentifier"] for s in made["Subnets"]] == ["subnet-a", "subnet-b"]
    fails("DBSubnetGroupAlreadyExists", rds, "CreateDBSubnetGroup", DBSubnetGroupName="two",
          DBSubnetGroupDescription="d", SubnetIds=["subnet-a", "subnet-b"])  # fmt: skip
    run(rds, "DeleteDBSubnetGroup", DBSubnetGroupName="two")
    fails("DBSubnetGroupNotFoundFault", rds, "DescribeDBSubnetGroups", DBSubnetGroupName="two")


def test_adopted_instances_are_not_deleted_rebooted_or_stopped(rds: Rds, plane: FakePlane) -> None:
    adopt(plane)
    for operation in ("RebootDBInstance", "StopDBInstance", "StartDBInstance"):
        fails("InvalidDBInstanceState", rds, operation, DBInstanceIdentifier="app-db")
    fails("InvalidDBInstanceState", rds, "DeleteDBInstance", DBInstanceIdentifier="app-db",
          SkipFinalSnapshot=True)  # fmt: skip
    fails("DBInstanceNotFound", rds, "RebootDBInstance", DBInstanceIdentifier="nope")


# ---- The service as a whole ----


def test_every_operation_is_a_real_rds_operation(rds: Rds) -> None:
    operations = [name for name in dir(Rds) if name[0].isupper()]
    assert len(operations) == 27
    for name in operations:
        MODEL.operation_model(name)  # raises for a name RDS does not have
    assert Rds.name == MODEL.service_name == "rds"


def test_state_survives_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _seed(store)
    plane = FakePlane(store, Vault(tmp_path / "key"))
    created = run(Rds(plane), "CreateDBProxy", **recipe())["DBProxy"]
    store.close()
    reopened = FakePlane(Store(tmp_path / "state.db"), Vault(tmp_path / "key"))
    found = run(Rds(reopened), "DescribeDBProxies", DBProxyName="app-proxy")["DBProxies"]
    assert found == [created]
    reopened.store.close()
