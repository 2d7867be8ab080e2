"""What the execution environments are told, and what they answer: typed records.

The Lambda API service (`sluice.control.services.lambda_`) owns the function documents; the
runner in this package never reads the store. For each invocation the service hands over a
`FunctionSpec` (a frozen snapshot of the function's configuration, with its unpacked code) and
gets back an `Outcome`. Credentials for the execution role come through the narrow
`CredentialSource` protocol, so this package needs nothing else from the control plane.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LogLine = tuple[float, str]  # (epoch seconds, one line of text with its newline)


@dataclass(frozen=True, slots=True)
class TemporaryCredentials:
    """An STS session of the execution role, as the environment's AWS_* variables carry it."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: float  # epoch seconds


class CredentialSource(Protocol):
    """Mints temporary credentials of a role for a function's environments."""

    def credentials(self, role_arn: str, session_name: str) -> TemporaryCredentials: ...


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function's configuration as the environments run it.

    `revision` changes with every configuration or code change: environments made for an
    older revision are never reused.
    """

    name: str
    arn: str
    handler: str
    runtime: str
    role_arn: str
    timeout: float  # seconds
    memory_mb: int
    revision: str
    task_root: Path
    layer_paths: tuple[Path, ...] = ()  # the layers' unpacked directories, in Layers order
    variables: Mapping[str, str] = field(default_factory=dict)
    reserved_concurrency: int | None = None
    version: str = "$LATEST"
    # The address the environment's TCP connections to this host come from: its network
    # interface's for a function with a VpcConfig, else one outside every VPC ("": unbound).
    source_address: str = ""

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer of one invocation.

    `payload` is the handler's result as JSON text, or Lambda's error document; `error` is
    None, or "Unhandled" as X-Amz-Function-Error says it. `lines` are the invocation's log
    lines (START ... REPORT), each with the time it was written.
    """

    payload: bytes
    error: str | None
    lines: tuple[LogLine, ...]
    stream: str = ""  # the log stream of the environment that ran it

    @property
    def log(self) -> str:
        return "".join(text for _, text in self.lines)


class Throttled(Exception):
    """No environment may be started: the function's concurrency limit is reached."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


CREDENTIAL_MARGIN = 300.0


def credential_margin(lifetime: float) -> float:
    """How close to their expiry credentials lasting `lifetime` seconds are renewed:
    five minutes, or a third of a shorter lifetime."""
    return min(CREDENTIAL_MARGIN, lifetime / 3)


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """How the runner is set up by `sluice server`."""

    root: Path  # working files: logs
    region: str
    endpoint_url: str  # the control plane's API, as AWS_ENDPOINT_URL
    python: str  # the interpreter the environments run
    idle_seconds: float = 300.0  # an environment idle this long is stopped
    max_environments: int = 20  # all functions together (the account's concurrency)
    credential_margin: float = CREDENTIAL_MARGIN  # credentials this close to expiry are renewed

    @property
    def libraries(self) -> Path:
        """Where environments find Lambda's own libraries (boto3 ...; see `libraries.py`)."""
        return self.root / "libraries"


class CredentialsUnavailable(Exception):
    """The execution role is gone, or no longer lets Lambda assume it (the message says so)."""
