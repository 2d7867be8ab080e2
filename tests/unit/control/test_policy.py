"""IAM policy validation and evaluation, table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.control.errors import ApiError
from sluice.control.policy import Decision, Principal, evaluate, parse_policy, trust_allows

ALLOW, DENY, IMPLICIT = Decision.ALLOW, Decision.EXPLICIT_DENY, Decision.IMPLICIT_DENY
ACCOUNT = "111122223333"
PROXY = "prx-0123456789abcdef0"
USER_ARN = f"arn:aws:rds-db:us-east-1:{ACCOUNT}:dbuser:{PROXY}"
CONNECT = "rds-db:connect"

RECIPE = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["rds-db:connect"], "Resource": [f"{USER_ARN}/*"]}],
}
ADMIN = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
READ_ONLY_LIKE = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "NotAction": ["iam:*", "rds-db:*", "*:Delete*"], "Resource": "*"}
    ],
}


def stmt(effect: str = "Allow", action: Any = CONNECT, resource: Any = "*", **extra: Any) -> Any:
    return {"Effect": effect, "Action": action, "Resource": resource, **extra}


def doc(*statements: Any, version: str = "2012-10-17") -> dict[str, Any]:
    return {"Version": version, "Statement": list(statements)}


@pytest.mark.parametrize(
    "policies, action, resource, expected",
    [
        # the recipe policy: user app on that proxy, nothing else
        ([RECIPE], CONNECT, f"{USER_ARN}/app", ALLOW),
        ([RECIPE], "RDS-DB:Connect", f"{USER_ARN}/app", ALLOW),
        ([RECIPE], CONNECT, f"arn:aws:rds-db:us-east-1:{ACCOUNT}:dbuser:prx-fff/app", IMPLICIT),
        ([RECIPE], CONNECT, f"arn:aws:rds-db:us-west-2:{ACCOUNT}:dbuser:{PROXY}/app", IMPLICIT),
        ([RECIPE], "rds:DescribeDBProxies", f"{USER_ARN}/app", IMPLICIT),
        ([RECIPE], CONNECT, f"{USER_ARN.upper()}/app", IMPLICIT),  # resources are case-sensitive
        ([], CONNECT, f"{USER_ARN}/app", IMPLICIT),
        # explicit Deny of one user wins over Allow *
        ([ADMIN, doc(stmt("Deny", resource=f"{USER_ARN}/admin"))], CONNECT, f"{USER_ARN}/admin",
         DENY),
        ([ADMIN, doc(stmt("Deny", resource=f"{USER_ARN}/admin"))], CONNECT, f"{USER_ARN}/app",
         ALLOW),
        ([doc(stmt("Deny", resource=f"{USER_ARN}/admin"))], CONNECT, f"{USER_ARN}/app", IMPLICIT),
        # managed policies
        ([ADMIN], "iam:CreateRole", "arn:aws:iam::111122223333:role/x", ALLOW),
        ([READ_ONLY_LIKE], "rds:DescribeDBProxies", "*", ALLOW),
        ([READ_ONLY_LIKE], "iam:ListRoles", "*", IMPLICIT),
        ([READ_ONLY_LIKE], CONNECT, f"{USER_ARN}/app", IMPLICIT),
        ([READ_ONLY_LIKE], "rds:DeleteDBProxy", "*", IMPLICIT),
        # action wildcards
        ([doc(stmt(action="rds-db:*"))], CONNECT, "x", ALLOW),
        ([doc(stmt(action="rds-db:conn*"))], CONNECT, "x", ALLOW),
        ([doc(stmt(action="rds-db:conn?ct"))], CONNECT, "x", ALLOW),
        ([doc(stmt(action="rds-db:conn?"))], CONNECT, "x", IMPLICIT),
        ([doc(stmt(action="rds:*"))], CONNECT, "x", IMPLICIT),
        ([doc(stmt(action=["ec2:*", "RDS-DB:CONNECT"]))], CONNECT, "x", ALLOW),
        # resource wildcards, ? and NotResource
        ([doc(stmt(resource=f"{USER_ARN}/ap?"))], CONNECT, f"{USER_ARN}/app", ALLOW),
        ([doc(stmt(resource=f"{USER_ARN}/ap?"))], CONNECT, f"{USER_ARN}/apps", IMPLICIT),
        ([doc(stmt(resource=f"{USER_ARN}/ap*"))], CONNECT, f"{USER_ARN}/apps", ALLOW),
        ([doc(stmt(resource="arn:aws:rds-db:*:*:dbuser:*/app"))], CONNECT, f"{USER_ARN}/app",
         ALLOW),
        ([doc(stmt(resource="arn:aws:rds-db:*"))], CONNECT, f"{USER_ARN}/app", ALLOW),
        # a wildcard inside an ARN segment does not run over a colon
        ([doc(stmt(resource="arn:aws:rds-db:us-*1:111122223333:*"))], CONNECT,
         "arn:aws:rds-db:us-east:x1:111122223333:dbuser:p/u", IMPLICIT),
        ([doc(stmt(resource="arn:aws:rds-db:us-*1:111122223333:*"))], CONNECT,
         f"{USER_ARN}/app", ALLOW),
        ([doc({"Effect": "Allow", "Action": CONNECT, "NotResource": f"{USER_ARN}/admin"})],
         CONNECT, f"{USER_ARN}/app", ALLOW),
        ([doc({"Effect": "Allow", "Action": CONNECT, "NotResource": f"{USER_ARN}/admin"})],
         CONNECT, f"{USER_ARN}/admin", IMPLICIT),
        ([ADMIN, doc({"Effect": "Deny", "Action": "*", "NotResource": [f"{USER_ARN}/*"]})],
         CONNECT, "arn:aws:rds-db:us-east-1:111122223333:dbuser:prx-other/app", DENY),
        # a single statement object instead of a list, no Version
        ([{"Statement": stmt()}], CONNECT, "anything", ALLOW),
    ],
)  # fmt: skip
def test_evaluate(policies: list[Any], action: str, resource: str, expected: Decision) -> None:
    assert evaluate(policies, action, resource) is expected


COND_CASES: list[tuple[dict[str, Any], dict[str, Any], Decision]] = [
    ({"StringEquals": {"aws:username": "app"}}, {"aws:username": "app"}, ALLOW),
    ({"StringEquals": {"AWS:UserName": "app"}}, {"aws:username": "app"}, ALLOW),
    ({"StringEquals": {"aws:username": "app"}}, {"aws:username": "App"}, IMPLICIT),
    ({"StringEquals": {"aws:username": ["x", "app"]}}, {"aws:username": "app"}, ALLOW),
    ({"StringEquals": {"aws:username": "app"}}, {}, IMPLICIT),
    ({"StringNotEquals": {"aws:username": ["x", "y"]}}, {"aws:username": "app"}, ALLOW),
    ({"StringNotEquals": {"aws:username": ["x", "app"]}}, {"aws:username": "app"}, IMPLICIT),
    ({"StringNotEquals": {"aws:username": "x"}}, {}, ALLOW),
    ({"StringEqualsIgnoreCase": {"aws:username": "APP"}}, {"aws:username": "app"}, ALLOW),
    ({"StringLike": {"aws:username": "a*"}}, {"aws:username": "app"}, ALLOW),
    ({"StringLike": {"aws:username": "A*"}}, {"aws:username": "app"}, IMPLICIT),
    ({"StringNotLike": {"aws:username": "adm*"}}, {"aws:username": "app"}, ALLOW),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:rds:*:111122223333:db-proxy:*"}},
     {"aws:SourceArn": "arn:aws:rds:us-east-1:111122223333:db-proxy:prx-1"}, ALLOW),
    ({"ArnEquals": {"aws:SourceArn": "arn:aws:rds:*:111122223333:db-proxy:*"}},
     {"aws:SourceArn": "arn:aws:rds:us-east-1:999999999999:db-proxy:prx-1"}, IMPLICIT),
    ({"ArnNotLike": {"aws:SourceArn": "arn:aws:rds:*:*:db-proxy:prx-2"}},
     {"aws:SourceArn": "arn:aws:rds:us-east-1:111122223333:db-proxy:prx-1"}, ALLOW),
    ({"ArnLike": {"aws:SourceArn": "*"}}, {"aws:SourceArn": "not-an-arn"}, IMPLICIT),
    ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "true"}, ALLOW),
    ({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "TRUE"}, ALLOW),
    ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "false"}, IMPLICIT),
    ({"NumericLessThan": {"s3:max-keys": "10"}}, {"s3:max-keys": "9"}, ALLOW),
    ({"NumericLessThan": {"s3:max-keys": 10}}, {"s3:max-keys": "10"}, IMPLICIT),
    ({"NumericLessThanEquals": {"s3:max-keys": 10}}, {"s3:max-keys": "10"}, ALLOW),
    ({"NumericGreaterThan": {"s3:max-keys": "10"}}, {"s3:max-keys": "10.5"}, ALLOW),
    ({"NumericEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "ten"}, IMPLICIT),
    ({"NumericNotEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "ten"}, IMPLICIT),
    ({"DateLessThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}},
     {"aws:CurrentTime": "2026-11-27T12:00:00Z"}, ALLOW),
    ({"DateGreaterThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}},
     {"aws:CurrentTime": "2026-11-27T12:00:00Z"}, IMPLICIT),
    ({"DateGreaterThan": {"aws:EpochTime": "1700000000"}},
     {"aws:EpochTime": "2026-11-27T12:00:00+00:00"}, ALLOW),
    ({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.0.2.1"]}}, {"aws:SourceIp": "10.1.2.3"},
     ALLOW),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "11.1.2.3"}, IMPLICIT),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "::1"}, IMPLICIT),
    ({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "2001:db8::5"}, ALLOW),
    ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "11.1.2.3"}, ALLOW),
    ({"Null": {"aws:TokenIssueTime": "true"}}, {}, ALLOW),
    ({"Null": {"aws:TokenIssueTime": "true"}}, {"aws:TokenIssueTime": "x"}, IMPLICIT),
    ({"Null": {"aws:TokenIssueTime": "false"}}, {"aws:TokenIssueTime": "x"}, ALLOW),
    ({"StringEqualsIfExists": {"aws:username": "app"}}, {}, ALLOW),
    ({"StringEqualsIfExists": {"aws:username": "app"}}, {"aws:username": "x"}, IMPLICIT),
    ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["z", "b"]},
     ALLOW),
    ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}, {}, IMPLICIT),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["a", "b"]},
     ALLOW),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["a", "z"]},
     IMPLICIT),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}, {}, ALLOW),
    # a negated operator on a multi-valued key needs every value to differ, unless ForAnyValue
    ({"StringNotEquals": {"aws:TagKeys": "a"}}, {"aws:TagKeys": ["a", "b"]}, IMPLICIT),
    ({"ForAnyValue:StringNotEquals": {"aws:TagKeys": "a"}}, {"aws:TagKeys": ["a", "b"]}, ALLOW),
    # several keys AND, several operators AND
    ({"StringEquals": {"aws:username": "app", "aws:SourceVpc": "vpc-1"}},
     {"aws:username": "app", "aws:SourceVpc": "vpc-2"}, IMPLICIT),
    ({"StringEquals": {"aws:username": "app"}, "Bool": {"aws:SecureTransport": "true"}},
     {"aws:username": "app", "aws:SecureTransport": "true"}, ALLOW),
    # unknown operator or qualifier: the Allow fails closed
    ({"StringSortOfEquals": {"aws:username": "app"}}, {"aws:username": "app"}, IMPLICIT),
    ({"ForSomeValues:StringEquals": {"aws:username": "app"}}, {"aws:username": "app"}, IMPLICIT),
    # policy variables
    ({"StringEquals": {"aws:PrincipalTag/team": "${aws:username}"}},
     {"aws:username": "app", "aws:PrincipalTag/team": "app"}, ALLOW),
    ({"StringEquals": {"aws:PrincipalTag/team": "${aws:username}"}},
     {"aws:PrincipalTag/team": "app"}, IMPLICIT),
]  # fmt: skip


@pytest.mark.parametrize("condition, context, expected", COND_CASES)
def test_conditions(condition: dict[str, Any], context: dict[str, Any], expected: Decision) -> None:
    policy = doc(stmt(Condition=condition))
    assert evaluate([policy], CONNECT, f"{USER_ARN}/app", context) is expected


def test_unknown_operator_in_deny_does_not_apply() -> None:
    deny = doc(stmt("Deny", Condition={"Bogus": {"aws:username": "app"}}))
    assert evaluate([ADMIN, deny], CONNECT, "x", {"aws:username": "app"}) is ALLOW
    with pytest.raises(ApiError):
        parse_policy(json.dumps(deny))  # ...which is why such a document is refused


@pytest.mark.parametrize(
    "resource, context, expected",
    [
        (f"{USER_ARN}/app", {"aws:username": "app"}, ALLOW),
        (f"{USER_ARN}/app", {"AWS:USERNAME": "app"}, ALLOW),
        (f"{USER_ARN}/other", {"aws:username": "app"}, IMPLICIT),
        (f"{USER_ARN}/app", {}, IMPLICIT),  # no value for the variable: matches nothing
        (f"{USER_ARN}/anything", {"aws:username": "*"}, IMPLICIT),  # substituted text is literal
        (f"{USER_ARN}/*", {"aws:username": "*"}, ALLOW),
    ],
)
def test_policy_variables_in_resource(
    resource: str, context: dict[str, str], expected: Decision
) -> None:
    policy = doc(stmt(resource=f"{USER_ARN}/${{aws:username}}"))
    assert evaluate([policy], CONNECT, resource, context) is expected


def test_variable_defaults_escapes_and_old_version() -> None:
    with_default = doc(stmt(resource=f"{USER_ARN}/${{aws:username, 'guest'}}"))
    assert evaluate([with_default], CONNECT, f"{USER_ARN}/guest") is ALLOW
    escaped = doc(stmt(resource=f"{USER_ARN}/a${{*}}b"))
    assert evaluate([escaped], CONNECT, f"{USER_ARN}/a*b") is ALLOW
    assert evaluate([escaped], CONNECT, f"{USER_ARN}/axxb") is IMPLICIT
    old = doc(stmt(resource=f"{USER_ARN}/${{aws:username}}"), version="2008-10-17")
    assert evaluate([old], CONNECT, f"{USER_ARN}/app", {"aws:username": "app"}) is IMPLICIT
    assert evaluate([old], CONNECT, f"{USER_ARN}/${{aws:username}}") is ALLOW


# --- parse_policy -------------------------------------------------------------------------


def test_parse_accepts_valid_documents() -> None:
    for policy in (RECIPE, ADMIN, READ_ONLY_LIKE, {"Statement": stmt()}):
        assert parse_policy(json.dumps(policy)) == policy
    conditional = doc(stmt(Sid="s1", Condition={"ForAllValues:StringLikeIfExists": {"k": ["a"]}}))
    assert parse_policy(json.dumps(conditional)) == conditional


MALFORMED = [
    "not json",
    "[]",
    json.dumps({"Version": "2012-10-17"}),
    json.dumps({"Version": "2012-10-17", "Statement": []}),
    json.dumps({"Version": "2020-01-01", "Statement": [stmt()]}),
    json.dumps({"Statement": [stmt()], "Extra": 1}),
    json.dumps(doc("statement")),
    json.dumps(doc(stmt(effect="allow"))),
    json.dumps(doc({"Action": CONNECT, "Resource": "*"})),
    json.dumps(doc({"Effect": "Allow", "Resource": "*"})),
    json.dumps(doc({"Effect": "Allow", "Action": CONNECT})),
    json.dumps(doc(stmt(NotAction="iam:*"))),
    json.dumps(doc(stmt(NotResource="*"))),
    json.dumps(doc(stmt(action="connect"))),
    json.dumps(doc(stmt(action=[]))),
    json.dumps(doc(stmt(action=[1]))),
    json.dumps(doc(stmt(resource="prx-1"))),
    json.dumps(doc(stmt(Principal={"AWS": "*"}))),
    json.dumps(doc(stmt(Condition={"StringEquals": "x"}))),
    json.dumps(doc(stmt(Condition={"StringEquals": {"k": {"nested": 1}}}))),
    json.dumps(doc(stmt(Condition={"StringSortOfEquals": {"k": "v"}}))),
    json.dumps(doc(stmt(Sid="a"), stmt(Sid="a"))),
    json.dumps(doc(stmt(Bogus=1))),
]


@pytest.mark.parametrize("text", MALFORMED)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_policy(text)
    assert (info.value.code, info.value.status) == ("MalformedPolicyDocument", 400)


# --- trust policies -----------------------------------------------------------------------


def trust(principal: Any, effect: str = "Allow", key: str = "Principal", **extra: Any) -> Any:
    return doc({"Effect": effect, key: principal, "Action": "sts:AssumeRole", **extra})


RDS = Principal(services=["rds.amazonaws.com"])
LAMBDA = Principal(services=["lambda.amazonaws.com"])
ALICE = Principal(arns=[f"arn:aws:iam::{ACCOUNT}:user/alice"], account=ACCOUNT)
MALLORY = Principal(arns=["arn:aws:iam::999999999999:user/mallory"], account="999999999999")


@pytest.mark.parametrize(
    "policy, who, expected",
    [
        (trust({"Service": "rds.amazonaws.com"}), RDS, True),
        (trust({"Service": "rds.amazonaws.com"}), LAMBDA, False),
        (trust({"Service": ["rds.amazonaws.com", "lambda.amazonaws.com"]}), LAMBDA, True),
        (trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}), ALICE, True),
        (trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}), MALLORY, False),
        (trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}), RDS, False),
        (trust({"AWS": ACCOUNT}), ALICE, True),
        (trust({"AWS": [f"arn:aws:iam::{ACCOUNT}:user/alice"]}), ALICE, True),
        (trust({"AWS": f"arn:aws:iam::{ACCOUNT}:user/bob"}), ALICE, False),
        (trust({"AWS": "*"}), MALLORY, True),
        (trust("*"), LAMBDA, True),
        (trust({"Federated": "cognito-identity.amazonaws.com"}), ALICE, False),
        (trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, key="NotPrincipal"), MALLORY, True),
        (trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, key="NotPrincipal"), ALICE, False),
    ],
)
def test_trust_policies(policy: dict[str, Any], who: Principal, expected: bool) -> None:
    assert parse_policy(json.dumps(policy), trust=True) == policy
    assert trust_allows(policy, who) is expected


def test_trust_deny_wins_and_action_matters() -> None:
    allow_all = trust("*")
    deny_mallory = {"Effect": "Deny", "Principal": {"AWS": "999999999999"}, "Action": "sts:*"}
    both = {"Version": "2012-10-17", "Statement": [*allow_all["Statement"], deny_mallory]}
    assert trust_allows(both, ALICE) and not trust_allows(both, MALLORY)
    assert not trust_allows(allow_all, ALICE, action="sts:TagSession")
    tagging = trust("*", Action=["sts:AssumeRole", "sts:TagSession"])
    assert trust_allows(tagging, ALICE, action="sts:TagSession")


def test_trust_conditions() -> None:
    policy = trust({"AWS": ACCOUNT}, Condition={"StringEquals": {"sts:ExternalId": "abc"}})
    assert not trust_allows(policy, ALICE)
    assert trust_allows(policy, ALICE, context={"sts:ExternalId": "abc"})


@pytest.mark.parametrize(
    "policy",
    [
        doc({"Effect": "Allow", "Action": "sts:AssumeRole"}),
        trust({"Service": "rds.amazonaws.com"}, Resource="*"),
        trust({"Nobody": "x"}),
        trust({}),
        trust({"AWS": []}),
    ],
)
def test_trust_policy_validation(policy: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as info:
        parse_policy(json.dumps(policy), trust=True)
    assert info.value.code == "MalformedPolicyDocument"
