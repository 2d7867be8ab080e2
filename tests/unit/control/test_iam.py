"""The IAM service's handlers, driven directly with a real Store and Vault (no HTTP).

botocore is the oracle for the wire shapes: every output is checked against the
operation's output shape in botocore's IAM model, and policy documents are
decoded with botocore's own `json_decode_policies` handler (what boto3 and the
aws CLI run on IAM answers), which must give back the document as a dict.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from botocore.handlers import json_decode_policies  # type: ignore[import-untyped]
from fakeplane import FakePlane

from sluice.control.context import Call, Principal
from sluice.control.errors import ApiError
from sluice.control.managed_policies import MANAGED_POLICIES, ensure_managed_policies
from sluice.control.policy import parse_policy
from sluice.control.principals import Principals
from sluice.control.services.iam import Iam
from sluice.control.store import Store
from sluice.control.vault import Vault

ACCOUNT = "123456789012"
MODEL = botocore.session.get_session().get_service_model("iam")
ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"
READ_ONLY_ARN = "arn:aws:iam::aws:policy/ReadOnlyAccess"
LAMBDA_BASIC_ARN = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "rds.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
READ_SECRETS = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
}


def statement_doc(effect: str, action: str, resource: str = "*") -> dict[str, Any]:
    """A policy document of one statement."""
    statement = {"Effect": effect, "Action": action, "Resource": resource}
    return {"Version": "2012-10-17", "Statement": [statement]}




@pytest.fixture
def plane(tmp_path: Path) -> FakePlane:
    store = Store(tmp_path / "state.db")
    ensure_managed_policies(store)
    return FakePlane(store, Vault(tmp_path / "keys" / "vault.key"))


@pytest.fixture
def iam(plane: FakePlane) -> Iam:
    return Iam(plane)


def caller(kind: str = "user", name: str = "admin") -> Call:
    if kind == "user":
        arn, user_id = f"arn:aws:iam::{ACCOUNT}:user/{name}", "AIDAEXAMPLE"
    else:
        arn, user_id = f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/s", "AROAEXAMPLE:s"
    principal = Principal(ACCOUNT, arn, user_id, kind, name, "AKIAEXAMPLE")
    return Call(principal, "us-east-1", "req-1", 1_700_000_000.0)


def run(iam: Iam, op: str, **params: Any) -> dict[str, Any]:
    """Call an operation and check its answer against botocore's output shape."""
    out = getattr(iam, op)(caller(), params)
    check_shape(MODEL.operation_model(op).output_shape, out, op)
    return out


def fails(iam: Iam, op: str, code: str, status: int, **params: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        getattr(iam, op)(caller(), params)
    assert (info.value.code, info.value.status) == (code, status), info.value.message
    return info.value


def check_shape(shape: Any, value: Any, where: str) -> None:
    """`value` uses only members of `shape`, with the Python types boto3 would return."""
    if shape is None:
        assert value == {}, where
        return
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(value, dict), where
        assert set(value) <= set(shape.members), (where, set(value) - set(shape.members))
        assert set(shape.required_members) <= set(value), (where, shape.required_members)
        for name, member in value.items():
            check_shape(shape.members[name], member, f"{where}.{name}")
    elif kind == "list":
        assert isinstance(value, list), where
        for item in value:
            check_shape(shape.member, item, where)
    else:
        types = {"string": str, "integer": int, "boolean": bool, "timestamp": datetime}
        assert isinstance(value, types[kind]), (where, value)


def decoded(op: str, output: dict[str, Any]) -> dict[str, Any]:
    """The answer as boto3 hands it back: policy documents url-decoded and parsed."""
    parsed = copy.deepcopy(output)
    json_decode_policies(parsed, MODEL.operation_model(op))
    return parsed


def make_role(iam: Iam, name: str = "proxy-role", **extra: Any) -> dict[str, Any]:
    out = run(iam, "CreateRole", RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST), **extra)
    return dict(out["Role"])


