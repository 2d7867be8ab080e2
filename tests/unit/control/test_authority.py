"""`PlaneAuthority` and `ProxyAuthenticator`: how proxies of the control plane admit and log in.

A real `ControlPlane` is built on a temporary directory (no listener runs) and
its state is made through the services' own handlers, so the documents are
the ones the API writes: a proxy role allowed to read one secret, an adopted
database behind a security group that admits the proxy's group, users whose
policies do or do not allow `rds-db:connect`. The listener entry the runtime
would set is made by hand. Tokens come from boto3's `generate_db_auth_token`
(pure signing, no network), so botocore is the oracle for what a client sends.
Every test also checks that no `sluice` log record carries a token, a secret
key or a password.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import botocore.auth
import pytest

from sluice.auth.base import CLEARTEXT, SCRAM, BackendLogin
from sluice.config import PoolConfig, ProxyConfig, TargetConfig
from sluice.control import network
from sluice.control.authority import PlaneAuthority, ProxyAuthenticator, role_principal
from sluice.control.context import Call, Principal
from sluice.control.plane import ControlPlane, ServerSettings
from sluice.control.registry import Listener, proxy_listeners
from sluice.control.services.rds import adopt_instance
from sluice.errors import ServerAuthFailed, ServerError
from sluice.wire.pg.scram import make_verifier

DB_PORT = 15432
DB_USER = "app"
DB_PASSWORD = "Db-Pass-Word-71"
NEW_PASSWORD = "Rotated-Pass-42"
IamProxy = tuple[Listener, ProxyAuthenticator]


def policy(*statements: dict[str, Any]) -> str:
    """An IAM policy document (JSON text) of the given statements."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str, resource: str = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def deny(action: str, resource: str = "*") -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


@dataclass
class World:
    """A control plane with one database, one secret, a proxy role and helpers."""

    plane: ControlPlane
    admin: Principal
    secret_arn: str = ""
    role_arn: str = ""
    proxy_sg: str = ""
    db_sg: str = ""
    client_sg: str = ""
    sensitive: set[str] = field(default_factory=set)  # must never reach a log record

    def call(self, now: float | None = None) -> Call:
        return Call(self.admin, self.plane.region, "req-test", time.time() if now is None else now)

    def run(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = getattr(self.plane.services[service], operation)(
            self.call(), params
        )
        return result

    @property
    def authority(self) -> PlaneAuthority:
        return self.plane.authority

    def group(self, name: str) -> str:
        return str(
            self.run("ec2", "CreateSecurityGroup", GroupName=name, Description=name)["GroupId"]
        )

    def ingress(self, group: str, port: int, *, cidr: str = "", source: str = "") -> None:
        perm: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
        if cidr:
            perm["IpRanges"] = [{"CidrIp": cidr}]
        if source:
            perm["UserIdGroupPairs"] = [{"GroupId": source}]
        self.run("ec2", "AuthorizeSecurityGroupIngress", GroupId=group, IpPermissions=[perm])

    def revoke(self, group: str, port: int, source: str) -> None:
        perm = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                "UserIdGroupPairs": [{"GroupId": source}]}  # fmt: skip
        self.run("ec2", "RevokeSecurityGroupIngress", GroupId=group, IpPermissions=[perm])

    def user(self, name: str, document: str | None = None) -> tuple[str, str]:
        """A new IAM user with an inline policy (if given); its access key and secret."""
        self.run("iam", "CreateUser", UserName=name)
        if document is not None:
            self.run("iam", "PutUserPolicy", UserName=name, PolicyName="p", PolicyDocument=document)
        key = self.run("iam", "CreateAccessKey", UserName=name)["AccessKey"]
        self.sensitive.add(key["SecretAccessKey"])
        return str(key["AccessKeyId"]), str(key["SecretAccessKey"])

    def proxy(self, name: str, iam: bool) -> Listener:
        """A POSTGRESQL proxy on the secret, "available", targeting `appdb`; its listener."""
        subnets = [s["SubnetId"] for s in self.plane.store.all("subnet")]
        auth = {"AuthScheme": "SECRETS", "SecretArn": self.secret_arn,
                "IAMAuth": "REQUIRED" if iam else "DISABLED"}  # fmt: skip
        self.run(
            "rds", "CreateDBProxy", DBProxyName=name, EngineFamily="POSTGRESQL", Auth=[auth],
            RoleArn=self.role_arn, VpcSubnetIds=subnets, VpcSecurityGroupIds=[self.proxy_sg],
        )  # fmt: skip
        store = self.plane.store
        doc = store.get("db_proxy", name)
        assert doc is not None
        store.put("db_proxy", name, {**doc, "Status": "available"})  # what the runtime does
        self.run("rds", "RegisterDBProxyTargets", DBProxyName=name, DBInstanceIdentifiers=["appdb"])
        ((_, listener),) = proxy_listeners(store, doc)
        self.authority.listeners.add({name: listener})
        return listener

    def resource(self, listener: Listener, user: str = DB_USER) -> str:
        return (f"arn:aws:rds-db:{self.plane.region}:{self.plane.account}:dbuser:"
                f"{listener.resource_id}/{user}")  # fmt: skip

    def token(
        self, listener: Listener, key: tuple[str, str], *, user: str = DB_USER,
        session: str | None = None, host: str | None = None, port: int | None = None,
    ) -> str:  # fmt: skip
        """An auth token made by boto3, as a Lambda function would make it."""
        client = boto3.client(
            "rds", region_name=self.plane.region, aws_access_key_id=key[0],
            aws_secret_access_key=key[1], aws_session_token=session,
        )  # fmt: skip
        text: str = client.generate_db_auth_token(
            host or listener.address, port or listener.port, user
        )
        self.sensitive.add(text)
        self.sensitive.update(parse_qs(text.partition("?")[2])["X-Amz-Signature"])
        return text


