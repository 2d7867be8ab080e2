"""DB proxies: CreateDBProxy, DescribeDBProxies, ModifyDBProxy, DeleteDBProxy.

A proxy is one "db_proxy" document, API-shaped, plus its default target group.
These handlers only validate and record: the data-plane runtime watches the
documents (through `plane.changed("rds")`), opens or reconfigures the real
listener, and then moves Status from "creating"/"modifying" to "available" —
and, for "deleting", removes the proxy's documents and releases its address.
That split keeps API calls instant and the listener's life in one place.
"""

from __future__ import annotations

import copy
import re

from sluice.control import ids, registry
from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid
from sluice.control.services import rds_common as c
from sluice.control.services.rds_tags import checked_tags
from sluice.control.store import Doc, Store

MAX_PROXIES = 20  # AWS's default quota per account and region
DEFAULT_IDLE_TIMEOUT = 1800
_PASSWORD_TYPES = {
    "MYSQL": ("MYSQL_CACHING_SHA2_PASSWORD", "MYSQL_NATIVE_PASSWORD"),
    "POSTGRESQL": ("POSTGRES_SCRAM_SHA_256", "POSTGRES_MD5"),
}  # the first is the family's default, as the RDS API documents
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role/(?:[^/]+/)*([\w+=,.@-]+)")


def create(plane: Plane, call: Call, params: Params) -> Output:
    """CreateDBProxy: validate, allocate the address, record proxy and default group."""
    store = plane.store
    doc = _new_proxy(plane, params)
    name, resource_id = doc["DBProxyName"], ids.hex_id("prx")
    with store.batch():
        held = registry.allocate(
            store, doc["VpcSubnetIds"][0], resource_id, registry.Holder.PROXY,
            doc["VpcSecurityGroupIds"], port=plane.endpoint_port(doc["EngineFamily"]),
        )
        doc.update(
            DBProxyArn=c.rds_arn(plane, "db-proxy", resource_id),
            Endpoint=held.address,
            CreatedDate=call.now,
            UpdatedDate=call.now,
        )
        store.put(c.PROXY, name, doc)
        group = _default_group(plane, name, call.now)
        store.put(c.TARGET_GROUP, c.group_key(name, c.DEFAULT_GROUP), group)
    plane.changed("rds")
    return {"DBProxy": c.output(doc)}


def _new_proxy(plane: Plane, params: Params) -> Doc:
    """The validated settings of a new proxy (no address or ids yet)."""
    store = plane.store
    name = c.identifier(params["DBProxyName"], "DBProxyName")
    if store.get(c.PROXY, name) is not None:
        raise ApiError("DBProxyAlreadyExistsFault", f"DBProxy {name} already exists.")
    if len(store.keys(c.PROXY)) >= MAX_PROXIES:
        message = f"Cannot create more than {MAX_PROXIES} DB proxies."
        raise ApiError("DBProxyQuotaExceededFault", message)
    family = _family(params["EngineFamily"])
    _auth_scheme(params)
    c.ipv4_only(params, "EndpointNetworkType", "TargetConnectionNetworkType")
    vpc_id, subnets = c.subnets_vpc(store, params["VpcSubnetIds"])
    return {
        "DBProxyName": name,
        "Status": "creating",
        "EngineFamily": family,
        "VpcId": vpc_id,
        "VpcSecurityGroupIds": c.security_groups(store, vpc_id, params.get("VpcSecurityGroupIds")),
        "VpcSubnetIds": subnets,
        "DefaultAuthScheme": "NONE",
        "Auth": checked_auth(store, family, params.get("Auth") or []),
        "RoleArn": checked_role(plane, params["RoleArn"]),
        "RequireTLS": bool(params.get("RequireTLS", False)),
        "IdleClientTimeout": _idle_timeout(params.get("IdleClientTimeout", DEFAULT_IDLE_TIMEOUT)),
        "DebugLogging": bool(params.get("DebugLogging", False)),
        "EndpointNetworkType": "IPV4",
        "TargetConnectionNetworkType": "IPV4",
        "_tags": checked_tags(params.get("Tags") or []),
    }


