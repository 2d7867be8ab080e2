"""The control plane as one object: state, services, the HTTP front and the runtime.

`ControlPlane.start` opens (or creates) the data directory, makes the account
and admin on first start, seeds what every account has (the AWS-managed
policies, the default VPC and subnets), starts the API server and the runtime
that runs every proxy in the state. `sluice server` is this and nothing more.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session

from sluice.app import App
from sluice.config import Settings
from sluice.control import network, registry
from sluice.control.authority import PlaneAuthority
from sluice.control.bootstrap import ensure_account, write_profile
from sluice.control.certs import EndpointCertificates
from sluice.control.defaults import (
    DEFAULT_CONCURRENT_EXECUTIONS,
    DEFAULT_FUNCTION_CREDENTIALS_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_REGION,
    DEFAULT_VPC_CIDR,
    ENGINE_PORTS,
)
from sluice.control.errors import ApiError
from sluice.control.instances import InstanceRunner
from sluice.control.managed_policies import ensure_managed_policies
from sluice.control.principals import Principals
from sluice.control.registry import Listeners
from sluice.control.runtime import Runtime
from sluice.control.server import ApiServer
from sluice.control.services.ec2 import Ec2
from sluice.control.services.iam import Iam
from sluice.control.services.lambda_ import Lambda
from sluice.control.services.lambda_checks import RoleSessions
from sluice.control.services.logs import Logs
from sluice.control.services.rds import Rds, adopt_instance, forget_instance
from sluice.control.services.secretsmanager import SecretsManager
from sluice.control.services.sts import Sts
from sluice.control.store import Store
from sluice.control.vault import Vault
from sluice.functions.package import PackageStore
from sluice.functions.runner import Runner as FunctionRunner
from sluice.functions.spec import RunnerSettings, credential_margin

log = logging.getLogger("sluice.control")



@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What `sluice server` is started with (command-line options)."""

    data_dir: Path
    listen: tuple[str, int] = DEFAULT_LISTEN
    region: str = DEFAULT_REGION
    vpc_cidr: str = DEFAULT_VPC_CIDR
    key_file: Path | None = None  # default: <data_dir>/keys/secrets.key
    ports: dict[str, int] = field(default_factory=lambda: dict(ENGINE_PORTS))
    metrics_listen: str = ""
    log_level: str = "info"
    concurrent_executions: int = DEFAULT_CONCURRENT_EXECUTIONS
    function_credentials_seconds: int = DEFAULT_FUNCTION_CREDENTIALS_SECONDS

    @property
    def endpoint(self) -> str:
        return f"http://{self.listen[0]}:{self.listen[1]}"

    @property
    def local_endpoint(self) -> str:
        """The API as code running on this machine reaches it (a wildcard listen: loopback)."""
        host = self.listen[0]
        host = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
        return f"http://{host}:{self.listen[1]}"


class ControlPlane:
    """State, services, API server and runtime of `sluice server`."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        data = settings.data_dir
        self.store = Store(data / "state.db")
        self.vault = Vault(settings.key_file or data / "keys" / "secrets.key")
        account, _ = ensure_account(self.store, self.vault, settings.region)
        self.account = account.id
        self.region = account.region
        ensure_managed_policies(self.store)
        network.ensure_default_vpc(self.store, self.account, self.region, settings.vpc_cidr)
        registry.upgrade(self.store)
        write_profile(data / "aws" / "config", self.store, self.vault, account, settings.endpoint)
        self.principals = Principals(self.store, self.vault)
        self.certificates = EndpointCertificates(data / "tls")
        self.certificates.ensure_authority()
        session = botocore.session.get_session()
        lifetime = settings.function_credentials_seconds
        self.functions = FunctionRunner(
            RunnerSettings(root=data / "functions", region=self.region,
                           endpoint_url=settings.local_endpoint, python=sys.executable,
                           max_environments=settings.concurrent_executions,
                           credential_margin=credential_margin(lifetime)),
            RoleSessions(self, lifetime),
        )  # fmt: skip
        self.lambda_ = Lambda(self, self.functions, PackageStore(data / "functions"))
        services: list[Any] = [
            Iam(self),
            Sts(self),
            Ec2(self),
            SecretsManager(self),
            Rds(self),
            self.lambda_,
            Logs(self, self.functions.logs),
        ]
        self.services = {s.name: s for s in services}
        self.models = {name: session.get_service_model(name) for name in self.services}
        self.listeners = Listeners()
        self.authority = PlaneAuthority(self, self.listeners)
        self.app = App(
            Settings(
                proxies=(),
                state_dir=data / "proxies",
                log_level=settings.log_level,
                metrics_listen=settings.metrics_listen,
            ),
            authority=self.authority,
        )
        self.runtime = Runtime(self, self.app, self.listeners)
        self.instances = InstanceRunner(
            self.store, self.vault, data / "db-instances", self.runtime.poke
        )
        self.api = ApiServer(self)

    # ---- the Plane protocol the services use ----

    def changed(self, what: str) -> None:
        self.runtime.poke()
        if what == "rds":
            self.instances.poke()

    def endpoint_port(self, engine_family: str) -> int:
        return self.settings.ports.get(engine_family, ENGINE_PORTS.get(engine_family, 0))

    # ---- Sluice's own operations (`sluice db-instance ...`) ----

    def own_operation(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        if action == "adopt-db-instance":
            return {"DBInstance": _plain(adopt_instance(self, **_adopt_args(params)))}
        if action == "forget-db-instance":
            forget_instance(self, str(params.get("DBInstanceIdentifier", "")))
            return {}
        raise ApiError("InvalidAction", f"unknown action {action}", 400)

    # ---- running ----

    async def start(self) -> None:
        await self.instances.resume()  # the DB instances' servers, before proxies check them
        self.instances.start()
        await self.app.start()
        await self.runtime.sync()  # every proxy in the state listens before the API answers
        self.runtime.start()
        await self.lambda_.resume()  # functions left Pending or InProgress by a stop
        await self.api.start(*self.settings.listen)
        log.info(
            "account %s, region %s; profile for the aws CLI and boto3: %s",
            self.account, self.region, self.settings.data_dir / "aws" / "config",
        )  # fmt: skip

    async def stop(self) -> None:
        await self.api.stop()
        await self.functions.stop()
        await self.runtime.stop()
        await self.app.shutdown()
        await self.instances.stop()
        self.store.close()


def _adopt_args(params: dict[str, Any]) -> dict[str, Any]:
    try:
        return {
            "identifier": str(params["DBInstanceIdentifier"]),
            "engine": str(params["Engine"]),
            "host": str(params["Host"]),
            "port": int(params["Port"]),
            "security_groups": [str(g) for g in params.get("VpcSecurityGroupIds", [])],
            "engine_version": str(params.get("EngineVersion", "")),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError("InvalidParameterValue", f"bad or missing parameter: {exc}", 400) from None


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as JSON (datetimes as ISO text)."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in doc.items()}
