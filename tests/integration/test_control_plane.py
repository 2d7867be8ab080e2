"""The recipe, run with the real aws CLI and boto3 against `sluice server`, then each way in shut.

For each engine a throwaway database listens on its own loopback address at
the engine's standard port (as an RDS instance would), is adopted as a DB
instance, and the recipe's steps 1-8 (examples/cookbook-403/recipe.sh,
command for command plus `--endpoint-url`) build a proxy in front of it.
A client then connects the way the recipe's function does: the function's role
assumed through STS, an auth token from boto3's generate_db_auth_token, TLS,
and a connection from an address in the function's security group.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from helpers import wait_for
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.controlplane import SluiceServer

RECIPE = Path(__file__).parents[2] / "examples" / "cookbook-403" / "recipe.sh"
DB_USER = "admin"
DB_PASSWORD = "Recipe-Secret-9"
FUNCTION_ROLE = "DBAppFunctionRole"


class Env:
    """What the recipe's earlier chapters leave behind, and what its steps make."""

    def __init__(self, server: SluiceServer, family: str, db: MariaDbCluster | PgCluster) -> None:
        self.server = server
        self.family = family
        self.db = db
        self.port = 3306 if family == "MYSQL" else 5432
        self.vars: dict[str, str] = {}
        self.eni_ip = ""

    @property
    def endpoint(self) -> str:
        return self.vars["RDS_PROXY_ENDPOINT"]

    @property
    def ca_file(self) -> Path:
        """The CA the endpoints' certificates are issued by (like RDS's CA bundle)."""
        return self.server.data_dir / "tls" / "ca.pem"


def _addr(server: SluiceServer, host: int) -> str:
    net = ipaddress.ip_network(server.vpc_cidr)
    return str(net.network_address + 200 * 256 + host)  # outside the default subnets


@pytest.fixture(scope="module")
def server() -> Iterator[SluiceServer]:
    with SluiceServer() as srv:
        yield srv
        print(f"---- sluice server log ----\n{srv.log_tail(120)}")


@pytest.fixture(scope="module")
def pg_server() -> Iterator[SluiceServer]:
    """A second account: the recipe's fixed names (role, policy, group) are per account."""
    with SluiceServer() as srv:
        yield srv
        print(f"---- sluice server log (PostgreSQL) ----\n{srv.log_tail(120)}")


def _prepare(server: SluiceServer, family: str, db: Any, name: str) -> Env:
    env = Env(server, family, db)
    aws = server.aws
    ident = server.aws("sts", "get-caller-identity")
    vpc = aws("ec2", "describe-vpcs", "--query", "Vpcs[0].VpcId", "--output", "text")
    subnets = aws("ec2", "describe-subnets", "--query", "Subnets[].SubnetId", "--output", "text")
    rds_sg = aws("ec2", "create-security-group", "--group-name", f"{name}-db-sg",
                 "--description", "database", "--vpc-id", vpc, "--query", "GroupId",
                 "--output", "text")  # fmt: skip
    engine = "mariadb" if family == "MYSQL" else "postgres"
    adopt = [
        "-m", "sluice", "db-instance", "adopt", "--identifier", f"{name}-db", "--engine", engine,
        "--host", db.host, "--port", str(db.port), "--security-group", rds_sg,
        "--data-dir", str(server.data_dir),
    ]  # fmt: skip
    subprocess.run([sys.executable, *adopt], check=True, capture_output=True, timeout=60)
    secret = aws("secretsmanager", "create-secret", "--name", f"{name}-secret",
                 "--secret-string", json.dumps({"username": DB_USER, "password": DB_PASSWORD}),
                 "--query", "ARN", "--output", "text")  # fmt: skip
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
             "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ident['Account']}:root"},
             "Action": "sts:AssumeRole"},
        ],
    }  # fmt: skip
    role = f"{FUNCTION_ROLE}{name}"
    trust_text = json.dumps(trust)
    aws("iam", "create-role", "--role-name", role, "--assume-role-policy-document", trust_text)
    fn_sg = aws("ec2", "create-security-group", "--group-name", f"{name}-function-sg",
                "--description", "function", "--vpc-id", vpc, "--query", "GroupId",
                "--output", "text")  # fmt: skip
    first_subnet = subnets.split()[0]
    env.eni_ip = aws("ec2", "create-network-interface", "--subnet-id", first_subnet,
                     "--groups", fn_sg, "--query", "NetworkInterface.PrivateIpAddress",
                     "--output", "text")  # fmt: skip
    env.vars = {
        "VPC_ID": vpc, "DB_NAME": name, "RDS_SECRET_ARN": secret,
        "AWS_ACCOUNT_ID": ident["Account"], "AWS_REGION": "us-east-1",
        "ISTOLATED_SUBNETS": subnets, "RDS_SG": rds_sg, "RDS_ID": f"{name}-db",
        "DB_APP_FUNCTION_ROLE_NAME": role, "DB_APP_FUNCTION_SG_ID": fn_sg,
        "ENDPOINT_URL": server.endpoint, "ENGINE_FAMILY": family, "DB_PORT": str(env.port),
    }  # fmt: skip
    return env


