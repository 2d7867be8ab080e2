"""`ApiServer` over real HTTP: authentication, authorization and dispatch errors, as SDKs see them.

The server's aiohttp application runs on a free loopback port (aiohttp's
`TestServer`) in a background thread with its own event loop, in front of a
real `ControlPlane` on a temporary directory (no proxy listener runs). Clients
are real boto3 clients, or requests signed with botocore's `SigV4Auth` /
presigned by `generate_presigned_url` and sent with urllib, and answers are
read with botocore's own response parsers: what boto3 raises is the oracle.
No answer may be a 500, and no `sluice` log record may carry a secret key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.parsers
import botocore.session
import pytest
from aiohttp.test_utils import TestServer
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from sluice.control.context import Call
from sluice.control.plane import ControlPlane, ServerSettings

REGION = "us-east-1"
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


@dataclass
class Server:
    """The running API server, the plane behind it and the admin's key."""

    plane: ControlPlane
    endpoint: str
    admin: tuple[str, str]
    sensitive: set[str] = field(default_factory=set)

    def client(self, service: str, key: tuple[str, str] | None = None,
               session: str | None = None, unsigned: bool = False) -> Any:  # fmt: skip
        key = key or self.admin
        config = Config(retries={"total_max_attempts": 1}, region_name=REGION)
        if unsigned:
            config = config.merge(Config(signature_version=UNSIGNED))
        return boto3.client(
            service, endpoint_url=self.endpoint, aws_access_key_id=key[0],
            aws_secret_access_key=key[1], aws_session_token=session, config=config,
        )  # fmt: skip

    def user(self, name: str) -> tuple[str, str]:
        """A new IAM user without policies (made over the API by the admin); its key."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.sensitive.add(key["SecretAccessKey"])
        return key["AccessKeyId"], key["SecretAccessKey"]


class _Background:
    """An event loop in a thread, serving the app until closed."""

    def __init__(self, plane: ControlPlane) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = TestServer(plane.api.app, host="127.0.0.1")
        asyncio.run_coroutine_threadsafe(self.server.start_server(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("plane")
    plane = ControlPlane(ServerSettings(data_dir=data, vpc_cidr="127.77.0.0/16"))
    key = next(k for k in plane.store.all("access_key") if k["UserName"] == "admin")
    admin = (key["AccessKeyId"], plane.vault.open_text(key["_secret"]))
    background = _Background(plane)
    try:
        yield Server(plane, f"http://127.0.0.1:{background.server.port}", admin, {admin[1]})
    finally:
        background.close()
        plane.store.close()


@pytest.fixture(autouse=True)
def no_secret_in_logs(server: Server, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="sluice")
    yield
    for record in [*caplog.get_records("setup"), *caplog.get_records("call")]:
        if record.name.startswith("sluice"):
            text = record.getMessage() + (record.exc_text or "")
            assert not [s for s in server.sensitive if s in text], "a secret reached the log"


def fails(code: str, status: int, call: Any, **params: Any) -> ClientError:
    """The boto3 call raises ClientError `code` with HTTP `status`."""
    with pytest.raises(ClientError) as caught:
        call(**params)
    error = caught.value.response
    assert error["Error"]["Code"] == code, error
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    return caught.value


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> Answer:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return Answer(reply.status, dict(reply.headers), reply.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


def signed(server: Server, service: str, body: str, key: tuple[str, str] | None = None,
           headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
    """POST `body`, signed by botocore's SigV4Auth for `service`."""
    request = AWSRequest(method="POST", url=server.endpoint + "/", data=body.encode(),
                         headers={**FORM, **(headers or {})})  # fmt: skip
    SigV4Auth(Credentials(*(key or server.admin)), service, REGION).add_auth(request)
    prepared = request.prepare()
    return send("POST", prepared.url, dict(prepared.headers.items()), prepared.body)


def parsed(service: str, answer: Answer, operation: str | None = None) -> dict[str, Any]:
    """The answer as botocore's parser for the service's protocol reads it."""
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).output_shape if operation else None
    parser = botocore.parsers.create_parser(model.metadata["protocol"])
    response = {"status_code": answer.status, "headers": answer.headers, "body": answer.body}
    result: dict[str, Any] = parser.parse(response, shape)
    return result


