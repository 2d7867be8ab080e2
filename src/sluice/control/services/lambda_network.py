"""A function's network identity: the network interfaces Lambda makes for its VpcConfig.

As on AWS, a function with a VpcConfig gets network interfaces made by the service, one
per subnet, carrying the function's security groups: InterfaceType "lambda",
requester-managed, in use (DeleteNetworkInterface refuses them), described as "AWS Lambda
VPC ENI-<function>-<id>", listed by DescribeNetworkInterfaces. They go when the function is
deleted or its VpcConfig changes (new ones are made for the new one).

The function's execution environments connect from the first interface's address, so a
proxy's `--source-group <function's group>` rule is what admits them. A function without a
VpcConfig connects from `network.OUTSIDE_ADDRESS`, outside every VPC, and no proxy admits it.
"""

from __future__ import annotations

import uuid

from sluice.control import network
from sluice.control.services.lambda_records import Vpc
from sluice.control.store import Store

REQUESTER = "lambda"


def attach(store: Store, function: str, vpc: Vpc) -> Vpc:
    """Make the function's interfaces for `vpc` (none without subnets); `vpc` naming them."""
    made = []
    for subnet_id in vpc.subnet_ids:
        subnet = store.get("subnet", subnet_id)
        if subnet is None:
            continue  # checked before (check_vpc); gone since
        groups = [_group(store, g) for g in vpc.security_group_ids]
        description = f"AWS Lambda VPC ENI-{function}-{uuid.uuid4()}"
        doc = network.add_interface(store, subnet, groups, description, [],
                                    requester=REQUESTER)  # fmt: skip
        made.append(str(doc["NetworkInterfaceId"]))
    return Vpc(vpc.subnet_ids, vpc.security_group_ids, vpc.vpc_id, tuple(made))


def detach(store: Store, vpc: Vpc) -> None:
    """Delete the interfaces made for a function's VpcConfig."""
    for eni_id in vpc.interface_ids:
        network.remove_interface(store, eni_id)


def rewire(store: Store, function: str, old: Vpc, new: Vpc) -> Vpc:
    """The network after a VpcConfig change: `old` itself when the subnets and groups are the
    same (its interfaces kept), else `new` with new interfaces (the old ones deleted)."""
    if (old.subnet_ids, old.security_group_ids) == (new.subnet_ids, new.security_group_ids):
        return old
    with store.batch():
        detach(store, old)
        return attach(store, function, new)


def source_address(store: Store, vpc: Vpc) -> str:
    """Where the function's environments connect from."""
    for eni_id in vpc.interface_ids:
        doc = store.get("network_interface", eni_id)
        if doc is not None:
            return str(doc["PrivateIpAddress"])
    return network.OUTSIDE_ADDRESS


def _group(store: Store, group_id: str) -> dict[str, str]:
    found = store.get("security_group", group_id)
    return {"GroupId": group_id, "GroupName": str(found["GroupName"]) if found else ""}