def make_policy(iam: Iam, name: str = "read-secrets", document: Any = READ_SECRETS) -> str:
    out = run(iam, "CreatePolicy", PolicyName=name, PolicyDocument=json.dumps(document))
    return str(out["Policy"]["Arn"])


# ---- roles ----


def test_create_and_get_role_answer_the_trust_policy_as_boto3_expects(iam: Iam) -> None:
    role = make_role(iam, Path="/service/", Description="proxy", Tags=[{"Key": "a", "Value": "b"}])
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/service/proxy-role"
    assert role["RoleId"].startswith("AROA") and len(role["RoleId"]) == 21
    assert role["AssumeRolePolicyDocument"].startswith("%7B%22")  # URL-encoded JSON, as IAM
    got = decoded("GetRole", run(iam, "GetRole", RoleName="proxy-role"))["Role"]
    assert got["AssumeRolePolicyDocument"] == TRUST
    assert (got["Path"], got["Description"], got["MaxSessionDuration"]) == (
        "/service/",
        "proxy",
        3600,
    )
    assert got["Tags"] == [{"Key": "a", "Value": "b"}]
    assert got["CreateDate"].timestamp() == caller().now


def test_role_names_are_unique_regardless_of_case(iam: Iam) -> None:
    make_role(iam, "Proxy")
    error = fails(
        iam,
        "CreateRole",
        "EntityAlreadyExists",
        409,
        RoleName="proxy",
        AssumeRolePolicyDocument=json.dumps(TRUST),
    )
    assert error.message == "Role with name proxy already exists."
    assert run(iam, "GetRole", RoleName="PROXY")["Role"]["RoleName"] == "Proxy"


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": "*",
                "Principal": {"Service": "rds.amazonaws.com"},
            },
            "Has prohibited field Resource",
        ),
        ({"Effect": "Allow", "Action": "sts:AssumeRole"}, "Missing required field Principal"),
        (
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/nobody"},
            },
            f'Invalid principal in policy: "AWS":"arn:aws:iam::{ACCOUNT}:user/nobody"',
        ),
    ],
)
def test_trust_policies_are_validated(iam: Iam, statement: Any, message: str) -> None:
    document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    error = fails(
        iam,
        "CreateRole",
        "MalformedPolicyDocument",
        400,
        RoleName="r",
        AssumeRolePolicyDocument=document,
    )
    assert error.message == message


def test_trust_policy_may_name_existing_users_and_the_account(iam: Iam) -> None:
    run(iam, "CreateUser", UserName="app")
    principals = [f"arn:aws:iam::{ACCOUNT}:user/app", f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT]
    statement = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": principals}}
    document = {"Version": "2012-10-17", "Statement": [statement]}
    run(iam, "CreateRole", RoleName="r", AssumeRolePolicyDocument=json.dumps(document))
    fails(
        iam,
        "CreateRole",
        "MalformedPolicyDocument",
        400,
        RoleName="s",
        AssumeRolePolicyDocument="{not json",
    )


def test_names_and_paths_are_checked(iam: Iam) -> None:
    fails(
        iam,
        "CreateRole",
        "ValidationError",
        400,
        RoleName="bad name",
        AssumeRolePolicyDocument=json.dumps(TRUST),
    )
    fails(iam, "CreateUser", "ValidationError", 400, UserName="u", Path="no-slash")


def test_list_roles_pages_with_opaque_markers(iam: Iam) -> None:
    for name in ["delta", "Alpha", "charlie", "bravo", "echo"]:
        make_role(iam, name, Path="/team/" if name != "echo" else "/")
    seen, params = [], {"MaxItems": 2}
    while True:
        out = run(iam, "ListRoles", **params)
        seen += [r["RoleName"] for r in out["Roles"]]
        if not out["IsTruncated"]:
            assert "Marker" not in out
            break
        assert out["Marker"] not in seen
        params = {"MaxItems": 2, "Marker": out["Marker"]}
    assert seen == ["Alpha", "bravo", "charlie", "delta", "echo"]
    listed = run(iam, "ListRoles", PathPrefix="/team/")["Roles"]
    assert [r["RoleName"] for r in listed] == ["Alpha", "bravo", "charlie", "delta"]
    fails(iam, "ListRoles", "InvalidInput", 400, Marker="%%%")