# ---- authentication ----


def test_admin_is_served(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    identity = server.client("sts").get_caller_identity()
    assert identity["Account"] == server.plane.account
    assert identity["Arn"] == f"arn:aws:iam::{server.plane.account}:user/admin"
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("sluice")]
    assert f"sts GetCallerIdentity by {identity['Arn']}" in logged  # seen by the leak check


@pytest.mark.parametrize(
    "service, operation",
    [
        ("sts", "get_caller_identity"),
        ("secretsmanager", "list_secrets"),
        ("rds", "describe_db_proxies"),
    ],
)
def test_unsigned_request(server: Server, service: str, operation: str) -> None:
    client = server.client(service, unsigned=True)
    fails("MissingAuthenticationToken", 403, getattr(client, operation))


def test_unknown_access_key(server: Server) -> None:
    client = server.client("sts", key=("AKIAUNKNOWNUNKNOWN00", "s" * 40))
    fails("InvalidClientTokenId", 403, client.get_caller_identity)


def test_wrong_secret_key(server: Server) -> None:
    client = server.client("sts", key=(server.admin[0], "w" * 40))
    error = fails("SignatureDoesNotMatch", 403, client.get_caller_identity)
    assert "w" * 40 not in str(error)


def test_malformed_authorization_is_incomplete(server: Server) -> None:
    headers = {**FORM, "Authorization": "AWS4-HMAC-SHA256 Credential=x", "X-Amz-Date": "x"}
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    answer = send("POST", server.endpoint + "/", headers, body)
    assert answer.status == 400
    assert parsed("sts", answer)["Error"]["Code"] == "IncompleteSignature"


def _assume(server: Server, now: float, duration: int = 900) -> tuple[str, str, str]:
    """An STS session of a new role (assumed by the admin at `now`); its credentials."""
    name = f"role-{int(now * 1000) % 10**9}"
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": f"arn:aws:iam::{server.plane.account}:root"}}]}  # fmt: skip
    server.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    info = server.plane.principals.lookup(server.admin[0])
    assert info is not None
    params = {"RoleArn": f"arn:aws:iam::{server.plane.account}:role/{name}",
              "RoleSessionName": "test", "DurationSeconds": duration}  # fmt: skip
    creds = server.plane.services["sts"].AssumeRole(Call(info.principal, REGION, "r", now), params)
    key = creds["Credentials"]
    server.sensitive.update({key["SecretAccessKey"], key["SessionToken"]})
    return key["AccessKeyId"], key["SecretAccessKey"], key["SessionToken"]


def test_session_credentials(server: Server) -> None:
    key_id, secret, token = _assume(server, time.time())
    identity = server.client("sts", key=(key_id, secret), session=token).get_caller_identity()
    assert ":assumed-role/" in identity["Arn"] and identity["Arn"].endswith("/test")
    wrong = server.client("sts", key=(key_id, secret), session=token[:-4] + "AAAA")
    fails("InvalidClientTokenId", 403, wrong.get_caller_identity)
    missing = server.client("sts", key=(key_id, secret))
    fails("InvalidClientTokenId", 403, missing.get_caller_identity)


def test_expired_session_credentials(server: Server) -> None:
    key_id, secret, token = _assume(server, time.time() - 3600, duration=900)
    client = server.client("sts", key=(key_id, secret), session=token)
    fails("ExpiredToken", 403, client.get_caller_identity)
    rds = server.client("rds", key=(key_id, secret), session=token)
    fails("ExpiredToken", 403, rds.describe_db_proxies)


# ---- authorization ----


def test_user_without_policies(server: Server) -> None:
    key = server.user("nobody")
    error = fails("AccessDenied", 403, server.client("rds", key=key).describe_db_proxies)
    assert "rds:DescribeDBProxies" in error.response["Error"]["Message"]
    identity = server.client("sts", key=key).get_caller_identity()
    assert identity["Arn"] == f"arn:aws:iam::{server.plane.account}:user/nobody"
    fails("AccessDenied", 403, server.client("secretsmanager", key=key).list_secrets)
    fails("AccessDenied", 403, server.client("iam", key=key).list_users)


