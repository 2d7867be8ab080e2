"""Proxy target groups and targets: what a proxy connects to, and how it pools.

Each proxy has one target group, "default", made with the proxy; it holds
the pool settings (ConnectionPoolConfig) and at most one DB instance, as AWS
documents ("each target group is associated with exactly one RDS DB instance
or Aurora DB cluster"). A target is a "db_proxy_target" document keyed
"PROXY/INSTANCE"; it starts REGISTERING and the runtime reports its health.
Sluice has no clusters, so cluster identifiers are always "not found". The
group keeps its name: the runtime reads it as "PROXY/default", so NewName is
refused.
"""

from __future__ import annotations

import copy

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid, not_found
from sluice.control.services import rds_common as c
from sluice.control.store import Doc, Store

SESSION_PINNING_FILTERS = ("EXCLUDE_VARIABLE_SETS",)


def _group_targets(store: Store, proxy: Doc, group: Doc) -> list[Doc]:
    prefix = proxy["DBProxyName"] + "/"
    return [
        doc
        for key in store.keys(c.TARGET)
        if key.startswith(prefix)
        and (doc := store.get(c.TARGET, key)) is not None
        and doc["_target_group"] == group["TargetGroupName"]
    ]


def _no_clusters(params: Params) -> None:
    for cluster in params.get("DBClusterIdentifiers") or []:
        raise not_found("DBClusterNotFoundFault", f"DBCluster {cluster} not found.")


def register(plane: Plane, call: Call, params: Params) -> Output:
    """RegisterDBProxyTargets: DB instances of the proxy's engine family, one per group."""
    store = plane.store
    proxy = c.available_proxy(store, params["DBProxyName"])
    group = c.get_target_group(store, proxy, params.get("TargetGroupName"))
    _no_clusters(params)
    names = list(dict.fromkeys(i.lower() for i in params.get("DBInstanceIdentifiers") or []))
    if not names:
        raise invalid("Specify DBInstanceIdentifiers or DBClusterIdentifiers.")
    existing = _group_targets(store, proxy, group)
    for name in names:
        if store.get(c.TARGET, c.group_key(proxy["DBProxyName"], name)) is not None:
            raise ApiError(
                "DBProxyTargetAlreadyRegisteredFault",
                f"DBInstance {name} is already registered with DBProxy {proxy['DBProxyName']}.",
            )
    if len(existing) + len(names) > 1:
        raise invalid("A DB proxy target group can have only one DB instance target.")
    targets = [_target(store, proxy, group, name) for name in names]
    with store.batch():
        for target in targets:
            key = c.group_key(proxy["DBProxyName"], target["RdsResourceId"])
            store.put(c.TARGET, key, target)
    plane.changed("rds")
    return {"DBProxyTargets": [c.output(t) for t in targets]}


def _target(store: Store, proxy: Doc, group: Doc, name: str) -> Doc:
    instance = store.get(c.INSTANCE, name)
    if instance is None:
        raise not_found("DBInstanceNotFound", f"DBInstance {name} not found.")
    family = proxy["EngineFamily"]
    if instance["Engine"] not in c.FAMILY_ENGINES[family]:
        raise invalid(
            f"DBInstance {name} runs {instance['Engine']}, which a {family} proxy cannot target."
        )
    return {
        "TargetArn": instance["DBInstanceArn"],
        "Endpoint": instance["Endpoint"]["Address"],
        "RdsResourceId": instance["DBInstanceIdentifier"],
        "Port": instance["Endpoint"]["Port"],
        "Type": "RDS_INSTANCE",
        "Role": "READ_WRITE",
        "TargetHealth": {"State": "REGISTERING"},
        "_target_group": group["TargetGroupName"],
    }


def deregister(plane: Plane, call: Call, params: Params) -> Output:
    """DeregisterDBProxyTargets: each named instance must be a target of the group."""
    store = plane.store
    proxy = c.available_proxy(store, params["DBProxyName"])
    group = c.get_target_group(store, proxy, params.get("TargetGroupName"))
    registered = {t["RdsResourceId"] for t in _group_targets(store, proxy, group)}
    wanted = [i.lower() for i in params.get("DBInstanceIdentifiers") or []]
    wanted += [i.lower() for i in params.get("DBClusterIdentifiers") or []]
    for name in wanted:
        if name not in registered:
            raise not_found(
                "DBProxyTargetNotFoundFault",
                f"{name} is not a target of DBProxy {proxy['DBProxyName']}.",
            )
    with store.batch():
        for name in wanted:
            store.delete(c.TARGET, c.group_key(proxy["DBProxyName"], name))
    plane.changed("rds")
    return {}