def test_delete_role_conflicts_while_policies_remain(iam: Iam, plane: FakePlane) -> None:
    make_role(iam)
    run(iam, "AttachRolePolicy", RoleName="proxy-role", PolicyArn=LAMBDA_BASIC_ARN)
    run(
        iam,
        "PutRolePolicy",
        RoleName="proxy-role",
        PolicyName="inline",
        PolicyDocument=json.dumps(READ_SECRETS),
    )
    error = fails(iam, "DeleteRole", "DeleteConflict", 409, RoleName="proxy-role")
    assert error.message == "Cannot delete entity, must detach all policies first."
    run(iam, "DetachRolePolicy", RoleName="proxy-role", PolicyArn=LAMBDA_BASIC_ARN)
    error = fails(iam, "DeleteRole", "DeleteConflict", 409, RoleName="proxy-role")
    assert error.message == "Cannot delete entity, must delete policies first."
    run(iam, "DeleteRolePolicy", RoleName="proxy-role", PolicyName="inline")
    plane.changes.clear()
    run(iam, "DeleteRole", RoleName="proxy-role")
    assert plane.changes == ["iam"]
    error = fails(iam, "GetRole", "NoSuchEntity", 404, RoleName="proxy-role")
    assert error.message == "The role with name proxy-role cannot be found."


def test_tag_role_merges_by_key(iam: Iam) -> None:
    make_role(iam, Tags=[{"Key": "env", "Value": "dev"}])
    run(
        iam,
        "TagRole",
        RoleName="proxy-role",
        Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "db"}],
    )
    tags = run(iam, "GetRole", RoleName="proxy-role")["Role"]["Tags"]
    assert tags == [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "db"}]
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    fails(iam, "TagRole", "LimitExceeded", 409, RoleName="proxy-role", Tags=many)


# ---- inline policies ----


def test_inline_role_policies(iam: Iam, plane: FakePlane) -> None:
    make_role(iam)
    plane.changes.clear()
    for name in ["b", "a"]:
        run(
            iam,
            "PutRolePolicy",
            RoleName="proxy-role",
            PolicyName=name,
            PolicyDocument=json.dumps(READ_SECRETS),
        )
    assert plane.changes == ["iam", "iam"]
    assert run(iam, "ListRolePolicies", RoleName="proxy-role")["PolicyNames"] == ["a", "b"]
    got = decoded("GetRolePolicy", run(iam, "GetRolePolicy", RoleName="proxy-role", PolicyName="a"))
    assert got == {"RoleName": "proxy-role", "PolicyName": "a", "PolicyDocument": READ_SECRETS}
    error = fails(iam, "GetRolePolicy", "NoSuchEntity", 404, RoleName="proxy-role", PolicyName="c")
    assert error.message == "The role policy with name c cannot be found."
    with_principal = {**READ_SECRETS["Statement"][0], "Principal": "*"}  # type: ignore[dict-item]
    document = json.dumps({"Version": "2012-10-17", "Statement": [with_principal]})
    fails(
        iam,
        "PutRolePolicy",
        "MalformedPolicyDocument",
        400,
        RoleName="proxy-role",
        PolicyName="x",
        PolicyDocument=document,
    )
    run(iam, "DeleteRolePolicy", RoleName="proxy-role", PolicyName="a")
    assert run(iam, "ListRolePolicies", RoleName="proxy-role")["PolicyNames"] == ["b"]