def test_user_policy_takes_effect(server: Server) -> None:
    key = server.user("reader")
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "rds:Describe*", "Resource": "*"}]}  # fmt: skip
    server.client("iam").put_user_policy(
        UserName="reader", PolicyName="read", PolicyDocument=json.dumps(document)
    )
    assert server.client("rds", key=key).describe_db_proxies()["DBProxies"] == []
    fails("AccessDenied", 403, server.client("ec2", key=key).describe_vpcs)


# ---- dispatch ----


def test_unknown_action(server: Server) -> None:
    answer = signed(server, "sts", "Action=FrobnicateWidgets&Version=2011-06-15")
    assert answer.status == 400
    assert parsed("sts", answer)["Error"]["Code"] == "InvalidAction"
    answer = signed(server, "rds", "Action=FrobnicateWidgets&Version=2014-10-31")
    assert (answer.status, parsed("rds", answer)["Error"]["Code"]) == (400, "InvalidAction")


def test_unknown_json_target(server: Server) -> None:
    headers = {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "secretsmanager.FrobnicateWidgets"}  # fmt: skip
    answer = signed(server, "secretsmanager", "{}", headers=headers)
    assert answer.status == 400
    # What AWS's JSON services answer for a target they do not know.
    assert parsed("secretsmanager", answer)["Error"]["Code"] == "UnknownOperationException"


def test_unknown_service(server: Server) -> None:
    answer = signed(server, "dynamodb", "{}")
    assert answer.status == 400
    assert parsed("sts", answer)["Error"]["Code"] == "UnknownService"


@pytest.mark.parametrize(
    "service, operation, params",
    [
        ("rds", "describe_db_clusters", {}),
        ("iam", "list_groups", {}),
        ("sts", "get_session_token", {}),
        ("secretsmanager", "rotate_secret", {"SecretId": "x"}),
        ("ec2", "describe_instances", {}),
    ],
)
def test_unimplemented_operation_is_a_clean_error(
    server: Server, service: str, operation: str, params: dict[str, Any]
) -> None:
    with pytest.raises(ClientError) as caught:
        getattr(server.client(service), operation)(**params)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400, error
    assert error["Error"]["Code"] == "InvalidAction"


def test_presigned_get_is_accepted(server: Server) -> None:
    url = server.client("sts").generate_presigned_url(
        "get_caller_identity", ExpiresIn=60, HttpMethod="GET"
    )
    assert "X-Amz-Signature=" in url
    answer = send("GET", url, {})
    assert answer.status == 200, answer.body
    result = parsed("sts", answer, "GetCallerIdentity")
    assert result["Arn"] == f"arn:aws:iam::{server.plane.account}:user/admin"


def test_tampered_presigned_url_is_refused(server: Server) -> None:
    url = server.client("sts").generate_presigned_url(
        "get_caller_identity", ExpiresIn=60, HttpMethod="GET"
    )
    answer = send("GET", url.replace("GetCallerIdentity", "GetCallerIdentitx"), {})
    assert answer.status == 403
    assert parsed("sts", answer)["Error"]["Code"] == "SignatureDoesNotMatch"


def test_presigned_url_with_an_authorization_header_too_is_refused(server: Server) -> None:
    url = server.client("sts").generate_presigned_url(
        "get_caller_identity", ExpiresIn=60, HttpMethod="GET"
    )
    answer = send("GET", url, {"Authorization": "AWS4-HMAC-SHA256 Credential=x"})
    assert answer.status == 400
    assert parsed("sts", answer)["Error"]["Code"] == "InvalidRequest"


def test_own_operations_need_a_signature(server: Server) -> None:
    answer = send("POST", server.endpoint + "/sluice/adopt-db-instance", {}, b"{}")
    assert answer.status == 403
    assert json.loads(answer.body)["Code"] == "MissingAuthenticationToken"


def test_server_state_after_errors(server: Server) -> None:
    """A full round trip still works after every refusal above (nothing wedged)."""
    secrets = server.client("secretsmanager")
    arn = secrets.create_secret(Name="after", SecretString='{"a": 1}')["ARN"]
    assert secrets.get_secret_value(SecretId=arn)["SecretString"] == '{"a": 1}'
