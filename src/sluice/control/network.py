"""The network model: a loopback "VPC", its interfaces, and security-group admission.

Sluice runs on one host, so its VPC is a loopback range (`vpc_cidr`, default
127.20.0.0/16, from the server's settings; Linux answers every 127/8 address).
The default VPC has three default subnets, one per availability zone REGIONa/b/c,
as the first three /20 blocks of that range (smaller blocks if the range is
smaller than a /18). Every proxy, proxy endpoint and network interface holds an
address of its own from a subnet, recorded with its security groups in
`control.registry`.

A workload is a member of a security group when it connects *from* an address
whose attachment lists that group: Lambda creates network interfaces for a
function with a VpcConfig and its execution environments connect from one of
them; a script can do the same with CreateNetworkInterface and a client bound
to the PrivateIpAddress. Clients that do not bind come from 127.0.0.1 and are
matched by CIDR rules only. A function without a VpcConfig connects from
`OUTSIDE_ADDRESS`, which is outside every VPC: no proxy admits it, whatever
its rules say, as no RDS Proxy is reachable from outside its VPC. Only ingress
rules are enforced; egress rules are stored. How a group's rules are kept and
shown (one rule per source, merged into IpPermissions) is `control.sgrules`;
admission reads only the IpPermissions view.

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

from sluice.control import ids, registry
from sluice.control.sgrules import group_doc
from sluice.control.store import Doc, Store

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_ZONES = "abc"
OUTSIDE_ADDRESS = "127.0.0.2"  # where functions without a VpcConfig connect from


def ensure_default_vpc(store: Store, account: str, region: str, cidr: str) -> None:
    """Create the default VPC, its three default subnets and its default group, once.

    Idempotent: an existing default VPC is kept as it is, even if `cidr` changed
    (addresses already handed out stay valid). Raises ValueError for a bad range.
    """
    if default_vpc(store) is not None:
        return
    network = ipaddress.IPv4Network(cidr)
    if ipaddress.IPv4Address(OUTSIDE_ADDRESS) in network:
        raise ValueError(f"vpc_cidr {cidr} holds {OUTSIDE_ADDRESS}, the address of clients "
                         "outside the VPC: choose a range outside 127.0.0.0/24")
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
    tags: list[dict[str, str]], requester: str = "",
) -> Doc:
    """A new network interface of `subnet` (a random local MAC).

    One a service made for itself (`requester`, "lambda") is of that service's
    InterfaceType, requester-managed and in use; one made through the API is "available".
    """
    mac = ":".join(["02", *(f"{b:02x}" for b in secrets.token_bytes(5))])
    doc: Doc = {
        "NetworkInterfaceId": eni_id, "SubnetId": subnet["SubnetId"], "VpcId": subnet["VpcId"],
        "AvailabilityZone": subnet["AvailabilityZone"], "Description": description,
        "Groups": groups, "InterfaceType": requester or "interface", "PrivateIpAddress": address,
        "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": address}],
        "Status": "in-use" if requester else "available", "OwnerId": subnet["OwnerId"],
        "RequesterManaged": bool(requester), "SourceDestCheck": True, "MacAddress": mac,
        "Ipv6Addresses": [], "TagSet": tags,
    }  # fmt: skip
    if requester:
        doc["Attachment"] = {
            "AttachmentId": ids.hex_id("ela-attach"), "DeleteOnTermination": False,
            "DeviceIndex": 1, "InstanceOwnerId": "amazon-aws", "Status": "attached",
        }  # fmt: skip
    return doc


def add_interface(
    store: Store, subnet: Doc, groups: list[dict[str, str]], description: str,
    tags: list[dict[str, str]], address: str | None = None, requester: str = "",
) -> Doc:  # fmt: skip
    """Create a network interface with an address of its subnet; returns its document."""
    eni_id = ids.hex_id("eni")
    with store.batch():
        held = registry.allocate(store, subnet["SubnetId"], eni_id, registry.Holder.INTERFACE,
                                 [g["GroupId"] for g in groups], address=address)  # fmt: skip
        doc = interface_doc(eni_id, subnet, groups, held.address, description, tags, requester)
        store.put("network_interface", eni_id, doc)
    return doc


def remove_interface(store: Store, eni_id: str) -> None:
    """Delete a network interface and free its address."""
    with store.batch():
        registry.release(store, eni_id)
        store.delete("network_interface", eni_id)


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


def reachable(store: Store, group_ids: Iterable[str], source_ip: str, port: int) -> bool:
    """Whether a TCP connection from `source_ip` reaches a holder of these groups on `port`:
    never from outside the VPC (`OUTSIDE_ADDRESS`), else as `admits` says."""
    return source_ip != OUTSIDE_ADDRESS and admits(store, group_ids, source_ip, port)


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
    members = {a.address: frozenset(a.groups) for a in registry.attachments(store)}
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
