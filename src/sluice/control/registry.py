"""The registry of the VPC's addresses: who holds each one, on which port, in which groups.

Everything that listens in the loopback VPC or connects from it holds one address of a
subnet, recorded as an `Attachment` (an "address" document): a proxy and each of its
extra endpoints (listening on the engine's port), a network interface (an ENI made with
CreateNetworkInterface, or one Lambda made for a function's VpcConfig; it only connects
out, so its port is 0), and a DB instance the server runs. The attachment carries the
security groups its holder is in, which is what a `--source-group` rule matches
(`control.network.admits`).

The data plane sees a running proxy endpoint as a `Listener` (its address, port and
groups, and the proxy it belongs to) in the `Listeners` table, which the runtime fills
and the proxies' authority reads; a proxy's target is a `Target` read afresh from the
documents, so a registration or a changed instance counts for the next connection.

Allocation takes the first free host of a subnet, skipping the first four and the last
address of the block (AWS reserves them). These functions change only the store:
callers report changes with `plane.changed(...)`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sluice.control.errors import ApiError, invalid
from sluice.control.store import Doc, Store

ADDRESS = "address"
_RESERVED_LOW = 4  # network address, VPC router, DNS, reserved for future use


class Holder(StrEnum):
    """What holds an address."""

    PROXY = "db-proxy"
    PROXY_ENDPOINT = "db-proxy-endpoint"
    INTERFACE = "network-interface"
    DB_INSTANCE = "db-instance"


_PREFIXES = (("prx-endpoint-", Holder.PROXY_ENDPOINT), ("prx-", Holder.PROXY),
             ("eni-", Holder.INTERFACE))  # fmt: skip
_OLD_KEYS = ("_address", "_port", "_resource_id")


@dataclass(frozen=True, slots=True)
class Attachment:
    """One address of a subnet and what holds it ("address" document)."""

    address: str
    subnet_id: str
    vpc_id: str
    owner: str  # the holder's resource id: prx-..., prx-endpoint-..., eni-..., db-...
    holder: Holder
    groups: tuple[str, ...] = ()
    port: int = 0  # the port it listens on; 0 when it only connects out

    def to_doc(self) -> Doc:
        return {"Address": self.address, "SubnetId": self.subnet_id, "VpcId": self.vpc_id,
                "Groups": list(self.groups), "Owner": self.owner, "Holder": str(self.holder),
                "Port": self.port}  # fmt: skip

    @classmethod
    def from_doc(cls, doc: Doc) -> Attachment:
        return cls(doc["Address"], doc["SubnetId"], doc["VpcId"], doc["Owner"],
                   Holder(doc["Holder"]), tuple(doc["Groups"]), int(doc["Port"]))  # fmt: skip


def upgrade(store: Store) -> None:
    """State written before the registry: addresses without holder or port, and proxies
    and endpoints that kept their address, port and id in private fields. Run at start."""
    ports = {d["_resource_id"]: int(d["_port"]) for kind in ("db_proxy", "db_proxy_endpoint")
             for d in store.all(kind) if "_port" in d}  # fmt: skip
    with store.batch():
        for doc in store.all(ADDRESS):
            if "Holder" not in doc:
                owner = str(doc["Owner"])
                holder = next((h for p, h in _PREFIXES if owner.startswith(p)), Holder.INTERFACE)
                store.put(ADDRESS, doc["Address"], {**doc, "Holder": str(holder),
                                                    "Port": ports.get(owner, 0)})  # fmt: skip
        for kind, key in (("db_proxy", "DBProxyName"), ("db_proxy_endpoint",
                                                        "DBProxyEndpointName")):  # fmt: skip
            for doc in store.all(kind):
                if any(k in doc for k in _OLD_KEYS):
                    clean = {k: v for k, v in doc.items() if k not in _OLD_KEYS}
                    store.put(kind, doc[key], clean)


@dataclass(frozen=True, slots=True)
class Listener:
    """One endpoint of a proxy as the data plane runs it."""

    proxy: str  # the DB proxy's name
    resource_id: str  # prx-...
    address: str
    port: int
    groups: tuple[str, ...]


class Listeners:
    """The running proxy endpoints by proxy config name: the runtime sets them after each
    change it applies, the proxies' authority reads them for every new connection."""

    def __init__(self) -> None:
        self._by_name: dict[str, Listener] = {}

    def get(self, name: str) -> Listener | None:
        return self._by_name.get(name)

    def add(self, listeners: dict[str, Listener]) -> None:
        """Listeners about to open (so their first clients are admitted)."""
        self._by_name.update(listeners)

    def replace(self, listeners: dict[str, Listener]) -> None:
        """Exactly the listeners that run now."""
        self._by_name = dict(listeners)

    def remove(self, name: str) -> None:
        self._by_name.pop(name, None)

    def __iter__(self) -> Iterator[Listener]:
        return iter(list(self._by_name.values()))


@dataclass(frozen=True, slots=True)
class Target:
    """The DB instance a proxy's connections go to."""

    instance: str  # its identifier
    address: str
    port: int
    groups: tuple[str, ...]
    guarded: bool = False  # its groups are enforced at its address (an instance Sluice runs)


# ---- addresses ----


def host_range(cidr: str) -> tuple[int, int]:
    """The first and last assignable address of a subnet, as integers (inclusive)."""
    block = ipaddress.IPv4Network(cidr)
    return int(block.network_address) + _RESERVED_LOW, int(block.broadcast_address) - 1


