"""The EC2 service: VPC and subnets, security groups and their rules, network interfaces.

Outputs are checked against botocore's output shapes, and the aws CLI's own argument
handling (run in-process, nothing sent) gives the parameters of its flat authorize form.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.awsrequest
import botocore.session
import botocore.validate
import pytest
from fakeplane import FakePlane

from sluice.control import network
from sluice.control.context import Call, Principal
from sluice.control.errors import ApiError
from sluice.control.services import lambda_network
from sluice.control.services.ec2 import Ec2
from sluice.control.services.lambda_records import Vpc
from sluice.control.store import Store
from sluice.control.vault import Vault

ACCOUNT = "123456789012"
MODEL = botocore.session.get_session().get_service_model("ec2")




@pytest.fixture
def plane(tmp_path: Path) -> FakePlane:
    store = Store(tmp_path / "state.db")
    network.ensure_default_vpc(store, ACCOUNT, "us-east-1", "127.20.0.0/16")
    return FakePlane(store, Vault(tmp_path / "keys" / "vault.key"))


@pytest.fixture
def ec2(plane: FakePlane) -> Ec2:
    return Ec2(plane)


CALL = Call(Principal(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/admin", "AIDAX", "user", "admin",
                      "AKIAX"), "us-east-1", "req-1", time.time())


def run(ec2: Ec2, op: str, **params: Any) -> dict[str, Any]:
    """Call an operation and check its output against botocore's output shape."""
    out: dict[str, Any] = getattr(ec2, op)(CALL, params)
    shape = MODEL.operation_model(op).output_shape
    if shape is None:
        assert out == {}
    else:
        report = botocore.validate.ParamValidator().validate(out, shape)
        assert not report.has_errors(), report.generate_report()
    return out


