"""The network model: a loopback "VPC", its addresses, and security-group admission.

Sluice runs on one host, so its VPC is a loopback range (`vpc_cidr`, default
127.20.0.0/16, from the server's settings; Linux answers every 127/8 address).
The default VPC has three default subnets, one per availability zone REGIONa/b/c,
as the first three /20 blocks of that range (smaller blocks if the range is
smaller than a /18). Every proxy, proxy endpoint and network interface gets an
address of its own from a subnet (the first free host, skipping the first four
and the last address of the block, which AWS reserves); an "address" document
records it with its security groups.

A workload is a member of a security group when it connects *from* an address
whose "address" document lists that group: the function runtime creates a
network interface per function and binds its client sockets to its address;
a script can do the same with CreateNetworkInterface and a client bound to the
PrivateIpAddress. Clients that do not bind come from 127.0.0.1 and are matched
by CIDR rules only. Only ingress rules are enforced; egress rules are stored.
How a group's rules are kept and shown (one rule per source, merged into
IpPermissions) is `control.sgrules`; admission reads only the IpPermissions view.

`admits` runs for every new client connection, so the groups' IpPermissions
and the address registry are compiled into a small read-only structure. It is
memoised by (store, store.version): any change to the store makes a fresh
one, so a revoked rule takes effect for the next connection. The memo is a
pure function's cache, not state of its own. These functions change only the
store: callers report changes with `plane.changed("ec2")`.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sluice.control import ids
from sluice.control.errors import ApiError, invalid
from sluice.control.sgrules import group_doc
from sluice.control.store import Doc, Store

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_ZONES = "abc"
_RESERVED_LOW = 4  # network address, VPC router, DNS, reserved for future use


def ensure_default_vpc(store: Store, account: str, region: str, cidr: str) -> None:
    """Create the default VPC, its three default subnets and its default group, once.

    Idempotent: an existing default VPC is kept as it is, even if `cidr` changed
    (addresses already handed out stay valid). Raises ValueError for a bad range.
    """
    if default_vpc(store) is not None:
        return
    network = ipaddress.IPv4Network(cidr)
    prefix = max(20, network.prefixlen + 2)
    if prefix > 28:
        raise ValueError(f"vpc_cidr {cidr} is too small for three subnets (use /26 or larger)")
    vpc_id = ids.hex_id("vpc")
    with store.batch():
        store.put("vpc", vpc_id, _vpc_doc(vpc_id, account, str(network)))
        blocks = network.subnets(new_prefix=prefix)
        for zone, block in zip(_ZONES, blocks, strict=False):
            subnet_id = ids.hex_id("subnet")
            store.put("subnet", subnet_id, _subnet_doc(subnet_id, vpc_id, account, region, zone,
                                                       str(block)))
        group_id = ids.hex_id("sg")
        store.put("security_group", group_id, group_doc(
            group_id, "default", "default VPC security group", vpc_id, account, region,
            default=True))


def default_vpc(store: Store) -> Doc | None:
    """The default VPC's document, if made."""
    return next((v for v in store.all("vpc") if v.get("IsDefault")), None)


def zone_id(region: str, zone: str) -> str:
    """An AZ id in AWS's style: us-east-1 + "a" -> use1-az1, eu-west-2 + "b" -> euw2-az2."""
    parts = region.split("-")
    middle = "".join(_compass(p) for p in parts[1:-1])
    return f"{parts[0]}{middle}{parts[-1]}-az{_ZONES.index(zone) + 1}"


def _compass(word: str) -> str:
    short = {"north": "n", "south": "s", "east": "e", "west": "w", "central": "c"}
    for name, letter in short.items():
        if word.startswith(name) and word != name:
            return letter + _compass(word[len(name):])
    return short.get(word, word[:1])


