"""What an API handler is given: who calls, where, and the control plane's parts.

A handler is a method named after the operation (`CreateRole`) on a service
object; it takes a `Call` and the request's parameters as boto3 would pass
them (member names of the input shape) and returns a dict of the output
shape's members (datetimes for timestamps, bytes for blobs). It raises
`ApiError` for anything the caller did wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sluice.control.store import Store
    from sluice.control.vault import Vault

Params = dict[str, Any]
Output = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: an IAM user, or a role assumed through STS."""

    account: str
    arn: str  # arn:aws:iam::ACCT:user/NAME or arn:aws:sts::ACCT:assumed-role/ROLE/SESSION
    user_id: str  # AIDA... for a user, AROA...:SESSION for an assumed role
    kind: str  # "user" or "assumed-role"
    name: str  # the user's or the role's name
    access_key: str
    session_name: str = ""

    @property
    def identity_arn(self) -> str:
        """The IAM entity whose policies apply: the user, or the assumed role itself."""
        if self.kind == "assumed-role":
            return f"arn:aws:iam::{self.account}:role/{self.name}"
        return self.arn


@dataclass(frozen=True, slots=True)
class Call:
    principal: Principal
    region: str
    request_id: str
    now: float  # epoch seconds when the request arrived

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


class Plane(Protocol):
    """The parts of the control plane a service may use."""

    store: Store
    vault: Vault
    account: str
    region: str

    def changed(self, what: str) -> None:
        """State that running proxies depend on changed ("rds", "iam", "ec2", "secrets")."""
        ...

    def endpoint_port(self, engine_family: str) -> int:
        """The port proxy endpoints of an engine family (MYSQL, POSTGRESQL) listen on."""
        ...


def timestamp(epoch: float) -> datetime:
    """A stored epoch-seconds value as the datetime an output shape wants."""
    return datetime.fromtimestamp(epoch, UTC)