def fails(ec2: Ec2, op: str, code: str, **params: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        getattr(ec2, op)(CALL, params)
    assert caught.value.code == code, caught.value.message
    return caught.value


def group(ec2: Ec2, gid: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = run(ec2, "DescribeSecurityGroups", GroupIds=[gid])[
        "SecurityGroups"]
    assert len(found) == 1
    return found[0]


def new_group(ec2: Ec2, name: str, **extra: Any) -> str:
    return str(run(ec2, "CreateSecurityGroup", GroupName=name, Description=f"{name} group",
                   **extra)["GroupId"])


@pytest.fixture(scope="module")
def cli_params() -> Iterator[Any]:
    """The API parameters the aws CLI sends for a command line (nothing leaves the process)."""
    saved = dict(os.environ)
    os.environ.update(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="x",
                      AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull,
                      AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    from awscli.clidriver import create_clidriver  # type: ignore[import-untyped]

    captured: list[dict[str, Any]] = []
    driver = create_clidriver()
    driver.session.register("provide-client-params.ec2.*",
                            lambda params, **kw: captured.append(dict(params)))
    driver.session.register("before-call.ec2.*", lambda **kw: (
        botocore.awsrequest.AWSResponse("http://localhost", 200, {}, None), {}))

    def params_of(*argv: str) -> dict[str, Any]:
        captured.clear()
        assert driver.main(["ec2", *argv]) == 0
        return captured[-1]

    yield params_of
    os.environ.clear()
    os.environ.update(saved)


def test_describe_vpcs_subnets_and_zones(ec2: Ec2, plane: FakePlane) -> None:
    [vpc] = run(ec2, "DescribeVpcs")["Vpcs"]
    assert vpc["CidrBlock"] == "127.20.0.0/16" and vpc["IsDefault"] is True
    assert run(ec2, "DescribeVpcs", Filters=[{"Name": "is-default", "Values": ["false"]}]) == {
        "Vpcs": []}
    subnets = run(ec2, "DescribeSubnets", Filters=[
        {"Name": "vpc-id", "Values": [vpc["VpcId"]]},
        {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == [
        "us-east-1a", "us-east-1b", "us-east-1c"]
    assert {s["AvailableIpAddressCount"] for s in subnets} == {4091}
    [b] = run(ec2, "DescribeSubnets", Filters=[
        {"Name": "availability-zone", "Values": ["*b"]}])["Subnets"]
    assert run(ec2, "DescribeSubnets", SubnetIds=[b["SubnetId"]])["Subnets"] == [b]
    fails(ec2, "DescribeSubnets", "InvalidSubnetID.NotFound", SubnetIds=["subnet-0"])
    fails(ec2, "DescribeVpcs", "InvalidVpcID.NotFound", VpcIds=["vpc-0"])
    fails(ec2, "DescribeSubnets", "InvalidParameterValue", Filters=[{"Name": "x", "Values": []}])
    zones = run(ec2, "DescribeAvailabilityZones")["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    only = run(ec2, "DescribeAvailabilityZones", ZoneNames=["us-east-1c"])["AvailabilityZones"]
    assert [z["ZoneId"] for z in only] == ["use1-az3"]


def test_create_security_group(ec2: Ec2, plane: FakePlane) -> None:
    tags = [{"Key": "team", "Value": "db"}]
    out = run(ec2, "CreateSecurityGroup", GroupName="db", Description="the database",
              TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])
    assert out["GroupId"].startswith("sg-") and len(out["GroupId"]) == 20
    assert out["Tags"] == tags
    assert out["SecurityGroupArn"] == (
        f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/{out['GroupId']}")
    got = group(ec2, out["GroupId"])
    assert got["VpcId"] == network.default_vpc(plane.store)["VpcId"]  # type: ignore[index]
    assert got["IpPermissions"] == []
    assert got["IpPermissionsEgress"] == [{
        "IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [],
        "PrefixListIds": [], "UserIdGroupPairs": []}]
    fails(ec2, "CreateSecurityGroup", "InvalidGroup.Duplicate", GroupName="db", Description="x")
    fails(ec2, "CreateSecurityGroup", "InvalidVpcID.NotFound", GroupName="b", Description="x",
          VpcId="vpc-0")
    for bad in ("sg-1", "default", "caf\u00e9"):
        fails(ec2, "CreateSecurityGroup", "InvalidParameterValue", GroupName=bad,
              Description="x")
    fails(ec2, "CreateSecurityGroup", "DryRunOperation", GroupName="c", Description="x",
          DryRun=True)


def test_describe_security_groups_filters_and_pages(ec2: Ec2) -> None:
    ids = [new_group(ec2, f"g{i}") for i in range(5)]
    run(ec2, "CreateTags", Resources=[ids[1], ids[3]], Tags=[{"Key": "env", "Value": "prod"}])
    by_tag = run(ec2, "DescribeSecurityGroups", Filters=[
        {"Name": "tag:env", "Values": ["prod"]}])["SecurityGroups"]
    assert [g["GroupId"] for g in by_tag] == [ids[1], ids[3]]
    by_name = run(ec2, "DescribeSecurityGroups", GroupNames=["g2", "default"])["SecurityGroups"]
    assert {g["GroupName"] for g in by_name} == {"g2", "default"}
    fails(ec2, "DescribeSecurityGroups", "InvalidGroup.NotFound", GroupNames=["nope"])
    fails(ec2, "DescribeSecurityGroups", "InvalidGroup.NotFound", GroupIds=["sg-0"])
    seen: list[str] = []
    token: str | None = None
    while True:
        page = run(ec2, "DescribeSecurityGroups", MaxResults=5,
                   **({"NextToken": token} if token else {}))
        seen += [g["GroupId"] for g in page["SecurityGroups"]]
        token = page.get("NextToken")
        if token is None:
            break
    assert len(seen) == 6 and set(ids) <= set(seen)
    fails(ec2, "DescribeSecurityGroups", "InvalidParameterValue", NextToken="garbage!")
    named = run(ec2, "DescribeSecurityGroups", Filters=[
        {"Name": "group-name", "Values": ["g1", "g4"]}])["SecurityGroups"]
    assert [g["GroupId"] for g in named] == [ids[1], ids[4]]


def test_cli_flat_form_and_ip_permissions_give_the_same_view(ec2: Ec2, cli_params: Any) -> None:
    app, db_cli, db_api, db_top = (new_group(ec2, n) for n in ("app", "dbc", "dba", "dbt"))
    flat = cli_params("authorize-security-group-ingress", "--group-id", db_cli,
                      "--protocol", "tcp", "--port", "3306", "--source-group", app)
    run(ec2, "AuthorizeSecurityGroupIngress", **flat)
    run(ec2, "AuthorizeSecurityGroupIngress", **cli_params(
        "authorize-security-group-ingress", "--group-id", db_cli, "--protocol", "tcp",
        "--port", "3306", "--cidr", "10.0.0.0/8"))
    out = run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db_api, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
        "UserIdGroupPairs": [{"GroupId": app}], "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    assert out["Return"] is True and len(out["SecurityGroupRules"]) == 2
    rule = next(r for r in out["SecurityGroupRules"] if "ReferencedGroupInfo" in r)
    assert rule["ReferencedGroupInfo"]["GroupId"] == app and rule["IsEgress"] is False
    run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db_top, IpProtocol="tcp", FromPort=3306,
        ToPort=3306, SourceSecurityGroupName="app")
    run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db_top, IpProtocol="tcp", FromPort=3306,
        ToPort=3306, CidrIp="10.0.0.0/8")
    expected = [{"IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
                 "IpRanges": [{"CidrIp": "10.0.0.0/8"}], "Ipv6Ranges": [], "PrefixListIds": [],
                 "UserIdGroupPairs": [{"GroupId": app, "UserId": ACCOUNT}]}]
    for gid in (db_cli, db_api, db_top):
        assert group(ec2, gid)["IpPermissions"] == expected


def test_cli_source_group_by_name_and_protocol_all(ec2: Ec2, cli_params: Any) -> None:
    app, db = new_group(ec2, "app"), new_group(ec2, "db")
    params = cli_params("authorize-security-group-ingress", "--group-id", db,
                        "--protocol", "all", "--source-group", "app")
    assert params["IpPermissions"][0]["UserIdGroupPairs"] == [{"GroupName": "app"}]
    run(ec2, "AuthorizeSecurityGroupIngress", **params)
    assert group(ec2, db)["IpPermissions"] == [{
        "IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
        "UserIdGroupPairs": [{"GroupId": app, "UserId": ACCOUNT}]}]


def test_top_level_source_group_without_protocol_opens_tcp_udp_icmp(ec2: Ec2) -> None:
    new_group(ec2, "app")
    db = new_group(ec2, "db")
    run(ec2, "AuthorizeSecurityGroupIngress", GroupName="db", SourceSecurityGroupName="app")
    perms = group(ec2, db)["IpPermissions"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in perms] == [
        ("tcp", 0, 65535), ("udp", 0, 65535), ("icmp", -1, -1)]


def test_authorize_errors(ec2: Ec2, plane: FakePlane) -> None:
    db = new_group(ec2, "db")
    rule = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
            "IpRanges": [{"CidrIp": "127.0.0.0/8"}]}
    run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db, IpPermissions=[rule])
    error = fails(ec2, "AuthorizeSecurityGroupIngress", "InvalidPermission.Duplicate",
                  GroupId=db, IpPermissions=[rule])
    assert "127.0.0.0/8" in error.message
    fails(ec2, "AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound", GroupId="sg-0",
          IpPermissions=[rule])
    fails(ec2, "AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound", GroupId=db,
          IpPermissions=[{**rule, "IpRanges": [], "UserIdGroupPairs": [{"GroupId": "sg-0"}]}])
    fails(ec2, "AuthorizeSecurityGroupIngress", "InvalidParameterCombination", GroupId=db,
          IpPermissions=[rule], CidrIp="10.0.0.0/8")
    fails(ec2, "AuthorizeSecurityGroupIngress", "MissingParameter", GroupId=db)
    fails(ec2, "AuthorizeSecurityGroupIngress", "MissingParameter", IpPermissions=[rule])
    assert len(group(ec2, db)["IpPermissions"][0]["IpRanges"]) == 1  # nothing half-applied


def test_revoke_ingress_takes_effect_at_once(ec2: Ec2, plane: FakePlane) -> None:
    db = new_group(ec2, "db")
    rule = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
            "IpRanges": [{"CidrIp": "127.0.0.0/8"}, {"CidrIp": "10.0.0.0/8"}]}
    run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db, IpPermissions=[rule])
    assert network.admits(plane.store, [db], "127.0.0.1", 5432)
    plane.changes.clear()
    out = run(ec2, "RevokeSecurityGroupIngress", GroupId=db, CidrIp="127.0.0.0/8",
              IpProtocol="tcp", FromPort=5432, ToPort=5432)
    assert [r["CidrIpv4"] for r in out["RevokedSecurityGroupRules"]] == ["127.0.0.0/8"]
    assert plane.changes == ["ec2"]
    assert not network.admits(plane.store, [db], "127.0.0.1", 5432)
    assert network.admits(plane.store, [db], "10.0.0.1", 5432)
    fails(ec2, "RevokeSecurityGroupIngress", "InvalidPermission.NotFound", GroupId=db,
          CidrIp="127.0.0.0/8", IpProtocol="tcp", FromPort=5432, ToPort=5432)
    partial = run(ec2, "RevokeSecurityGroupIngress", GroupId=db, IpPermissions=[rule])
    assert [p["IpRanges"] for p in partial["UnknownIpPermissions"]] == [
        [{"CidrIp": "127.0.0.0/8"}]]
    assert group(ec2, db)["IpPermissions"] == []


def test_revoke_by_rule_id_and_egress(ec2: Ec2) -> None:
    db = new_group(ec2, "db")
    out = run(ec2, "AuthorizeSecurityGroupEgress", GroupId=db, IpPermissions=[{
        "IpProtocol": "udp", "FromPort": 53, "ToPort": 53,
        "IpRanges": [{"CidrIp": "127.0.0.53/32", "Description": "dns"}]}])
    [rule] = out["SecurityGroupRules"]
    assert rule["IsEgress"] is True and rule["Description"] == "dns"
    assert len(group(ec2, db)["IpPermissionsEgress"]) == 2
    fails(ec2, "RevokeSecurityGroupIngress", "InvalidSecurityGroupRuleId.NotFound", GroupId=db,
          SecurityGroupRuleIds=[rule["SecurityGroupRuleId"]])
    gone = run(ec2, "RevokeSecurityGroupEgress", GroupId=db,
               SecurityGroupRuleIds=[rule["SecurityGroupRuleId"]])
    assert gone["RevokedSecurityGroupRules"][0]["SecurityGroupRuleId"] == rule[
        "SecurityGroupRuleId"]
    assert [p["IpProtocol"] for p in group(ec2, db)["IpPermissionsEgress"]] == ["-1"]


def test_delete_security_group_and_its_dependencies(ec2: Ec2, plane: FakePlane) -> None:
    app, db = new_group(ec2, "app"), new_group(ec2, "db")
    run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "UserIdGroupPairs": [{"GroupId": app}]}])
    fails(ec2, "DeleteSecurityGroup", "DependencyViolation", GroupId=app)
    run(ec2, "RevokeSecurityGroupIngress", GroupId=db, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "UserIdGroupPairs": [{"GroupId": app}]}])
    subnet = plane.store.all("subnet")[0]["SubnetId"]
    eni = run(ec2, "CreateNetworkInterface", SubnetId=subnet, Groups=[app])["NetworkInterface"]
    fails(ec2, "DeleteSecurityGroup", "DependencyViolation", GroupId=app)
    run(ec2, "DeleteNetworkInterface", NetworkInterfaceId=eni["NetworkInterfaceId"])
    plane.store.put("db_proxy", "p", {"VpcSecurityGroupIds": [app]})
    fails(ec2, "DeleteSecurityGroup", "DependencyViolation", GroupId=app)
    plane.store.delete("db_proxy", "p")
    plane.changes.clear()
    assert run(ec2, "DeleteSecurityGroup", GroupName="app") == {"Return": True, "GroupId": app}
    assert plane.changes == ["ec2"]
    fails(ec2, "DeleteSecurityGroup", "InvalidGroup.NotFound", GroupId=app)
    default = run(ec2, "DescribeSecurityGroups", GroupNames=["default"])["SecurityGroups"][0]
    fails(ec2, "DeleteSecurityGroup", "CannotDelete", GroupId=default["GroupId"])


