"""Lambda on `sluice server`: functions made, changed and invoked with the aws CLI and boto3.

The function's code is a real zip run in real execution environments (processes of this
machine's Python); what the handler sees (its environment, its context, its role's
credentials) is what it prints and returns, and every answer is read by the real clients.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_kit import TRUST_LAMBDA, make_zip
from model_check import checked, cli_checked
from sluice.devtools.controlplane import AwsCliError, SluiceServer

APP = """
import json, os, sys, time

STARTED = time.time()
COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    print("event", json.dumps(event))
    sys.stdout.write("no newline at the end")
    action = event.get("action")
    if action == "fail":
        raise ValueError("bad input: " + str(event.get("why")))
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "exit":
        os._exit(3)
    if action == "hog":
        hog = b"x" * (event["mb"] * 1024 * 1024)
        time.sleep(event.get("hold", 0))
        return len(hog)
    if action == "whoami":
        import boto3
        return boto3.client("sts").get_caller_identity()["Arn"]
    if action == "source":
        import socket
        with socket.create_connection(("127.0.0.1", event["port"])) as conn:
            return conn.getsockname()[0]
    return {
        "pid": os.getpid(), "count": COUNT, "cwd": os.getcwd(), "event": event,
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("AWS_", "LAMBDA_", "DB_", "_HANDLER"))
                and k not in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")},
        "has_secret": bool(os.environ.get("AWS_SECRET_ACCESS_KEY")),
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "remaining": context.get_remaining_time_in_millis(),
        },
        "helper": __import__("helper").VALUE,
    }
