"""`sluice server` and `sluice db-instance`: the control plane from the command line.

`sluice db-instance adopt` registers an existing database server as an RDS DB
instance (until `create-db-instance` can launch one). It is a request to the
running server, signed with SigV4 by the admin profile of the data directory,
so it goes through the same authentication as every other API call.
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sluice.control.defaults import (
    DEFAULT_CONCURRENT_EXECUTIONS,
    DEFAULT_FUNCTION_CREDENTIALS_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_REGION,
    DEFAULT_VPC_CIDR,
    MAX_FUNCTION_CREDENTIALS_SECONDS,
)
from sluice.errors import ConfigError
from sluice.observe.logs import setup_logging


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(os.environ.get("SLUICE_DATA_DIR") or Path(base) / "sluice")


def add_commands(sub: Any) -> None:
    server = sub.add_parser("server", help="run the AWS-compatible control plane and its proxies")
    server.add_argument("--data-dir", type=Path, default=None, help="state directory")
    server.add_argument("--listen", default=f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}")
    server.add_argument("--region", default=DEFAULT_REGION, help="region of a new account")
    server.add_argument("--vpc-cidr", default=DEFAULT_VPC_CIDR, help="the default VPC's range")
    server.add_argument("--key-file", type=Path, default=None, help="secrets encryption key")
    server.add_argument("--mysql-port", type=int, default=3306, help="port of MySQL endpoints")
    server.add_argument("--postgres-port", type=int, default=5432, help="port of PG endpoints")
    server.add_argument("--metrics-listen", default="", help="HOST:PORT for Prometheus")
    server.add_argument("--log-level", default="info")
    server.add_argument("--concurrent-executions", type=int, default=DEFAULT_CONCURRENT_EXECUTIONS,
                        help="the account's Lambda concurrency: execution environments alive "
                        "at once; beyond it invocations are throttled")  # fmt: skip
    server.add_argument("--function-credentials-seconds", type=int,
                        default=DEFAULT_FUNCTION_CREDENTIALS_SECONDS,
                        help="how long the execution-role credentials functions get last "
                        "(renewed before an invocation when less than a third of this, at "
                        "most 5 minutes, is left)")  # fmt: skip
    db = sub.add_parser("db-instance", help="adopt or forget an existing database server")
    db.add_argument("action", choices=("adopt", "forget"))
    db.add_argument("--identifier", required=True, help="the DB instance identifier")
    db.add_argument("--engine", choices=("mysql", "mariadb", "postgres"))
    db.add_argument("--host", default="127.0.0.1")
    db.add_argument("--port", type=int)
    db.add_argument("--security-group", action="append", default=[], dest="groups")
    db.add_argument("--engine-version", default="")
    db.add_argument("--data-dir", type=Path, default=None)


def run_server(args: argparse.Namespace) -> int:
    from sluice.control.plane import ControlPlane, ServerSettings

    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        print(f"sluice: --listen expects HOST:PORT, got {args.listen!r}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, "text")
    settings = ServerSettings(
        data_dir=(args.data_dir or default_data_dir()).resolve(),
        listen=(host or "127.0.0.1", int(port)),
        region=args.region,
        vpc_cidr=args.vpc_cidr,
        key_file=args.key_file,
        ports={"MYSQL": args.mysql_port, "POSTGRESQL": args.postgres_port},
        metrics_listen=args.metrics_listen,
        log_level=args.log_level,
        concurrent_executions=args.concurrent_executions,
        function_credentials_seconds=args.function_credentials_seconds,
    )
    if settings.concurrent_executions < 1:
        print("sluice: --concurrent-executions must be at least 1", file=sys.stderr)
        return 2
    if not 1 <= settings.function_credentials_seconds <= MAX_FUNCTION_CREDENTIALS_SECONDS:
        print("sluice: --function-credentials-seconds must be between 1 and "
              f"{MAX_FUNCTION_CREDENTIALS_SECONDS}", file=sys.stderr)  # fmt: skip
        return 2
    import uvloop

    try:
        uvloop.run(_serve(ControlPlane(settings)))
    except (ConfigError, OSError) as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(plane: Any) -> None:
    await plane.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    logging.getLogger("sluice").info("sluice server ready")
    await stop.wait()
    await plane.stop()


def run_db_instance(args: argparse.Namespace) -> int:
    profile = (args.data_dir or default_data_dir()) / "aws" / "config"
    if args.action == "adopt":
        if not args.engine or not args.port:
            print("sluice: adopt needs --engine and --port", file=sys.stderr)
            return 2
        params: dict[str, Any] = {
            "DBInstanceIdentifier": args.identifier,
            "Engine": args.engine,
            "Host": args.host,
            "Port": args.port,
            "VpcSecurityGroupIds": args.groups,
            "EngineVersion": args.engine_version,
        }
    else:
        params = {"DBInstanceIdentifier": args.identifier}
    try:
        result = call_own(profile, f"{args.action}-db-instance", params)
    except OSError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0 if "Code" not in result else 1


def call_own(profile: Path, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """POST a Sluice operation to the server named in the profile, signed with its key."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    parser = configparser.ConfigParser()
    if not parser.read(profile):
        raise OSError(f"no profile at {profile}: is the server's --data-dir the same?")
    section = parser["default"]
    url = f"{section['endpoint_url'].rstrip('/')}/sluice/{action}"
    request = AWSRequest("POST", url, data=json.dumps(params).encode(),
                         headers={"Content-Type": "application/json"})  # fmt: skip
    creds = Credentials(section["aws_access_key_id"], section["aws_secret_access_key"])
    SigV4Auth(creds, "rds", section["region"]).add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(url, data=prepared.body, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http, timeout=30) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read() or b"{}"))
