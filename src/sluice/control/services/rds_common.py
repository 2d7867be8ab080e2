"""What the RDS operation modules share: document kinds, names, look-ups, paging, output.

The RDS service is split by resource (proxies, targets, endpoints, instances,
tags) so that each module stays small; this one holds the rules they all
apply the same way: RDS identifier syntax, "not found" and "wrong state"
faults with AWS's codes and statuses, opaque Marker paging, the subnet and
security-group checks shared by proxies and proxy endpoints, and the turning
of a stored document (epoch floats, "_" internal fields) into an output shape.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from sluice.control.context import Output, Params, Plane, timestamp
from sluice.control.errors import ApiError, invalid, not_found
from sluice.control.store import Doc, Store

PROXY = "db_proxy"
TARGET_GROUP = "db_proxy_target_group"
TARGET = "db_proxy_target"
ENDPOINT = "db_proxy_endpoint"
INSTANCE = "db_instance"

DEFAULT_GROUP = "default"
FAMILY_ENGINES: dict[str, tuple[str, ...]] = {
    "MYSQL": ("mysql", "mariadb"),
    "POSTGRESQL": ("postgres",),
}
_TIMESTAMPS = frozenset({"CreatedDate", "UpdatedDate", "InstanceCreateTime"})
_IDENTIFIER = re.compile(r"[A-Za-z](?:[A-Za-z0-9]|-(?!-))*")


def rds_arn(plane: Plane, resource_type: str, resource: str) -> str:
    """arn:aws:rds:REGION:ACCOUNT:TYPE:RESOURCE."""
    return f"arn:aws:rds:{plane.region}:{plane.account}:{resource_type}:{resource}"


def identifier(value: str, what: str) -> str:
    """An RDS identifier checked and lower-cased, as RDS stores them.

    1-63 characters, a letter first, then letters, digits and hyphens, with no
    two hyphens in a row and no hyphen at the end.
    """
    if 1 <= len(value) <= 63 and _IDENTIFIER.fullmatch(value) and not value.endswith("-"):
        return value.lower()
    raise invalid(
        f"{what} must begin with a letter, contain only ASCII letters, digits and hyphens, "
        "not end with a hyphen or contain two consecutive hyphens, and be 1 to 63 characters "
        f"long: {value!r}"
    )


def output(doc: Doc) -> Output:
    """A stored document as an output shape: "_" fields dropped, epochs as datetimes."""
    return {k: _out_value(k, v) for k, v in doc.items() if not k.startswith("_")}


def _out_value(key: str, value: Any) -> Any:
    if key in _TIMESTAMPS and isinstance(value, int | float):
        return timestamp(value)
    if isinstance(value, dict):
        return output(value)
    if isinstance(value, list):
        return [output(v) if isinstance(v, dict) else v for v in value]
    return value


def proxy_key(name: str) -> str:
    return name.lower()


def get_proxy(store: Store, name: str) -> Doc:
    """The proxy of that name, or DBProxyNotFoundFault."""
    doc = store.get(PROXY, proxy_key(name))
    if doc is None:
        raise not_found("DBProxyNotFoundFault", f"DBProxy {name} not found.")
    return doc


def available_proxy(store: Store, name: str) -> Doc:
    """The proxy of that name if it is 'available', else the fault AWS answers."""
    doc = get_proxy(store, name)
    if doc["Status"] != "available":
        raise ApiError(
            "InvalidDBProxyStateFault",
            f"DBProxy {doc['DBProxyName']} is not in the available state (it is {doc['Status']}).",
        )
    return doc


def group_key(proxy_name: str, group: str) -> str:
    return f"{proxy_name}/{group}"


def get_target_group(store: Store, proxy: Doc, name: str | None) -> Doc:
    """A target group of the proxy (the default one if no name), or the fault."""
    group = name if name is not None else DEFAULT_GROUP
    doc = store.get(TARGET_GROUP, group_key(proxy["DBProxyName"], group))
    if doc is None:
        raise not_found(
            "DBProxyTargetGroupNotFoundFault",
            f"DBProxyTargetGroup {group} not found for DBProxy {proxy['DBProxyName']}.",
        )
    return doc


def paginate(
    items: list[Doc], key: Callable[[Doc], str], params: Params
) -> tuple[list[Doc], str | None]:
    """One page of items sorted by key, after Marker, and the Marker of the next page.

    A Marker is opaque to callers: the key of the last item returned, encoded.
    MaxRecords is 20 to 100 (default 100), as the RDS API documents it.
    """
    size = params.get("MaxRecords", 100)
    if not 20 <= size <= 100:
        raise invalid(f"Invalid value {size} for MaxRecords. Must be between 20 and 100.")
    ordered = sorted(items, key=key)
    marker = params.get("Marker")
    if marker:
        after = _decode_marker(marker)
        ordered = [item for item in ordered if key(item) > after]
    page = ordered[:size]
    more = len(ordered) > size
    return page, (_encode_marker(key(page[-1])) if more else None)


def _encode_marker(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode("ascii")


def _decode_marker(marker: str) -> str:
    try:
        return base64.b64decode(marker.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise invalid("The marker is not valid.") from None


def page_output(name: str, page: list[Doc], marker: str | None) -> Output:
    """{name: [outputs], "Marker": marker (only if there is a next page)}."""
    result: Output = {name: [output(doc) for doc in page]}
    if marker is not None:
        result["Marker"] = marker
    return result


def subnets_vpc(store: Store, subnet_ids: list[str]) -> tuple[str, list[str]]:
    """(VpcId, subnet ids without repeats) of subnets in one VPC and 2 or more AZs."""
    unique = list(dict.fromkeys(subnet_ids))
    docs = []
    for subnet_id in unique:
        doc = store.get("subnet", subnet_id)
        if doc is None:
            raise ApiError("InvalidSubnet", f"The subnet {subnet_id} does not exist.")
        docs.append(doc)
    vpcs = {doc["VpcId"] for doc in docs}
    if len(vpcs) != 1:
        raise ApiError("InvalidSubnet", "The subnets must all be in the same VPC.")
    zones = {doc["AvailabilityZone"] for doc in docs}
    if len(zones) < 2:
        raise invalid(
            "The subnets must cover at least 2 Availability Zones; "
            f"the given ones cover {len(zones)}."
        )
    return vpcs.pop(), unique


def security_groups(store: Store, vpc_id: str, group_ids: list[str] | None) -> list[str]:
    """The given security groups, checked to exist in the VPC; the VPC's default if None."""
    if group_ids is None:
        found = [
            g["GroupId"]
            for g in store.all("security_group")
            if g.get("VpcId") == vpc_id and g.get("GroupName") == "default"
        ]
        return found[:1]
    unique = list(dict.fromkeys(group_ids))
    for group_id in unique:
        doc = store.get("security_group", group_id)
        if doc is None:
            raise invalid(f"The security group {group_id} does not exist.")
        if doc.get("VpcId") != vpc_id:
            raise invalid(f"The security group {group_id} is not in the VPC {vpc_id}.")
    return unique


def ipv4_only(params: Params, *members: str) -> None:
    """Sluice's addresses are IPv4: other network types are refused."""
    for member in members:
        value = params.get(member, "IPV4")
        if value != "IPV4":
            raise invalid(f"{member} {value} is not supported by Sluice; use IPV4.")