"""

TRUST_EC2 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[SluiceServer]:
    with SluiceServer() as srv:
        yield srv
        print(f"---- sluice server log ----\n{srv.log_tail(80)}")


@pytest.fixture(scope="module")
def role(server: SluiceServer) -> str:
    arn: str = server.aws("iam", "create-role", "--role-name", "fn-role",
                          "--assume-role-policy-document", json.dumps(TRUST_LAMBDA),
                          "--query", "Role.Arn", "--output", "text")  # fmt: skip
    return arn


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fn") / "function.zip"
    path.write_bytes(make_zip({"app.py": APP, "helper.py": "VALUE = 'from the zip'\n"}))
    return path


@pytest.fixture(scope="module")
def function(server: SluiceServer, role: str, code: Path) -> str:
    created = server.aws(
        "lambda", "create-function", "--function-name", "db-app", "--runtime", "python3.11",
        "--handler", "app.handler", "--role", role, "--zip-file", f"fileb://{code}",
        "--timeout", "2", "--environment", "Variables={DB_HOST=127.0.0.1}",
    )  # fmt: skip
    assert created["State"] == "Pending"
    server.aws("lambda", "wait", "function-active", "--function-name", "db-app")
    return "db-app"


def invoke(server: SluiceServer, name: str, event: dict[str, Any], tmp: Path,
           *extra: str) -> tuple[dict[str, Any], Any]:  # fmt: skip
    out = tmp / "response.json"
    meta = server.aws("lambda", "invoke", "--function-name", name, "--payload",
                      json.dumps(event), *extra, str(out))  # fmt: skip
    return meta, json.loads(out.read_text())


def test_create_reports_the_code_as_aws_does(server: SluiceServer, function: str,
                                             code: Path) -> None:  # fmt: skip
    import hashlib

    config = server.aws("lambda", "get-function-configuration", "--function-name", function)
    data = code.read_bytes()
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert config["CodeSize"] == len(data)
    assert config["State"] == "Active"
    assert config["LastUpdateStatus"] == "Successful"
    assert config["FunctionArn"].endswith(":function:db-app")
    assert config["Environment"] == {"Variables": {"DB_HOST": "127.0.0.1"}}
    names = server.aws("lambda", "list-functions", "--query", "Functions[].FunctionName")
    assert names == ["db-app"]


def test_invoke_returns_what_the_handler_returns(server: SluiceServer, function: str,
                                                 tmp_path: Path) -> None:  # fmt: skip
    meta, body = invoke(server, function, {"hello": "world"}, tmp_path)
    assert meta["StatusCode"] == 200
    assert "FunctionError" not in meta
    assert body["event"] == {"hello": "world"}
    assert body["helper"] == "from the zip"
    env = body["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "db-app"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/db-app"
    assert env["AWS_ENDPOINT_URL"] == server.endpoint
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and body["has_secret"]
    assert env["_HANDLER"] == "app.handler"
    assert body["cwd"] == env["LAMBDA_TASK_ROOT"]
    assert env["DB_HOST"] == "127.0.0.1"
    context = body["context"]
    assert context["function_name"] == "db-app"
    assert context["memory_limit_in_mb"] == "128"
    assert context["invoked_function_arn"].endswith(":function:db-app")
    assert len(context["aws_request_id"]) == 36
    assert 0 < context["remaining"] <= 2000


def test_the_handler_runs_as_its_execution_role(server: SluiceServer, function: str,
                                                tmp_path: Path) -> None:  # fmt: skip
    _, arn = invoke(server, function, {"action": "whoami"}, tmp_path)
    assert arn.startswith("arn:aws:sts::") and ":assumed-role/fn-role/" in arn


def test_warm_environments_are_reused(server: SluiceServer, function: str,
                                      tmp_path: Path) -> None:  # fmt: skip
    _, first = invoke(server, function, {}, tmp_path)
    _, second = invoke(server, function, {}, tmp_path)
    assert second["pid"] == first["pid"]
    assert second["count"] == first["count"] + 1


def test_unhandled_error_in_lambdas_shape(server: SluiceServer, function: str,
                                          tmp_path: Path) -> None:  # fmt: skip
    meta, body = invoke(server, function, {"action": "fail", "why": 7}, tmp_path,
                        "--log-type", "Tail")  # fmt: skip
    assert meta["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "bad input: 7"
    # As Lambda's runtime reports it: from the handler's frame, none of the runtime's own
    assert len(body["stackTrace"]) == 1 and "in handler\n" in body["stackTrace"][0]
    assert 'raise ValueError("bad input: " + str(event.get("why")))' in body["stackTrace"][0]
    log = base64.b64decode(meta["LogResult"]).decode()
    assert log.startswith("START RequestId: ") or "\nSTART RequestId: " in log
    assert "[ERROR] ValueError: bad input: 7" in log
    assert "END RequestId: " in log and "REPORT RequestId: " in log
    # The environment survives a handled failure and is used again.
    _, after = invoke(server, function, {}, tmp_path)
    assert after["count"] > 1


def test_log_tail_holds_the_handlers_output(server: SluiceServer, function: str,
                                            tmp_path: Path) -> None:  # fmt: skip
    lam = server.client("lambda")
    answer = lam.invoke(FunctionName=function, Payload=b'{"say": "hi"}', LogType="Tail")
    log = base64.b64decode(answer["LogResult"]).decode()
    assert 'event {"say": "hi"}\nno newline at the end\nEND RequestId' in log
    assert "sluice" not in log
    assert "Memory Size: 128 MB" in log
    assert json.loads(answer["Payload"].read())["event"] == {"say": "hi"}
    assert answer["ExecutedVersion"] == "$LATEST"


def test_timeout_kills_the_environment(server: SluiceServer, function: str,
                                       tmp_path: Path) -> None:  # fmt: skip
    _, before = invoke(server, function, {}, tmp_path)
    started = time.monotonic()
    meta, body = invoke(server, function, {"action": "sleep", "seconds": 10}, tmp_path)
    assert time.monotonic() - started < 8
    assert meta["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"].endswith("Task timed out after 2.00 seconds")
    _, after = invoke(server, function, {}, tmp_path)
    assert after["pid"] != before["pid"]  # a new environment
    assert after["count"] == 1


def test_a_crashed_environment_is_replaced(server: SluiceServer, function: str,
                                           tmp_path: Path) -> None:  # fmt: skip
    meta, body = invoke(server, function, {"action": "exit"}, tmp_path)
    assert meta["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Runtime exited with error: exit status 3")
    meta, body = invoke(server, function, {}, tmp_path)
    assert "FunctionError" not in meta and body["count"] == 1


@pytest.mark.parametrize("hold", [1.0, 0.0])  # caught while running, or by its peak after
def test_memory_beyond_memory_size_ends_the_environment(
    server: SluiceServer, function: str, tmp_path: Path, hold: float
) -> None:
    _, small = invoke(server, function, {"action": "hog", "mb": 8}, tmp_path)
    assert small == 8 * 1024 * 1024
    meta, body = invoke(server, function, {"action": "hog", "mb": 200, "hold": hold}, tmp_path,
                        "--log-type", "Tail")  # fmt: skip
    assert meta["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Runtime exited with error: signal: killed")
    log = base64.b64decode(meta["LogResult"]).decode()
    assert "Max Memory Used: 128 MB" in log
    assert "Status: error\tError Type: Runtime.OutOfMemory" in log
    _, after = invoke(server, function, {}, tmp_path)
    assert after["count"] == 1


def test_update_configuration_reaches_the_next_invocation(server: SluiceServer, function: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    _, before = invoke(server, function, {}, tmp_path)
    updated = server.aws("lambda", "update-function-configuration", "--function-name", function,
                         "--environment", "Variables={DB_HOST=127.20.0.4}")  # fmt: skip
    assert updated["LastUpdateStatus"] == "InProgress"
    server.aws("lambda", "wait", "function-updated", "--function-name", function)
    _, after = invoke(server, function, {}, tmp_path)
    assert after["env"]["DB_HOST"] == "127.20.0.4"
    assert after["pid"] != before["pid"]  # the old environment was retired


def test_update_code_runs_the_new_code(server: SluiceServer, role: str, tmp_path: Path) -> None:
    lam = server.client("lambda")
    zipped = make_zip({"main.py": "def run(event, context):\n    return 'v1'\n"})
    lam.create_function(FunctionName="versions", Runtime="python3.12", Role=role,
                        Handler="main.run", Code={"ZipFile": zipped})  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName="versions")
    assert lam.invoke(FunctionName="versions")["Payload"].read() == b'"v1"'
    zipped = make_zip({"main.py": "def run(event, context):\n    return 'v2'\n"})
    lam.update_function_code(FunctionName="versions", ZipFile=zipped)
    lam.get_waiter("function_updated_v2").wait(FunctionName="versions")
    assert lam.invoke(FunctionName="versions")["Payload"].read() == b'"v2"'
    lam.delete_function(FunctionName="versions")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="versions")


def test_roles_lambda_may_not_assume_and_roles_not_passable_are_refused(
    server: SluiceServer, code: Path
) -> None:
    ec2_role = server.aws("iam", "create-role", "--role-name", "ec2-only",
                          "--assume-role-policy-document", json.dumps(TRUST_EC2),
                          "--query", "Role.Arn", "--output", "text")  # fmt: skip
    args = ["lambda", "create-function", "--function-name", "nope", "--runtime", "python3.11",
            "--handler", "app.handler", "--zip-file", f"fileb://{code}"]  # fmt: skip
    with pytest.raises(AwsCliError) as err:
        server.aws(*args, "--role", ec2_role)
    assert "InvalidParameterValueException" in err.value.stderr
    assert "cannot be assumed by Lambda" in err.value.stderr
    # A user allowed lambda:* but not iam:PassRole.
    iam = server.client("iam")
    iam.create_user(UserName="deployer")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="deployer", PolicyName="fn", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    lam = server.client("lambda", aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"])  # fmt: skip
    role_arn = iam.get_role(RoleName="fn-role")["Role"]["Arn"]
    with pytest.raises(lam.exceptions.ClientError) as denied:
        lam.create_function(
            FunctionName="nope",
            Runtime="python3.11",
            Role=role_arn,
            Handler="app.handler",
            Code={"ZipFile": code.read_bytes()},
        )
    error = denied.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert "iam:PassRole" in error["Message"]


def test_lambda_actions_are_authorized_per_function(server: SluiceServer, function: str) -> None:
    iam = server.client("iam")
    iam.create_user(UserName="caller")
    arn = server.client("lambda").get_function(FunctionName=function)["Configuration"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn["FunctionArn"]},
    ]}  # fmt: skip
    iam.put_user_policy(UserName="caller", PolicyName="one", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="caller")["AccessKey"]
    lam = server.client("lambda", aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"])  # fmt: skip
    assert lam.invoke(FunctionName=function)["StatusCode"] == 200
    for call in (lambda: lam.invoke(FunctionName="versions"),
                 lambda: lam.get_function(FunctionName=function)):  # fmt: skip
        with pytest.raises(lam.exceptions.ClientError) as denied:
            call()
        error = denied.value.response["Error"]
        assert error["Code"] == "AccessDeniedException"
        assert "is not authorized to perform: lambda:" in error["Message"]


def test_bad_requests_answer_lambdas_errors(server: SluiceServer, role: str,
                                            tmp_path: Path) -> None:  # fmt: skip
    lam = server.client("lambda")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(FunctionName="bad-zip", Runtime="python3.11", Role=role,
                            Handler="a.b", Code={"ZipFile": b"not a zip"})  # fmt: skip
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.create_function(FunctionName="reserved", Runtime="python3.11", Role=role,
                            Handler="a.b", Code={"ZipFile": make_zip({"a.py": ""})},
                            Environment={"Variables": {"AWS_REGION": "x"}})  # fmt: skip
    assert "AWS_REGION" in str(err.value)
    with pytest.raises(lam.exceptions.ClientError) as err:
        lam.update_function_configuration(FunctionName="db-app", Timeout=901)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="missing")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="db-app", Payload=b"{not json")


def test_import_errors_are_reported_as_lambda_does(server: SluiceServer, role: str) -> None:
    lam = server.client("lambda")
    lam.create_function(
        FunctionName="broken",
        Runtime="python3.11",
        Role=role,
        Handler="nowhere.handler",
        Code={"ZipFile": make_zip({"a.py": ""})},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName="broken")
    answer = lam.invoke(FunctionName="broken")
    body = json.loads(answer["Payload"].read())
    assert answer["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"].startswith("Unable to import module 'nowhere'")


def test_event_and_dry_run_invocations(server: SluiceServer, function: str) -> None:
    lam = server.client("lambda")
    assert lam.invoke(FunctionName=function, InvocationType="DryRun")["StatusCode"] == 204
    event = lam.invoke(FunctionName=function, InvocationType="Event", Payload=b'{"e": 1}')
    assert event["StatusCode"] == 202


def test_reserved_concurrency_zero_throttles(server: SluiceServer, role: str) -> None:
    lam = server.client("lambda")
    lam.create_function(
        FunctionName="throttled",
        Runtime="python3.11",
        Role=role,
        Handler="m.h",
        Code={"ZipFile": make_zip({"m.py": "h=lambda e,c: 1"})},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName="throttled")
    lam.put_function_concurrency(FunctionName="throttled", ReservedConcurrentExecutions=0)
    assert lam.get_function(FunctionName="throttled")["Concurrency"] == {
        "ReservedConcurrentExecutions": 0
    }
    strict = server.session().client("lambda", endpoint_url=server.endpoint,
                                     config=_no_retries())  # fmt: skip
    with pytest.raises(strict.exceptions.TooManyRequestsException):
        strict.invoke(FunctionName="throttled")
    lam.delete_function_concurrency(FunctionName="throttled")
    assert lam.invoke(FunctionName="throttled")["Payload"].read() == b"1"


def test_layers_are_on_the_import_path(server: SluiceServer, role: str) -> None:
    lam = server.client("lambda")
    layer = make_zip({"python/shared.py": "WHERE = 'layer'\n"})
    published = lam.publish_layer_version(LayerName="shared", Content={"ZipFile": layer},
                                          CompatibleRuntimes=["python3.11"])  # fmt: skip
    assert published["Version"] == 1
    code = make_zip({"use.py": "import shared\ndef h(e, c):\n    return shared.WHERE\n"})
    lam.create_function(FunctionName="with-layer", Runtime="python3.11", Role=role,
                        Handler="use.h", Code={"ZipFile": code},
                        Layers=[published["LayerVersionArn"]])  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName="with-layer")
    assert lam.invoke(FunctionName="with-layer")["Payload"].read() == b'"layer"'
    versions = lam.list_layer_versions(LayerName="shared")["LayerVersions"]
    assert [v["Version"] for v in versions] == [1]
    assert lam.get_layer_version(LayerName="shared", VersionNumber=1)["Content"]["CodeSize"] == (
        len(layer)
    )


def test_the_functions_log_is_in_cloudwatch_logs(server: SluiceServer, function: str,
                                                 tmp_path: Path) -> None:  # fmt: skip
    invoke(server, function, {"action": "fail", "why": "logged"}, tmp_path)
    group = f"/aws/lambda/{function}"
    groups = server.aws("logs", "describe-log-groups", "--log-group-name-prefix", "/aws/lambda/",
                        "--query", "logGroups[].logGroupName")  # fmt: skip
    assert group in groups
    found = server.aws("logs", "filter-log-events", "--log-group-name", group,
                       "--filter-pattern", '"bad input: logged"')["events"]  # fmt: skip
    assert len(found) == 1  # (after the handler's unfinished line: output is one stream)
    assert found[0]["message"].endswith("[ERROR] ValueError: bad input: logged\n")
    streams = server.aws("logs", "describe-log-streams", "--log-group-name", group,
                         "--order-by", "LastEventTime", "--descending")["logStreams"]  # fmt: skip
    assert streams[0]["logStreamName"] == found[0]["logStreamName"]
    events = server.aws("logs", "get-log-events", "--log-group-name", group, "--log-stream-name",
                        streams[0]["logStreamName"], "--query", "events[].message")  # fmt: skip
    assert any(m.startswith("START RequestId: ") for m in events)
    assert any(m.startswith("REPORT RequestId: ") for m in events)
    with pytest.raises(AwsCliError) as err:
        server.aws("logs", "get-log-events", "--log-group-name", "/aws/lambda/none",
                   "--log-stream-name", "x")  # fmt: skip
    assert "ResourceNotFoundException" in err.value.stderr


def test_restart_keeps_functions(server: SluiceServer, function: str, tmp_path: Path) -> None:
    server.aws("lambda", "tag-resource", "--resource",
               server.aws("lambda", "get-function", "--function-name", function,
                          "--query", "Configuration.FunctionArn", "--output", "text"),
               "--tags", "team=db")  # fmt: skip
    before = server.aws("lambda", "get-function-configuration", "--function-name", function)
    server.restart()
    after = server.aws("lambda", "get-function-configuration", "--function-name", function)
    assert after == before
    meta, body = invoke(server, function, {"again": True}, tmp_path)
    assert meta["StatusCode"] == 200 and body["event"] == {"again": True}
    tags = server.aws("lambda", "get-function", "--function-name", function, "--query", "Tags")
    assert tags == {"team": "db"}


def _source(server: SluiceServer, name: str, tmp: Path) -> str:
    """The address an environment of the function connects to this host from."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        meta, address = invoke(server, name, {"action": "source",
                                              "port": listener.getsockname()[1]}, tmp)
        assert "FunctionError" not in meta, address
        peer = listener.accept()[0]
        assert peer.getpeername()[0] == address
        peer.close()
    return str(address)