def config_for(listener_name: str, method: str) -> ProxyConfig:
    """The ProxyConfig the runtime would make (only the name and method matter here)."""
    return ProxyConfig(
        name=listener_name, engine="postgresql", listen_host="127.0.0.1", listen_port=5432,
        target=TargetConfig(), pool=PoolConfig(), users=(), auth_method=method,
    )  # fmt: skip


def _admin(plane: ControlPlane) -> Principal:
    key = next(k for k in plane.store.all("access_key") if k["UserName"] == "admin")
    info = plane.principals.lookup(key["AccessKeyId"])
    assert info is not None
    return info.principal


def _build(tmp_path: Path) -> World:
    plane = ControlPlane(ServerSettings(data_dir=tmp_path, vpc_cidr="127.77.0.0/16"))
    w = World(plane, _admin(plane))
    w.sensitive.update({DB_PASSWORD, NEW_PASSWORD})
    w.proxy_sg, w.db_sg, w.client_sg = w.group("proxy"), w.group("db"), w.group("client")
    w.ingress(w.db_sg, DB_PORT, source=w.proxy_sg)
    adopt_instance(plane, "appdb", "postgres", "127.0.0.1", DB_PORT, [w.db_sg])
    value = json.dumps({"username": DB_USER, "password": DB_PASSWORD})
    w.secret_arn = w.run("secretsmanager", "CreateSecret", Name="db-app", SecretString=value)["ARN"]
    trust = {"Effect": "Allow", "Principal": {"Service": "rds.amazonaws.com"},
             "Action": "sts:AssumeRole"}  # fmt: skip
    role = w.run("iam", "CreateRole", RoleName="proxy-role", AssumeRolePolicyDocument=policy(trust))
    w.role_arn = role["Role"]["Arn"]
    w.run("iam", "PutRolePolicy", RoleName="proxy-role", PolicyName="read",
          PolicyDocument=policy(allow("secretsmanager:GetSecretValue", w.secret_arn)))  # fmt: skip
    return w


