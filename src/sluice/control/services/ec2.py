"""EC2, as far as an RDS Proxy needs it: the default VPC, security groups, network interfaces.

The network model (loopback VPC, addresses, how membership of a group is decided) lives
in `control.network`, which the data plane also reads, and the security-group rule
model in `control.sgrules`; what every EC2 operation shares (Filters, NextToken paging,
DryRun, tags) is `ec2_common`. This module is the API over them. Security groups keep
one rule per source and show them merged into IpPermissions, so the aws CLI's flat form
(`--protocol tcp --port 3306 --source-group sg-x`, which awscli turns into one
IpPermission) and boto3's top-level parameters (IpProtocol, FromPort, ToPort, CidrIp,
SourceSecurityGroupName) end up as the same rules. Ingress rules are enforced on new
connections; egress rules are stored, not enforced. Every change to rules or
memberships is reported with `plane.changed("ec2")`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice.control import ids, network, registry, sgrules
from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid
from sluice.control.services import ec2_common as common
from sluice.control.sgrules import (
    Rule,
    check_group_name,
    describe_rule,
    requested_permissions,
    revoked_output,
    rule_key,
    rules_by_id,
    rules_of,
    split_permission,
    with_rules,
)
from sluice.control.store import Doc


class Ec2:
    """The EC2 operations on the loopback VPC (see `control.network`)."""

    name = "ec2"

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        self.store = plane.store

    # VPCs, subnets, zones

    def DescribeVpcs(self, call: Call, params: Params) -> Output:
        docs = self._by_ids("vpc", params.get("VpcIds"), "InvalidVpcID.NotFound", "vpc ID")
        chosen = common.filtered(docs, params.get("Filters"), common.VPC_FILTERS)
        page, token = common.page(chosen, params)
        return common.with_token({"Vpcs": [common.public(d) for d in page]}, token)

    def DescribeSubnets(self, call: Call, params: Params) -> Output:
        docs = self._by_ids("subnet", params.get("SubnetIds"), "InvalidSubnetID.NotFound",
                            "subnet ID")
        chosen = common.filtered(docs, params.get("Filters"), common.SUBNET_FILTERS)
        page, token = common.page(chosen, params)
        subnets = [{**common.public(d),
                    "AvailableIpAddressCount": registry.free_count(self.store, d)} for d in page]
        return common.with_token({"Subnets": subnets}, token)

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
        filters = params.get("Filters")
        return {"AvailabilityZones": common.filtered(zones, filters, common.ZONE_FILTERS)}

    # Security groups

    def CreateSecurityGroup(self, call: Call, params: Params) -> Output:
        common.dry_run(params)
        name, description = params["GroupName"], params["Description"]
        check_group_name(name, description)
        vpc_id = self._vpc_id(params.get("VpcId"))
        if self._group_named(name, vpc_id) is not None:
            raise invalid(f"The security group '{name}' already exists for VPC '{vpc_id}'",
                          "InvalidGroup.Duplicate")
        tags = common.tags_for(params, "security-group")
        group_id = ids.hex_id("sg")
        doc = sgrules.group_doc(group_id, name, description, vpc_id, self.plane.account,
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
        chosen = common.filtered(docs, params.get("Filters"), common.GROUP_FILTERS)
        page, token = common.page(chosen, params)
        return common.with_token({"SecurityGroups": [common.public(d) for d in page]}, token)

    def DeleteSecurityGroup(self, call: Call, params: Params) -> Output:
        common.dry_run(params)
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
        common.dry_run(params)
        group = self._target(params)
        rules = rules_of(group)
        seen = {rule_key(r) for r in rules.values()}
        seq = max((int(r["Seq"]) for r in rules.values()), default=0)
        tags = common.tags_for(params, "security-group-rule")
        added: dict[str, Rule] = {}
        for perm in requested_permissions(params):
            for rule in split_permission(perm, egress, self._resolver(group)):
                if rule_key(rule) in seen:
                    raise invalid(f"the specified rule {describe_rule(rule)} already exists",
                                  "InvalidPermission.Duplicate")
                seen.add(rule_key(rule))
                seq += 1
                added[ids.hex_id("sgr")] = {**rule, "Seq": seq, "Tags": tags}
        self.store.put("security_group", group["GroupId"], with_rules(group, rules | added))
        self.plane.changed("ec2")
        return {"Return": True,
                "SecurityGroupRules": [self._rule_out(k, r, group) for k, r in added.items()]}

    def _revoke(self, params: Params, egress: bool) -> Output:
        common.dry_run(params)
        group = self._target(params)
        rules = rules_of(group)
        unknown: list[dict[str, Any]] = []
        if params.get("SecurityGroupRuleIds"):
            gone = rules_by_id(rules, params["SecurityGroupRuleIds"], egress)
        else:
            gone, unknown = self._matching(rules, requested_permissions(params), group, egress)
        kept = {k: r for k, r in rules.items() if k not in gone}
        self.store.put("security_group", group["GroupId"], with_rules(group, kept))
        self.plane.changed("ec2")
        out: Output = {"Return": True,
                       "RevokedSecurityGroupRules": [revoked_output(k, rules[k], group)
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
        return gone, sgrules.permissions_view(missing)

    def _resolver(self, group: Doc) -> sgrules.ResolveGroup:
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
        out = revoked_output(rule_id, rule, group)
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
        holders: list[Any] = [a.groups for a in registry.attachments(self.store)]
        holders += [[g["GroupId"] for g in n.get("Groups", [])]
                    for n in self.store.all("network_interface")]
        for kind in ("db_proxy", "db_proxy_endpoint"):
            holders += [p.get("VpcSecurityGroupIds", []) for p in self.store.all(kind)]
        holders += [[g.get("VpcSecurityGroupId") for g in d.get("VpcSecurityGroups", [])]
                    for d in self.store.all("db_instance")]
        return any(group_id in held for held in holders)

    # Network interfaces

    def CreateNetworkInterface(self, call: Call, params: Params) -> Output:
        common.dry_run(params)
        subnet = self._subnet(params["SubnetId"])
        groups = self._interface_groups(params.get("Groups"), subnet)
        tags = common.tags_for(params, "network-interface")
        doc = network.add_interface(self.store, subnet, groups, params.get("Description", ""),
                                    tags, _requested_address(params))
        self.plane.changed("ec2")
        out: Output = {"NetworkInterface": doc}
        return {**out, "ClientToken": params["ClientToken"]} if "ClientToken" in params else out

    def DescribeNetworkInterfaces(self, call: Call, params: Params) -> Output:
        docs = self._by_ids("network_interface", params.get("NetworkInterfaceIds"),
                            "InvalidNetworkInterfaceID.NotFound", "networkInterface ID")
        chosen = common.filtered(docs, params.get("Filters"), common.ENI_FILTERS, "TagSet")
        page, token = common.page(chosen, params)
        return common.with_token({"NetworkInterfaces": [common.public(d) for d in page]}, token)

    def DeleteNetworkInterface(self, call: Call, params: Params) -> Output:
        common.dry_run(params)
        eni_id = params["NetworkInterfaceId"]
        found = self._by_ids("network_interface", [eni_id], "InvalidNetworkInterfaceID.NotFound",
                             "networkInterface ID")[0]
        if found.get("Status") == "in-use":
            raise invalid(f"Interface: [{eni_id}] in use.", "InvalidNetworkInterface.InUse")
        network.remove_interface(self.store, eni_id)
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
        common.dry_run(params)
        new = params["Tags"]
        if any(str(t.get("Key", "")).lower().startswith("aws:") for t in new):
            raise invalid("Tag keys starting with 'aws:' are reserved for internal use")
        keys = {t["Key"] for t in new}
        self._retag(params["Resources"], lambda old: [t for t in old if t["Key"] not in keys]
                    + [{"Key": t["Key"], "Value": t.get("Value", "")} for t in new])
        return {}

    def DeleteTags(self, call: Call, params: Params) -> Output:
        common.dry_run(params)
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
            if prefix not in common.TAGGABLE:
                raise invalid(f"The ID '{resource}' is not valid", "InvalidID")
            kind, field, code, noun = common.TAGGABLE[prefix]
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


def _requested_address(params: Params) -> str | None:
    listed = params.get("PrivateIpAddresses") or []
    if len(listed) > 1 or params.get("SecondaryPrivateIpAddressCount"):
        raise invalid("Sluice gives a network interface a single private address")
    if params.get("InterfaceType"):
        raise invalid("Sluice network interfaces are of type 'interface' only")
    if listed:
        return str(listed[0]["PrivateIpAddress"])
    return params.get("PrivateIpAddress")