def _lambda_interfaces(server: SluiceServer) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.client("ec2").describe_network_interfaces(
        Filters=[{"Name": "interface-type", "Values": ["lambda"]}])["NetworkInterfaces"]
    return found


def test_a_vpc_function_connects_from_its_lambda_interfaces(
    server: SluiceServer, role: str, code: Path, tmp_path: Path
) -> None:
    aws = server.aws
    vpc = aws("ec2", "describe-vpcs", "--query", "Vpcs[0].VpcId", "--output", "text")
    subnets = aws("ec2", "describe-subnets", "--query", "Subnets[].SubnetId")
    group = aws("ec2", "create-security-group", "--group-name", "fn-sg", "--description", "fn",
                "--vpc-id", vpc, "--query", "GroupId", "--output", "text")  # fmt: skip
    created = aws("lambda", "create-function", "--function-name", "in-vpc", "--runtime",
                  "python3.11", "--handler", "app.handler", "--role", role, "--zip-file",
                  f"fileb://{code}", "--timeout", "10", "--vpc-config",
                  f"SubnetIds={subnets[0]},{subnets[1]},SecurityGroupIds={group}")  # fmt: skip
    aws("lambda", "wait", "function-active", "--function-name", "in-vpc")
    config = aws("lambda", "get-function-configuration", "--function-name", "in-vpc")
    assert created["VpcConfig"] == config["VpcConfig"] == {
        "SubnetIds": subnets[:2], "SecurityGroupIds": [group], "VpcId": vpc,
        "Ipv6AllowedForDualStack": False}  # fmt: skip
    enis = aws("ec2", "describe-network-interfaces", "--filters",
               "Name=interface-type,Values=lambda")["NetworkInterfaces"]  # fmt: skip
    assert [e["SubnetId"] for e in enis] == subnets[:2]
    for eni in enis:
        assert (eni["InterfaceType"], eni["RequesterManaged"], eni["Status"]) == (
            "lambda", True, "in-use")
        assert eni["Description"].startswith("AWS Lambda VPC ENI-in-vpc-")
        assert eni["Groups"] == [{"GroupId": group, "GroupName": "fn-sg"}]
    assert _lambda_interfaces(server) == enis  # boto3 reads the same
    refused = aws("ec2", "delete-network-interface", "--network-interface-id",
                  enis[0]["NetworkInterfaceId"], check=False)  # fmt: skip
    assert "InvalidNetworkInterface.InUse" in refused.stderr
    refused = aws("ec2", "delete-security-group", "--group-id", group, check=False)
    assert "DependencyViolation" in refused.stderr

    assert _source(server, "in-vpc", tmp_path) == enis[0]["PrivateIpAddress"]
    started = f"connects from {enis[0]['PrivateIpAddress']}, bound by the preloaded library"
    assert started in server.log_path.read_text()  # the server log says how

    def configure(vpc_config: str) -> None:
        aws("lambda", "update-function-configuration", "--function-name", "in-vpc",
            "--vpc-config", vpc_config)  # fmt: skip
        aws("lambda", "wait", "function-updated", "--function-name", "in-vpc")

    configure(f"SubnetIds={subnets[2]},SecurityGroupIds={group}")  # interfaces replaced
    (moved,) = _lambda_interfaces(server)
    assert moved["SubnetId"] == subnets[2]
    assert moved["NetworkInterfaceId"] not in {e["NetworkInterfaceId"] for e in enis}
    assert _source(server, "in-vpc", tmp_path) == moved["PrivateIpAddress"]
    configure("SubnetIds=[],SecurityGroupIds=[]")  # out of the VPC: from outside every VPC
    assert _lambda_interfaces(server) == []
    assert _source(server, "in-vpc", tmp_path) == "127.0.0.2"
    configure(f"SubnetIds={subnets[0]},SecurityGroupIds={group}")
    assert len(_lambda_interfaces(server)) == 1
    aws("lambda", "delete-function", "--function-name", "in-vpc")
    assert _lambda_interfaces(server) == []
    aws("ec2", "delete-security-group", "--group-id", group)


