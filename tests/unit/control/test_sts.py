"""STS handlers and `Principals`, with a real Store and Vault (no HTTP).

Roles and users are made through the IAM handlers, so the documents are the
ones the service writes; outputs are checked against botocore's STS output
shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from fakeplane import FakePlane

from sluice.control.context import Call, Principal
from sluice.control.errors import ApiError
from sluice.control.managed_policies import ensure_managed_policies
from sluice.control.principals import Principals
from sluice.control.services.iam import Iam
from sluice.control.services.sts import Sts
from sluice.control.store import Store
from sluice.control.vault import Vault

ACCOUNT = "123456789012"
NOW = 1_700_000_000.0
MODEL = botocore.session.get_session().get_service_model("sts")
ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/target"


def statement_doc(effect: str, action: str, resource: str = "*") -> dict[str, Any]:
    """A policy document of one statement."""
    statement = {"Effect": effect, "Action": action, "Resource": resource}
    return {"Version": "2012-10-17", "Statement": [statement]}




class CountingVault(Vault):
    """A vault that counts how often sealed values are opened."""

    opened = 0

    def open(self, sealed: str) -> bytes:
        self.opened += 1
        return super().open(sealed)


@dataclass
class World:
    plane: FakePlane
    iam: Iam
    sts: Sts
    principals: Principals
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (id, secret)

    def user(self, name: str, *policies: str) -> Principal:
        """A user with an access key and the given managed policies; its principal."""
        self.iam.CreateUser(admin_call(), {"UserName": name})
        for arn in policies:
            self.iam.AttachUserPolicy(admin_call(), {"UserName": name, "PolicyArn": arn})
        key = self.iam.CreateAccessKey(admin_call(), {"UserName": name})["AccessKey"]
        self.keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])
        info = self.principals.lookup(key["AccessKeyId"])
        assert info is not None
        return info.principal

    def role(self, *principals: str | dict[str, Any], name: str = "target", **extra: Any) -> None:
        statements = [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": p if isinstance(p, dict) else {"AWS": p},
            }
            for p in principals
        ]
        document = json.dumps({"Version": "2012-10-17", "Statement": statements})
        params = {"RoleName": name, "AssumeRolePolicyDocument": document, **extra}
        self.iam.CreateRole(admin_call(), params)

    def assume(self, who: Principal, now: float = NOW, **params: Any) -> dict[str, Any]:
        params = {"RoleArn": ROLE_ARN, "RoleSessionName": "sess", **params}
        out = self.sts.AssumeRole(Call(who, "us-east-1", "r", now), params)
        check_shape(MODEL.operation_model("AssumeRole").output_shape, out)
        return out


@pytest.fixture
def world(tmp_path: Path) -> World:
    store = Store(tmp_path / "state.db")
    ensure_managed_policies(store)
    plane = FakePlane(store, CountingVault(tmp_path / "keys" / "vault.key"))
    return World(plane, Iam(plane), Sts(plane), Principals(store, plane.vault))


def admin_call() -> Call:
    principal = Principal(
        ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/admin", "AIDA0", "user", "admin", ""
    )
    return Call(principal, "us-east-1", "r", NOW)


def check_shape(shape: Any, value: Any) -> None:
    if shape.type_name == "structure":
        assert isinstance(value, dict) and set(value) <= set(shape.members)
        assert set(shape.required_members) <= set(value)
        for name, member in value.items():
            check_shape(shape.members[name], member)
    else:
        types = {"string": str, "integer": int, "timestamp": datetime}
        assert isinstance(value, types[shape.type_name])


def denied(world: World, who: Principal, **params: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        world.assume(who, **params)
    return info.value


# ---- GetCallerIdentity ----


def test_get_caller_identity_of_a_user_and_of_a_session(world: World) -> None:
    app = world.user("app")
    out = world.sts.GetCallerIdentity(Call(app, "us-east-1", "r", NOW), {})
    check_shape(MODEL.operation_model("GetCallerIdentity").output_shape, out)
    assert out == {
        "UserId": app.user_id,
        "Account": ACCOUNT,
        "Arn": f"arn:aws:iam::{ACCOUNT}:user/app",
    }
    world.role(app.arn)
    creds = world.assume(app)["Credentials"]
    info = world.principals.lookup(creds["AccessKeyId"])
    assert info is not None
    out = world.sts.GetCallerIdentity(Call(info.principal, "us-east-1", "r", NOW), {})
    role_id = world.plane.store.get("iam_role", "target")["RoleId"]  # type: ignore[index]
    assert out == {
        "UserId": f"{role_id}:sess",
        "Account": ACCOUNT,
        "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/target/sess",
    }


# ---- AssumeRole: who may ----


def test_a_trust_policy_naming_the_user_suffices(world: World) -> None:
    app = world.user("app")  # no identity policy at all
    world.role(app.arn)
    out = world.assume(app, DurationSeconds=900)
    creds, assumed = out["Credentials"], out["AssumedRoleUser"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert len(creds["SecretAccessKey"]) == 40 and len(creds["SessionToken"]) > 100
    assert creds["Expiration"].timestamp() == NOW + 900
    role_id = world.plane.store.get("iam_role", "target")["RoleId"]  # type: ignore[index]
    assert role_id.startswith("AROA")
    assert assumed == {
        "AssumedRoleId": f"{role_id}:sess",
        "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/target/sess",
    }


def test_trusting_the_account_defers_to_identity_policies(world: World) -> None:
    plain = world.user("plain")
    admin = world.user("boss", ADMIN_ARN)
    world.role(f"arn:aws:iam::{ACCOUNT}:root")
    error = denied(world, plain)
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert error.message == (
        f"User: {plain.arn} is not authorized to perform: sts:AssumeRole on resource: {ROLE_ARN}"
    )
    assert world.assume(admin)["Credentials"]["AccessKeyId"].startswith("ASIA")
    only_target = statement_doc("Allow", "sts:AssumeRole", ROLE_ARN)
    world.iam.PutUserPolicy(
        admin_call(),
        {"UserName": "plain", "PolicyName": "assume", "PolicyDocument": json.dumps(only_target)},
    )
    assert world.assume(plain)["AssumedRoleUser"]["Arn"].endswith("assumed-role/target/sess")


def test_an_account_id_principal_works_like_root(world: World) -> None:
    admin = world.user("boss", ADMIN_ARN)
    world.role(ACCOUNT)
    world.assume(admin)


def test_others_are_refused(world: World) -> None:
    app = world.user("app", ADMIN_ARN)
    other = world.user("other")
    world.role(other.arn)
    assert denied(world, app).code == "AccessDenied"  # not named, account not trusted
    world.role({"Service": "lambda.amazonaws.com"}, name="fn")
    error = denied(world, other, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/fn")
    assert error.code == "AccessDenied"
    error = denied(world, other, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/missing")
    assert error.code == "AccessDenied"  # an unknown role looks like a forbidden one
    error = denied(world, other, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/path/target")
    assert error.code == "AccessDenied"  # the ARN must be the role's own


def test_an_explicit_deny_in_identity_policies_wins(world: World) -> None:
    app = world.user("app")
    world.role(app.arn)
    deny = statement_doc("Deny", "sts:*")
    world.iam.PutUserPolicy(
        admin_call(), {"UserName": "app", "PolicyName": "no", "PolicyDocument": json.dumps(deny)}
    )
    assert denied(world, app).code == "AccessDenied"


def test_role_chaining(world: World) -> None:
    app = world.user("app")
    world.role(app.arn, name="first")
    world.role(f"arn:aws:iam::{ACCOUNT}:role/first")
    creds = world.assume(app, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/first")["Credentials"]
    info = world.principals.lookup(creds["AccessKeyId"])
    assert info is not None and info.principal.kind == "assumed-role"
    out = world.assume(info.principal, RoleSessionName="chained")
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/target/chained"
    error = denied(world, info.principal, DurationSeconds=3601)
    assert error.code == "ValidationError" and "role chaining" in error.message


# ---- AssumeRole: parameters ----


def test_duration_is_bounded_by_the_role(world: World) -> None:
    app = world.user("app")
    world.role(app.arn, MaxSessionDuration=7200)
    assert world.assume(app)["Credentials"]["Expiration"].timestamp() == NOW + 3600
    assert world.assume(app, DurationSeconds=7200)["Credentials"]["Expiration"].timestamp() == (
        NOW + 7200
    )
    error = denied(world, app, DurationSeconds=7201)
    assert error.code == "ValidationError"
    assert error.message == (
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
    )
    assert denied(world, app, DurationSeconds=899).code == "ValidationError"
    assert denied(world, app, RoleSessionName="bad name").code == "ValidationError"


def test_session_policies_narrow_the_role(world: World) -> None:
    app = world.user("app")
    world.role(app.arn)
    world.iam.AttachRolePolicy(admin_call(), {"RoleName": "target", "PolicyArn": ADMIN_ARN})
    only_rds = statement_doc("Allow", "rds:Describe*")
    narrow = world.assume(app, Policy=json.dumps(only_rds))["Credentials"]
    wide = world.assume(app)["Credentials"]
    narrow_p = world.principals.lookup(narrow["AccessKeyId"]).principal  # type: ignore[union-attr]
    wide_p = world.principals.lookup(wide["AccessKeyId"]).principal  # type: ignore[union-attr]
    assert world.principals.allowed(narrow_p, "rds:DescribeDBProxies", "*")
    assert not world.principals.allowed(narrow_p, "iam:CreateRole", "*")
    assert world.principals.allowed(wide_p, "iam:CreateRole", "*")
    with pytest.raises(ApiError) as info:
        world.assume(app, Policy='{"Statement": []}')
    assert info.value.code == "MalformedPolicyDocument"


# ---- sessions and Principals ----


def test_sessions_are_stored_sealed(world: World) -> None:
    app = world.user("app")
    world.role(app.arn)
    creds = world.assume(app)["Credentials"]
    doc = world.plane.store.get("sts_session", creds["AccessKeyId"])
    assert doc is not None
    assert doc["RoleArn"] == ROLE_ARN and doc["SessionName"] == "sess"
    assert doc["Expiration"] == NOW + 3600
    assert world.plane.vault.open_text(doc["_secret"]) == creds["SecretAccessKey"]
    assert world.plane.vault.open_text(doc["_token"]) == creds["SessionToken"]
    clear = [creds["SecretAccessKey"], creds["SessionToken"], *(s for _, s in world.keys.values())]
    everything = json.dumps({k: world.plane.store.all(k) for k in ("sts_session", "access_key")})
    assert not any(value in everything for value in clear)
    sealed = [d["_secret"] for d in world.plane.store.all("access_key")]
    sealed += [doc["_secret"], doc["_token"]]
    assert not set(sealed) & set(clear)


def test_an_expired_session_is_still_found_with_its_expiry(world: World) -> None:
    app = world.user("app")
    world.role(app.arn)
    creds = world.assume(app, DurationSeconds=900)["Credentials"]
    info = world.principals.lookup(creds["AccessKeyId"])
    assert info is not None
    assert info.expires == NOW + 900 < NOW + 901  # the caller answers ExpiredToken
    assert info.session_token == creds["SessionToken"]
    assert info.principal.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/target/sess"
    # A day later, a new session makes the old one forgotten.
    world.assume(app, now=NOW + 900 + 86401)
    assert world.principals.lookup(creds["AccessKeyId"]) is None


def test_lookup_caches_opened_secrets(world: World) -> None:
    world.user("app")
    key_id, secret = world.keys["app"]
    vault = world.plane.vault
    assert isinstance(vault, CountingVault)
    principals = Principals(world.plane.store, vault)
    opened = vault.opened
    first = principals.lookup(key_id)
    assert first is not None and first.secret == secret and vault.opened == opened + 1
    assert principals.lookup(key_id) is first
    world.iam.CreateUser(admin_call(), {"UserName": "unrelated"})  # the store changed elsewhere
    assert principals.lookup(key_id) is first and vault.opened == opened + 1
    world.iam.UpdateAccessKey(
        admin_call(), {"UserName": "app", "AccessKeyId": key_id, "Status": "Inactive"}
    )
    assert principals.lookup(key_id) is None
    world.iam.UpdateAccessKey(
        admin_call(), {"UserName": "app", "AccessKeyId": key_id, "Status": "Active"}
    )
    again = principals.lookup(key_id)
    assert again is not None and again.secret == secret and vault.opened == opened + 2
    assert principals.lookup("AKIAUNKNOWN") is None
    assert principals.lookup("ASIAUNKNOWN") is None


def test_policies_of_an_assumed_role(world: World) -> None:
    app = world.user("app")
    world.role(app.arn)
    world.iam.AttachRolePolicy(admin_call(), {"RoleName": "target", "PolicyArn": ADMIN_ARN})
    inline = statement_doc("Deny", "iam:*")
    world.iam.PutRolePolicy(
        admin_call(),
        {"RoleName": "target", "PolicyName": "no-iam", "PolicyDocument": json.dumps(inline)},
    )
    creds = world.assume(app)["Credentials"]
    session = world.principals.lookup(creds["AccessKeyId"]).principal  # type: ignore[union-attr]
    admin_doc = statement_doc("Allow", "*")
    assert world.principals.policies(session) == [admin_doc, inline]
    assert world.principals.allowed(session, "rds:CreateDBProxy", "*")
    assert not world.principals.allowed(session, "iam:CreateRole", "*")
    assert world.principals.policies(app) == []
    # A role made again under the same name is another role: old sessions get nothing.
    world.iam.DetachRolePolicy(admin_call(), {"RoleName": "target", "PolicyArn": ADMIN_ARN})
    world.iam.DeleteRolePolicy(admin_call(), {"RoleName": "target", "PolicyName": "no-iam"})
    world.iam.DeleteRole(admin_call(), {"RoleName": "target"})
    world.role(app.arn)
    world.iam.AttachRolePolicy(admin_call(), {"RoleName": "target", "PolicyArn": ADMIN_ARN})
    assert world.principals.policies(session) == []
    assert not world.principals.allowed(session, "rds:CreateDBProxy", "*")