def test_inline_user_policies(iam: Iam) -> None:
    run(iam, "CreateUser", UserName="app")
    run(
        iam,
        "PutUserPolicy",
        UserName="app",
        PolicyName="p",
        PolicyDocument=json.dumps(READ_SECRETS),
    )
    got = decoded("GetUserPolicy", run(iam, "GetUserPolicy", UserName="app", PolicyName="p"))
    assert got["PolicyDocument"] == READ_SECRETS
    assert run(iam, "ListUserPolicies", UserName="app")["PolicyNames"] == ["p"]
    error = fails(iam, "DeleteUser", "DeleteConflict", 409, UserName="app")
    assert error.message == "Cannot delete entity, must delete policies first."


# ---- managed policies ----


def test_managed_policies_are_seeded_with_their_paths(iam: Iam, plane: FakePlane) -> None:
    out = run(iam, "ListPolicies", Scope="AWS")
    arns = {p["Arn"] for p in out["Policies"]}
    assert arns == {
        ADMIN_ARN,
        READ_ONLY_ARN,
        "arn:aws:iam::aws:policy/SecretsManagerReadWrite",
        LAMBDA_BASIC_ARN,
        "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
    }
    for policy in MANAGED_POLICIES:  # each is a valid identity policy
        assert parse_policy(json.dumps(policy.document)) == policy.document
    admin = decoded(
        "GetPolicyVersion", run(iam, "GetPolicyVersion", PolicyArn=ADMIN_ARN, VersionId="v1")
    )
    assert admin["PolicyVersion"]["Document"] == {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    fails(iam, "DeletePolicy", "InvalidInput", 400, PolicyArn=ADMIN_ARN)


def test_seeding_is_idempotent_and_recounts_attachments(iam: Iam, plane: FakePlane) -> None:
    run(iam, "CreateUser", UserName="admin")
    run(iam, "AttachUserPolicy", UserName="admin", PolicyArn=ADMIN_ARN)
    before = plane.store.get("iam_policy", ADMIN_ARN)
    version = plane.store.version
    ensure_managed_policies(plane.store)
    assert plane.store.version == version  # nothing rewritten
    assert plane.store.get("iam_policy", ADMIN_ARN) is before
    plane.store.put("iam_policy", ADMIN_ARN, {**before, "AttachmentCount": 0})  # type: ignore[dict-item]
    ensure_managed_policies(plane.store)
    assert plane.store.get("iam_policy", ADMIN_ARN)["AttachmentCount"] == 1  # type: ignore[index]


def test_create_and_get_policy(iam: Iam) -> None:
    arn = make_policy(iam)
    assert arn == f"arn:aws:iam::{ACCOUNT}:policy/read-secrets"
    policy = run(iam, "GetPolicy", PolicyArn=arn)["Policy"]
    assert policy["PolicyId"].startswith("ANPA")
    assert (policy["DefaultVersionId"], policy["AttachmentCount"], policy["IsAttachable"]) == (
        "v1",
        0,
        True,
    )
    version = decoded(
        "GetPolicyVersion", run(iam, "GetPolicyVersion", PolicyArn=arn, VersionId="v1")
    )
    assert version["PolicyVersion"]["Document"] == READ_SECRETS
    assert version["PolicyVersion"]["IsDefaultVersion"] is True
    error = fails(
        iam,
        "CreatePolicy",
        "EntityAlreadyExists",
        409,
        PolicyName="Read-Secrets",
        Path="/other/",
        PolicyDocument=json.dumps(READ_SECRETS),
    )
    assert "A policy called Read-Secrets already exists." in error.message
    error = fails(iam, "GetPolicy", "NoSuchEntity", 404, PolicyArn=arn + "x")
    assert error.message == f"Policy {arn}x does not exist or is not attachable."
    fails(iam, "GetPolicy", "InvalidInput", 400, PolicyArn="not-an-arn")
    fails(iam, "GetPolicyVersion", "NoSuchEntity", 404, PolicyArn=arn, VersionId="v2")


@pytest.mark.parametrize(
    "document",
    [
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*"}]},
        statement_doc("Maybe", "s3:*"),
        "not json at all",
    ],
)
def test_malformed_policies_are_refused(iam: Iam, document: Any) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    fails(iam, "CreatePolicy", "MalformedPolicyDocument", 400, PolicyName="p", PolicyDocument=text)


def test_list_policies_scope_attached_and_pages(iam: Iam) -> None:
    local = [make_policy(iam, f"p{i}") for i in range(3)]
    make_role(iam)
    run(iam, "AttachRolePolicy", RoleName="proxy-role", PolicyArn=local[1])
    run(iam, "AttachRolePolicy", RoleName="proxy-role", PolicyArn=READ_ONLY_ARN)
    names = [p["PolicyName"] for p in run(iam, "ListPolicies", Scope="Local")["Policies"]]
    assert names == ["p0", "p1", "p2"]
    attached = run(iam, "ListPolicies", OnlyAttached=True)["Policies"]
    assert [p["Arn"] for p in attached] == [local[1], READ_ONLY_ARN]
    attached_aws = run(iam, "ListPolicies", OnlyAttached=True, Scope="AWS")["Policies"]
    assert [p["Arn"] for p in attached_aws] == [READ_ONLY_ARN]
    first = run(iam, "ListPolicies", MaxItems=6)
    rest = run(iam, "ListPolicies", MaxItems=6, Marker=first["Marker"])
    assert first["IsTruncated"] and not rest["IsTruncated"]
    assert len(first["Policies"]) + len(rest["Policies"]) == 8


def test_policy_versions(iam: Iam, plane: FakePlane) -> None:
    arn = make_policy(iam)
    wider = statement_doc("Allow", "secretsmanager:*")
    for i in range(4):
        out = run(
            iam,
            "CreatePolicyVersion",
            PolicyArn=arn,
            PolicyDocument=json.dumps(wider),
            SetAsDefault=i == 3,
        )
        assert out["PolicyVersion"]["VersionId"] == f"v{i + 2}"
    error = fails(
        iam,
        "CreatePolicyVersion",
        "LimitExceeded",
        409,
        PolicyArn=arn,
        PolicyDocument=json.dumps(wider),
    )
    assert "up to 5 versions" in error.message
    versions = run(iam, "ListPolicyVersions", PolicyArn=arn)["Versions"]
    assert [v["VersionId"] for v in versions] == ["v5", "v4", "v3", "v2", "v1"]
    assert [v["IsDefaultVersion"] for v in versions] == [True, False, False, False, False]
    fails(iam, "DeletePolicyVersion", "DeleteConflict", 409, PolicyArn=arn, VersionId="v5")
    run(iam, "DeletePolicyVersion", PolicyArn=arn, VersionId="v2")
    out = run(iam, "CreatePolicyVersion", PolicyArn=arn, PolicyDocument=json.dumps(wider))
    assert out["PolicyVersion"]["VersionId"] == "v6"  # numbers are never reused
    error = fails(iam, "DeletePolicy", "DeleteConflict", 409, PolicyArn=arn)
    assert "more than one version" in error.message
    page = run(iam, "ListPolicyVersions", PolicyArn=arn, MaxItems=2)
    assert [v["VersionId"] for v in page["Versions"]] == ["v6", "v5"]
    page = run(iam, "ListPolicyVersions", PolicyArn=arn, MaxItems=2, Marker=page["Marker"])
    assert [v["VersionId"] for v in page["Versions"]] == ["v4", "v3"]


# ---- attachments ----


def test_attachment_counts_follow_attach_and_detach(iam: Iam, plane: FakePlane) -> None:
    arn = make_policy(iam)
    make_role(iam)
    run(iam, "CreateUser", UserName="app")
    plane.changes.clear()
    run(iam, "AttachRolePolicy", RoleName="proxy-role", PolicyArn=arn)
    run(iam, "AttachRolePolicy", RoleName="proxy-role", PolicyArn=arn)  # twice: no change
    run(iam, "AttachUserPolicy", UserName="app", PolicyArn=arn)
    assert run(iam, "GetPolicy", PolicyArn=arn)["Policy"]["AttachmentCount"] == 2
    assert plane.store.get("iam_role", "proxy-role")["AttachedPolicies"] == [arn]  # type: ignore[index]
    attached = run(iam, "ListAttachedUserPolicies", UserName="app")["AttachedPolicies"]
    assert attached == [{"PolicyName": "read-secrets", "PolicyArn": arn}]
    assert plane.changes == ["iam", "iam"]
    error = fails(iam, "DeletePolicy", "DeleteConflict", 409, PolicyArn=arn)
    assert error.message == "Cannot delete a policy attached to entities."
    run(iam, "DetachUserPolicy", UserName="app", PolicyArn=arn)
    run(iam, "DetachRolePolicy", RoleName="proxy-role", PolicyArn=arn)
    assert run(iam, "GetPolicy", PolicyArn=arn)["Policy"]["AttachmentCount"] == 0
    error = fails(
        iam, "DetachRolePolicy", "NoSuchEntity", 404, RoleName="proxy-role", PolicyArn=arn
    )
    assert error.message == f"Policy {arn} was not found."
    run(iam, "DeletePolicy", PolicyArn=arn)
    fails(iam, "GetPolicy", "NoSuchEntity", 404, PolicyArn=arn)


def test_attach_errors_and_quota(iam: Iam) -> None:
    make_role(iam)
    fails(iam, "AttachRolePolicy", "NoSuchEntity", 404, RoleName="nope", PolicyArn=ADMIN_ARN)
    missing = f"arn:aws:iam::{ACCOUNT}:policy/missing"
    fails(iam, "AttachRolePolicy", "NoSuchEntity", 404, RoleName="proxy-role", PolicyArn=missing)
    fails(iam, "AttachRolePolicy", "InvalidInput", 400, RoleName="proxy-role", PolicyArn="arn:x")
    for i in range(10):
        run(iam, "AttachRolePolicy", RoleName="proxy-role", PolicyArn=make_policy(iam, f"q{i}"))
    error = fails(
        iam, "AttachRolePolicy", "LimitExceeded", 409, RoleName="proxy-role", PolicyArn=ADMIN_ARN
    )
    assert error.message == "Cannot exceed quota for PoliciesPerRole: 10"
    out = run(iam, "ListAttachedRolePolicies", RoleName="proxy-role", MaxItems=4)
    assert out["IsTruncated"] and len(out["AttachedPolicies"]) == 4


# ---- users and access keys ----


def test_users(iam: Iam) -> None:
    user = run(iam, "CreateUser", UserName="app", Path="/apps/")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/apps/app"
    assert user["UserId"].startswith("AIDA")
    fails(iam, "CreateUser", "EntityAlreadyExists", 409, UserName="APP")
    run(iam, "CreateUser", UserName="admin")
    assert run(iam, "GetUser")["User"]["UserName"] == "admin"  # the caller's own
    with pytest.raises(ApiError) as info:
        iam.GetUser(caller("assumed-role", "proxy-role"), {})
    assert info.value.code == "ValidationError"
    names = [u["UserName"] for u in run(iam, "ListUsers")["Users"]]
    assert names == ["admin", "app"]
    assert [u["UserName"] for u in run(iam, "ListUsers", PathPrefix="/apps/")["Users"]] == ["app"]
    run(iam, "DeleteUser", UserName="app")
    fails(iam, "GetUser", "NoSuchEntity", 404, UserName="app")


def test_access_keys_are_sealed_and_limited(iam: Iam, plane: FakePlane) -> None:
    run(iam, "CreateUser", UserName="app")
    key = run(iam, "CreateAccessKey", UserName="app")["AccessKey"]
    assert key["AccessKeyId"].startswith("AKIA") and len(key["AccessKeyId"]) == 20
    assert len(key["SecretAccessKey"]) == 40 and key["Status"] == "Active"
    stored = plane.store.get("access_key", key["AccessKeyId"])
    assert stored is not None and "SecretAccessKey" not in stored
    assert key["SecretAccessKey"] not in json.dumps(stored)
    assert plane.vault.open_text(stored["_secret"]) == key["SecretAccessKey"]
    run(iam, "CreateAccessKey", UserName="app")
    error = fails(iam, "CreateAccessKey", "LimitExceeded", 409, UserName="app")
    assert error.message == "Cannot exceed quota for AccessKeysPerUser: 2"
    listed = run(iam, "ListAccessKeys", UserName="app")["AccessKeyMetadata"]
    assert len(listed) == 2 and all("SecretAccessKey" not in k for k in listed)
    error = fails(iam, "DeleteUser", "DeleteConflict", 409, UserName="app")
    assert error.message == "Cannot delete entity, must delete access keys first."
    fails(iam, "DeleteAccessKey", "NoSuchEntity", 404, UserName="app", AccessKeyId="AKIAX")
    run(iam, "DeleteAccessKey", UserName="app", AccessKeyId=key["AccessKeyId"])
    assert len(run(iam, "ListAccessKeys", UserName="app")["AccessKeyMetadata"]) == 1


def test_update_access_key_deactivates_it_for_lookups(iam: Iam, plane: FakePlane) -> None:
    run(iam, "CreateUser", UserName="app")
    key = run(iam, "CreateAccessKey", UserName="app")["AccessKey"]
    principals = Principals(plane.store, plane.vault)
    info = principals.lookup(key["AccessKeyId"])
    assert info is not None and info.secret == key["SecretAccessKey"]
    assert (info.principal.kind, info.principal.name, info.session_token) == ("user", "app", None)
    run(iam, "UpdateAccessKey", UserName="app", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    assert principals.lookup(key["AccessKeyId"]) is None


def test_policies_combine_managed_and_inline(iam: Iam, plane: FakePlane) -> None:
    run(iam, "CreateUser", UserName="app")
    arn = make_policy(iam)
    run(iam, "AttachUserPolicy", UserName="app", PolicyArn=arn)
    run(iam, "AttachUserPolicy", UserName="app", PolicyArn=LAMBDA_BASIC_ARN)
    private = "arn:aws:secretsmanager:*:*:secret:private*"
    inline = statement_doc("Deny", "secretsmanager:GetSecretValue", private)
    run(iam, "PutUserPolicy", UserName="app", PolicyName="deny", PolicyDocument=json.dumps(inline))
    key = run(iam, "CreateAccessKey", UserName="app")["AccessKey"]
    principals = Principals(plane.store, plane.vault)
    info = principals.lookup(key["AccessKeyId"])
    assert info is not None
    basic = next(p for p in MANAGED_POLICIES if p.name == "AWSLambdaBasicExecutionRole")
    assert principals.policies(info.principal) == [READ_SECRETS, basic.document, inline]
    secret = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"
    assert principals.allowed(info.principal, "secretsmanager:GetSecretValue", secret + "db")
    assert not principals.allowed(
        info.principal, "secretsmanager:GetSecretValue", secret + "private"
    )
    assert not principals.allowed(info.principal, "rds:CreateDBProxy", "*")
    # A new version made default changes what is allowed.
    wider = statement_doc("Allow", "rds:*")
    run(
        iam,
        "CreatePolicyVersion",
        PolicyArn=arn,
        PolicyDocument=json.dumps(wider),
        SetAsDefault=True,
    )
    assert principals.allowed(info.principal, "rds:CreateDBProxy", "*")