def _no_retries() -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": 0})


def test_large_bodies_only_from_known_callers(server: SluiceServer, role: str) -> None:
    """A deployment package may be tens of MB, but the server reads no more than 1 MB for
    a caller whose access key does not exist: such a request gets 413 without its body
    being read, while a known caller's 3 MB package makes a function."""
    import http.client
    import os
    import urllib.parse

    url = urllib.parse.urlsplit(server.endpoint)
    big = b"x" * (4 << 20)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    auth = ("AWS4-HMAC-SHA256 Credential=AKIANOSUCHKEY0000000/20261204/us-east-1/lambda/"
            "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64)  # fmt: skip
    conn.putrequest("POST", "/2015-03-31/functions")
    for name, value in (("Authorization", auth), ("X-Amz-Date", "20261204T000000Z"),
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(big)))):  # fmt: skip
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(big[: 1 << 20])  # the answer comes before the rest is sent
    answer = conn.getresponse()
    assert answer.status == 413
    assert b"smaller than 1048576" in answer.read()
    conn.close()

    package = make_zip({"app.py": APP, "helper.py": "VALUE = 1\n"})
    buffer = io.BytesIO(package)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("blob.bin", os.urandom(3 << 20))  # incompressible
    lam = server.client("lambda")
    made = lam.create_function(
        FunctionName="big-package", Runtime="python3.11", Role=role, Handler="app.handler",
        Code={"ZipFile": buffer.getvalue()},
    )
    assert made["CodeSize"] > 3 << 20
    lam.delete_function(FunctionName="big-package")