def describe_targets(plane: Plane, call: Call, params: Params) -> Output:
    """DescribeDBProxyTargets (Filters accepted and ignored, as AWS documents them unsupported)."""
    store = plane.store
    proxy = c.get_proxy(store, params["DBProxyName"])
    group = c.get_target_group(store, proxy, params.get("TargetGroupName"))
    targets = _group_targets(store, proxy, group)
    page, marker = c.paginate(targets, lambda t: str(t["RdsResourceId"]), params)
    return c.page_output("Targets", page, marker)


def describe_groups(plane: Plane, call: Call, params: Params) -> Output:
    """DescribeDBProxyTargetGroups (Filters accepted and ignored, as AWS documents)."""
    store = plane.store
    proxy = c.get_proxy(store, params["DBProxyName"])
    if params.get("TargetGroupName") is not None:
        groups = [c.get_target_group(store, proxy, params["TargetGroupName"])]
    else:
        name = proxy["DBProxyName"]
        groups = [g for g in store.all(c.TARGET_GROUP) if g["DBProxyName"] == name]
    page, marker = c.paginate(groups, lambda g: str(g["TargetGroupName"]), params)
    return c.page_output("TargetGroups", page, marker)


def modify_group(plane: Plane, call: Call, params: Params) -> Output:
    """ModifyDBProxyTargetGroup: the pool settings of the proxy's (only) target group."""
    store = plane.store
    proxy = c.available_proxy(store, params["DBProxyName"])
    old = c.get_target_group(store, proxy, params["TargetGroupName"])
    new_name = params.get("NewName")
    if new_name is not None and new_name.lower() != old["TargetGroupName"]:
        c.identifier(new_name, "NewName")
        raise invalid(
            "Sluice does not rename a proxy's default target group: it is always 'default'."
        )
    doc = copy.deepcopy(old)
    if params.get("ConnectionPoolConfig"):
        doc["ConnectionPoolConfig"] = pool_config(
            doc["ConnectionPoolConfig"], params["ConnectionPoolConfig"]
        )
    doc["UpdatedDate"] = call.now
    key = c.group_key(proxy["DBProxyName"], old["TargetGroupName"])
    store.put(c.TARGET_GROUP, key, doc)
    plane.changed("rds")
    return {"DBProxyTargetGroup": c.output(doc)}


def pool_config(current: Doc, given: Params) -> Doc:
    """The pool settings with the given members applied, validated as RDS documents them."""
    result = dict(current)
    most = given.get("MaxConnectionsPercent")
    if most is not None:
        _check_range("MaxConnectionsPercent", most, 1, 100)
        result["MaxConnectionsPercent"] = most
    idle = given.get("MaxIdleConnectionsPercent")
    if idle is None and result["MaxIdleConnectionsPercent"] > result["MaxConnectionsPercent"]:
        idle = result["MaxConnectionsPercent"] // 2  # AWS's default: half of the maximum
    if idle is not None:
        _check_range("MaxIdleConnectionsPercent", idle, 0, result["MaxConnectionsPercent"])
        result["MaxIdleConnectionsPercent"] = idle
    borrow = given.get("ConnectionBorrowTimeout")
    if borrow is not None:
        _check_range("ConnectionBorrowTimeout", borrow, 0, 3600)
        result["ConnectionBorrowTimeout"] = borrow
    filters = given.get("SessionPinningFilters")
    if filters is not None:
        for name in filters:
            if name not in SESSION_PINNING_FILTERS:
                raise invalid(
                    f"SessionPinningFilters: {name} is not valid; use EXCLUDE_VARIABLE_SETS."
                )
        result["SessionPinningFilters"] = list(dict.fromkeys(filters))
    if given.get("InitQuery") is not None:
        result["InitQuery"] = given["InitQuery"]
    return result


def _check_range(member: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise invalid(f"{member} must be between {low} and {high}, not {value}.")
