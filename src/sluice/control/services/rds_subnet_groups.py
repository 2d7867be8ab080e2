"""DB subnet groups: the subnets a DB instance may be placed in.

One "db_subnet_group" document per group, keyed by its lower-cased name, in the
DBSubnetGroup output shape. Its subnets must be in one VPC and cover two
availability zones, as RDS requires. An instance created without a group goes
into "default", made on first use from the default VPC's subnets; a group that
an instance uses cannot be deleted.
"""

from __future__ import annotations

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid, not_found
from sluice.control.network import default_vpc
from sluice.control.services import rds_common as c
from sluice.control.store import Doc, Store

SUBNET_GROUP = "db_subnet_group"
DEFAULT = "default"


def _name(value: str) -> str:
    name = value.lower()
    if not 1 <= len(name) <= 255 or not all(ch.isalnum() or ch in " ._-" for ch in name):
        raise invalid(
            "DBSubnetGroupName must contain 1 to 255 letters, digits, spaces, periods, "
            f"underscores and hyphens: {value!r}"
        )
    return name


def _doc(plane: Plane, name: str, description: str, subnet_ids: list[str]) -> Doc:
    vpc_id, unique = c.subnets_vpc(plane.store, subnet_ids)
    subnets = []
    for subnet_id in unique:
        subnet = plane.store.get("subnet", subnet_id) or {}
        subnets.append({
            "SubnetIdentifier": subnet_id,
            "SubnetAvailabilityZone": {"Name": subnet.get("AvailabilityZone", "")},
            "SubnetOutpost": {},
            "SubnetStatus": "Active",
        })  # fmt: skip
    return {
        "DBSubnetGroupName": name,
        "DBSubnetGroupDescription": description,
        "VpcId": vpc_id,
        "SubnetGroupStatus": "Complete",
        "Subnets": subnets,
        "DBSubnetGroupArn": c.rds_arn(plane, "subgrp", name),
        "SupportedNetworkTypes": ["IPV4"],
    }


def create(plane: Plane, call: Call, params: Params) -> Output:
    name = _name(params["DBSubnetGroupName"])
    if name == DEFAULT:
        raise invalid("The DB subnet group name 'default' is reserved.")
    if plane.store.get(SUBNET_GROUP, name) is not None:
        raise ApiError(
            "DBSubnetGroupAlreadyExists", f"The DB subnet group '{name}' already exists."
        )
    doc = _doc(plane, name, params["DBSubnetGroupDescription"], params["SubnetIds"])
    plane.store.put(SUBNET_GROUP, name, doc)
    return {"DBSubnetGroup": c.output(doc)}


def resolve(plane: Plane, name: str | None) -> Doc:
    """The group an instance goes into: the named one, or "default" (made if need be)."""
    key = _name(name) if name else DEFAULT
    found = plane.store.get(SUBNET_GROUP, key)
    if found is not None:
        return found
    if key != DEFAULT:
        raise not_found("DBSubnetGroupNotFoundFault", f"DBSubnetGroup {name} not found.")
    vpc = default_vpc(plane.store)
    subnets = [s["SubnetId"] for s in plane.store.all("subnet")
               if vpc is not None and s["VpcId"] == vpc["VpcId"]]  # fmt: skip
    doc = _doc(plane, DEFAULT, DEFAULT, subnets)
    plane.store.put(SUBNET_GROUP, DEFAULT, doc)
    return doc


def _in_use(store: Store, name: str) -> list[str]:
    return [
        d["DBInstanceIdentifier"]
        for d in store.all(c.INSTANCE)
        if d.get("DBSubnetGroup", {}).get("DBSubnetGroupName") == name
    ]


def describe(plane: Plane, call: Call, params: Params) -> Output:
    docs = plane.store.all(SUBNET_GROUP)
    wanted = params.get("DBSubnetGroupName")
    if wanted is not None:
        docs = [d for d in docs if d["DBSubnetGroupName"] == wanted.lower()]
        if not docs:
            raise not_found("DBSubnetGroupNotFoundFault", f"DBSubnetGroup {wanted} not found.")
    page, marker = c.paginate(docs, lambda d: str(d["DBSubnetGroupName"]), params)
    return c.page_output("DBSubnetGroups", page, marker)


def delete(plane: Plane, call: Call, params: Params) -> Output:
    name = params["DBSubnetGroupName"].lower()
    if plane.store.get(SUBNET_GROUP, name) is None:
        raise not_found("DBSubnetGroupNotFoundFault", f"DBSubnetGroup {name} not found.")
    users = _in_use(plane.store, name)
    if users:
        raise ApiError(
            "InvalidDBSubnetGroupStateFault",
            f"Cannot delete the subnet group '{name}' because at least one database instance: "
            f"{users[0]} is still using it.",
        )
    plane.store.delete(SUBNET_GROUP, name)
    return {}