def test_network_interfaces_make_members(ec2: Ec2, plane: FakePlane) -> None:
    app, db = new_group(ec2, "app"), new_group(ec2, "db")
    run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
        "UserIdGroupPairs": [{"GroupId": app}]}])
    subnet = next(s for s in plane.store.all("subnet") if s["AvailabilityZone"] == "us-east-1a")
    plane.changes.clear()
    eni = run(ec2, "CreateNetworkInterface", SubnetId=subnet["SubnetId"], Groups=[app],
              Description="fn", PrivateIpAddress="127.20.0.77")["NetworkInterface"]
    assert plane.changes == ["ec2"]
    assert eni["PrivateIpAddress"] == "127.20.0.77" and eni["Status"] == "available"
    assert eni["Groups"] == [{"GroupId": app, "GroupName": "app"}]
    assert network.admits(plane.store, [db], "127.20.0.77", 3306)
    other = run(ec2, "CreateNetworkInterface", SubnetId=subnet["SubnetId"])["NetworkInterface"]
    assert other["PrivateIpAddress"] == "127.20.0.4"
    assert [g["GroupName"] for g in other["Groups"]] == ["default"]
    assert not network.admits(plane.store, [db], "127.20.0.4", 3306)
    found = run(ec2, "DescribeNetworkInterfaces", Filters=[
        {"Name": "group-id", "Values": [app]}])["NetworkInterfaces"]
    assert [n["NetworkInterfaceId"] for n in found] == [eni["NetworkInterfaceId"]]
    fails(ec2, "CreateNetworkInterface", "InvalidIPAddress.InUse", SubnetId=subnet["SubnetId"],
          PrivateIpAddress="127.20.0.77")
    fails(ec2, "CreateNetworkInterface", "InvalidSubnetID.NotFound", SubnetId="subnet-0")
    fails(ec2, "CreateNetworkInterface", "InvalidGroup.NotFound", SubnetId=subnet["SubnetId"],
          Groups=["sg-0"])
    run(ec2, "DeleteNetworkInterface", NetworkInterfaceId=eni["NetworkInterfaceId"])
    assert plane.store.get("address", "127.20.0.77") is None
    assert not network.admits(plane.store, [db], "127.20.0.77", 3306)
    fails(ec2, "DeleteNetworkInterface", "InvalidNetworkInterfaceID.NotFound",
          NetworkInterfaceId=eni["NetworkInterfaceId"])