def test_every_answer_fits_the_model(server: SluiceServer, role: str, code: Path,
                                     tmp_path: Path) -> None:  # fmt: skip
    """Each Lambda and CloudWatch Logs operation the server answers, called with boto3 and
    with the aws CLI, answers what botocore's output shape allows (members, types, enums)."""
    lam, logs = server.client("lambda"), server.client("logs")

    def cli(service: str, operation: str, *args: str) -> Any:
        return cli_checked(server.aws, service, operation, *args)

    layer = make_zip({"python/shared.py": "WHERE = 'layer'\n"})
    published = checked(lam, "PublishLayerVersion", LayerName="checked-layer",
                        Content={"ZipFile": layer}, CompatibleRuntimes=["python3.11"],
                        Description="one module")  # fmt: skip
    (tmp_path / "layer.zip").write_bytes(layer)
    second = cli("lambda", "PublishLayerVersion", "--layer-name", "checked-layer",
                 "--zip-file", f"fileb://{tmp_path / 'layer.zip'}")  # fmt: skip
    assert (published["Version"], second["Version"]) == (1, 2)
    arn = published["LayerVersionArn"]
    assert checked(lam, "GetLayerVersion", LayerName="checked-layer", VersionNumber=1)[
        "LayerVersionArn"] == arn  # fmt: skip
    assert cli("lambda", "GetLayerVersion", "--layer-name", "checked-layer", "--version-number",
               "1")["LayerVersionArn"] == arn  # fmt: skip
    assert checked(lam, "GetLayerVersionByArn", Arn=arn)["Version"] == 1
    assert cli("lambda", "GetLayerVersionByArn", "--arn", arn)["Version"] == 1
    assert len(checked(lam, "ListLayerVersions", LayerName="checked-layer")["LayerVersions"]) == 2
    listed = cli("lambda", "ListLayerVersions", "--layer-name", "checked-layer")
    assert [v["Version"] for v in listed["LayerVersions"]] == [2, 1]

    made = checked(lam, "CreateFunction", FunctionName="checked", Runtime="python3.11", Role=role,
                   Handler="app.handler", Code={"ZipFile": code.read_bytes()}, Timeout=5,
                   Layers=[arn], Environment={"Variables": {"DB_HOST": "127.0.0.1"}},
                   Tags={"team": "db"})  # fmt: skip
    assert made["State"] == "Pending"
    lam.get_waiter("function_active_v2").wait(FunctionName="checked")
    cli_made = cli("lambda", "CreateFunction", "--function-name", "checked-cli", "--runtime",
                   "python3.12", "--handler", "app.handler", "--role", role, "--zip-file",
                   f"fileb://{code}", "--layers", arn)  # fmt: skip
    assert cli_made["Layers"] == made["Layers"]
    server.aws("lambda", "wait", "function-active-v2", "--function-name", "checked-cli")
    for name in ("checked", "checked-cli"):
        assert checked(lam, "GetFunction", FunctionName=name)["Configuration"]["State"] == "Active"
        assert cli("lambda", "GetFunction", "--function-name", name)["Code"] == {
            "RepositoryType": "S3"}  # fmt: skip
        checked(lam, "GetFunctionConfiguration", FunctionName=name)
        cli("lambda", "GetFunctionConfiguration", "--function-name", name)
    names = [f["FunctionName"] for f in checked(lam, "ListFunctions")["Functions"]]
    assert {"checked", "checked-cli"} <= set(names)
    paged = checked(lam, "ListFunctions", MaxItems=1)
    assert len(paged["Functions"]) == 1 and "NextMarker" in paged
    assert len(cli("lambda", "ListFunctions")["Functions"]) == len(names)

    updated = checked(lam, "UpdateFunctionConfiguration", FunctionName="checked", MemorySize=256,
                      Description="checked")  # fmt: skip
    assert updated["LastUpdateStatus"] == "InProgress"
    lam.get_waiter("function_updated_v2").wait(FunctionName="checked")
    updated = cli("lambda", "UpdateFunctionConfiguration", "--function-name", "checked-cli",
                  "--timeout", "7")  # fmt: skip
    assert updated["Timeout"] == 7
    server.aws("lambda", "wait", "function-updated-v2", "--function-name", "checked-cli")
    checked(lam, "UpdateFunctionCode", FunctionName="checked", ZipFile=code.read_bytes())
    lam.get_waiter("function_updated_v2").wait(FunctionName="checked")
    cli("lambda", "UpdateFunctionCode", "--function-name", "checked-cli", "--zip-file",
        f"fileb://{code}")  # fmt: skip
    server.aws("lambda", "wait", "function-updated-v2", "--function-name", "checked-cli")

    answer = checked(lam, "Invoke", FunctionName="checked", Payload=b'{"a": 1}', LogType="Tail")
    assert json.loads(answer["Payload"].read())["event"] == {"a": 1}
    failed = checked(lam, "Invoke", FunctionName="checked", Payload=b'{"action": "fail"}')
    assert failed["FunctionError"] == "Unhandled"
    assert checked(lam, "Invoke", FunctionName="checked", InvocationType="Event")[
        "StatusCode"] == 202  # fmt: skip
    assert checked(lam, "Invoke", FunctionName="checked", InvocationType="DryRun")[
        "StatusCode"] == 204  # fmt: skip
    out = tmp_path / "out.json"
    for extra in ((), ("--log-type", "Tail"), ("--payload", '{"action": "fail"}'),
                  ("--invocation-type", "Event"), ("--invocation-type", "DryRun")):  # fmt: skip
        cli("lambda", "Invoke", "--function-name", "checked-cli", *extra, str(out))

    assert checked(lam, "PutFunctionConcurrency", FunctionName="checked",
                   ReservedConcurrentExecutions=2) == {"ReservedConcurrentExecutions": 2}
    assert cli("lambda", "PutFunctionConcurrency", "--function-name", "checked-cli",
               "--reserved-concurrent-executions", "3") == {"ReservedConcurrentExecutions": 3}
    assert checked(lam, "GetFunctionConcurrency", FunctionName="checked") == {
        "ReservedConcurrentExecutions": 2}  # fmt: skip
    assert cli("lambda", "GetFunctionConcurrency", "--function-name", "checked-cli") == {
        "ReservedConcurrentExecutions": 3}  # fmt: skip
    settings = checked(lam, "GetAccountSettings")
    assert settings["AccountLimit"]["UnreservedConcurrentExecutions"] <= (
        settings["AccountLimit"]["ConcurrentExecutions"] - 5)
    assert cli("lambda", "GetAccountSettings")["AccountUsage"]["FunctionCount"] >= 2
    checked(lam, "DeleteFunctionConcurrency", FunctionName="checked")
    cli("lambda", "DeleteFunctionConcurrency", "--function-name", "checked-cli")
    assert checked(lam, "GetFunctionConcurrency", FunctionName="checked") == {}
    assert not cli("lambda", "GetFunctionConcurrency", "--function-name", "checked-cli")

    fn_arn, cli_arn = made["FunctionArn"], cli_made["FunctionArn"]
    checked(lam, "TagResource", Resource=fn_arn, Tags={"stage": "test"})
    cli("lambda", "TagResource", "--resource", cli_arn, "--tags", "stage=test,team=db")
    assert checked(lam, "ListTags", Resource=fn_arn)["Tags"] == {"team": "db", "stage": "test"}
    checked(lam, "UntagResource", Resource=fn_arn, TagKeys=["team"])
    cli("lambda", "UntagResource", "--resource", cli_arn, "--tag-keys", "team")
    assert cli("lambda", "ListTags", "--resource", cli_arn)["Tags"] == {"stage": "test"}
    assert checked(lam, "ListTags", Resource=fn_arn)["Tags"] == {"stage": "test"}

    group = "/aws/lambda/checked"
    assert checked(logs, "DescribeLogGroups", logGroupNamePrefix=group)["logGroups"]
    cli("logs", "DescribeLogGroups", "--log-group-name-prefix", "/aws/lambda/checked")
    streams = checked(logs, "DescribeLogStreams", logGroupName=group, orderBy="LastEventTime",
                      descending=True)["logStreams"]  # fmt: skip
    cli("logs", "DescribeLogStreams", "--log-group-name", group, "--log-stream-name-prefix",
        streams[0]["logStreamName"][:10])  # fmt: skip
    stream = streams[0]["logStreamName"]
    events = checked(logs, "GetLogEvents", logGroupName=group, logStreamName=stream,
                     startFromHead=True)["events"]  # fmt: skip
    assert events[0]["message"].startswith("START RequestId: ")
    cli("logs", "GetLogEvents", "--log-group-name", group, "--log-stream-name", stream,
        "--limit", "2")  # fmt: skip
    found = checked(logs, "FilterLogEvents", logGroupName=group, filterPattern="REPORT")
    assert all(e["message"].startswith("REPORT RequestId: ") for e in found["events"])
    cli("logs", "FilterLogEvents", "--log-group-name", group, "--filter-pattern", "ERROR")

    checked(lam, "DeleteFunction", FunctionName="checked")
    cli("lambda", "DeleteFunction", "--function-name", "checked-cli")
    checked(lam, "DeleteLayerVersion", LayerName="checked-layer", VersionNumber=1)
    cli("lambda", "DeleteLayerVersion", "--layer-name", "checked-layer", "--version-number", "2")
    assert checked(lam, "ListLayerVersions", LayerName="checked-layer")["LayerVersions"] == []