def _default_group(plane: Plane, proxy_name: str, now: float) -> Doc:
    return {
        "DBProxyName": proxy_name,
        "TargetGroupName": c.DEFAULT_GROUP,
        "TargetGroupArn": c.rds_arn(plane, "target-group", ids.hex_id("prx-tg")),
        "IsDefault": True,
        "Status": "available",
        "ConnectionPoolConfig": {
            "MaxConnectionsPercent": 100,
            "MaxIdleConnectionsPercent": 50,
            "ConnectionBorrowTimeout": 120,
            "SessionPinningFilters": [],
            "InitQuery": "",
        },
        "CreatedDate": now,
        "UpdatedDate": now,
        "_tags": [],
    }


def _family(value: str) -> str:
    if value not in c.FAMILY_ENGINES:
        raise invalid(f"EngineFamily {value} is not supported by Sluice; use MYSQL or POSTGRESQL.")
    return value


def _auth_scheme(params: Params) -> None:
    scheme = params.get("DefaultAuthScheme", "NONE")
    if scheme != "NONE":
        raise invalid(f"DefaultAuthScheme {scheme} is not supported by Sluice; use NONE.")


def _idle_timeout(value: int) -> int:
    if not 1 <= value <= 28800:
        raise invalid(f"IdleClientTimeout must be between 1 and 28800 seconds, not {value}.")
    return value


def checked_auth(store: Store, family: str, items: list[Params]) -> list[Doc]:
    """The Auth list validated, with each item's defaults filled in."""
    if not items:
        raise invalid("Auth must contain at least one item when DefaultAuthScheme is NONE.")
    result: list[Doc] = []
    for item in items:
        entry = _auth_item(store, family, item)
        if any(e["SecretArn"] == entry["SecretArn"] for e in result):
            raise invalid(f"The secret {entry['SecretArn']} appears more than once in Auth.")
        result.append(entry)
    return result


def _auth_item(store: Store, family: str, item: Params) -> Doc:
    scheme = item.get("AuthScheme", "SECRETS")
    if scheme != "SECRETS":
        raise invalid(f"AuthScheme {scheme} is not supported; use SECRETS.")
    secret = item.get("SecretArn")
    if not secret:
        raise invalid("Each Auth item with AuthScheme SECRETS needs a SecretArn.")
    found = store.get("secret", secret)
    if found is None or found.get("_deleted"):
        raise invalid(f"The secret {secret} does not exist in Secrets Manager.")
    iam = item.get("IAMAuth", "DISABLED")
    if iam not in ("DISABLED", "REQUIRED"):
        raise invalid(
            f"IAMAuth {iam} is valid only for SQL Server proxies; use DISABLED or REQUIRED."
        )
    allowed = _PASSWORD_TYPES[family]
    password = item.get("ClientPasswordAuthType", allowed[0])
    if password not in allowed:
        raise invalid(f"ClientPasswordAuthType {password} is not valid for {family} proxies.")
    entry: Doc = {
        "AuthScheme": scheme,
        "SecretArn": secret,
        "IAMAuth": iam,
        "ClientPasswordAuthType": password,
    }
    for member in ("Description", "UserName"):
        if item.get(member):
            entry[member] = item[member]
    return entry


def checked_role(plane: Plane, arn: str) -> str:
    """The role ARN, if it names an existing role of this account."""
    match = _ROLE_ARN.fullmatch(arn)
    role = plane.store.get("iam_role", match.group(2)) if match else None
    if match is None or match.group(1) != plane.account or role is None or role["Arn"] != arn:
        raise invalid(f"The IAM role {arn} does not exist.")
    return arn


