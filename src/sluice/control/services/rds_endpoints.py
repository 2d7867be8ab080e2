"""Proxy endpoints: extra addresses for a proxy, each with its own subnets and groups.

An endpoint is a "db_proxy_endpoint" document keyed by its name (unique in
the account and region, as in AWS) with its own allocated address. Every
proxy also has a default endpoint — the proxy's own address — which is not
stored: DescribeDBProxyEndpoints derives it from the proxy, as AWS lists it.
Like proxies, endpoints are created "creating" and deleted "deleting"; the
runtime opens and closes their listeners and finishes those transitions.

Only READ_WRITE endpoints exist: a proxy's target is one writable DB instance
and Sluice has no read replicas to send a READ_ONLY endpoint's traffic to, so
one is refused (sending it to the writer would be a silent guess).
"""

from __future__ import annotations

from sluice.control import ids, registry
from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid, not_found
from sluice.control.services import rds_common as c
from sluice.control.services.rds_tags import checked_tags
from sluice.control.store import Doc, Store

MAX_ENDPOINTS = 20  # per proxy, AWS's quota
DEFAULT_ENDPOINT = "default"
READ_ONLY_REFUSED = (
    "TargetRole READ_ONLY is not supported yet: this proxy has no read replicas to send "
    "read-only traffic to. Create the endpoint with TargetRole READ_WRITE."
)


def _name(value: str, member: str) -> str:
    name = c.identifier(value, member)
    if name == DEFAULT_ENDPOINT:
        raise invalid(
            f"{member} may not be '{DEFAULT_ENDPOINT}': that is every proxy's own endpoint."
        )
    return name


def _get(store: Store, name: str) -> Doc:
    doc = store.get(c.ENDPOINT, name.lower())
    if doc is None:
        raise not_found("DBProxyEndpointNotFoundFault", f"DBProxyEndpoint {name} not found.")
    return doc


def _unused(store: Store, name: str) -> None:
    if store.get(c.ENDPOINT, name) is not None:
        raise ApiError(
            "DBProxyEndpointAlreadyExistsFault", f"DBProxyEndpoint {name} already exists."
        )


def create(plane: Plane, call: Call, params: Params) -> Output:
    """CreateDBProxyEndpoint: validate, allocate the endpoint's own address, record it."""
    store = plane.store
    proxy = c.available_proxy(store, params["DBProxyName"])
    doc = _new_endpoint(store, proxy, params)
    resource_id = ids.hex_id("prx-endpoint")
    with store.batch():
        own = registry.held_by(store, registry.resource_id(proxy["DBProxyArn"]))
        port = own.port if own is not None else plane.endpoint_port(proxy["EngineFamily"])
        held = registry.allocate(
            store, doc["VpcSubnetIds"][0], resource_id, registry.Holder.PROXY_ENDPOINT,
            doc["VpcSecurityGroupIds"], port=port,
        )
        doc.update(
            DBProxyEndpointArn=c.rds_arn(plane, "db-proxy-endpoint", resource_id),
            Endpoint=held.address,
            CreatedDate=call.now,
        )
        store.put(c.ENDPOINT, doc["DBProxyEndpointName"], doc)
    plane.changed("rds")
    return {"DBProxyEndpoint": c.output(doc)}


def _new_endpoint(store: Store, proxy: Doc, params: Params) -> Doc:
    """The validated settings of a new endpoint of the proxy (no address or ids yet)."""
    name = _name(params["DBProxyEndpointName"], "DBProxyEndpointName")
    _unused(store, name)
    mine = [e for e in store.all(c.ENDPOINT) if e["DBProxyName"] == proxy["DBProxyName"]]
    if len(mine) >= MAX_ENDPOINTS:
        message = f"DBProxy {proxy['DBProxyName']} already has {MAX_ENDPOINTS} endpoints."
        raise ApiError("DBProxyEndpointQuotaExceededFault", message)
    c.ipv4_only(params, "EndpointNetworkType")
    role = params.get("TargetRole", "READ_WRITE")
    if role != "READ_WRITE":  # the model's enum leaves only READ_ONLY
        raise invalid(READ_ONLY_REFUSED, "InvalidParameterCombination")
    vpc_id, subnets = c.subnets_vpc(store, params["VpcSubnetIds"])
    return {
        "DBProxyEndpointName": name,
        "DBProxyName": proxy["DBProxyName"],
        "Status": "creating",
        "VpcId": vpc_id,
        "VpcSecurityGroupIds": c.security_groups(store, vpc_id, params.get("VpcSecurityGroupIds")),
        "VpcSubnetIds": subnets,
        "TargetRole": role,
        "IsDefault": False,
        "EndpointNetworkType": "IPV4",
        "_tags": checked_tags(params.get("Tags") or []),
    }


