"""EC2, as far as an RDS Proxy needs it: the default VPC, security groups, network interfaces.

The network model (loopback VPC, addresses, how membership of a group is decided, the
rule model) lives in `control.network`, which the data plane also reads; this module is
the API over it. Security groups keep one rule per source and show them merged into
IpPermissions, so the aws CLI's flat form (`--protocol tcp --port 3306 --source-group
sg-x`, which awscli turns into one IpPermission) and boto3's top-level parameters
(IpProtocol, FromPort, ToPort, CidrIp, SourceSecurityGroupName) end up as the same rules.
Ingress rules are enforced on new connections; egress rules are stored, not enforced.
Every change to rules or memberships is reported with `plane.changed("ec2")`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from sluice.control import ids, network
from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid
from sluice.control.network import Rule, rule_key, rules_of, split_permission, with_rules
from sluice.control.store import Doc

T = TypeVar("T")
Getter = Callable[[Doc], Iterable[Any]]
_FLAT = ("IpProtocol", "FromPort", "ToPort", "CidrIp", "SourceSecurityGroupName",
         "SourceSecurityGroupOwnerId")
_TAGGABLE = {"sg": ("security_group", "Tags", "InvalidGroup.NotFound", "security group"),
             "eni": ("network_interface", "TagSet", "InvalidNetworkInterfaceID.NotFound",
                     "networkInterface ID"),
             "vpc": ("vpc", "Tags", "InvalidVpcID.NotFound", "vpc ID"),
             "subnet": ("subnet", "Tags", "InvalidSubnetID.NotFound", "subnet ID")}


def _field(name: str) -> Getter:
    return lambda doc: [doc[name]] if name in doc else []


_VPC_FILTERS: dict[str, Getter] = {
    "vpc-id": _field("VpcId"), "cidr": _field("CidrBlock"), "cidr-block": _field("CidrBlock"),
    "is-default": _field("IsDefault"), "state": _field("State"), "owner-id": _field("OwnerId")}
_SUBNET_FILTERS: dict[str, Getter] = {
    "subnet-id": _field("SubnetId"), "vpc-id": _field("VpcId"),
    "availability-zone": _field("AvailabilityZone"), "default-for-az": _field("DefaultForAz"),
    "availability-zone-id": _field("AvailabilityZoneId"), "cidr-block": _field("CidrBlock"),
    "state": _field("State"), "owner-id": _field("OwnerId")}
_GROUP_FILTERS: dict[str, Getter] = {
    "group-id": _field("GroupId"), "group-name": _field("GroupName"), "vpc-id": _field("VpcId"),
    "description": _field("Description"), "owner-id": _field("OwnerId"),
    "ip-permission.cidr": lambda d: [r["CidrIp"] for p in d["IpPermissions"]
                                     for r in p["IpRanges"]],
    "ip-permission.group-id": lambda d: [g["GroupId"] for p in d["IpPermissions"]
                                         for g in p["UserIdGroupPairs"]]}
_ENI_FILTERS: dict[str, Getter] = {
    "network-interface-id": _field("NetworkInterfaceId"), "subnet-id": _field("SubnetId"),
    "vpc-id": _field("VpcId"), "status": _field("Status"), "description": _field("Description"),
    "private-ip-address": _field("PrivateIpAddress"),
    "addresses.private-ip-address": _field("PrivateIpAddress"),
    "availability-zone": _field("AvailabilityZone"), "owner-id": _field("OwnerId"),
    "interface-type": _field("InterfaceType"),
    "group-id": lambda d: [g["GroupId"] for g in d["Groups"]],
    "group-name": lambda d: [g["GroupName"] for g in d["Groups"]]}
_ZONE_FILTERS: dict[str, Getter] = {
    "zone-name": _field("ZoneName"), "zone-id": _field("ZoneId"),
    "region-name": _field("RegionName"), "state": _field("State")}


class Ec2:
    """The EC2 operations on the loopback VPC (see `control.network`)."""

    name = "ec2"

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        self.store = plane.store

    # VPCs, subnets, zones

    def DescribeVpcs(self, call: Call, params: Params) -> Output:
        docs = self._by_ids("vpc", params.get("VpcIds"), "InvalidVpcID.NotFound", "vpc ID")
        page, token = _page(_filtered(docs, params.get("Filters"), _VPC_FILTERS), params)
        return _with_token({"Vpcs": [_public(d) for d in page]}, token)

    def DescribeSubnets(self, call: Call, params: Params) -> Output:
        docs = self._by_ids("subnet", params.get("SubnetIds"), "InvalidSubnetID.NotFound",
                            "subnet ID")
        page, token = _page(_filtered(docs, params.get("Filters"), _SUBNET_FILTERS), params)
        subnets = [{**_public(d), "AvailableIpAddressCount": network.free_count(self.store, d)}
                   for d in page]
        return _with_token({"Subnets": subnets}, token)

    def DescribeAvailabilityZones(self, call: Call, params: Params) -> Output:
        region = self.plane.region
        zones = [{"ZoneName": region + z, "ZoneId": network.zone_id(region, z),
                  "RegionName": region, "State": "available", "ZoneType": "availability-zone",
                  "OptInStatus": "opt-in-not-required", "GroupName": region,
                  "NetworkBorderGroup": region, "Messages": []} for z in "abc"]
        for member, key in (("ZoneNames", "ZoneName"), ("ZoneIds", "ZoneId")):
            wanted = params.get(member)
            if wanted:
                unknown = sorted(set(wanted) - {z[key] for z in zones})
                if unknown:
                    raise invalid(f"The availability zone '{unknown[0]}' does not exist")
                zones = [z for z in zones if z[key] in wanted]
        return {"AvailabilityZones": _filtered(zones, params.get("Filters"), _ZONE_FILTERS)}

    # Security groups

    def CreateSecurityGroup(self, call: Call, params: Params) -> Output:
        _dry_run(params)
        name, description = params["GroupName"], params["Description"]
        _check_group_name(name, description)
        vpc_id = self._vpc_id(params.get("VpcId"))
        if self._group_named(name, vpc_id) is not None:
            raise invalid(f"The security group '{name}' already exists for VPC '{vpc_id}'",
                          "InvalidGroup.Duplicate")
        tags = _tags_for(params, "security-group")
        group_id = ids.hex_id("sg")
        doc = network.group_doc(group_id, name, description, vpc_id, self.plane.account,
                                self.plane.region, tags)
        self.store.put("security_group", group_id, doc)
        out: Output = {"GroupId": group_id, "SecurityGroupArn": doc["SecurityGroupArn"]}
        return {**out, "Tags": tags} if tags else out

    def DescribeSecurityGroups(self, call: Call, params: Params) -> Output:
        docs = self._by_ids("security_group", params.get("GroupIds"), "InvalidGroup.NotFound",
                            "security group")
        names = params.get("GroupNames")
        if names:
            vpc = self._default_vpc_id()
            docs = [d for d in docs if d["VpcId"] == vpc and d["GroupName"] in names]
            missing = sorted(set(names) - {d["GroupName"] for d in docs})
            if missing:
                raise invalid(f"The security group '{missing[0]}' does not exist in default "
                              f"VPC '{vpc}'", "InvalidGroup.NotFound")
        page, token = _page(_filtered(docs, params.get("Filters"), _GROUP_FILTERS), params)
        return _with_token({"SecurityGroups": [_public(d) for d in page]}, token)

    def DeleteSecurityGroup(self, call: Call, params: Params) -> Output:
        _dry_run(params)
        group = self._target(params)
        group_id = group["GroupId"]
        if group["GroupName"] == "default":
            raise ApiError("CannotDelete", f'the specified group: "{group_id}" name: "default" '
                           "cannot be deleted by a user")
        if self._is_used(group_id):
            raise invalid(f"resource {group_id} has a dependent object", "DependencyViolation")
        self.store.delete("security_group", group_id)
        self.plane.changed("ec2")
        return {"Return": True, "GroupId": group_id}

    def AuthorizeSecurityGroupIngress(self, call: Call, params: Params) -> Output:
        return self._authorize(params, egress=False)

    def AuthorizeSecurityGroupEgress(self, call: Call, params: Params) -> Output:
        """Stored and shown, not enforced: Sluice filters connections in, not out."""
        return self._authorize(params, egress=True)

    def RevokeSecurityGroupIngress(self, call: Call, params: Params) -> Output:
        return self._revoke(params, egress=False)

    def RevokeSecurityGroupEgress(self, call: Call, params: Params) -> Output:
        return self._revoke(params, egress=True)

    def _authorize(self, params: Params, egress: bool) -> Output:
        _dry_run(params)
        group = self._target(params)
        rules = rules_of(group)
        seen = {rule_key(r) for r in rules.values()}
        seq = max((int(r["Seq"]) for r in rules.values()), default=0)
        tags = _tags_for(params, "security-group-rule")
        added: dict[str, Rule] = {}
        for perm in _permissions(params):
            for rule in split_permission(perm, egress, self._resolver(group)):
                if rule_key(rule) in seen:
                    raise invalid(f"the specified rule {_describe_rule(rule)} already exists",
                                  "InvalidPermission.Duplicate")
                seen.add(rule_key(rule))
                seq += 1
                added[ids.hex_id("sgr")] = {**rule, "Seq": seq, "Tags": tags}
        self.store.put("security_group", group["GroupId"], with_rules(group, rules | added))
        self.plane.changed("ec2")
        return {"Return": True,
                "SecurityGroupRules": [self._rule_out(k, r, group) for k, r in added.items()]}

    def _revoke(self, params: Params, egress: bool) -> Output:
        _dry_run(params)
        group = self._target(params)
        rules = rules_of(group)
        unknown: list[dict[str, Any]] = []
        if params.get("SecurityGroupRuleIds"):
            gone = _rules_by_id(rules, params["SecurityGroupRuleIds"], egress)
        else:
            gone, unknown = self._matching(rules, _permissions(params), group, egress)
        kept = {k: r for k, r in rules.items() if k not in gone}
        self.store.put("security_group", group["GroupId"], with_rules(group, kept))
        self.plane.changed("ec2")
        out: Output = {"Return": True,
                       "RevokedSecurityGroupRules": [_revoked_out(k, rules[k], group)
                                                     for k in gone]}
        return {**out, "UnknownIpPermissions": unknown} if unknown else out

    def _matching(
        self, rules: dict[str, Rule], perms: list[dict[str, Any]], group: Doc, egress: bool
    ) -> tuple[list[str], list[dict[str, Any]]]:
        by_key = {rule_key(r): k for k, r in rules.items()}
        gone: list[str] = []
        missing: list[Rule] = []
        for perm in perms:
            for rule in split_permission(perm, egress, self._resolver(group)):
                found = by_key.get(rule_key(rule))
                if found is None:
                    missing.append(rule)
                elif found not in gone:
                    gone.append(found)
        if not gone:
            raise invalid("The specified rule does not exist in this security group.",
                          "InvalidPermission.NotFound")
        return gone, network.permissions_view(missing)

    def _resolver(self, group: Doc) -> network.ResolveGroup:
        def resolve(pair: dict[str, Any]) -> tuple[str, str]:
            found: Doc | None
            if pair.get("GroupId"):
                found = self._group(pair["GroupId"])
            elif pair.get("GroupName"):
                found = self._group_named(pair["GroupName"], group["VpcId"])
                if found is None:
                    raise invalid(f"The security group '{pair['GroupName']}' does not exist in "
                                  f"VPC '{group['VpcId']}'", "InvalidGroup.NotFound")
            else:
                raise ApiError("MissingParameter", "A UserIdGroupPair needs a GroupId")
            return found["GroupId"], found["OwnerId"]

        return resolve

    def _rule_out(self, rule_id: str, rule: Rule, group: Doc) -> Output:
        out = _revoked_out(rule_id, rule, group)
        referenced = out.pop("ReferencedGroupId", None)
        if referenced:
            out["ReferencedGroupInfo"] = {"GroupId": referenced,
                                          "UserId": rule.get("ReferencedUserId", "")}
        return {**out, "GroupOwnerId": group["OwnerId"], "Tags": rule.get("Tags", []),
                "SecurityGroupRuleArn": f"arn:aws:ec2:{self.plane.region}:{group['OwnerId']}"
                                        f":security-group-rule/{rule_id}"}

    def _is_used(self, group_id: str) -> bool:
        for other in self.store.all("security_group"):
            perms = other.get("IpPermissions", []) + other.get("IpPermissionsEgress", [])
            pairs = [p for perm in perms for p in perm.get("UserIdGroupPairs", [])]
            if other["GroupId"] != group_id and any(p.get("GroupId") == group_id for p in pairs):
                return True
        holders = [a.get("Groups", []) for a in self.store.all("address")]
        holders += [[g["GroupId"] for g in n.get("Groups", [])]
                    for n in self.store.all("network_interface")]
        for kind in ("db_proxy", "db_proxy_endpoint"):
            holders += [p.get("VpcSecurityGroupIds", []) for p in self.store.all(kind)]
        holders += [[g.get("VpcSecurityGroupId") for g in d.get("VpcSecurityGroups", [])]
                    for d in self.store.all("db_instance")]
        return any(group_id in held for held in holders)

    # Network interfaces

    def CreateNetworkInterface(self, call: Call, params: Params) -> Output:
        _dry_run(params)
        subnet = self._subnet(params["SubnetId"])
        groups = self._interface_groups(params.get("Groups"), subnet)
        tags = _tags_for(params, "network-interface")
        eni_id = ids.hex_id("eni")
        with self.store.batch():
            address = network.allocate_address(
                self.store, subnet["SubnetId"], eni_id, [g["GroupId"] for g in groups],
                _requested_address(params))
            doc = _interface_doc(eni_id, subnet, groups, address, params.get("Description", ""),
                                 tags)
            self.store.put("network_interface", eni_id, doc)
        self.plane.changed("ec2")
        out: Output = {"NetworkInterface": doc}
        return {**out, "ClientToken": params["ClientToken"]} if "ClientToken" in params else out

    def DescribeNetworkInterfaces(self, call: Call, params: Params) -> Output:
        docs = self._by_ids("network_interface", params.get("NetworkInterfaceIds"),
                            "InvalidNetworkInterfaceID.NotFound", "networkInterface ID")
        page, token = _page(_filtered(docs, params.get("Filters"), _ENI_FILTERS, "TagSet"),
                            params)
        return _with_token({"NetworkInterfaces": [_public(d) for d in page]}, token)

    def DeleteNetworkInterface(self, call: Call, params: Params) -> Output:
        _dry_run(params)
        eni_id = params["NetworkInterfaceId"]
        found = self._by_ids("network_interface", [eni_id], "InvalidNetworkInterfaceID.NotFound",
                             "networkInterface ID")[0]
        if found.get("Status") == "in-use":
            raise invalid(f"Interface: [{eni_id}] in use.", "InvalidNetworkInterface.InUse")
        with self.store.batch():
            network.release_address(self.store, found["PrivateIpAddress"])
            self.store.delete("network_interface", eni_id)
        self.plane.changed("ec2")
        return {}

    def _interface_groups(self, wanted: list[str] | None, subnet: Doc) -> list[dict[str, str]]:
        if wanted is None:
            default = self._group_named("default", subnet["VpcId"])
            chosen = [default] if default else []
        else:
            chosen = [self._group(g) for g in wanted]
        for group in chosen:
            if group["VpcId"] != subnet["VpcId"]:
                raise invalid(f"Security group {group['GroupId']} and subnet "
                              f"{subnet['SubnetId']} belong to different networks.")
        return [{"GroupId": g["GroupId"], "GroupName": g["GroupName"]} for g in chosen]

    # Tags

    def CreateTags(self, call: Call, params: Params) -> Output:
        _dry_run(params)
        new = params["Tags"]
        if any(str(t.get("Key", "")).lower().startswith("aws:") for t in new):
            raise invalid("Tag keys starting with 'aws:' are reserved for internal use")
        keys = {t["Key"] for t in new}
        self._retag(params["Resources"], lambda old: [t for t in old if t["Key"] not in keys]
                    + [{"Key": t["Key"], "Value": t.get("Value", "")} for t in new])
        return {}

    def DeleteTags(self, call: Call, params: Params) -> Output:
        _dry_run(params)
        gone = params.get("Tags")

        def matches(tag: dict[str, str]) -> bool:
            return gone is None or any(
                g["Key"] == tag["Key"] and g.get("Value") in (None, tag["Value"]) for g in gone)

        self._retag(params["Resources"], lambda old: [t for t in old if not matches(t)])
        return {}

    def _retag(self, resources: list[str], change: Callable[[list[dict[str, str]]], Any]) -> None:
        targets = []
        for resource in resources:
            prefix = resource.split("-", 1)[0]
            if prefix not in _TAGGABLE:
                raise invalid(f"The ID '{resource}' is not valid", "InvalidID")
            kind, field, code, noun = _TAGGABLE[prefix]
            targets.append((kind, field, self._by_ids(kind, [resource], code, noun)[0]))
        with self.store.batch():
            for kind, field, doc in targets:
                key = doc[{"security_group": "GroupId", "network_interface": "NetworkInterfaceId",
                           "vpc": "VpcId", "subnet": "SubnetId"}[kind]]
                self.store.put(kind, key, {**doc, field: change(list(doc.get(field, [])))})

    # Look-ups

    def _by_ids(self, kind: str, wanted: list[str] | None, code: str, noun: str) -> list[Doc]:
        if not wanted:
            return self.store.all(kind)
        found = []
        for key in wanted:
            doc = self.store.get(kind, key)
            if doc is None:
                raise invalid(f"The {noun} '{key}' does not exist", code)
            found.append(doc)
        return found

    def _group(self, group_id: str) -> Doc:
        return self._by_ids("security_group", [group_id], "InvalidGroup.NotFound",
                            "security group")[0]

    def _group_named(self, name: str, vpc_id: str) -> Doc | None:
        groups = self.store.all("security_group")
        return next((g for g in groups if g["GroupName"] == name and g["VpcId"] == vpc_id), None)

    def _subnet(self, subnet_id: str) -> Doc:
        return self._by_ids("subnet", [subnet_id], "InvalidSubnetID.NotFound", "subnet ID")[0]

    def _default_vpc_id(self) -> str:
        vpc = network.default_vpc(self.store)
        if vpc is None:
            raise ApiError("VPCIdNotSpecified", "No default VPC for this user")
        return str(vpc["VpcId"])

    def _vpc_id(self, given: str | None) -> str:
        if given is None:
            return self._default_vpc_id()
        return str(self._by_ids("vpc", [given], "InvalidVpcID.NotFound", "vpc ID")[0]["VpcId"])

    def _target(self, params: Params) -> Doc:
        if params.get("GroupId"):
            return self._group(params["GroupId"])
        if params.get("GroupName"):
            vpc_id = self._default_vpc_id()
            found = self._group_named(params["GroupName"], vpc_id)
            if found is None:
                raise invalid(f"The security group '{params['GroupName']}' does not exist in "
                              f"default VPC '{vpc_id}'", "InvalidGroup.NotFound")
            return found
        raise ApiError("MissingParameter", "The request must contain the parameter groupId")


def _dry_run(params: Params) -> None:
    if params.get("DryRun"):
        raise ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.",
                       412)


def _check_group_name(name: str, description: str) -> None:
    if name.lower().startswith("sg-"):
        raise invalid("Group names may not be in the format sg-*.")
    if name == "default":
        raise invalid("Cannot use reserved security group name: default")
    for label, value in (("GroupName", name), ("GroupDescription", description)):
        if not value or len(value) > 255 or not value.isascii() or not value.isprintable():
            raise invalid(f"Value ({value}) for parameter {label} is invalid. Character sets "
                          "beyond ASCII are not supported.")


def _permissions(params: Params) -> list[dict[str, Any]]:
    """The rules asked for: IpPermissions, or the top-level (flat) parameters as one."""
    given = params.get("IpPermissions")
    flat = {k: params[k] for k in _FLAT if params.get(k) is not None}
    if given and flat:
        raise invalid(f"The parameter IpPermissions cannot be used with {sorted(flat)[0]}",
                      "InvalidParameterCombination")
    if given:
        return list(given)
    ports: dict[str, Any] = {k: flat[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in flat}
    if "SourceSecurityGroupName" in flat:
        if "CidrIp" in flat:
            raise invalid("CidrIp cannot be used with SourceSecurityGroupName",
                          "InvalidParameterCombination")
        pair = {"GroupName": flat["SourceSecurityGroupName"]}
        if "IpProtocol" in ports:
            return [{**ports, "UserIdGroupPairs": [pair]}]
        return [{"IpProtocol": p, "UserIdGroupPairs": [pair]} for p in ("tcp", "udp", "icmp")]
    if "CidrIp" in flat:
        return [{**ports, "IpRanges": [{"CidrIp": flat["CidrIp"]}]}]
    raise ApiError("MissingParameter", "The request must contain the parameter ipPermissions")


def _rules_by_id(rules: dict[str, Rule], wanted: list[str], egress: bool) -> list[str]:
    for rule_id in wanted:
        if rule_id not in rules or rules[rule_id]["IsEgress"] != egress:
            raise invalid(f"The security group rule ID '{rule_id}' does not exist",
                          "InvalidSecurityGroupRuleId.NotFound")
    return list(dict.fromkeys(wanted))


def _revoked_out(rule_id: str, rule: Rule, group: Doc) -> Output:
    out: Output = {k: rule[k] for k in ("IsEgress", "IpProtocol", "FromPort", "ToPort", "CidrIpv4",
                                "CidrIpv6", "PrefixListId", "ReferencedGroupId", "Description")
           if k in rule}
    return {"SecurityGroupRuleId": rule_id, "GroupId": group["GroupId"], **out}


def _describe_rule(rule: Rule) -> str:
    source = rule_key(rule)[-1]
    return (f'"peer: {source}, {rule["IpProtocol"].upper()}, from port: {rule["FromPort"]}, '
            f'to port: {rule["ToPort"]}, ALLOW"')


def _requested_address(params: Params) -> str | None:
    listed = params.get("PrivateIpAddresses") or []
    if len(listed) > 1 or params.get("SecondaryPrivateIpAddressCount"):
        raise invalid("Sluice gives a network interface a single private address")
    if params.get("InterfaceType"):
        raise invalid("Sluice network interfaces are of type 'interface' only")
    if listed:
        return str(listed[0]["PrivateIpAddress"])
    return params.get("PrivateIpAddress")


def _interface_doc(
    eni_id: str, subnet: Doc, groups: list[dict[str, str]], address: str, description: str,
    tags: list[dict[str, str]],
) -> Doc:
    mac = ":".join(["02", *(f"{b:02x}" for b in secrets.token_bytes(5))])
    return {
        "NetworkInterfaceId": eni_id, "SubnetId": subnet["SubnetId"], "VpcId": subnet["VpcId"],
        "AvailabilityZone": subnet["AvailabilityZone"], "Description": description,
        "Groups": groups, "InterfaceType": "interface", "PrivateIpAddress": address,
        "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": address}],
        "Status": "available", "OwnerId": subnet["OwnerId"], "RequesterManaged": False,
        "SourceDestCheck": True, "MacAddress": mac, "Ipv6Addresses": [], "TagSet": tags,
    }


def _tags_for(params: Params, resource_type: str) -> list[dict[str, str]]:
    tags: list[dict[str, str]] = []
    for spec in params.get("TagSpecifications") or []:
        if spec.get("ResourceType") != resource_type:
            raise invalid(f"'{spec.get('ResourceType')}' is not a valid taggable resource type "
                          "for this operation.")
        tags += [{"Key": t["Key"], "Value": t.get("Value", "")} for t in spec.get("Tags", [])]
    return tags


def _public(doc: Doc) -> Doc:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _filtered(
    docs: list[Doc], filters: list[dict[str, Any]] | None, getters: dict[str, Getter],
    tags: str = "Tags",
) -> list[Doc]:
    """EC2 filters: a filter's values (with * and ? wildcards) or'ed, filters and'ed."""
    for item in filters or []:
        getter = _getter(str(item.get("Name", "")), getters, tags)
        patterns = [str(v) for v in item.get("Values", [])]
        docs = [d for d in docs
                if any(fnmatchcase(_text(v), p) for v in getter(d) for p in patterns)]
    return docs


