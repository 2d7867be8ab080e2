"""The network model: a loopback "VPC", its addresses, and security-group rules.

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

`admits` runs for every new client connection, so the groups' IpPermissions
and the address registry are compiled into a small read-only structure. It is
memoised by (store, store.version): any change to the store makes a fresh
one, so a revoked rule takes effect for the next connection. The memo is a
pure function's cache, not state of its own. These functions change only the
store: callers report changes with `plane.changed("ec2")`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sluice.control import ids
from sluice.control.errors import ApiError, invalid
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
    compiled = _compile(store, store.version)
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
    members = _compile(store, store.version).members
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


@lru_cache(maxsize=8)
def _compile(store: Store, version: int) -> _Compiled:
    """The rules and memberships of one store version (the version is the cache key)."""
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


# Security-group rules. A group keeps one rule per source ("_rules": {sgr-id: rule}, as
# AWS's SecurityGroupRule); its IpPermissions and IpPermissionsEgress are rebuilt from them,
# merged by (protocol, ports) in the order the rules were added, as DescribeSecurityGroups
# shows them. `admits` reads only the IpPermissions view (the documented contract).

Rule = dict[str, Any]
ResolveGroup = Callable[[dict[str, Any]], tuple[str, str]]  # a UserIdGroupPair -> (id, owner)
_PORTED = ("tcp", "udp", "icmp", "icmpv6")
_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
_VIEW = {"CidrIpv4": ("IpRanges", "CidrIp"), "CidrIpv6": ("Ipv6Ranges", "CidrIpv6"),
         "PrefixListId": ("PrefixListIds", "PrefixListId"),
         "ReferencedGroupId": ("UserIdGroupPairs", "GroupId")}


def group_doc(
    group_id: str, name: str, description: str, vpc_id: str, account: str, region: str,
    tags: list[dict[str, str]] | None = None, default: bool = False,
) -> Doc:
    """A new security group: egress to anywhere, and for a VPC's default group, ingress from
    its own members (as AWS makes them)."""
    doc = {"GroupId": group_id, "GroupName": name, "Description": description,
           "VpcId": vpc_id, "OwnerId": account, "Tags": list(tags or []),
           "SecurityGroupArn": f"arn:aws:ec2:{region}:{account}:security-group/{group_id}"}
    every = {"IpProtocol": "-1", "FromPort": -1, "ToPort": -1}
    rules = {ids.hex_id("sgr"): {**every, "IsEgress": True, "CidrIpv4": "0.0.0.0/0", "Seq": 1}}
    if default:
        rules[ids.hex_id("sgr")] = {**every, "IsEgress": False, "ReferencedGroupId": group_id,
                                    "ReferencedUserId": account, "Seq": 2}
    return with_rules(doc, rules)


def with_rules(doc: Doc, rules: dict[str, Rule]) -> Doc:
    """A copy of a group's document holding `rules` and the IpPermissions views of them."""
    ordered = sorted(rules.items(), key=lambda item: int(item[1]["Seq"]))
    ingress = [rule for _, rule in ordered if not rule["IsEgress"]]
    egress = [rule for _, rule in ordered if rule["IsEgress"]]
    return {**doc, "_rules": dict(ordered), "IpPermissions": permissions_view(ingress),
            "IpPermissionsEgress": permissions_view(egress)}


def rules_of(doc: Doc) -> dict[str, Rule]:
    """A group's rules by id (made from its IpPermissions if it was written without them)."""
    if "_rules" in doc:
        return dict(doc["_rules"])
    rules: dict[str, Rule] = {}
    for egress, field in ((False, "IpPermissions"), (True, "IpPermissionsEgress")):
        for perm in doc.get(field, []):
            for rule in split_permission(perm, egress, _as_given):
                rules[ids.hex_id("sgr")] = {**rule, "Seq": len(rules) + 1}
    return rules


def _as_given(pair: dict[str, Any]) -> tuple[str, str]:
    return str(pair.get("GroupId", "")), str(pair.get("UserId", ""))