CALLER = """
import os
import boto3

KEPT = boto3.client("sts")  # made at init, kept for every invocation

def handler(event, context):
    arn = boto3.client("sts").get_caller_identity()["Arn"]
    assert KEPT.get_caller_identity()["Arn"] == arn
    assert boto3.session.Session().client("sts").get_caller_identity()["Arn"] == arn
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    return {"pid": os.getpid(), "arn": arn, "credentials": [os.environ[n] for n in names]}
"""


def test_short_lived_credentials_are_renewed_in_a_warm_environment(tmp_path: Path) -> None:
    """With `--function-credentials-seconds 6` an environment's role credentials last 6 s and
    are renewed before an invocation when less than 2 s are left: the same process then gets
    new ones, and boto3 in the handler keeps working after the first ones expired, which STS
    really refuses from then on."""
    lifetime = 6
    with SluiceServer(options=("--function-credentials-seconds", str(lifetime))) as server:
        iam = server.client("iam")
        role = iam.create_role(RoleName="short", AssumeRolePolicyDocument=json.dumps(
            TRUST_LAMBDA))["Role"]["Arn"]  # fmt: skip
        lam = server.client("lambda")
        lam.create_function(FunctionName="caller", Runtime="python3.11", Role=role,
                            Handler="app.handler", Code={"ZipFile": make_zip({"app.py": CALLER})},
                            Timeout=5)  # fmt: skip
        lam.get_waiter("function_active_v2").wait(FunctionName="caller")

        def call() -> dict[str, Any]:
            answer = lam.invoke(FunctionName="caller")
            body: dict[str, Any] = json.loads(answer["Payload"].read())
            assert "FunctionError" not in answer, body
            assert body["arn"].endswith(":assumed-role/short/caller")
            return body

        minted = time.time()  # the first credentials are made after this
        first = call()
        again = call()  # well within their lifetime: the same credentials
        assert (again["pid"], again["credentials"]) == (first["pid"], first["credentials"])
        time.sleep(max(0.0, minted + lifetime + 0.5 - time.time()))

        key, secret, token = first["credentials"]
        expired = server.session(aws_access_key_id=key, aws_secret_access_key=secret,
                                 aws_session_token=token).client(
            "sts", endpoint_url=server.endpoint, config=_no_retries())  # fmt: skip
        with pytest.raises(expired.exceptions.ClientError) as refused:
            expired.get_caller_identity()
        assert refused.value.response["Error"]["Code"] == "ExpiredToken"
        renewed = call()  # the same environment, with new credentials that work
        assert renewed["pid"] == first["pid"]
        new_key, _, new_token = renewed["credentials"]
        assert new_key != key and new_token != token and new_key.startswith("ASIA")