def _getter(name: str, getters: dict[str, Getter], tags: str) -> Getter:
    if name in getters:
        return getters[name]
    if name.startswith("tag:"):
        key = name[4:]
        return lambda d: [t["Value"] for t in d.get(tags, []) if t["Key"] == key]
    if name in ("tag-key", "tag-value"):
        part = "Key" if name == "tag-key" else "Value"
        return lambda d: [t[part] for t in d.get(tags, [])]
    raise invalid(f"The filter '{name}' is invalid")


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _page(items: list[T], params: Params) -> tuple[list[T], str | None]:
    """NextToken/MaxResults over a list; the token is opaque to callers."""
    start = 0
    if params.get("NextToken"):
        try:
            text = base64.urlsafe_b64decode(params["NextToken"].encode()).decode()
            start = int(text.removeprefix("sluice-page:"))
            if start < 0:
                raise ValueError(start)
        except (ValueError, binascii.Error):
            raise invalid("The NextToken is not valid") from None
    size = params.get("MaxResults")
    if size is None:
        return items[start:], None
    end = start + int(size)
    token = base64.urlsafe_b64encode(f"sluice-page:{end}".encode()).decode()
    return items[start:end], (token if end < len(items) else None)


def _with_token(out: Output, token: str | None) -> Output:
    return {**out, "NextToken": token} if token else out