def split_permission(perm: dict[str, Any], egress: bool, resolve: ResolveGroup) -> list[Rule]:
    """One IpPermission as single-source rules, validated and normalised (ApiError if bad)."""
    protocol = normalize_protocol(str(perm.get("IpProtocol", "")))
    low, high = _ports(protocol, perm.get("FromPort"), perm.get("ToPort"))
    base: Rule = {"IsEgress": egress, "IpProtocol": protocol, "FromPort": low, "ToPort": high}
    rules = [_sourced(base, item, "CidrIpv4", _cidr(item.get("CidrIp"), 4))
             for item in perm.get("IpRanges", [])]
    rules += [_sourced(base, item, "CidrIpv6", _cidr(item.get("CidrIpv6"), 6))
              for item in perm.get("Ipv6Ranges", [])]
    rules += [_sourced(base, item, "PrefixListId", str(item.get("PrefixListId", "")))
              for item in perm.get("PrefixListIds", [])]
    for item in perm.get("UserIdGroupPairs", []):
        group_id, owner = resolve(item)
        rules.append({**_sourced(base, item, "ReferencedGroupId", group_id),
                      "ReferencedUserId": owner})
    if not rules:
        raise invalid("A rule needs a source: IpRanges, Ipv6Ranges, PrefixListIds or "
                      "UserIdGroupPairs")
    return rules


def rule_key(rule: Rule) -> tuple[Any, ...]:
    """What makes two rules the same rule (their descriptions aside)."""
    source = next(f for f in _VIEW if f in rule)
    return (rule["IsEgress"], rule["IpProtocol"], rule["FromPort"], rule["ToPort"], source,
            rule[source])


def normalize_protocol(text: str) -> str:
    """"tcp", "udp", "icmp", "icmpv6", "-1" (all) or another protocol number."""
    value = text.strip().lower()
    if not value:
        raise ApiError("MissingParameter", "The request must contain the parameter IpProtocol")
    if value in _PORTED or value in ("-1", "all"):
        return "-1" if value == "all" else value
    try:
        number = int(value)
    except ValueError:
        number = -2
    if not 0 <= number <= 255:
        raise invalid(f"Invalid value '{text}' for IP protocol. Unknown protocol.")
    return _NAMES.get(str(number), str(number))


def _ports(protocol: str, low: Any, high: Any) -> tuple[int, int]:
    if protocol not in _PORTED:
        return -1, -1  # AWS: every port, whatever ports were given
    if protocol.startswith("icmp"):
        low, high = (-1 if low is None else int(low)), (-1 if high is None else int(high))
        if not (-1 <= low <= 255 and -1 <= high <= 255):
            raise invalid(f"Invalid ICMP type/code: {low}/{high}")
        return low, high
    if (low is None and high is None) or (low == -1 and high in (-1, None)):
        return 0, 65535
    if low is None or high is None or not 0 <= int(low) <= int(high) <= 65535:
        raise invalid(f"Invalid {protocol.upper()} port range: {low} to {high}")
    return int(low), int(high)


def _cidr(text: Any, version: int) -> str:
    try:
        network = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        network = None
    if network is None or network.version != version:
        raise invalid(f"CIDR block {text} is malformed")
    return str(network)


def _sourced(base: Rule, item: dict[str, Any], field: str, value: str) -> Rule:
    rule = {**base, field: value}
    if item.get("Description"):
        rule["Description"] = item["Description"]
    return rule


def permissions_view(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    """Rules as IpPermission dicts, one per (protocol, ports), sources merged in order."""
    perms: dict[tuple[str, int, int], dict[str, Any]] = {}
    for rule in rules:
        key = (rule["IpProtocol"], rule["FromPort"], rule["ToPort"])
        perm = perms.get(key)
        if perm is None:
            perm = perms[key] = {"IpProtocol": key[0], "IpRanges": [], "Ipv6Ranges": [],
                                 "PrefixListIds": [], "UserIdGroupPairs": []}
            if key[0] in _PORTED:
                perm.update(FromPort=key[1], ToPort=key[2])
        field = next(f for f in _VIEW if f in rule)
        listing, name = _VIEW[field]
        entry = {name: rule[field]}
        if field == "ReferencedGroupId":
            entry["UserId"] = rule.get("ReferencedUserId", "")
        if rule.get("Description"):
            entry["Description"] = rule["Description"]
        perm[listing].append(entry)
    return list(perms.values())
