"""What the EC2 operations share: filters, NextToken paging, DryRun, tags, output.

Why it is built this way: every Describe* of EC2 takes the same Filters (values with
`*`/`?` wildcards or'ed, filters and'ed, `tag:KEY`, `tag-key` and `tag-value` for every
resource) and the same MaxResults/NextToken paging, so one table of field getters per
resource plus two generic functions serve them all, and `services.ec2` keeps only the
operations. Tokens are opaque (base64 of an offset) and checked on the way back in.
Pure functions over documents and parameters; bad input raises ApiError.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from sluice.control.context import Output, Params
from sluice.control.errors import ApiError, invalid
from sluice.control.store import Doc

T = TypeVar("T")
Getter = Callable[[Doc], Iterable[Any]]
# What CreateTags/DeleteTags accept: id prefix -> (kind, tag field, not-found code, noun)
TAGGABLE: Mapping[str, tuple[str, str, str, str]] = {
    "sg": ("security_group", "Tags", "InvalidGroup.NotFound", "security group"),
    "eni": ("network_interface", "TagSet", "InvalidNetworkInterfaceID.NotFound",
            "networkInterface ID"),
    "vpc": ("vpc", "Tags", "InvalidVpcID.NotFound", "vpc ID"),
    "subnet": ("subnet", "Tags", "InvalidSubnetID.NotFound", "subnet ID")}


def _field(name: str) -> Getter:
    return lambda doc: [doc[name]] if name in doc else []


VPC_FILTERS: Mapping[str, Getter] = {
    "vpc-id": _field("VpcId"), "cidr": _field("CidrBlock"), "cidr-block": _field("CidrBlock"),
    "is-default": _field("IsDefault"), "state": _field("State"), "owner-id": _field("OwnerId")}
SUBNET_FILTERS: Mapping[str, Getter] = {
    "subnet-id": _field("SubnetId"), "vpc-id": _field("VpcId"),
    "availability-zone": _field("AvailabilityZone"), "default-for-az": _field("DefaultForAz"),
    "availability-zone-id": _field("AvailabilityZoneId"), "cidr-block": _field("CidrBlock"),
    "state": _field("State"), "owner-id": _field("OwnerId")}
GROUP_FILTERS: Mapping[str, Getter] = {
    "group-id": _field("GroupId"), "group-name": _field("GroupName"), "vpc-id": _field("VpcId"),
    "description": _field("Description"), "owner-id": _field("OwnerId"),
    "ip-permission.cidr": lambda d: [r["CidrIp"] for p in d["IpPermissions"]
                                     for r in p["IpRanges"]],
    "ip-permission.group-id": lambda d: [g["GroupId"] for p in d["IpPermissions"]
                                         for g in p["UserIdGroupPairs"]]}
ENI_FILTERS: Mapping[str, Getter] = {
    "network-interface-id": _field("NetworkInterfaceId"), "subnet-id": _field("SubnetId"),
    "vpc-id": _field("VpcId"), "status": _field("Status"), "description": _field("Description"),
    "private-ip-address": _field("PrivateIpAddress"),
    "addresses.private-ip-address": _field("PrivateIpAddress"),
    "availability-zone": _field("AvailabilityZone"), "owner-id": _field("OwnerId"),
    "interface-type": _field("InterfaceType"),
    "group-id": lambda d: [g["GroupId"] for g in d["Groups"]],
    "group-name": lambda d: [g["GroupName"] for g in d["Groups"]]}
ZONE_FILTERS: Mapping[str, Getter] = {
    "zone-name": _field("ZoneName"), "zone-id": _field("ZoneId"),
    "region-name": _field("RegionName"), "state": _field("State")}


def dry_run(params: Params) -> None:
    """Raise EC2's DryRunOperation when the request only asks whether it would succeed."""
    if params.get("DryRun"):
        raise ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.",
                       412)


def tags_for(params: Params, resource_type: str) -> list[dict[str, str]]:
    """The tags of TagSpecifications; ApiError if one names another resource type."""
    tags: list[dict[str, str]] = []
    for spec in params.get("TagSpecifications") or []:
        if spec.get("ResourceType") != resource_type:
            raise invalid(f"'{spec.get('ResourceType')}' is not a valid taggable resource type "
                          "for this operation.")
        tags += [{"Key": t["Key"], "Value": t.get("Value", "")} for t in spec.get("Tags", [])]
    return tags


def public(doc: Doc) -> Doc:
    """A stored document without its internal ("_") fields."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def filtered(
    docs: list[Doc], filters: list[dict[str, Any]] | None, getters: Mapping[str, Getter],
    tags: str = "Tags",
) -> list[Doc]:
    """EC2 filters: a filter's values (with * and ? wildcards) or'ed, filters and'ed."""
    for item in filters or []:
        getter = _getter(str(item.get("Name", "")), getters, tags)
        patterns = [str(v) for v in item.get("Values", [])]
        docs = [d for d in docs
                if any(fnmatchcase(_text(v), p) for v in getter(d) for p in patterns)]
    return docs


def _getter(name: str, getters: Mapping[str, Getter], tags: str) -> Getter:
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


def page(items: list[T], params: Params) -> tuple[list[T], str | None]:
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


def with_token(out: Output, token: str | None) -> Output:
    """`out` with NextToken when there is a next page."""
    return {**out, "NextToken": token} if token else out