def _vpc_doc(vpc_id: str, account: str, cidr: str) -> Doc:
    return {
        "VpcId": vpc_id, "CidrBlock": cidr, "State": "available", "IsDefault": True,
        "OwnerId": account, "InstanceTenancy": "default", "DhcpOptionsId": "default",
        "CidrBlockAssociationSet": [{
            "AssociationId": ids.hex_id("vpc-cidr-assoc"), "CidrBlock": cidr,
            "CidrBlockState": {"State": "associated"}}],
        "Tags": [],
    }


def _subnet_doc(
    subnet_id: str, vpc_id: str, account: str, region: str, zone: str, cidr: str
) -> Doc:
    return {
        "SubnetId": subnet_id, "VpcId": vpc_id, "CidrBlock": cidr, "State": "available",
        "AvailabilityZone": region + zone, "AvailabilityZoneId": zone_id(region, zone),
        "DefaultForAz": True, "MapPublicIpOnLaunch": False, "OwnerId": account,
        "SubnetArn": f"arn:aws:ec2:{region}:{account}:subnet/{subnet_id}", "Tags": [],
    }


def interface_doc(
    eni_id: str, subnet: Doc, groups: list[dict[str, str]], address: str, description: str,
    tags: list[dict[str, str]],
) -> Doc:
    """A new network interface of `subnet` (status "available", a random local MAC)."""
    mac = ":".join(["02", *(f"{b:02x}" for b in secrets.token_bytes(5))])
    return {
        "NetworkInterfaceId": eni_id, "SubnetId": subnet["SubnetId"], "VpcId": subnet["VpcId"],
        "AvailabilityZone": subnet["AvailabilityZone"], "Description": description,
        "Groups": groups, "InterfaceType": "interface", "PrivateIpAddress": address,
        "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": address}],
        "Status": "available", "OwnerId": subnet["OwnerId"], "RequesterManaged": False,
        "SourceDestCheck": True, "MacAddress": mac, "Ipv6Addresses": [], "TagSet": tags,
    }


def host_range(cidr: str) -> tuple[int, int]:
    """The first and last assignable address of a subnet, as integers (inclusive)."""
    block = ipaddress.IPv4Network(cidr)
    return int(block.network_address) + _RESERVED_LOW, int(block.broadcast_address) - 1


def free_count(store: Store, subnet: Doc) -> int:
    """How many addresses of a subnet are still free (AvailableIpAddressCount)."""
    low, high = host_range(subnet["CidrBlock"])
    used = sum(1 for a in store.all("address") if a["SubnetId"] == subnet["SubnetId"])
    return max(0, high - low + 1 - used)


def allocate_address(
    store: Store, subnet_id: str, owner: str, groups: list[str], address: str | None = None
) -> str:
    """Give `owner` an address of the subnet (the first free one, or `address`).

    Records the "address" document with `groups`. Raises ApiError when the subnet
    does not exist, is full, or `address` is outside it, reserved or taken.
    """
    subnet = store.get("subnet", subnet_id)
    if subnet is None:
        raise invalid(f"The subnet ID '{subnet_id}' does not exist", "InvalidSubnetID.NotFound")
    low, high = host_range(subnet["CidrBlock"])
    if address is None:
        chosen = next((ip for ip in _hosts(low, high) if store.get("address", ip) is None), None)
        if chosen is None:
            raise ApiError("InsufficientFreeAddressesInSubnet",
                           f"There are not enough free addresses in subnet '{subnet_id}'")
    else:
        chosen = _check_address(store, subnet, address, low, high)
    store.put("address", chosen, {
        "Address": chosen, "SubnetId": subnet_id, "VpcId": subnet["VpcId"],
        "Groups": list(groups), "Owner": owner})
    return chosen


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
    if store.get("address", chosen) is not None:
        raise ApiError("InvalidIPAddress.InUse", f"Address {chosen} is in use.")
    return chosen


def set_groups(store: Store, address: str, groups: list[str]) -> None:
    """Replace the security groups of an allocated address."""
    found = store.get("address", address)
    if found is None:
        raise invalid(f"Address {address} is not allocated")
    store.put("address", address, {**found, "Groups": list(groups)})