def free_count(store: Store, subnet: Doc) -> int:
    """How many addresses of a subnet are still free (AvailableIpAddressCount)."""
    low, high = host_range(subnet["CidrBlock"])
    used = sum(1 for a in store.all(ADDRESS) if a["SubnetId"] == subnet["SubnetId"])
    return max(0, high - low + 1 - used)


def allocate(
    store: Store, subnet_id: str, owner: str, holder: Holder, groups: Iterable[str],
    port: int = 0, address: str | None = None,
) -> Attachment:  # fmt: skip
    """Give `owner` an address of the subnet (the first free one, or `address`).

    Raises ApiError when the subnet does not exist, is full, or `address` is outside
    it, reserved or taken.
    """
    subnet = store.get("subnet", subnet_id)
    if subnet is None:
        raise invalid(f"The subnet ID '{subnet_id}' does not exist", "InvalidSubnetID.NotFound")
    low, high = host_range(subnet["CidrBlock"])
    if address is None:
        chosen = next((ip for ip in _hosts(low, high) if store.get(ADDRESS, ip) is None), None)
        if chosen is None:
            raise ApiError("InsufficientFreeAddressesInSubnet",
                           f"There are not enough free addresses in subnet '{subnet_id}'")
    else:
        chosen = _check_address(store, subnet, address, low, high)
    found = Attachment(chosen, subnet_id, subnet["VpcId"], owner, holder, tuple(groups), port)
    store.put(ADDRESS, chosen, found.to_doc())
    return found


def _hosts(low: int, high: int) -> Iterable[str]:
    return (str(ipaddress.IPv4Address(n)) for n in range(low, high + 1))


def _check_address(store: Store, subnet: Doc, address: str, low: int, high: int) -> str:
    try:
        value = int(ipaddress.IPv4Address(address))
    except ValueError:
        raise invalid(f"Invalid IPv4 address: {address!r}") from None
    if not low <= value <= high:
        raise invalid(f"Address {address} does not fall within the subnet's address range "
                      f"(or is reserved) of {subnet['SubnetId']}")
    chosen = str(ipaddress.IPv4Address(value))
    if store.get(ADDRESS, chosen) is not None:
        raise ApiError("InvalidIPAddress.InUse", f"Address {chosen} is in use.")
    return chosen


def attachment(store: Store, address: str) -> Attachment | None:
    found = store.get(ADDRESS, address)
    return Attachment.from_doc(found) if found is not None else None


def held_by(store: Store, owner: str) -> Attachment | None:
    """The address a resource holds (a proxy's, an endpoint's, an interface's)."""
    found = next((a for a in store.all(ADDRESS) if a["Owner"] == owner), None)
    return Attachment.from_doc(found) if found is not None else None


def attachments(store: Store) -> list[Attachment]:
    return [Attachment.from_doc(doc) for doc in store.all(ADDRESS)]


def set_groups(store: Store, owner: str, groups: Iterable[str]) -> None:
    """Replace the security groups of the address a resource holds."""
    found = held_by(store, owner)
    if found is None:
        raise invalid(f"{owner} holds no address")
    store.put(ADDRESS, found.address, {**found.to_doc(), "Groups": list(groups)})


def release(store: Store, owner: str) -> None:
    """Free the address a resource holds (nothing happens if it holds none)."""
    found = held_by(store, owner)
    if found is not None:
        store.delete(ADDRESS, found.address)


def groups_of(store: Store, address: str) -> list[str]:
    """The security groups a connection from `address` is a member of."""
    found = store.get(ADDRESS, address)
    return list(found["Groups"]) if found else []


# ---- proxies and their targets ----


def resource_id(arn: str) -> str:
    """The resource id of an RDS ARN (its seventh field: prx-..., prx-endpoint-...)."""
    return arn.split(":", 6)[-1]


def proxy_listeners(store: Store, proxy: Doc) -> list[tuple[str, Listener]]:
    """(config name, listener) of each endpoint of a proxy: its own, then its extra ones."""
    name, rid = proxy["DBProxyName"], resource_id(proxy["DBProxyArn"])
    out = []
    own = held_by(store, rid)
    if own is not None:
        out.append((name, Listener(name, rid, own.address, own.port, own.groups)))
    for ep in store.all("db_proxy_endpoint"):
        if ep["DBProxyName"] != name or ep["Status"] == "deleting":
            continue
        held = held_by(store, resource_id(ep["DBProxyEndpointArn"]))
        if held is not None:
            listener = Listener(name, rid, held.address, held.port, held.groups)
            out.append((f"{name}/{ep['DBProxyEndpointName']}", listener))
    return out


def target_of(store: Store, proxy: str) -> str | None:
    """The DB instance a proxy's connections go to (its first registered target)."""
    prefix = f"{proxy}/"
    for key in store.keys("db_proxy_target"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return None


def instance_target(instance: Doc) -> Target:
    """A DB instance document as a target: where it listens, in which groups."""
    endpoint: dict[str, Any] = instance["Endpoint"]
    groups = tuple(g["VpcSecurityGroupId"] for g in instance.get("VpcSecurityGroups", []))
    return Target(instance["DBInstanceIdentifier"], endpoint["Address"], int(endpoint["Port"]),
                  groups, bool(instance.get("_managed")))  # fmt: skip


def target(store: Store, proxy: str) -> Target | None:
    """The proxy's target as it stands in the documents now (None: none, or it is gone)."""
    instance_id = target_of(store, proxy)
    instance = store.get("db_instance", instance_id) if instance_id else None
    return instance_target(instance) if instance is not None else None