def describe(plane: Plane, call: Call, params: Params) -> Output:
    """DescribeDBProxies (Filters are accepted and ignored: AWS documents them as unsupported)."""
    if params.get("DBProxyName") is not None:
        docs = [c.get_proxy(plane.store, params["DBProxyName"])]
    else:
        docs = plane.store.all(c.PROXY)
    page, marker = c.paginate(docs, lambda d: str(d["DBProxyName"]), params)
    return c.page_output("DBProxies", page, marker)


def modify(plane: Plane, call: Call, params: Params) -> Output:
    """ModifyDBProxy: new settings recorded, Status "modifying" until the runtime applies them."""
    store = plane.store
    old = c.available_proxy(store, params["DBProxyName"])
    doc = copy.deepcopy(old)
    _auth_scheme(params)
    if "Auth" in params:
        doc["Auth"] = checked_auth(store, doc["EngineFamily"], params["Auth"])
    if "RoleArn" in params:
        doc["RoleArn"] = checked_role(plane, params["RoleArn"])
    if "SecurityGroups" in params:
        doc["VpcSecurityGroupIds"] = c.security_groups(
            store, doc["VpcId"], params["SecurityGroups"]
        )
    if params.get("IdleClientTimeout") is not None:
        doc["IdleClientTimeout"] = _idle_timeout(params["IdleClientTimeout"])
    for member in ("RequireTLS", "DebugLogging"):
        if params.get(member) is not None:
            doc[member] = bool(params[member])
    new_name = _new_name(store, doc, params.get("NewDBProxyName"))
    doc.update(Status="modifying", UpdatedDate=call.now, DBProxyName=new_name)
    with store.batch():
        if doc["VpcSecurityGroupIds"] != old["VpcSecurityGroupIds"]:
            owner = registry.resource_id(doc["DBProxyArn"])
            registry.set_groups(store, owner, doc["VpcSecurityGroupIds"])
        if new_name != old["DBProxyName"]:
            _rename(store, old["DBProxyName"], new_name)
        store.put(c.PROXY, new_name, doc)
    plane.changed("rds")
    return {"DBProxy": c.output(doc)}


def _new_name(store: Store, doc: Doc, requested: str | None) -> str:
    if requested is None:
        return str(doc["DBProxyName"])
    name = c.identifier(requested, "NewDBProxyName")
    if name != doc["DBProxyName"] and store.get(c.PROXY, name) is not None:
        raise ApiError("DBProxyAlreadyExistsFault", f"DBProxy {name} already exists.")
    return name


def _rename(store: Store, old: str, new: str) -> None:
    """Move a proxy's documents (target groups, targets) under the new name."""
    store.delete(c.PROXY, old)
    for kind in (c.TARGET_GROUP, c.TARGET):
        for key in store.keys(kind):
            if key.startswith(old + "/"):
                moved = dict(store.get(kind, key) or {})
                if kind == c.TARGET_GROUP:
                    moved["DBProxyName"] = new
                store.delete(kind, key)
                store.put(kind, new + key[len(old) :], moved)
    for endpoint in store.all(c.ENDPOINT):
        if endpoint["DBProxyName"] == old:
            store.put(c.ENDPOINT, endpoint["DBProxyEndpointName"], {**endpoint, "DBProxyName": new})


def delete(plane: Plane, call: Call, params: Params) -> Output:
    """DeleteDBProxy: the proxy and its endpoints marked "deleting"; the runtime removes them."""
    store = plane.store
    doc = dict(c.get_proxy(store, params["DBProxyName"]))
    if doc["Status"] == "deleting":
        raise ApiError(
            "InvalidDBProxyStateFault", f"DBProxy {doc['DBProxyName']} is already being deleted."
        )
    doc.update(Status="deleting", UpdatedDate=call.now)
    with store.batch():
        store.put(c.PROXY, doc["DBProxyName"], doc)
        for endpoint in store.all(c.ENDPOINT):
            if endpoint["DBProxyName"] == doc["DBProxyName"]:
                store.put(
                    c.ENDPOINT, endpoint["DBProxyEndpointName"], {**endpoint, "Status": "deleting"}
                )
    plane.changed("rds")
    return {"DBProxy": c.output(doc)}