def release_address(store: Store, address: str) -> None:
    """Free an address (nothing happens if it is not allocated)."""
    store.delete("address", address)


def groups_of(store: Store, address: str) -> list[str]:
    """The security groups a connection from `address` is a member of."""
    found = store.get("address", address)
    return list(found["Groups"]) if found else []


@dataclass(frozen=True, slots=True)
class _Rule:
    protocol: str  # "-1" (all) or an IP protocol number
    low: int  # -1: every port
    high: int
    networks: tuple[IpNetwork, ...]
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Compiled:
    rules: dict[str, tuple[_Rule, ...]]  # by security group id: its ingress rules
    members: dict[str, frozenset[str]]  # by address: its groups


def admits(
    store: Store, group_ids: Iterable[str], source_ip: str, port: int, protocol: str = "tcp"
) -> bool:
    """Whether an ingress rule of any of the groups admits a connection.

    A rule admits when its protocol is "-1" or equal to `protocol`, `port` is within
    FromPort..ToPort (or the rule has no port range), and `source_ip` is within one of
    its CIDR ranges or is an address whose groups include one of its source groups.
    """
    compiled = store.derived("network.rules", _compile)
    source = _parse_ip(source_ip)
    if source is None:
        return False
    number = protocol_number(protocol)
    member_of = compiled.members.get(str(source), frozenset())
    for group in group_ids:
        for rule in compiled.rules.get(group, ()):
            if _matches(rule, number, port) and (
                rule.groups & member_of or any(source in net for net in rule.networks)
            ):
                return True
    return False


def explain(
    store: Store, group_ids: Iterable[str], source_ip: str, port: int, protocol: str = "tcp"
) -> str:
    """Why `admits` said no, in words fit for the refused client."""
    names = ", ".join(group_ids) or "(none)"
    source = _parse_ip(source_ip)
    members = store.derived("network.rules", _compile).members
    member_of = sorted(members.get(str(source), frozenset())) if source else []
    where = f"security groups {', '.join(member_of)}" if member_of else "no security group"
    return (f"no ingress rule of security groups {names} admits {protocol} port {port} "
            f"from {source_ip} (an address in {where})")


def _matches(rule: _Rule, number: str, port: int) -> bool:
    if rule.protocol != "-1" and rule.protocol != number:
        return False
    return rule.low == -1 or rule.protocol not in ("6", "17") or rule.low <= port <= rule.high


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_NUMBERS = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "all": "-1"}


def protocol_number(protocol: str) -> str:
    """An IP protocol as its number ("tcp" -> "6"); "-1" stays "-1"."""
    return _NUMBERS.get(protocol.lower(), protocol)


def _compile(store: Store) -> _Compiled:
    """The rules and memberships of the current documents (kept by the store until a change)."""
    rules = {g["GroupId"]: tuple(_compile_permission(p) for p in g.get("IpPermissions", []))
             for g in store.all("security_group")}
    members = {a["Address"]: frozenset(a.get("Groups", [])) for a in store.all("address")}
    return _Compiled(rules, members)


def _compile_permission(perm: dict[str, Any]) -> _Rule:
    networks: list[IpNetwork] = []
    for item in perm.get("IpRanges", []):
        networks.append(ipaddress.IPv4Network(item["CidrIp"], strict=False))
    for item in perm.get("Ipv6Ranges", []):
        networks.append(ipaddress.IPv6Network(item["CidrIpv6"], strict=False))
    groups = frozenset(p["GroupId"] for p in perm.get("UserIdGroupPairs", []) if "GroupId" in p)
    low = int(perm.get("FromPort", -1))
    high = int(perm.get("ToPort", -1))
    return _Rule(protocol_number(str(perm.get("IpProtocol", "-1"))), low, high,
                 tuple(networks), groups)
