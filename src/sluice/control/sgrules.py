"""Security-group rules: one rule per source, shown merged as IpPermissions.

Why it is built this way: AWS keeps a group's rules as SecurityGroupRules (one source
each, with an sgr- id) and shows them merged into IpPermissions by (protocol, ports).
A group document therefore keeps its single-source rules ("_rules": {sgr-id: rule}, in
the order they were added) and both IpPermissions views are rebuilt from them, so
revoking by id, refusing duplicates and the merged view always agree, and the aws CLI's
flat form (`--protocol tcp --port 3306 --source-group sg-x`) and boto3's IpPermissions
end up as the same rules. `network.admits` reads only the IpPermissions view (the
documented contract), so the rule model lives apart from admission. Everything here is
a pure function over documents and parameters: no store, no clock; bad input raises
ApiError with EC2's codes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from sluice.control import ids
from sluice.control.errors import ApiError, invalid

Rule = dict[str, Any]
ResolveGroup = Callable[[dict[str, Any]], tuple[str, str]]  # a UserIdGroupPair -> (id, owner)
_PORTED = ("tcp", "udp", "icmp", "icmpv6")
_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
_VIEW = {"CidrIpv4": ("IpRanges", "CidrIp"), "CidrIpv6": ("Ipv6Ranges", "CidrIpv6"),
         "PrefixListId": ("PrefixListIds", "PrefixListId"),
         "ReferencedGroupId": ("UserIdGroupPairs", "GroupId")}
_FLAT = ("IpProtocol", "FromPort", "ToPort", "CidrIp", "SourceSecurityGroupName",
         "SourceSecurityGroupOwnerId")

Doc = dict[str, Any]  # a document as the store keeps it
Params = dict[str, Any]  # request parameters, as in control.context
Output = dict[str, Any]  # answers, as in control.context


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


def check_group_name(name: str, description: str) -> None:
    """Refuse a name or description AWS refuses (sg-*, "default", non-ASCII, > 255)."""
    if name.lower().startswith("sg-"):
        raise invalid("Group names may not be in the format sg-*.")
    if name == "default":
        raise invalid("Cannot use reserved security group name: default")
    for label, value in (("GroupName", name), ("GroupDescription", description)):
        if not value or len(value) > 255 or not value.isascii() or not value.isprintable():
            raise invalid(f"Value ({value}) for parameter {label} is invalid. Character sets "
                          "beyond ASCII are not supported.")


def requested_permissions(params: Params) -> list[dict[str, Any]]:
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


def rules_by_id(rules: dict[str, Rule], wanted: list[str], egress: bool) -> list[str]:
    """The wanted rule ids, once each; ApiError unless each is a rule of this direction."""
    for rule_id in wanted:
        if rule_id not in rules or rules[rule_id]["IsEgress"] != egress:
            raise invalid(f"The security group rule ID '{rule_id}' does not exist",
                          "InvalidSecurityGroupRuleId.NotFound")
    return list(dict.fromkeys(wanted))


def revoked_output(rule_id: str, rule: Rule, group: Doc) -> Output:
    """A rule as a RevokedSecurityGroupRule (the base of a SecurityGroupRule too)."""
    out: Output = {k: rule[k] for k in ("IsEgress", "IpProtocol", "FromPort", "ToPort", "CidrIpv4",
                                "CidrIpv6", "PrefixListId", "ReferencedGroupId", "Description")
           if k in rule}
    return {"SecurityGroupRuleId": rule_id, "GroupId": group["GroupId"], **out}


def describe_rule(rule: Rule) -> str:
    """A rule in the words of EC2's InvalidPermission.Duplicate message."""
    source = rule_key(rule)[-1]
    return (f'"peer: {source}, {rule["IpProtocol"].upper()}, from port: {rule["FromPort"]}, '
            f'to port: {rule["ToPort"]}, ALLOW"')