def default_endpoint(proxy: Doc) -> Doc:
    """The default endpoint of a proxy, as DescribeDBProxyEndpoints shows it."""
    return {
        "DBProxyEndpointName": DEFAULT_ENDPOINT,
        "DBProxyName": proxy["DBProxyName"],
        "Status": proxy["Status"],
        "VpcId": proxy["VpcId"],
        "VpcSecurityGroupIds": proxy["VpcSecurityGroupIds"],
        "VpcSubnetIds": proxy["VpcSubnetIds"],
        "Endpoint": proxy["Endpoint"],
        "CreatedDate": proxy["CreatedDate"],
        "TargetRole": "READ_WRITE",
        "IsDefault": True,
        "EndpointNetworkType": "IPV4",
    }


def _sort_key(endpoint: Doc) -> str:
    """A proxy's default endpoint first, then its others by name."""
    own = "" if endpoint["IsDefault"] else endpoint["DBProxyEndpointName"]
    return f"{endpoint['DBProxyName']}/{own}"


def describe(plane: Plane, call: Call, params: Params) -> Output:
    """DescribeDBProxyEndpoints, the default ones included (Filters ignored, as AWS documents)."""
    store = plane.store
    if params.get("DBProxyName") is not None:
        proxies = [c.get_proxy(store, params["DBProxyName"])]
    else:
        proxies = store.all(c.PROXY)
    names = {p["DBProxyName"] for p in proxies}
    found = [default_endpoint(p) for p in proxies]
    found += [e for e in store.all(c.ENDPOINT) if e["DBProxyName"] in names]
    wanted = params.get("DBProxyEndpointName")
    if wanted is not None:
        found = [e for e in found if e["DBProxyEndpointName"] == wanted.lower()]
        if not found:
            raise not_found("DBProxyEndpointNotFoundFault", f"DBProxyEndpoint {wanted} not found.")
    page, marker = c.paginate(found, _sort_key, params)
    return c.page_output("DBProxyEndpoints", page, marker)


def modify(plane: Plane, call: Call, params: Params) -> Output:
    """ModifyDBProxyEndpoint: a new name and/or security groups; Status "modifying"."""
    store = plane.store
    old = _get(store, params["DBProxyEndpointName"])
    if old["Status"] != "available":
        raise ApiError(
            "InvalidDBProxyEndpointStateFault",
            f"DBProxyEndpoint {old['DBProxyEndpointName']} is not available "
            f"(it is {old['Status']}).",
        )
    c.available_proxy(store, old["DBProxyName"])
    doc = dict(old)
    if params.get("NewDBProxyEndpointName") is not None:
        doc["DBProxyEndpointName"] = _name(
            params["NewDBProxyEndpointName"], "NewDBProxyEndpointName"
        )
        if doc["DBProxyEndpointName"] != old["DBProxyEndpointName"]:
            _unused(store, doc["DBProxyEndpointName"])
    if params.get("VpcSecurityGroupIds") is not None:
        doc["VpcSecurityGroupIds"] = c.security_groups(
            store, doc["VpcId"], params["VpcSecurityGroupIds"]
        )
    doc["Status"] = "modifying"
    with store.batch():
        if doc["VpcSecurityGroupIds"] != old["VpcSecurityGroupIds"]:
            owner = registry.resource_id(doc["DBProxyEndpointArn"])
            registry.set_groups(store, owner, doc["VpcSecurityGroupIds"])
        if doc["DBProxyEndpointName"] != old["DBProxyEndpointName"]:
            store.delete(c.ENDPOINT, old["DBProxyEndpointName"])
        store.put(c.ENDPOINT, doc["DBProxyEndpointName"], doc)
    plane.changed("rds")
    return {"DBProxyEndpoint": c.output(doc)}


def delete(plane: Plane, call: Call, params: Params) -> Output:
    """DeleteDBProxyEndpoint: marked "deleting"; the runtime closes it and removes it."""
    store = plane.store
    doc = dict(_get(store, params["DBProxyEndpointName"]))
    if doc["Status"] == "deleting":
        raise ApiError(
            "InvalidDBProxyEndpointStateFault",
            f"DBProxyEndpoint {doc['DBProxyEndpointName']} is already being deleted.",
        )
    doc["Status"] = "deleting"
    store.put(c.ENDPOINT, doc["DBProxyEndpointName"], doc)
    plane.changed("rds")
    return {"DBProxyEndpoint": c.output(doc)}