def _run_recipe(env: Env) -> None:
    proc = subprocess.run(
        ["bash", str(RECIPE)], env={**env.server.env(), **env.vars,
        "WORK_DIR": str(env.server.data_dir / "recipe"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("RDS_PROXY_"):
            env.vars[key] = value


def _wait_target_available(env: Env) -> dict[str, Any]:
    rds = env.server.client("rds")
    health: dict[str, Any] = {}

    def available() -> bool:
        nonlocal health
        targets = rds.describe_db_proxy_targets(DBProxyName=env.vars["DB_NAME"])["Targets"]
        health = targets[0]["TargetHealth"] if targets else {}
        return health.get("State") == "AVAILABLE"

    assert wait_for(available, timeout=40, interval=0.5), health
    return health


@pytest.fixture(scope="module")
def mysql_env(server: SluiceServer) -> Iterator[Env]:
    with MariaDbCluster(host=_addr(server, 10), port=3306) as db:
        db.create_user(DB_USER, DB_PASSWORD, host="%")
        db.create_database("appdb", owner=DB_USER)
        env = _prepare(server, "MYSQL", db, "mysqldb")
        _run_recipe(env)
        yield env


@pytest.fixture(scope="module")
def pg_env(pg_server: SluiceServer) -> Iterator[Env]:
    with PgCluster(host=_addr(pg_server, 11), port=5432) as db:
        db.create_user(DB_USER, DB_PASSWORD)
        db.create_database("appdb", owner=DB_USER)
        env = _prepare(pg_server, "POSTGRESQL", db, "pgdb")
        _run_recipe(env)
        yield env


# ---- clients as the function would be ----


def _function_credentials(env: Env, role: str | None = None) -> dict[str, str]:
    sts = env.server.client("sts")
    name = role or env.vars["DB_APP_FUNCTION_ROLE_NAME"]
    arn = f"arn:aws:iam::{env.vars['AWS_ACCOUNT_ID']}:role/{name}"
    creds = sts.assume_role(RoleArn=arn, RoleSessionName="function")["Credentials"]
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


def _token(env: Env, creds: dict[str, str] | None = None, user: str = DB_USER) -> str:
    rds = env.server.session(**(creds or _function_credentials(env))).client("rds")
    return str(rds.generate_db_auth_token(env.endpoint, env.port, user))


def _mysql(env: Env, password: str, bind: str | None = "eni", **extra: Any) -> Any:
    kwargs: dict[str, Any] = {
        "host": env.endpoint, "port": env.port, "user": DB_USER, "password": password,
        "database": "appdb", "ssl": {"ca": str(env.ca_file), "check_hostname": True},
        "connect_timeout": 10,
    }  # fmt: skip
    if bind:
        kwargs["bind_address"] = env.eni_ip if bind == "eni" else bind
    kwargs.update(extra)
    return pymysql.connect(**kwargs)


def _pg(env: Env, password: str, sslmode: str = "verify-full") -> psycopg.Connection[Any]:
    """As a careful client connects: the endpoint's certificate verified against the CA."""
    return psycopg.connect(
        host=env.endpoint, port=env.port, user=DB_USER, password=password, dbname="appdb",
        sslmode=sslmode, sslrootcert=str(env.ca_file), connect_timeout=10, autocommit=True,
    )  # fmt: skip


def _refused_mysql(env: Env, password: str, **kw: Any) -> str:
    with pytest.raises(pymysql.err.OperationalError) as info:
        _mysql(env, password, **kw).close()
    return str(info.value)


def _refused_pg(env: Env, password: str, **kw: Any) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        _pg(env, password, **kw).close()
    return str(info.value)


# ---- MySQL: the recipe itself ----


def test_recipe_builds_a_mysql_proxy_that_a_token_client_uses(mysql_env: Env) -> None:
    env = mysql_env
    rds = env.server.client("rds")
    proxy = rds.describe_db_proxies(DBProxyName=env.vars["DB_NAME"])["DBProxies"][0]
    assert proxy["Status"] == "available"
    assert proxy["RequireTLS"] is True
    assert proxy["Auth"][0]["IAMAuth"] == "REQUIRED"
    assert proxy["DBProxyArn"].split(":")[6] == env.vars["RDS_PROXY_ID"]
    assert env.vars["RDS_PROXY_ID"].startswith("prx-")
    assert ipaddress.ip_address(env.endpoint) in ipaddress.ip_network(env.server.vpc_cidr)
    assert _wait_target_available(env) == {"State": "AVAILABLE"}
    with _mysql(env, _token(env)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS orders (id INT PRIMARY KEY, item TEXT)")
        cur.execute("REPLACE INTO orders VALUES (1, 'tea')")
        conn.commit()
        cur.execute("SELECT item, CURRENT_USER() FROM orders WHERE id = 1")
        item, who = cur.fetchone()
    assert item == "tea"
    assert who.startswith(f"{DB_USER}@")


# The recipe's function, as its authors wrote it: it reads DB_HOST and AWS_REGION, makes an
# auth token with its role's credentials and connects to the proxy with TLS, trusting the CA
# its layer brings (the layer also brings PyMySQL). It binds nothing: its VpcConfig puts it in
# its security group, which the proxy's step-8 rule admits.
RECIPE_FUNCTION = """
import os

import boto3
import pymysql


def lambda_handler(event, context):
    host = os.environ["DB_HOST"]
    region = os.environ["AWS_REGION"]
    client = boto3.session.Session().client("rds", region_name=region)
    token = client.generate_db_auth_token(host, 3306, "admin")
    connection = pymysql.connect(host=host, user="admin", passwd=token, port=3306,
                                 ssl={"ca": "/opt/python/sluice-ca.pem"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        (user,) = cursor.fetchone()
    connection.close()
    return f"Connected to {host} through the proxy as {user}"
"""
RECIPE_FUNCTION_NAME = "DBAppFunction"
STEP_9 = "\n# 9\n"  # recipe.sh goes on to step 9 and the check when a function is named


def _layer(env: Env, tmp: Path, packages: tuple[str, ...]) -> str:
    """The function's layer, published with the CLI: the installed `packages` (top-level
    modules, as `pip install --target python` lays them out) and the proxy's CA, under
    python/."""
    path = tmp / "layer.zip"
    site = Path(pymysql.__file__).parent.parent
    with zipfile.ZipFile(path, "w") as archive:
        for name in packages:
            top = site / name if (site / name).is_dir() else site / f"{name}.py"
            for file in sorted([top, *top.rglob("*")] if top.is_dir() else [top]):
                if file.is_file() and "__pycache__" not in file.parts:
                    archive.write(file, f"python/{file.relative_to(site)}")
        archive.write(env.ca_file, "python/sluice-ca.pem")
    arn: str = env.server.aws("lambda", "publish-layer-version", "--layer-name", "drivers-ca",
                              "--zip-file", f"fileb://{path}", "--compatible-runtimes",
                              "python3.11", "--query", "LayerVersionArn", "--output", "text")
    return arn  # fmt: skip


def _create(env: Env, tmp: Path, name: str, *vpc: str, source: str = RECIPE_FUNCTION,
            packages: tuple[str, ...] = ("pymysql",)) -> None:  # fmt: skip
    """The function made as its chapter makes it: DB_HOST still names the database itself."""
    code = tmp / "function.zip"
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("lambda_function.py", source)
    aws = env.server.aws
    role = f"arn:aws:iam::{env.vars['AWS_ACCOUNT_ID']}:role/{env.vars['DB_APP_FUNCTION_ROLE_NAME']}"
    aws("lambda", "create-function", "--function-name", name, "--runtime", "python3.11",
        "--handler", "lambda_function.lambda_handler", "--role", role,
        "--zip-file", f"fileb://{code}", "--layers", _layer(env, tmp, packages), "--timeout", "30",
        "--environment", f"Variables={{DB_HOST={env.db.host}}}", *vpc)  # fmt: skip
    aws("lambda", "wait", "function-active", "--function-name", name)


def _steps_9_and_check(env: Env, tmp: Path, name: str) -> tuple[str, str]:
    """Step 9 and `aws lambda invoke ... response.json && cat response.json`, as the recipe
    runs them: (what the commands printed, response.json)."""
    variables = {"DB_APP_FUNCTION_NAME": name, "RDS_PROXY_ENDPOINT": env.endpoint,
                 "ENDPOINT_URL": env.server.endpoint}  # fmt: skip
    steps = "set -euo pipefail\n" + RECIPE.read_text().split(STEP_9, 1)[1]
    proc = subprocess.run(
        ["bash", "-c", steps], cwd=tmp, capture_output=True, text=True, timeout=120,
        env={**env.server.env(), **variables,
             "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, (tmp / "response.json").read_text()


def _invoke(env: Env, tmp: Path, name: str) -> tuple[dict[str, Any], Any]:
    """The check: `aws lambda invoke --function-name $DB_APP_FUNCTION_NAME response.json`."""
    meta = env.server.aws("lambda", "invoke", "--function-name", name, "response.json", cwd=tmp)
    return meta, json.loads((tmp / "response.json").read_text())


@pytest.fixture(scope="module")
def recipe_function(mysql_env: Env, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The recipe's function in the function's security group and the VPC's subnets."""
    subnets = ",".join(mysql_env.vars["ISTOLATED_SUBNETS"].split())
    vpc = f"SubnetIds={subnets},SecurityGroupIds={mysql_env.vars['DB_APP_FUNCTION_SG_ID']}"
    _wait_target_available(mysql_env)
    _create(mysql_env, tmp_path_factory.mktemp("fn"), RECIPE_FUNCTION_NAME, "--vpc-config", vpc)
    return RECIPE_FUNCTION_NAME


def test_recipe_function_answers_through_the_proxy(
    mysql_env: Env, recipe_function: str, tmp_path: Path
) -> None:
    printed, response = _steps_9_and_check(mysql_env, tmp_path, recipe_function)
    expected = f"Connected to {mysql_env.endpoint} through the proxy as {DB_USER}@"
    assert str(json.loads(response)).startswith(expected), response
    assert printed.rstrip().endswith(response.strip())  # `cat response.json`
    assert '"FunctionError"' not in printed
    config = mysql_env.server.client("lambda").get_function_configuration(
        FunctionName=recipe_function)  # fmt: skip
    assert config["Environment"]["Variables"] == {"DB_HOST": mysql_env.endpoint}


def test_recipe_steps_8_9_and_check_with_boto3(mysql_env: Env, tmp_path: Path) -> None:
    """The same three steps as boto3 calls, for a second function in a group of its own."""
    env = mysql_env
    ec2, lam = env.server.client("ec2"), env.server.client("lambda")
    group = ec2.create_security_group(GroupName="boto-function-sg", Description="function",
                                      VpcId=env.vars["VPC_ID"])["GroupId"]  # fmt: skip
    vpc = f"SubnetIds={env.vars['ISTOLATED_SUBNETS'].split()[0]},SecurityGroupIds={group}"
    _wait_target_available(env)
    _create(env, tmp_path, "DBAppFunctionBoto3", "--vpc-config", vpc)
    ec2.authorize_security_group_ingress(  # 8
        GroupId=env.vars["RDS_PROXY_SG_ID"], IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
            "UserIdGroupPairs": [{"GroupId": group}]}])  # fmt: skip
    lam.update_function_configuration(  # 9
        FunctionName="DBAppFunctionBoto3", Environment={"Variables": {"DB_HOST": env.endpoint}})
    out = lam.invoke(FunctionName="DBAppFunctionBoto3")  # check
    answer = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, answer
    assert answer.startswith(f"Connected to {env.endpoint} through the proxy as {DB_USER}@")
    lam.delete_function(FunctionName="DBAppFunctionBoto3")


def test_detaching_step_3s_policy_refuses_the_function(
    mysql_env: Env, recipe_function: str, tmp_path: Path
) -> None:
    env, aws = mysql_env, mysql_env.server.aws
    _steps_9_and_check(env, tmp_path, recipe_function)
    policy = ("--role-name", env.vars["DB_APP_FUNCTION_ROLE_NAME"], "--policy-arn",
              f"arn:aws:iam::{env.vars['AWS_ACCOUNT_ID']}:policy/AWSCookbook403RdsIamPolicy")
    aws("iam", "detach-role-policy", *policy)  # fmt: skip
    try:
        meta, error = _invoke(env, tmp_path, recipe_function)
    finally:
        aws("iam", "attach-role-policy", *policy)
    assert meta["FunctionError"] == "Unhandled"
    assert error["errorType"] == "OperationalError"
    # the proxy's own refusal, as MySQL words it, reaches the caller unchanged
    assert error["errorMessage"].startswith(f"(1045, \"Access denied for user '{DB_USER}'@")
    assert "in lambda_handler\n" in error["stackTrace"][0]  # from the function's own frame
    meta, answer = _invoke(env, tmp_path, recipe_function)  # attached again: admitted
    assert "FunctionError" not in meta, answer


def test_revoking_step_8_shuts_the_function_out(
    mysql_env: Env, recipe_function: str, tmp_path: Path
) -> None:
    env, aws = mysql_env, mysql_env.server.aws
    _steps_9_and_check(env, tmp_path, recipe_function)
    step_8 = ("--protocol", "tcp", "--port", "3306", "--source-group",
              env.vars["DB_APP_FUNCTION_SG_ID"], "--group-id", env.vars["RDS_PROXY_SG_ID"])
    aws("ec2", "revoke-security-group-ingress", *step_8)
    try:
        meta, error = _invoke(env, tmp_path, recipe_function)
    finally:
        aws("ec2", "authorize-security-group-ingress", *step_8)
    assert meta["FunctionError"] == "Unhandled"
    assert error["errorType"] == "OperationalError"
    assert "1130" in error["errorMessage"] and "security group" in error["errorMessage"]
    meta, answer = _invoke(env, tmp_path, recipe_function)  # the rule back: admitted again
    assert "FunctionError" not in meta, answer


def test_a_function_without_vpc_config_is_refused(mysql_env: Env, tmp_path: Path) -> None:
    _wait_target_available(mysql_env)
    _create(mysql_env, tmp_path, "DBAppFunctionNoVpc")
    _steps_9_and_check(mysql_env, tmp_path, "DBAppFunctionNoVpc")
    meta, error = _invoke(mysql_env, tmp_path, "DBAppFunctionNoVpc")
    assert meta["FunctionError"] == "Unhandled"
    assert "1130" in error["errorMessage"] and "outside" in error["errorMessage"]
    mysql_env.server.aws("lambda", "delete-function", "--function-name", "DBAppFunctionNoVpc")


def test_every_way_into_the_mysql_proxy_is_shut(
    mysql_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = mysql_env
    _wait_target_available(env)
    good = _mysql(env, _token(env), autocommit=True)
    creds = _function_credentials(env)

    # an expired token: made 20 minutes ago
    import botocore.auth

    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    with monkeypatch.context() as m:
        m.setattr(botocore.auth, "get_current_datetime", lambda: past)
        old_token = _token(env, creds)
    assert "Access denied" in _refused_mysql(env, old_token)

    # a token signed with a wrong secret key
    wrong = {**creds, "aws_secret_access_key": "x" * 40}
    assert "Access denied" in _refused_mysql(env, _token(env, wrong))

    # an IAM user whose policies do not allow rds-db:connect
    iam = env.server.client("iam")
    iam.create_user(UserName="nopolicy")
    key = iam.create_access_key(UserName="nopolicy")["AccessKey"]
    plain = {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }
    assert "Access denied" in _refused_mysql(env, _token(env, plain))

    # an explicit Deny beside the recipe's Allow
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "rds-db:connect", "Resource": "*"}],
    }
    role = env.vars["DB_APP_FUNCTION_ROLE_NAME"]
    iam.put_role_policy(RoleName=role, PolicyName="deny-db", PolicyDocument=json.dumps(deny))
    assert "Access denied" in _refused_mysql(env, _token(env, creds))
    iam.delete_role_policy(RoleName=role, PolicyName="deny-db")

    # no ingress rule for the client's address (not in the function's security group)
    text = _refused_mysql(env, _token(env, creds), bind=None)
    assert "1130" in text and "security group" in text

    # a plaintext client
    text = _refused_mysql(env, _token(env, creds), ssl=None, ssl_disabled=True)
    assert "3159" in text or "TLS" in text

    with good.cursor() as cur:  # the allowed client kept working through all of it
        cur.execute("SELECT item FROM orders WHERE id = 1")
        assert cur.fetchone() == ("tea",)
    good.close()
    with _mysql(env, _token(env, creds)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")


def test_proxy_role_must_be_allowed_to_read_the_secret(mysql_env: Env) -> None:
    env = mysql_env
    env.db.create_user("reader", "Reader-Secret-3", host="%")
    aws = env.server.aws
    secret = aws("secretsmanager", "create-secret", "--name", "reader-secret", "--secret-string",
                 json.dumps({"username": "reader", "password": "Reader-Secret-3"}),
                 "--query", "ARN", "--output", "text")  # fmt: skip
    auth = [
        {"AuthScheme": "SECRETS", "SecretArn": env.vars["RDS_SECRET_ARN"], "IAMAuth": "REQUIRED"},
        {"AuthScheme": "SECRETS", "SecretArn": secret, "IAMAuth": "REQUIRED"},
    ]
    name = env.vars["DB_NAME"]
    aws("rds", "modify-db-proxy", "--db-proxy-name", name, "--auth", json.dumps(auth))
    deny = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": secret}]}
    aws("iam", "put-role-policy", "--role-name", "AWSCookbook403RDSProxy",
        "--policy-name", "no-reader", "--policy-document", json.dumps(deny))  # fmt: skip
    rds = env.server.client("rds")
    assert wait_for(lambda: rds.describe_db_proxies(DBProxyName=env.vars["DB_NAME"])[
        "DBProxies"][0]["Status"] == "available", timeout=20)  # fmt: skip
    token = _token(env, user="reader")
    text = _refused_mysql(env, token, user="reader", database=None)
    assert "may not read the secret" in text
    aws("iam", "delete-role-policy", "--role-name", "AWSCookbook403RDSProxy",
        "--policy-name", "no-reader")  # fmt: skip
    reader = {"user": "reader", "database": None}
    with _mysql(env, _token(env, user="reader"), **reader) as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith("reader@")
    # a new password in the secret is used for new database connections at once
    env.db.sql("ALTER USER 'reader'@'%' IDENTIFIED BY 'Reader-Secret-4'")
    aws("secretsmanager", "put-secret-value", "--secret-id", secret, "--secret-string",
        json.dumps({"username": "reader", "password": "Reader-Secret-4"}))  # fmt: skip
    with _mysql(env, _token(env, user="reader"), **reader) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")


def test_security_group_rules_apply_at_once(mysql_env: Env) -> None:
    env = mysql_env
    aws = env.server.aws
    proxy_sg = env.vars["RDS_PROXY_SG_ID"]
    fn_sg = env.vars["DB_APP_FUNCTION_SG_ID"]
    rule = ["--protocol", "tcp", "--port", str(env.port),
            "--source-group", fn_sg, "--group-id", proxy_sg]  # fmt: skip
    aws("ec2", "revoke-security-group-ingress", *rule)
    assert "1130" in _refused_mysql(env, _token(env))
    aws("ec2", "authorize-security-group-ingress", *rule)
    with _mysql(env, _token(env)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    # the database's group must admit the proxy: without it the target fails health checks
    db_rule = ["--protocol", "tcp", "--port", str(env.port), "--source-group", proxy_sg,
               "--group-id", env.vars["RDS_SG"]]  # fmt: skip
    aws("ec2", "revoke-security-group-ingress", *db_rule)
    rds = env.server.client("rds")

    def health() -> dict[str, Any]:
        return rds.describe_db_proxy_targets(DBProxyName=env.vars["DB_NAME"])["Targets"][0][
            "TargetHealth"
        ]

    assert wait_for(lambda: health().get("Reason") == "CONNECTION_FAILED", timeout=30), health()
    assert health()["State"] == "UNAVAILABLE"
    aws("ec2", "authorize-security-group-ingress", *db_rule)
    _wait_target_available(env)


# ---- PostgreSQL ----


def test_recipe_builds_a_postgres_proxy(pg_env: Env) -> None:
    env = pg_env
    _wait_target_available(env)
    # psql-style clients cannot bind a source address: admit this host by CIDR instead
    assert "security group" in _refused_pg(env, _token(env))
    env.server.aws("ec2", "authorize-security-group-ingress", "--group-id",
                   env.vars["RDS_PROXY_SG_ID"], "--protocol", "tcp", "--port", "5432",
                   "--cidr", "127.0.0.1/32")  # fmt: skip
    with _pg(env, _token(env)) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == (DB_USER, "appdb")
    assert "SSL" in _refused_pg(env, _token(env), sslmode="disable") or "TLS" in _refused_pg(
        env, _token(env), sslmode="disable"
    )
    assert "password authentication failed" in _refused_pg(env, "not-a-token")


# The recipe's function written for PostgreSQL with psycopg: libpq connects from C, not through
# Python's socket module. It also says which address its connection came from.
PG_FUNCTION = """
import os
import socket
import boto3
import psycopg

def lambda_handler(event, context):
    host = os.environ["DB_HOST"]
    rds = boto3.session.Session().client("rds", region_name=os.environ["AWS_REGION"])
    token = rds.generate_db_auth_token(host, 5432, "admin")
    with psycopg.connect(host=host, port=5432, user="admin", password=token, dbname="appdb",
                         sslmode="verify-full", sslrootcert="/opt/python/sluice-ca.pem") as conn:
        (user,) = conn.execute("SELECT current_user").fetchone()
        with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
            source = sock.getsockname()[0]
    return {"user": user, "source": source}
"""


# psycopg with its compiled libpq, as `pip install --target python "psycopg[binary]"` lays it out
PSYCOPG = ("psycopg", "psycopg_binary", "psycopg_binary.libs", "typing_extensions")


def test_a_psycopg_function_in_the_vpc_is_admitted_by_step_8(pg_env: Env, tmp_path: Path) -> None:
    env, aws = pg_env, pg_env.server.aws
    _wait_target_available(env)
    subnets = ",".join(env.vars["ISTOLATED_SUBNETS"].split())
    vpc = f"SubnetIds={subnets},SecurityGroupIds={env.vars['DB_APP_FUNCTION_SG_ID']}"
    _create(env, tmp_path, "PgAppFunction", "--vpc-config", vpc, source=PG_FUNCTION,
            packages=PSYCOPG)
    _steps_9_and_check(env, tmp_path, "PgAppFunction")
    interface = aws("ec2", "describe-network-interfaces", "--filters",
                    "Name=interface-type,Values=lambda", "--query",
                    "NetworkInterfaces[0].PrivateIpAddress", "--output", "text")  # fmt: skip
    meta, answer = _invoke(env, tmp_path, "PgAppFunction")
    assert "FunctionError" not in meta, answer
    assert answer == {"user": DB_USER, "source": interface}
    step_8 = ("--protocol", "tcp", "--port", "5432", "--source-group",
              env.vars["DB_APP_FUNCTION_SG_ID"], "--group-id", env.vars["RDS_PROXY_SG_ID"])
    aws("ec2", "revoke-security-group-ingress", *step_8)
    try:
        meta, error = _invoke(env, tmp_path, "PgAppFunction")
    finally:
        aws("ec2", "authorize-security-group-ingress", *step_8)
    assert meta["FunctionError"] == "Unhandled"
    assert error["errorType"] == "OperationalError"
    assert "security group" in error["errorMessage"] and interface in error["errorMessage"]
    aws("lambda", "delete-function", "--function-name", "PgAppFunction")


def test_a_psycopg_function_without_vpc_config_is_refused_by_any_rule(
    pg_env: Env, tmp_path: Path
) -> None:
    env, aws = pg_env, pg_env.server.aws
    _wait_target_available(env)
    _create(env, tmp_path, "PgAppFunctionNoVpc", source=PG_FUNCTION, packages=PSYCOPG)
    _steps_9_and_check(env, tmp_path, "PgAppFunctionNoVpc")
    everyone = ("--group-id", env.vars["RDS_PROXY_SG_ID"], "--protocol", "tcp", "--port", "5432",
                "--cidr", "0.0.0.0/0")  # fmt: skip
    aws("ec2", "authorize-security-group-ingress", *everyone)
    try:
        meta, error = _invoke(env, tmp_path, "PgAppFunctionNoVpc")
    finally:
        aws("ec2", "revoke-security-group-ingress", *everyone)
    assert meta["FunctionError"] == "Unhandled"
    assert error["errorType"] == "OperationalError"
    assert "outside" in error["errorMessage"] and "VpcConfig" in error["errorMessage"]
    aws("lambda", "delete-function", "--function-name", "PgAppFunctionNoVpc")


# ---- the API itself ----


def test_unsigned_and_badly_signed_calls_are_refused(server: SluiceServer) -> None:
    proc = server.aws("rds", "describe-db-proxies", "--no-sign-request", check=False)
    assert proc.returncode != 0 and "MissingAuthenticationToken" in proc.stderr
    import botocore.exceptions

    bad = server.client("rds", aws_secret_access_key="y" * 40)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        bad.describe_db_proxies()
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    unknown = server.client("sts", aws_access_key_id="AKIA" + "Z" * 16)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        unknown.get_caller_identity()
    assert info.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_restart_keeps_everything(server: SluiceServer, mysql_env: Env) -> None:
    before = server.client("rds").describe_db_proxies()["DBProxies"]
    server.restart()
    rds = server.client("rds")
    after = rds.describe_db_proxies()["DBProxies"]
    assert [(p["DBProxyName"], p["DBProxyArn"], p["Endpoint"]) for p in after] == [
        (p["DBProxyName"], p["DBProxyArn"], p["Endpoint"]) for p in before
    ]
    assert all(p["Status"] == "available" for p in after)
    _wait_target_available(mysql_env)
    with _mysql(mysql_env, _token(mysql_env)) as conn, conn.cursor() as cur:
        cur.execute("SELECT item FROM orders WHERE id = 1")
        assert cur.fetchone() == ("tea",)
    secret = server.client("secretsmanager").get_secret_value(
        SecretId=mysql_env.vars["RDS_SECRET_ARN"]
    )
    assert json.loads(secret["SecretString"])["password"] == DB_PASSWORD
    state = (server.data_dir / "state.db").read_bytes()
    assert DB_PASSWORD.encode() not in state
    log = server.log_text()  # no password, token or secret key was ever logged
    assert DB_PASSWORD not in log and "X-Amz-Signature" not in log
    profile = server.profile.read_text()
    secret_key = profile.split("aws_secret_access_key = ")[1].split()[0]
    assert secret_key not in log and secret_key.encode() not in state


def test_read_only_endpoint_is_refused_with_an_aws_error(mysql_env: Env) -> None:
    """The aws CLI sees the refusal as AWS would word a parameter error, and nothing is made."""
    aws, name = mysql_env.server.aws, mysql_env.vars["DB_NAME"]
    subnets = mysql_env.vars["ISTOLATED_SUBNETS"].split()
    proc = aws("rds", "create-db-proxy-endpoint", "--db-proxy-name", name,
               "--db-proxy-endpoint-name", "reader", "--target-role", "READ_ONLY",
               "--vpc-subnet-ids", *subnets, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "(InvalidParameterCombination)" in proc.stderr
    assert "READ_ONLY is not supported yet" in proc.stderr and "read replicas" in proc.stderr
    listed = aws("rds", "describe-db-proxy-endpoints", "--db-proxy-name", name)
    assert "reader" not in [e["DBProxyEndpointName"] for e in listed["DBProxyEndpoints"]]


def test_target_group_settings_reach_the_running_proxy(mysql_env: Env) -> None:
    """ModifyDBProxyTargetGroup applies to the running proxy; an idle client stays connected."""
    env = mysql_env
    rds = env.server.client("rds")
    name = env.vars["DB_NAME"]
    idle = _mysql(env, _token(env), autocommit=True)
    with idle.cursor() as cur:
        cur.execute("SET SESSION optimizer_search_depth = 7")  # untracked: pins (logged)
    assert wait_for(lambda: "pinned to its connection: SET optimizer_search_depth"
                    in env.server.log_text(), timeout=5)  # fmt: skip
    config = rds.modify_db_proxy_target_group(
        TargetGroupName="default",
        DBProxyName=name,
        ConnectionPoolConfig={
            "MaxConnectionsPercent": 50,
            "ConnectionBorrowTimeout": 30,
            "InitQuery": "SET SESSION sql_mode = 'ANSI_QUOTES'",
            "SessionPinningFilters": ["EXCLUDE_VARIABLE_SETS"],
        },
    )["DBProxyTargetGroup"]["ConnectionPoolConfig"]
    assert config["MaxConnectionsPercent"] == 50
    assert config["SessionPinningFilters"] == ["EXCLUDE_VARIABLE_SETS"]
    time.sleep(1.5)  # the runtime applies documents within a second
    with idle.cursor() as cur:  # still connected: idle clients are not dropped
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    idle.close()
    with _mysql(env, _token(env), autocommit=True) as fresh, fresh.cursor() as cur:
        cur.execute("SELECT @@SESSION.sql_mode")
        assert "ANSI_QUOTES" in cur.fetchone()[0]  # the new InitQuery ran
        before = env.server.log_text().count("pinned to its connection: SET max_sort_length")
        cur.execute("SET SESSION max_sort_length = 2048")  # not pinned under the filter
        time.sleep(0.3)
        after = env.server.log_text().count("pinned to its connection: SET max_sort_length")
        assert before == after == 0
    rds.modify_db_proxy_target_group(
        TargetGroupName="default",
        DBProxyName=name,
        ConnectionPoolConfig={"MaxConnectionsPercent": 100, "InitQuery": "",
                              "SessionPinningFilters": []},
    )  # fmt: skip


def test_mariadb_cli_connects_with_a_token(mysql_env: Env) -> None:
    env = mysql_env
    token = env.server.aws("rds", "generate-db-auth-token", "--hostname", env.endpoint,
                           "--port", str(env.port), "--username", DB_USER)  # fmt: skip
    # the mariadb client cannot bind a source address: admit this host by CIDR for a moment
    rule = ["--group-id", env.vars["RDS_PROXY_SG_ID"], "--protocol", "tcp",
            "--port", str(env.port), "--cidr", "127.0.0.1/32"]  # fmt: skip
    env.server.aws("ec2", "authorize-security-group-ingress", *rule)
    try:
        proc = subprocess.run(
            ["mariadb", "-h", env.endpoint, "-P", str(env.port), "-u", DB_USER,
             "--ssl", f"--ssl-ca={env.ca_file}", "--ssl-verify-server-cert",
             "-N", "-e", "SELECT CURRENT_USER()", "appdb"],
            capture_output=True, text=True, timeout=30, env={**os.environ, "MYSQL_PWD": token},
        )  # fmt: skip
    finally:
        env.server.aws("ec2", "revoke-security-group-ingress", *rule)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(f"{DB_USER}@")


def test_psql_connects_with_a_token(pg_env: Env) -> None:
    env = pg_env
    token = env.server.aws("rds", "generate-db-auth-token", "--hostname", env.endpoint,
                           "--port", "5432", "--username", DB_USER)  # fmt: skip
    conninfo = (f"host={env.endpoint} port=5432 user={DB_USER} dbname=appdb "
                f"sslmode=verify-full sslrootcert={env.ca_file}")  # fmt: skip
    psql = Path(env.db.bin_dir) / "psql"
    proc = subprocess.run(
        [str(psql), conninfo, "-Atc", "SELECT current_user"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PGPASSWORD": token},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == DB_USER


# ---- the recipe in boto3, and target health ----


def test_recipe_steps_with_boto3_and_real_target_health(pg_env: Env) -> None:
    """Steps 1-8 as boto3 code, in a fresh account, in front of the same PostgreSQL."""
    from sluice.control.cli import call_own

    with SluiceServer() as srv:
        iam, ec2, rds, sm = (srv.client(s) for s in ("iam", "ec2", "rds", "secretsmanager"))
        account = srv.client("sts").get_caller_identity()["Account"]
        vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
        db_sg = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
        adopted = call_own(srv.profile, "adopt-db-instance", {
            "DBInstanceIdentifier": "pg", "Engine": "postgres", "Host": pg_env.db.host,
            "Port": pg_env.db.port, "VpcSecurityGroupIds": [db_sg]})  # fmt: skip
        assert adopted["DBInstance"]["DBInstanceIdentifier"] == "pg"
        secret = sm.create_secret(Name="pg-admin", SecretString=json.dumps(
            {"username": DB_USER, "password": DB_PASSWORD}))["ARN"]  # fmt: skip
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
            "Service": "rds.amazonaws.com"}, "Action": "sts:AssumeRole"}]}  # fmt: skip
        role = iam.create_role(RoleName="ProxyRole",  # 1
                               AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        proxy_sg = ec2.create_security_group(  # 2
            GroupName="proxy", Description="proxy", VpcId=vpc)["GroupId"]
        arn = rds.create_db_proxy(
            DBProxyName="boto", EngineFamily="POSTGRESQL", RoleArn=role, RequireTLS=True,
            Auth=[{"AuthScheme": "SECRETS", "SecretArn": secret, "IAMAuth": "REQUIRED"}],
            VpcSubnetIds=subnets, VpcSecurityGroupIds=[proxy_sg],
        )["DBProxy"]["DBProxyArn"]
        assert wait_for(lambda: rds.describe_db_proxies(DBProxyName="boto")["DBProxies"][0][
            "Status"] == "available", timeout=30)  # fmt: skip
        endpoint = rds.describe_db_proxies(DBProxyName="boto")["DBProxies"][0]["Endpoint"]
        proxy_id = arn.split(":")[6]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
            "rds-db:connect"], "Resource": [
            f"arn:aws:rds-db:us-east-1:{account}:dbuser:{proxy_id}/*"]}]}  # fmt: skip
        policy_arn = iam.create_policy(  # 3
            PolicyName="connect", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="admin", PolicyArn=policy_arn)  # 4 (here: the caller)
        iam.attach_role_policy(  # 5
            RoleName="ProxyRole", PolicyArn="arn:aws:iam::aws:policy/SecretsManagerReadWrite")
        pair = {"IpProtocol": "tcp", "FromPort": pg_env.db.port, "ToPort": pg_env.db.port}
        ec2.authorize_security_group_ingress(  # 6
            GroupId=db_sg, IpPermissions=[{**pair, "UserIdGroupPairs": [{"GroupId": proxy_sg}]}])
        rds.register_db_proxy_targets(  # 7
            DBProxyName="boto", DBInstanceIdentifiers=["pg"])
        here = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                "IpRanges": [{"CidrIp": "127.0.0.1/32"}]}  # fmt: skip
        ec2.authorize_security_group_ingress(  # 8 (this host by CIDR)
            GroupId=proxy_sg, IpPermissions=[here])

        def health() -> dict[str, Any]:
            targets = rds.describe_db_proxy_targets(DBProxyName="boto")["Targets"]
            return dict(targets[0]["TargetHealth"]) if targets else {}

        assert wait_for(lambda: health().get("State") == "AVAILABLE", timeout=30), health()
        token = srv.client("rds").generate_db_auth_token(endpoint, 5432, DB_USER)
        with psycopg.connect(
            host=endpoint, port=5432, user=DB_USER, password=token, dbname="appdb",
            sslmode="verify-full", sslrootcert=str(srv.data_dir / "tls" / "ca.pem"),
        ) as conn:  # fmt: skip
            assert conn.execute("SELECT current_user").fetchone() == (DB_USER,)

        # the database refuses the secret's credentials: AUTH_FAILURE, and back
        sm.put_secret_value(SecretId=secret, SecretString=json.dumps(
            {"username": DB_USER, "password": "wrong"}))  # fmt: skip
        assert wait_for(lambda: health().get("Reason") == "AUTH_FAILURE", timeout=30), health()
        sm.put_secret_value(SecretId=secret, SecretString=json.dumps(
            {"username": DB_USER, "password": DB_PASSWORD}))  # fmt: skip
        assert wait_for(lambda: health().get("State") == "AVAILABLE", timeout=30), health()

        # a target nothing listens on: UNREACHABLE
        closed = socket.socket()
        closed.bind((pg_env.db.host, 0))
        port = closed.getsockname()[1]
        closed.close()
        call_own(srv.profile, "adopt-db-instance", {
            "DBInstanceIdentifier": "pg", "Engine": "postgres", "Host": pg_env.db.host,
            "Port": port, "VpcSecurityGroupIds": [db_sg]})  # fmt: skip
        moved = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                 "UserIdGroupPairs": [{"GroupId": proxy_sg}]}  # fmt: skip
        ec2.authorize_security_group_ingress(GroupId=db_sg, IpPermissions=[moved])
        assert wait_for(lambda: health().get("Reason") == "UNREACHABLE", timeout=30), health()
        assert DB_PASSWORD not in srv.log_text()
        assert "X-Amz-Signature" not in srv.log_text()


def test_modify_and_delete_reach_the_listener(pg_env: Env) -> None:
    """ModifyDBProxy's IdleClientTimeout closes idle clients; DeleteDBProxy closes the listener."""
    env = pg_env
    rds = env.server.client("rds")
    name = env.vars["DB_NAME"]
    _wait_target_available(env)
    idle = _pg(env, _token(env))
    proxy = rds.modify_db_proxy(DBProxyName=name, IdleClientTimeout=2)["DBProxy"]
    assert proxy["IdleClientTimeout"] == 2
    time.sleep(1.5)  # the runtime applies it within a second
    # an idle client is closed after 2 s (checked every second): probing would make it active
    assert wait_for(lambda: _dropped(idle), timeout=12, interval=4)
    rds.modify_db_proxy(DBProxyName=name, IdleClientTimeout=1800)
    rds.delete_db_proxy(DBProxyName=name)

    def gone() -> bool:
        try:
            rds.describe_db_proxies(DBProxyName=name)
        except rds.exceptions.DBProxyNotFoundFault:
            return True
        return False

    assert wait_for(gone, timeout=30, interval=0.5)
    with pytest.raises(OSError):
        socket.create_connection((env.endpoint, 5432), timeout=2).close()


def _dropped(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False
