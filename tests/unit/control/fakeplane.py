"""The `Plane` the service unit tests hand their handlers: a real Store and Vault, the
account and region, and a record of the changes announced (no runtime behind it).

Importable as `fakeplane` from the tests in this folder (pytest puts it on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sluice.control.store import Store
from sluice.control.vault import Vault

ACCOUNT = "123456789012"


@dataclass
class FakePlane:
    store: Store
    vault: Vault
    account: str = ACCOUNT
    region: str = "us-east-1"
    changes: list[str] = field(default_factory=list)

    def changed(self, what: str) -> None:
        self.changes.append(what)

    def endpoint_port(self, engine_family: str) -> int:
        return {"MYSQL": 3306, "POSTGRESQL": 5432}[engine_family]