def test_interfaces_lambda_makes_for_a_function(ec2: Ec2, plane: FakePlane) -> None:
    app, db = new_group(ec2, "app"), new_group(ec2, "db")
    run(ec2, "AuthorizeSecurityGroupIngress", GroupId=db, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
        "UserIdGroupPairs": [{"GroupId": app}]}])
    subnets = tuple(s["SubnetId"] for s in plane.store.all("subnet"))[:2]
    vpc = lambda_network.attach(plane.store, "fn", Vpc(subnets, (app,), "vpc-x"))
    found = run(ec2, "DescribeNetworkInterfaces", Filters=[
        {"Name": "interface-type", "Values": ["lambda"]}])["NetworkInterfaces"]
    assert [n["NetworkInterfaceId"] for n in found] == list(vpc.interface_ids)
    assert [n["SubnetId"] for n in found] == list(subnets)
    first = found[0]
    assert (first["Status"], first["RequesterManaged"]) == ("in-use", True)
    assert first["Description"].startswith("AWS Lambda VPC ENI-fn-")
    assert first["Attachment"]["InstanceOwnerId"] == "amazon-aws"
    source = lambda_network.source_address(plane.store, vpc)
    assert source == first["PrivateIpAddress"]
    assert network.admits(plane.store, [db], source, 3306)
    assert not network.admits(plane.store, [db], network.OUTSIDE_ADDRESS, 3306)
    fails(ec2, "DeleteNetworkInterface", "InvalidNetworkInterface.InUse",
          NetworkInterfaceId=first["NetworkInterfaceId"])
    fails(ec2, "DeleteSecurityGroup", "DependencyViolation", GroupId=app)
    lambda_network.detach(plane.store, vpc)
    assert run(ec2, "DescribeNetworkInterfaces")["NetworkInterfaces"] == []
    assert lambda_network.source_address(plane.store, vpc) == network.OUTSIDE_ADDRESS
    assert plane.store.all("address") == []