@pytest.fixture
def world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    caplog.set_level(logging.DEBUG)
    w = _build(tmp_path)
    yield w
    w.plane.store.close()
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    assert records, "the log capture must see the test's records"
    for record in records:
        if not record.name.startswith("sluice"):
            continue  # botocore's own debug output shows what it signed
        text = record.getMessage() + (record.exc_text or "")
        leaked = [s for s in w.sensitive if s and s in text]
        assert not leaked, f"log record {record.name!r} carries a secret"


@pytest.fixture
def iam_proxy(world: World) -> IamProxy:
    listener = world.proxy("iam-proxy", iam=True)
    auth = world.authority.authenticator(config_for("iam-proxy", CLEARTEXT))
    assert isinstance(auth, ProxyAuthenticator)
    return listener, auth


def refused(auth: ProxyAuthenticator, token: str, user: str = DB_USER) -> str:
    """The reason a token is refused; check_cleartext must say no as well."""
    reason = auth._check_token(user, token.encode())
    assert reason is not None
    assert asyncio.run(auth.check_cleartext(user, token.encode())) is False
    return reason


# ---- IAM tokens ----


def test_valid_token_is_accepted(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    key = world.user("fn", policy(allow("rds-db:connect", world.resource(listener))))
    token = world.token(listener, key)
    assert auth._check_token(DB_USER, token.encode()) is None
    assert asyncio.run(auth.check_cleartext(DB_USER, token.encode())) is True
    assert auth.known(DB_USER) and auth.known("anyone")  # IAM: the token decides
    assert auth.method(DB_USER) == CLEARTEXT


def test_token_for_another_user(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    key = world.user("fn", policy(allow("rds-db:connect")))
    token = world.token(listener, key, user="other")
    assert "made for user 'other'" in refused(auth, token)
    assert auth._check_token("other", token.encode()) is None


@pytest.mark.parametrize("where", ["host", "port"])
def test_token_for_another_endpoint(world: World, iam_proxy: IamProxy, where: str) -> None:
    listener, auth = iam_proxy
    key = world.user("fn", policy(allow("rds-db:connect")))
    if where == "host":
        token = world.token(listener, key, host="127.77.99.9")
    else:
        token = world.token(listener, key, port=listener.port + 1)
    assert "not this proxy's endpoint" in refused(auth, token)


def test_unknown_access_key(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    token = world.token(listener, ("AKIAUNKNOWNUNKNOWN00", "x" * 40))
    assert "access key is not known" in refused(auth, token)


def test_wrong_secret_key(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    key_id, _ = world.user("fn", policy(allow("rds-db:connect")))
    token = world.token(listener, (key_id, "y" * 40))
    assert "signature does not match" in refused(auth, token)


def test_garbage_password_is_not_a_token(iam_proxy: IamProxy) -> None:
    _, auth = iam_proxy
    assert "not an IAM authentication token" in refused(auth, "hunter2")


def _session(world: World, now: float, duration: int = 900) -> tuple[str, str, str]:
    """An STS session of a role allowed rds-db:connect, made at `now`."""
    trust = {"Effect": "Allow", "Principal": {"AWS": world.admin.arn}, "Action": "sts:AssumeRole"}
    world.run("iam", "CreateRole", RoleName="fn-role", AssumeRolePolicyDocument=policy(trust))
    world.run("iam", "PutRolePolicy", RoleName="fn-role", PolicyName="connect",
              PolicyDocument=policy(allow("rds-db:connect")))  # fmt: skip
    arn = f"arn:aws:iam::{world.plane.account}:role/fn-role"
    params = {"RoleArn": arn, "RoleSessionName": "fn", "DurationSeconds": duration}
    creds = world.plane.services["sts"].AssumeRole(world.call(now), params)["Credentials"]
    world.sensitive.update({creds["SecretAccessKey"], creds["SessionToken"]})
    return creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]


def test_sts_session_token(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    key_id, secret, session = _session(world, time.time())
    good = world.token(listener, (key_id, secret), session=session)
    assert auth._check_token(DB_USER, good.encode()) is None
    bad = world.token(listener, (key_id, secret), session=session[:-4] + "AAAA")
    assert "session token does not match" in refused(auth, bad)
    missing = world.token(listener, (key_id, secret))
    assert "session token does not match" in refused(auth, missing)


def test_expired_sts_session(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    key_id, secret, session = _session(world, time.time() - 3600, duration=900)
    token = world.token(listener, (key_id, secret), session=session)
    assert "session credentials have expired" in refused(auth, token)


def test_expired_token(world: World, iam_proxy: IamProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    listener, auth = iam_proxy
    key = world.user("fn", policy(allow("rds-db:connect")))
    past = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=25)  # 15 min + 5 skew
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    token = world.token(listener, key)
    monkeypatch.undo()
    assert refused(auth, token) == "expired"
    assert auth._check_token(DB_USER, world.token(listener, key).encode()) is None


@pytest.mark.parametrize(
    "case",
    ["no-connect", "explicit-deny", "other-proxy", "other-user", "no-policy"],
)
def test_policy_must_allow_connect(world: World, iam_proxy: IamProxy, case: str) -> None:
    listener, auth = iam_proxy
    here = world.resource(listener)
    documents = {
        "no-connect": policy(allow("rds:DescribeDBProxies"), allow("rds-db:connectx")),
        "explicit-deny": policy(allow("rds-db:connect"), deny("rds-db:connect", here)),
        "other-proxy": policy(
            allow("rds-db:connect", here.replace(listener.resource_id, "prx-0123456789abcdef0"))
        ),
        "other-user": policy(allow("rds-db:connect", world.resource(listener, "admin"))),
        "no-policy": None,
    }
    key = world.user("fn", documents[case])
    reason = refused(auth, world.token(listener, key))
    assert f"is not allowed rds-db:connect on {here}" in reason


def test_wildcard_user_resource_is_allowed(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    key = world.user("fn", policy(allow("rds-db:connect", world.resource(listener, "*"))))
    assert auth._check_token(DB_USER, world.token(listener, key).encode()) is None


def test_removed_listener_refuses(world: World, iam_proxy: IamProxy) -> None:
    listener, auth = iam_proxy
    key = world.user("fn", policy(allow("rds-db:connect")))
    token = world.token(listener, key)
    world.authority.listeners.remove("iam-proxy")
    assert "being removed" in refused(auth, token)


# ---- secret passwords (IAM not required) ----


@pytest.fixture
def pw_auth(world: World) -> ProxyAuthenticator:
    world.proxy("pw-proxy", iam=False)
    auth = world.authority.authenticator(config_for("pw-proxy", SCRAM))
    assert isinstance(auth, ProxyAuthenticator)
    return auth


def test_secret_password_accepted(pw_auth: ProxyAuthenticator) -> None:
    assert pw_auth.known(DB_USER)
    assert not pw_auth.known("nobody")
    assert asyncio.run(pw_auth.check_cleartext(DB_USER, DB_PASSWORD.encode())) is True
    assert asyncio.run(pw_auth.check_cleartext(DB_USER, b"wrong")) is False
    assert asyncio.run(pw_auth.check_cleartext("nobody", DB_PASSWORD.encode())) is False


def test_secret_user_verifiers(pw_auth: ProxyAuthenticator) -> None:
    verifier = pw_auth.scram_verifier(DB_USER)
    assert verifier == make_verifier(DB_PASSWORD, verifier.salt, verifier.iterations)
    expected_md5 = "md5" + hashlib.md5((DB_PASSWORD + DB_USER).encode()).hexdigest()
    assert pw_auth.md5_secret(DB_USER) == expected_md5
    assert pw_auth.md5_secret("nobody") is None
    decoy = pw_auth.scram_verifier("nobody")  # the exchange runs, and fails
    assert decoy != make_verifier(DB_PASSWORD, decoy.salt, decoy.iterations)


def test_secret_users_follow_state(world: World, pw_auth: ProxyAuthenticator) -> None:
    assert pw_auth.known(DB_USER)
    world.run("secretsmanager", "PutSecretValue", SecretId=world.secret_arn,
              SecretString=json.dumps({"username": DB_USER, "password": NEW_PASSWORD}))  # fmt: skip
    assert asyncio.run(pw_auth.check_cleartext(DB_USER, NEW_PASSWORD.encode())) is True
    assert asyncio.run(pw_auth.check_cleartext(DB_USER, DB_PASSWORD.encode())) is False
    world.run("iam", "DeleteRolePolicy", RoleName="proxy-role", PolicyName="read")
    assert not pw_auth.known(DB_USER)  # the role may no longer read the secret


# ---- backend login ----


def test_backend_login_uses_the_secret(pw_auth: ProxyAuthenticator) -> None:
    login = pw_auth.backend_login(DB_USER)
    assert login == BackendLogin(DB_USER, DB_PASSWORD)
    assert DB_PASSWORD not in repr(login)
    assert pw_auth.backend_login("nobody") is None


def test_backend_login_refused_without_read_permission(
    world: World, pw_auth: ProxyAuthenticator
) -> None:
    world.run("iam", "DeleteRolePolicy", RoleName="proxy-role", PolicyName="read")
    with pytest.raises(ServerAuthFailed, match="secretsmanager:GetSecretValue") as caught:
        pw_auth.backend_login(DB_USER)
    assert DB_PASSWORD not in str(caught.value)


def test_backend_login_refused_by_explicit_deny(world: World, pw_auth: ProxyAuthenticator) -> None:
    world.run("iam", "PutRolePolicy", RoleName="proxy-role", PolicyName="deny",
              PolicyDocument=policy(deny("secretsmanager:*")))  # fmt: skip
    with pytest.raises(ServerAuthFailed, match="secretsmanager:GetSecretValue"):
        pw_auth.backend_login(DB_USER)


def test_backend_login_needs_target_admitting_proxy(
    world: World, pw_auth: ProxyAuthenticator
) -> None:
    world.revoke(world.db_sg, DB_PORT, world.proxy_sg)
    with pytest.raises(ServerError, match="CONNECTION_FAILED") as caught:
        pw_auth.backend_login(DB_USER)
    assert not isinstance(caught.value, ServerAuthFailed)
    assert "appdb" in str(caught.value) and str(DB_PORT) in str(caught.value)
    world.ingress(world.db_sg, DB_PORT, cidr="127.77.0.0/16")  # a CIDR rule admits it again
    assert pw_auth.backend_login(DB_USER) == BackendLogin(DB_USER, DB_PASSWORD)


def test_backend_login_without_target(world: World, pw_auth: ProxyAuthenticator) -> None:
    world.run("rds", "DeregisterDBProxyTargets", DBProxyName="pw-proxy",
              DBInstanceIdentifiers=["appdb"])  # fmt: skip
    with pytest.raises(ServerError, match="no registered target"):
        pw_auth.backend_login(DB_USER)


def test_backend_login_reads_a_changed_password(world: World, pw_auth: ProxyAuthenticator) -> None:
    assert pw_auth.backend_login(DB_USER) == BackendLogin(DB_USER, DB_PASSWORD)
    world.run("secretsmanager", "PutSecretValue", SecretId=world.secret_arn,
              SecretString=json.dumps({"username": DB_USER, "password": NEW_PASSWORD}))  # fmt: skip
    assert pw_auth.backend_login(DB_USER) == BackendLogin(DB_USER, NEW_PASSWORD)


def test_backend_login_of_removed_proxy(world: World, pw_auth: ProxyAuthenticator) -> None:
    world.authority.listeners.remove("pw-proxy")
    with pytest.raises(ServerError, match="being removed"):
        pw_auth.backend_login(DB_USER)


def test_role_principal(world: World) -> None:
    role = role_principal(world.plane, world.role_arn)
    assert role is not None and role.kind == "assumed-role" and role.name == "proxy-role"
    assert role.identity_arn == world.role_arn
    other = world.role_arn.replace(str(world.plane.account), "123456789012")
    assert role_principal(world.plane, other) is None
    assert role_principal(world.plane, "") is None


# ---- admission by security groups ----


def test_admit_by_cidr_rule(world: World, pw_auth: ProxyAuthenticator) -> None:
    config = config_for("pw-proxy", SCRAM)
    port = _listener(world, "pw-proxy").port
    world.ingress(world.proxy_sg, port, cidr="127.0.0.0/24")
    assert world.authority.admit(config, "127.0.0.1") is None
    assert world.authority.admit(config, "127.0.1.1") is not None


def test_admit_without_rule_names_the_proxy(world: World, pw_auth: ProxyAuthenticator) -> None:
    config = config_for("pw-proxy", SCRAM)
    port = _listener(world, "pw-proxy").port
    world.ingress(world.proxy_sg, port + 1, cidr="127.0.0.0/8")  # another port only
    message = world.authority.admit(config, "127.0.0.1")
    assert message is not None
    assert "pw-proxy" in message and "127.0.0.1" in message and str(port) in message


def test_admit_by_source_group_membership(world: World, pw_auth: ProxyAuthenticator) -> None:
    config = config_for("pw-proxy", SCRAM)
    port = _listener(world, "pw-proxy").port
    subnet = world.plane.store.all("subnet")[0]["SubnetId"]
    eni = world.run("ec2", "CreateNetworkInterface", SubnetId=subnet, Groups=[world.client_sg])
    address = eni["NetworkInterface"]["PrivateIpAddress"]
    assert world.authority.admit(config, address) is not None
    world.ingress(world.proxy_sg, port, source=world.client_sg)
    assert world.authority.admit(config, address) is None
    assert world.authority.admit(config, "127.0.0.1") is not None  # not a member


def test_nothing_outside_the_vpc_is_admitted(world: World, pw_auth: ProxyAuthenticator) -> None:
    """Where a function without a VpcConfig connects from: no rule lets it in."""
    config = config_for("pw-proxy", SCRAM)
    world.ingress(world.proxy_sg, _listener(world, "pw-proxy").port, cidr="0.0.0.0/0")
    assert world.authority.admit(config, "127.0.0.1") is None
    message = world.authority.admit(config, network.OUTSIDE_ADDRESS)
    assert message is not None and "outside" in message and "VpcConfig" in message


def test_admit_unknown_proxy(world: World) -> None:
    message = world.authority.admit(config_for("gone", SCRAM), "127.0.0.1")
    assert message is not None and "being removed" in message


def test_backend_login_uses_the_readable_secret_of_the_user(world: World) -> None:
    value = json.dumps({"username": DB_USER, "password": NEW_PASSWORD})
    hidden = world.run("secretsmanager", "CreateSecret", Name="db-old", SecretString=value)["ARN"]
    world.proxy("pw-proxy", iam=False)
    items = [{"AuthScheme": "SECRETS", "SecretArn": arn} for arn in (hidden, world.secret_arn)]
    world.run("rds", "ModifyDBProxy", DBProxyName="pw-proxy", Auth=items)
    auth = world.authority.authenticator(config_for("pw-proxy", SCRAM))
    # Clients log in with the password of the secret the role may read ...
    assert asyncio.run(auth.check_cleartext(DB_USER, DB_PASSWORD.encode())) is True
    assert asyncio.run(auth.check_cleartext(DB_USER, NEW_PASSWORD.encode())) is False
    # ... and so must the proxy, instead of refusing because of the unreadable one.
    assert auth.backend_login(DB_USER) == BackendLogin(DB_USER, DB_PASSWORD)


def _listener(world: World, name: str) -> Listener:
    found = world.authority.listeners.get(name)
    assert found is not None
    return found
