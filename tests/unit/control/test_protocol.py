"""Server-side AWS protocols, checked against botocore's own client half.

Requests are written by botocore's serializers (and encoded by its request objects) and must parse
back to exactly the parameters given; answers are read by botocore's parsers and must give back
exactly the dict serialized. So these tests prove wire compatibility with boto3 and the aws CLI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.awsrequest import (
    HeadersDict,
    create_request_object,
    prepare_request_dict,
)
from botocore.errorfactory import ClientExceptionsFactory
from botocore.model import ServiceModel
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from botocore.session import get_session

from sluice.control.errors import ApiError
from sluice.control.protocol import OutputError, Reply, codec_for, validate

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-creds-AbCdEf"
ROLE_ARN = "arn:aws:iam::123456789012:role/proxy-role"
POLICY_ARN = "arn:aws:iam::123456789012:policy/sluice-policy"
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"}]}'
WHEN = datetime(2026, 11, 27, 13, 9, 31, 123000, tzinfo=UTC)
LATER = datetime(2026, 11, 28, 1, 0, 0, tzinfo=UTC)
RID = "5f1c2a9e-7d7b-4d3a-9c1e-0a1b2c3d4e5f"


# A made-up query service with the layouts the real ones above do not use: flattened lists
# (with and without a member locationName), maps (wrapped and flattened, renamed key/value),
# blobs, doubles and both timestamp formats.
_FLAT_MEMBERS = {
    "Flat": {"shape": "FlatList"},
    "Named": {"shape": "NamedFlatList"},
    "Attrs": {"shape": "AttrMap"},
    "FlatAttrs": {"shape": "FlatMap"},
    "Data": {"shape": "Bytes"},
    "Ratio": {"shape": "Real"},
    "When": {"shape": "Time"},
    "Epoch": {"shape": "EpochTime"},
    "Inner": {"shape": "Inner"},
}
FLAT_MODEL = {
    "metadata": {
        "protocol": "query",
        "apiVersion": "2020-01-01",
        "serviceId": "Flat",
        "xmlNamespace": "https://flat.test/doc/",
        "endpointPrefix": "flat",
        "signatureVersion": "v4",
    },
    "operations": {
        "Echo": {
            "name": "Echo",
            "http": {"method": "POST", "requestUri": "/"},
            "input": {"shape": "Echo"},
            "output": {"shape": "Echo", "resultWrapper": "EchoResult"},
        }
    },
    "shapes": {
        "Echo": {"type": "structure", "members": _FLAT_MEMBERS},
        "Inner": {"type": "structure", "members": {"Named": {"shape": "NamedFlatList"}}},
        "FlatList": {"type": "list", "member": {"shape": "Text"}, "flattened": True},
        "NamedFlatList": {
            "type": "list",
            "flattened": True,
            "member": {"shape": "Text", "locationName": "Item"},
        },
        "AttrMap": {"type": "map", "key": {"shape": "Text"}, "value": {"shape": "Text"}},
        "FlatMap": {
            "type": "map",
            "flattened": True,
            "key": {"shape": "Text", "locationName": "Name"},
            "value": {"shape": "Text", "locationName": "Val"},
        },
        "Text": {"type": "string"},
        "Bytes": {"type": "blob"},
        "Real": {"type": "double"},
        "Time": {"type": "timestamp"},
        "EpochTime": {"type": "timestamp", "timestampFormat": "unixTimestamp"},
    },
}


@cache
def service(name: str) -> Any:
    if name == "flat":
        return ServiceModel(FLAT_MODEL, service_name="flat")
    return get_session().get_service_model(name)


def wire(svc: str, op_name: str, params: dict[str, Any]) -> tuple[bytes, dict[str, str], Any]:
    """The body, URL query and headers botocore sends for `params`."""
    op = service(svc).operation_model(op_name)
    request = create_serializer(service(svc).protocol).serialize_to_request(params, op)
    prepare_request_dict(request, endpoint_url="https://sluice.test:8443")
    prepared = create_request_object(request).prepare()
    body = prepared.body or b""
    body = body.encode("utf-8") if isinstance(body, str) else body
    query = dict(parse_qsl(urlsplit(prepared.url).query, keep_blank_values=True))
    return body, query, prepared.headers


def parse_request(svc: str, op_name: str, params: dict[str, Any]) -> dict[str, Any]:
    body, query, headers = wire(svc, op_name, params)
    codec = codec_for(service(svc))
    assert codec.operation_name(service(svc), body, query, headers) == op_name
    return codec.parse(service(svc).operation_model(op_name), body, query, headers)


def read_reply(svc: str, op_name: str, reply: Reply) -> dict[str, Any]:
    """What boto3 returns for `reply`."""
    response = {
        "status_code": reply.status,
        "headers": HeadersDict(reply.headers),
        "body": reply.body,
    }
    shape = service(svc).operation_model(op_name).output_shape
    parsed: dict[str, Any] = create_parser(service(svc).protocol).parse(response, shape)
    return parsed


def answer(svc: str, op_name: str, output: dict[str, Any]) -> Reply:
    return codec_for(service(svc)).serialize(service(svc).operation_model(op_name), output, RID)


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "rds",
        "CreateDBProxy",
        {
            "DBProxyName": "my-proxy",
            "EngineFamily": "POSTGRESQL",
            "RoleArn": ROLE_ARN,
            "Auth": [
                {
                    "AuthScheme": "SECRETS",
                    "SecretArn": SECRET_ARN,
                    "IAMAuth": "REQUIRED",
                    "Description": 'a & b <c> "d" +e=f%',
                },
                {"SecretArn": SECRET_ARN + "x", "ClientPasswordAuthType": "POSTGRES_SCRAM_SHA_256"},
            ],
            "VpcSubnetIds": ["subnet-1", "subnet-2"],
            "VpcSecurityGroupIds": [],
            "RequireTLS": True,
            "DebugLogging": False,
            "IdleClientTimeout": 1800,
            "Tags": [{"Key": "env", "Value": "dév ü"}, {"Key": "team", "Value": ""}],
        },
    ),
    (
        "rds",
        "ModifyDBProxyTargetGroup",
        {
            "DBProxyName": "my-proxy",
            "TargetGroupName": "default",
            "NewName": "main",
            "ConnectionPoolConfig": {
                "MaxConnectionsPercent": 90,
                "MaxIdleConnectionsPercent": 10,
                "ConnectionBorrowTimeout": 120,
                "InitQuery": "SET x=1; SET y='2'",
                "SessionPinningFilters": ["EXCLUDE_VARIABLE_SETS"],
            },
        },
    ),
    (
        "rds",
        "RegisterDBProxyTargets",
        {
            "DBProxyName": "my-proxy",
            "TargetGroupName": "default",
            "DBInstanceIdentifiers": ["db-1", "db-2"],
        },
    ),
    (
        "rds",
        "DescribeDBProxies",
        {
            "Filters": [
                {"Name": "engine", "Values": ["postgres", "mysql"]},
                {"Name": "x", "Values": []},
            ],
            "MaxRecords": 20,
            "Marker": "m1",
        },
    ),
    ("rds", "DescribeDBProxies", {}),
    (
        "iam",
        "CreateRole",
        {
            "RoleName": "proxy-role",
            "Path": "/service/",
            "AssumeRolePolicyDocument": POLICY,
            "MaxSessionDuration": 3600,
            "Tags": [{"Key": "k", "Value": "v"}],
        },
    ),
    (
        "iam",
        "PutRolePolicy",
        {
            "RoleName": "proxy-role",
            "PolicyName": "inline",
            "PolicyDocument": POLICY + "\n\r\t",
        },
    ),
    ("iam", "AttachRolePolicy", {"RoleName": "proxy-role", "PolicyArn": POLICY_ARN}),
    (
        "iam",
        "CreatePolicy",
        {
            "PolicyName": "sluice-policy",
            "PolicyDocument": POLICY,
            "Description": "d",
        },
    ),
    ("iam", "ListPolicies", {"Scope": "Local", "OnlyAttached": True, "MaxItems": 50}),
    (
        "sts",
        "AssumeRole",
        {
            "RoleArn": ROLE_ARN,
            "RoleSessionName": "s1",
            "DurationSeconds": 900,
            "PolicyArns": [{"arn": POLICY_ARN}],
            "Tags": [{"Key": "k", "Value": "v"}],
            "TransitiveTagKeys": ["k"],
        },
    ),
    (
        "ec2",
        "AuthorizeSecurityGroupIngress",
        {
            "GroupId": "sg-1",
            "IpPermissions": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 5432,
                    "ToPort": 5432,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "vpc"}],
                    "UserIdGroupPairs": [
                        {"GroupId": "sg-2"},
                        {"GroupId": "sg-3", "UserId": "1234"},
                    ],
                },
                {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            ],
            "DryRun": False,
        },
    ),
    (
        "ec2",
        "DescribeSecurityGroups",
        {
            "GroupIds": ["sg-1", "sg-2"],
            "Filters": [
                {"Name": "vpc-id", "Values": ["vpc-1"]},
                {"Name": "group-name", "Values": ["a", "b"]},
            ],
        },
    ),
    (
        "ec2",
        "CreateSecurityGroup",
        {
            "GroupName": "proxy-sg",
            "Description": "for the proxy",
            "VpcId": "vpc-1",
            "TagSpecifications": [
                {"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": "proxy-sg"}]}
            ],
        },
    ),
    (
        "secretsmanager",
        "CreateSecret",
        {
            "Name": "db-creds",
            "SecretString": '{"username": "app", "password": "p\\u00e9"}',
            "Tags": [{"Key": "k", "Value": "v"}],
            "ForceOverwriteReplicaSecret": False,
        },
    ),
    (
        "secretsmanager",
        "CreateSecret",
        {
            "Name": "blob",
            "SecretBinary": bytes(range(256)),
            "Description": "binary",
        },
    ),
    (
        "secretsmanager",
        "PutSecretValue",
        {
            "SecretId": SECRET_ARN,
            "SecretString": "s3cret",
            "VersionStages": ["AWSCURRENT"],
            "ClientRequestToken": "0" * 32,
        },
    ),
    (
        "secretsmanager",
        "ListSecrets",
        {
            "Filters": [{"Key": "tag-key", "Values": ["env"]}, {"Key": "name", "Values": ["db"]}],
            "MaxResults": 10,
            "SortOrder": "asc",
            "IncludePlannedDeletion": True,
        },
    ),
]


@pytest.mark.parametrize(
    ("svc", "op_name", "params"), REQUESTS, ids=[f"{s}.{o}" for s, o, _ in REQUESTS]
)
def test_requests_parse_back_to_the_params_botocore_sent(
    svc: str, op_name: str, params: dict[str, Any]
) -> None:
    parsed = parse_request(svc, op_name, params)
    assert parsed == params
    validate(service(svc).operation_model(op_name), parsed)


FLAT_PARAMS: list[dict[str, Any]] = [
    {
        "Flat": ["a", "b"],
        "Named": ["x"],
        "Attrs": {"k": "v", "k2": ""},
        "FlatAttrs": {"n": "1", "m": "2"},
        "Data": b"\x00\xfe+/=",
        "Ratio": 0.25,
        "When": WHEN,
        "Epoch": LATER,
        "Inner": {"Named": ["y", "z"]},
    },
    {"Flat": [], "Named": [], "Ratio": float("inf")},
]


@pytest.mark.parametrize("params", FLAT_PARAMS)
def test_flattened_and_mapped_layouts_parse_back(params: dict[str, Any]) -> None:
    assert parse_request("flat", "Echo", params) == params


def test_flattened_and_mapped_layouts_answer() -> None:
    output = dict(FLAT_PARAMS[0])
    reply = answer("flat", "Echo", output)
    assert b"<Flat>a</Flat><Flat>b</Flat>" in reply.body
    assert b"<Inner><Item>y</Item><Item>z</Item></Inner>" in reply.body
    assert b"<FlatAttrs><Name>n</Name><Val>1</Val></FlatAttrs>" in reply.body
    assert b"<Attrs><entry><key>k</key><value>v</value></entry>" in reply.body
    parsed = read_reply("flat", "Echo", reply)
    parsed.pop("ResponseMetadata")
    assert parsed == output


def test_json_answers_timestamps_as_epoch_seconds() -> None:
    reply = answer("secretsmanager", "DescribeSecret", {"CreatedDate": WHEN})
    created = json.loads(reply.body)["CreatedDate"]
    assert isinstance(created, float)
    assert created == pytest.approx(WHEN.timestamp(), abs=1e-6)


def test_query_wire_form_is_what_the_codec_reads() -> None:
    body, _, _ = wire("rds", "CreateDBProxy", REQUESTS[0][2])
    assert b"Auth.member.2.SecretArn=" in body and b"Tags.Tag.1.Key=env" in body
    assert b"VpcSecurityGroupIds=&" in body  # the empty list, as botocore writes it


def test_timestamps_and_floats_parse_from_query_and_json() -> None:
    rds = service("rds").operation_model("DescribeEvents")
    params = {"StartTime": WHEN, "EndTime": LATER, "Duration": 60}
    assert parse_request("rds", "DescribeEvents", params) == params
    validate(rds, params)
    sm = {"SecretId": "x", "RotationRules": {"AutomaticallyAfterDays": 7}}
    assert parse_request("secretsmanager", "RotateSecret", sm) == sm


def test_get_request_with_parameters_in_the_url_query() -> None:
    codec = codec_for(service("sts"))
    query = {"Action": "GetCallerIdentity", "Version": "2011-06-15", "X-Amz-Signature": "ab"}
    assert codec.operation_name(service("sts"), b"", query, {}) == "GetCallerIdentity"
    op = service("sts").operation_model("GetCallerIdentity")
    assert codec.parse(op, b"", query, {}) == {}


def rds_error(body: bytes, op_name: str = "DescribeDBProxies") -> ApiError:
    codec = codec_for(service("rds"))
    with pytest.raises(ApiError) as caught:
        codec.parse(service("rds").operation_model(op_name), body, {}, {})
    return caught.value


def test_query_parse_is_strict() -> None:
    assert rds_error(b"Action=DescribeDBProxies&Bogus=1").code == "InvalidParameterValue"
    assert "Bogus" in rds_error(b"Bogus=1").message
    assert rds_error(b"MaxRecords=twenty").code == "InvalidParameterValue"
    assert rds_error(b"MaxRecords=1&MaxRecords=2").code == "MalformedQueryString"
    assert rds_error(b"Filters.Filter.x.Name=a").code == "InvalidParameterValue"
    assert rds_error(b"Filters.1.Name=a").code == "InvalidParameterValue"  # wrong list layout
    assert rds_error(b"DBProxyName=%ff").code == "MalformedQueryString"
    assert rds_error(b"DBProxyName=a%01b").code == "InvalidParameterValue"
    assert rds_error(b"x" * ((1 << 20) + 1)).status == 413
    bad_bool = rds_error(b"DBProxyName=p&RequireTLS=yes", "ModifyDBProxy")
    assert bad_bool.code == "InvalidParameterValue"
    ec2 = codec_for(service("ec2"))
    with pytest.raises(ApiError) as caught:
        ec2.parse(service("ec2").operation_model("DescribeVpcs"), b"VpcIds.member.1=v", {}, {})
    assert (caught.value.code, caught.value.message) == (
        "UnknownParameter",
        "The parameter VpcIds.member.1 is not recognized",
    )


@pytest.mark.parametrize(
    ("svc", "body", "query", "headers", "code"),
    [
        ("rds", b"Version=2014-10-31", {}, {}, "MissingAction"),
        ("rds", b"Action=DeleteEverything", {}, {}, "InvalidAction"),
        ("ec2", b"", {"Action": "CreateDBProxy"}, {}, "InvalidAction"),
        ("secretsmanager", b"{}", {}, {}, "UnknownOperationException"),
        (
            "secretsmanager",
            b"{}",
            {},
            {"x-amz-target": "kms.GetSecretValue"},
            "UnknownOperationException",
        ),
        (
            "secretsmanager",
            b"{}",
            {},
            {"X-Amz-Target": "secretsmanager.Nope"},
            "UnknownOperationException",
        ),
    ],
)
def test_unknown_operations_are_refused(
    svc: str, body: bytes, query: dict[str, str], headers: dict[str, str], code: str
) -> None:
    with pytest.raises(ApiError) as caught:
        codec_for(service(svc)).operation_name(service(svc), body, query, headers)
    assert caught.value.code == code


def test_json_target_header_is_case_insensitive() -> None:
    headers = {"x-amz-target": "secretsmanager.GetSecretValue"}
    name = codec_for(service("secretsmanager")).operation_name(
        service("secretsmanager"), b"{}", {}, headers
    )
    assert name == "GetSecretValue"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"SecretId": 5}',
        b'{"SecretId": "x", "Bogus": 1}',
        b'{"SecretId": "x", "VersionStage": NaN}',
        b"[" * 100_000,
        b'{"SecretId": ["x"]}',
    ],
)
def test_json_parse_is_strict(body: bytes) -> None:
    op = service("secretsmanager").operation_model("GetSecretValue")
    with pytest.raises(ApiError) as caught:
        codec_for(service("secretsmanager")).parse(op, body, {}, {})
    assert caught.value.code == "SerializationException"
    assert caught.value.status == 400


def test_json_parse_accepts_iso_timestamps_and_nulls() -> None:
    op = service("secretsmanager").operation_model("ListSecrets")
    body = b'{"NextToken": null, "MaxResults": 3}'
    assert codec_for(service("secretsmanager")).parse(op, body, {}, {}) == {"MaxResults": 3}


RESPONSES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "rds",
        "DescribeDBProxies",
        {
            "DBProxies": [
                {
                    "DBProxyName": "my-proxy",
                    "DBProxyArn": "arn:aws:rds:us-east-1:1:db-proxy:prx-1",
                    "Status": "available",
                    "EngineFamily": "POSTGRESQL",
                    "VpcId": "vpc-1",
                    "VpcSecurityGroupIds": ["sg-1", "sg-2"],
                    "VpcSubnetIds": ["subnet-1"],
                    "Auth": [
                        {
                            "AuthScheme": "SECRETS",
                            "SecretArn": SECRET_ARN,
                            "IAMAuth": "DISABLED",
                            "Description": "<&>\"' \r\n\t x",
                        }
                    ],
                    "RoleArn": ROLE_ARN,
                    "Endpoint": "my-proxy.proxy-x.us-east-1.rds.amazonaws.com",
                    "RequireTLS": True,
                    "IdleClientTimeout": 1800,
                    "DebugLogging": False,
                    "CreatedDate": WHEN,
                    "UpdatedDate": LATER,
                },
                {"DBProxyName": "empty", "Auth": [], "VpcSubnetIds": []},
            ],
            "Marker": "next",
        },
    ),
    ("rds", "DescribeDBProxies", {"DBProxies": []}),
    (
        "rds",
        "DescribeDBProxyTargets",
        {
            "Targets": [
                {
                    "TargetArn": "arn:aws:rds:us-east-1:1:db:db-1",
                    "Endpoint": "db-1.local",
                    "Port": 5432,
                    "RdsResourceId": "db-ABC",
                    "Type": "RDS_INSTANCE",
                    "Role": "READ_WRITE",
                    "TargetHealth": {"State": "AVAILABLE", "Reason": "", "Description": "ok"},
                }
            ]
        },
    ),
    (
        "rds",
        "DescribeDBProxyTargetGroups",
        {
            "TargetGroups": [
                {
                    "DBProxyName": "my-proxy",
                    "TargetGroupName": "default",
                    "IsDefault": True,
                    "Status": "available",
                    "CreatedDate": WHEN,
                    "ConnectionPoolConfig": {
                        "MaxConnectionsPercent": 100,
                        "MaxIdleConnectionsPercent": 50,
                        "ConnectionBorrowTimeout": 120,
                        "InitQuery": "SET a=1",
                        "SessionPinningFilters": ["EXCLUDE_VARIABLE_SETS"],
                    },
                }
            ]
        },
    ),
    (
        "rds",
        "DescribeDBInstances",
        {
            "DBInstances": [
                {
                    "DBInstanceIdentifier": "db-1",
                    "Engine": "postgres",
                    "DBInstanceStatus": "available",
                    "Endpoint": {"Address": "127.0.0.1", "Port": 5432, "HostedZoneId": "Z1"},
                    "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-1", "Status": "active"}],
                    "InstanceCreateTime": WHEN,
                    "AllocatedStorage": 20,
                    "PubliclyAccessible": False,
                    "IAMDatabaseAuthenticationEnabled": True,
                    "DBSubnetGroup": {
                        "DBSubnetGroupName": "g",
                        "VpcId": "vpc-1",
                        "Subnets": [{"SubnetIdentifier": "subnet-1"}],
                    },
                }
            ]
        },
    ),
    (
        "iam",
        "GetRole",
        {
            "Role": {
                "Path": "/",
                "RoleName": "proxy-role",
                "RoleId": "AROA1",
                "Arn": ROLE_ARN,
                "CreateDate": WHEN,
                "AssumeRolePolicyDocument": "%7B%22Version%22%3A%222012%22%7D",
                "MaxSessionDuration": 3600,
                "Tags": [{"Key": "k", "Value": "v"}],
                "RoleLastUsed": {},
            }
        },
    ),
    (
        "iam",
        "ListAttachedRolePolicies",
        {
            "AttachedPolicies": [{"PolicyName": "p", "PolicyArn": POLICY_ARN}],
            "IsTruncated": False,
        },
    ),
    (
        "iam",
        "GetPolicyVersion",
        {
            "PolicyVersion": {
                "Document": POLICY,
                "VersionId": "v1",
                "IsDefaultVersion": True,
                "CreateDate": WHEN,
            }
        },
    ),
    (
        "sts",
        "GetCallerIdentity",
        {"UserId": "AIDA1", "Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/dev"},
    ),
    (
        "sts",
        "AssumeRole",
        {
            "Credentials": {
                "AccessKeyId": "ASIA1",
                "SecretAccessKey": "sk",
                "SessionToken": "tok",
                "Expiration": LATER,
            },
            "AssumedRoleUser": {"AssumedRoleId": "AROA1:s1", "Arn": ROLE_ARN + "/s1"},
            "PackedPolicySize": 6,
        },
    ),
    (
        "ec2",
        "DescribeSecurityGroups",
        {
            "SecurityGroups": [
                {
                    "GroupId": "sg-1",
                    "GroupName": "proxy-sg",
                    "Description": "d",
                    "VpcId": "vpc-1",
                    "OwnerId": "123456789012",
                    "IpPermissions": [
                        {
                            "IpProtocol": "tcp",
                            "FromPort": 5432,
                            "ToPort": 5432,
                            "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
                            "Ipv6Ranges": [],
                            "PrefixListIds": [],
                            "UserIdGroupPairs": [{"GroupId": "sg-2", "UserId": "123456789012"}],
                        }
                    ],
                    "IpPermissionsEgress": [
                        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
                    ],
                    "Tags": [{"Key": "Name", "Value": "proxy-sg"}],
                }
            ]
        },
    ),
    (
        "ec2",
        "DescribeVpcs",
        {
            "Vpcs": [
                {
                    "VpcId": "vpc-1",
                    "State": "available",
                    "CidrBlock": "10.0.0.0/16",
                    "IsDefault": True,
                    "OwnerId": "1",
                    "CidrBlockAssociationSet": [
                        {
                            "AssociationId": "a",
                            "CidrBlock": "10.0.0.0/16",
                            "CidrBlockState": {"State": "associated"},
                        }
                    ],
                }
            ]
        },
    ),
    (
        "ec2",
        "DescribeSubnets",
        {
            "Subnets": [
                {
                    "SubnetId": "subnet-1",
                    "VpcId": "vpc-1",
                    "CidrBlock": "10.0.1.0/24",
                    "AvailabilityZone": "us-east-1a",
                    "AvailableIpAddressCount": 251,
                    "DefaultForAz": False,
                    "MapPublicIpOnLaunch": False,
                    "State": "available",
                }
            ],
            "NextToken": "t",
        },
    ),
    ("ec2", "CreateSecurityGroup", {"GroupId": "sg-9", "Tags": [{"Key": "a", "Value": "b"}]}),
    (
        "secretsmanager",
        "GetSecretValue",
        {
            "ARN": SECRET_ARN,
            "Name": "db-creds",
            "VersionId": "v1",
            "SecretString": '{"password": "ü\\"x"}',
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": WHEN,
        },
    ),
    ("secretsmanager", "GetSecretValue", {"Name": "blob", "SecretBinary": b"\x00\xff\n"}),
    (
        "secretsmanager",
        "DescribeSecret",
        {
            "ARN": SECRET_ARN,
            "Name": "db-creds",
            "CreatedDate": WHEN,
            "LastChangedDate": LATER,
            "LastAccessedDate": datetime(2026, 11, 27, tzinfo=UTC),
            "RotationEnabled": False,
            "VersionIdsToStages": {"v1": ["AWSCURRENT"], "v0": ["AWSPREVIOUS"]},
            "Tags": [{"Key": "k", "Value": "v"}],
            "RotationRules": {"AutomaticallyAfterDays": 30},
        },
    ),
    (
        "secretsmanager",
        "ListSecrets",
        {
            "SecretList": [
                {
                    "ARN": SECRET_ARN,
                    "Name": "db-creds",
                    "CreatedDate": WHEN,
                    "SecretVersionsToStages": {"v1": ["AWSCURRENT"]},
                },
            ]
        },
    ),
]


@pytest.mark.parametrize(
    ("svc", "op_name", "output"), RESPONSES, ids=[f"{s}.{o}" for s, o, _ in RESPONSES]
)
def test_answers_read_back_by_botocore_as_given(
    svc: str, op_name: str, output: dict[str, Any]
) -> None:
    reply = answer(svc, op_name, output)
    parsed = read_reply(svc, op_name, reply)
    assert parsed.pop("ResponseMetadata")["RequestId"] == RID
    assert parsed == output
    assert reply.headers["x-amzn-RequestId"] == RID
    expected_type = "application/x-amz-json-1.1" if svc == "secretsmanager" else "text/xml"
    assert reply.headers["Content-Type"] == expected_type


def test_query_answer_layout() -> None:
    body = answer("rds", "DescribeDBProxies", RESPONSES[0][2]).body.decode()
    assert body.startswith(
        '<DescribeDBProxiesResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">'
        "<DescribeDBProxiesResult><DBProxies><member>"
    )
    assert "<CreatedDate>2026-11-27T13:09:31.123Z</CreatedDate>" in body
    assert "<RequireTLS>true</RequireTLS>" in body
    assert body.endswith(
        f"<RequestId>{RID}</RequestId></ResponseMetadata></DescribeDBProxiesResponse>"
    )
    ec2 = answer("ec2", "CreateSecurityGroup", {"GroupId": "sg-9"}).body.decode()
    assert '<CreateSecurityGroupResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">' in ec2
    assert f"<requestId>{RID}</requestId><groupId>sg-9</groupId>" in ec2


def test_answers_without_output_members() -> None:
    for svc, op_name in [("iam", "PutRolePolicy"), ("rds", "DeleteDBProxy")]:
        reply = answer(svc, op_name, {})
        assert read_reply(svc, op_name, reply)["ResponseMetadata"]["RequestId"] == RID
    assert b"<PutRolePolicyResponse" in answer("iam", "PutRolePolicy", {}).body
    reply = answer("secretsmanager", "DeleteResourcePolicy", {"Name": "x"})
    assert json.loads(reply.body) == {"Name": "x"}


@pytest.mark.parametrize("svc", ["rds", "ec2", "secretsmanager"])
@pytest.mark.parametrize(
    "output",
    [
        {"Bogus": 1},
        {"DBProxies": "x"},
        {"Marker": 5},
        {"DBProxies": [{"RequireTLS": "true"}]},
        {"SecretString": 1},
        {"CreatedDate": "2026-01-01"},
        {"VpcSet": [{}]},
    ],
)
def test_answers_that_do_not_fit_the_shape_raise(svc: str, output: dict[str, Any]) -> None:
    op_name = {
        "rds": "DescribeDBProxies",
        "ec2": "DescribeVpcs",
        "secretsmanager": "GetSecretValue",
    }[svc]
    with pytest.raises(OutputError):
        answer(svc, op_name, output)


def test_unrepresentable_xml_text_raises() -> None:
    with pytest.raises(OutputError):
        answer("rds", "DescribeDBProxies", {"Marker": "a\x00b"})


ERRORS = [
    (
        "rds",
        ApiError("DBProxyNotFoundFault", "DBProxy p is not found.", 404),
        "DBProxyNotFoundFault",
    ),
    ("iam", ApiError("NoSuchEntity", "The role x cannot be found.", 404), "NoSuchEntityException"),
    ("sts", ApiError("InternalFailure", "boom <&>", 500, sender=False), None),
    ("ec2", ApiError("InvalidGroup.NotFound", "The security group 'sg-1' does not exist"), None),
    (
        "secretsmanager",
        ApiError("ResourceNotFoundException", "Secrets Manager can't find it."),
        "ResourceNotFoundException",
    ),
]


@pytest.mark.parametrize(("svc", "error", "exception"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_read_back_by_botocore(svc: str, error: ApiError, exception: str | None) -> None:
    op_name = service(svc).operation_names[0]
    reply = codec_for(service(svc)).serialize_error(service(svc), error, RID)
    parsed = read_reply(svc, op_name, reply)
    assert reply.status == error.status == parsed["ResponseMetadata"]["HTTPStatusCode"]
    assert parsed["Error"]["Code"] == error.code
    assert parsed["Error"]["Message"] == error.message
    assert parsed["ResponseMetadata"]["RequestId"] == RID
    if service(svc).protocol == "query":
        assert parsed["Error"]["Type"] == ("Sender" if error.sender else "Receiver")
    if service(svc).protocol == "json":
        assert reply.headers["x-amzn-ErrorType"] == error.code
    if exception is not None:
        exceptions = ClientExceptionsFactory().create_client_exceptions(service(svc))
        assert exceptions.from_code(parsed["Error"]["Code"]).__name__ == exception


def invalid(svc: str, op_name: str, params: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validate(service(svc).operation_model(op_name), params)
    assert caught.value.status == 400
    return caught.value


def test_validate_missing_and_invalid_parameters() -> None:
    create = {"EngineFamily": "POSTGRESQL", "RoleArn": ROLE_ARN, "VpcSubnetIds": ["s"]}
    missing = invalid("rds", "CreateDBProxy", create)
    assert (missing.code, missing.message) == (
        "MissingParameter",
        "The request must contain the parameter DBProxyName",
    )
    bad_enum = invalid(
        "rds", "CreateDBProxy", {**create, "DBProxyName": "p", "EngineFamily": "ORACLE"}
    )
    assert bad_enum.code == "InvalidParameterValue" and "EngineFamily" in bad_enum.message
    nested = invalid(
        "rds", "CreateDBProxy", {**create, "DBProxyName": "p", "Auth": [{"IAMAuth": "SOMETIMES"}]}
    )
    assert "Auth[0].IAMAuth" in nested.message
    assert invalid("rds", "DescribeDBProxies", {"MaxRecords": 5}).code == "InvalidParameterValue"
    assert invalid("rds", "DescribeDBProxies", {"MaxRecords": 101}).code == "InvalidParameterValue"
    assert invalid("rds", "DescribeDBProxies", {"DBProxyName": "p" * 64}).code == (
        "InvalidParameterValue"
    )
    assert invalid("ec2", "CreateSecurityGroup", {"GroupName": "g"}).code == "MissingParameter"


def test_validate_smithy_style_services() -> None:
    role = invalid("iam", "GetRole", {})
    assert role.code == "ValidationError" and "'roleName'" in role.message
    assert invalid("sts", "AssumeRole", {"RoleArn": ROLE_ARN, "RoleSessionName": "x"}).code == (
        "ValidationError"
    )
    secret = "hunter2" * 10_000
    too_long = invalid("secretsmanager", "CreateSecret", {"Name": "n", "SecretString": secret})
    assert too_long.code == "ValidationException"
    assert "hunter2" not in too_long.message  # never echo a value
    assert invalid("secretsmanager", "ListSecrets", {"SortOrder": "up"}).code == (
        "ValidationException"
    )
    blob = invalid("secretsmanager", "CreateSecret", {"Name": "n", "SecretBinary": b""})
    assert "secretBinary" in blob.message
    validate(service("secretsmanager").operation_model("ListSecrets"), {"MaxResults": 100})


def test_codec_for_refuses_other_protocols() -> None:
    with pytest.raises(ValueError, match="rest-xml"):
        codec_for(service("s3"))