def test_interface_groups_must_share_the_subnets_vpc(ec2: Ec2, plane: FakePlane) -> None:
    plane.store.put("vpc", "vpc-other", {"VpcId": "vpc-other", "CidrBlock": "127.50.0.0/16"})
    other = new_group(ec2, "elsewhere", VpcId="vpc-other")
    subnet = plane.store.all("subnet")[0]["SubnetId"]
    fails(ec2, "CreateNetworkInterface", "InvalidParameterValue", SubnetId=subnet,
          Groups=[other])


def test_tags(ec2: Ec2, plane: FakePlane) -> None:
    gid = new_group(ec2, "db")
    run(ec2, "CreateTags", Resources=[gid], Tags=[{"Key": "a", "Value": "1"},
                                                   {"Key": "b", "Value": "2"}])
    run(ec2, "CreateTags", Resources=[gid], Tags=[{"Key": "a", "Value": "3"}])
    assert group(ec2, gid)["Tags"] == [{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "3"}]
    run(ec2, "DeleteTags", Resources=[gid], Tags=[{"Key": "b", "Value": "nope"}])
    assert len(group(ec2, gid)["Tags"]) == 2
    run(ec2, "DeleteTags", Resources=[gid], Tags=[{"Key": "b"}])
    assert group(ec2, gid)["Tags"] == [{"Key": "a", "Value": "3"}]
    run(ec2, "DeleteTags", Resources=[gid])
    assert group(ec2, gid)["Tags"] == []
    fails(ec2, "CreateTags", "InvalidGroup.NotFound", Resources=["sg-0"],
          Tags=[{"Key": "a", "Value": "1"}])
    fails(ec2, "CreateTags", "InvalidID", Resources=["i-0"], Tags=[{"Key": "a", "Value": "1"}])
    fails(ec2, "CreateTags", "InvalidParameterValue", Resources=[gid],
          Tags=[{"Key": "aws:x", "Value": "1"}])
