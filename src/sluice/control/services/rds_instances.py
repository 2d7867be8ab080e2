"""DB instances: their documents, DescribeDBInstances, and adopted servers.

An instance is either created through the API (`rds_managed`: Sluice runs its
server) or adopted: the operator tells Sluice about a server it did not start
(`sluice` CLI -> server -> `adopt_instance`) under an RDS identifier. Either
way proxies register it as a target. The document is an RDS DBInstance shape
(with "_" fields the output never shows), so DescribeDBInstances answers as
RDS does and the runtime reads the host and port from Endpoint.
"""

from __future__ import annotations

import copy
import secrets
import string
import time

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid, not_found
from sluice.control.services import rds_common as c
from sluice.control.store import Doc, Store

ENGINES = ("mysql", "mariadb", "postgres")
_RESOURCE_ALPHABET = string.ascii_uppercase + string.digits


def _resource_id() -> str:
    return "db-" + "".join(secrets.choice(_RESOURCE_ALPHABET) for _ in range(26))


def _targets_of(store: Store, identifier: str) -> list[tuple[str, Doc]]:
    """(key, target document) of every proxy target naming the instance."""
    return [
        (key, doc)
        for key in store.keys(c.TARGET)
        if (doc := store.get(c.TARGET, key)) is not None and doc["RdsResourceId"] == identifier
    ]


def _check_adoption(store: Store, engine: str, host: str, port: int, groups: list[str]) -> None:
    if engine not in ENGINES:
        raise invalid(f"Invalid DB engine: {engine}. Sluice adopts mysql, mariadb and postgres.")
    if not host or any(ch.isspace() for ch in host):
        raise invalid("The instance's host must be a host name or an IP address.")
    if not 1 <= port <= 65535:
        raise invalid(f"Invalid port {port}: must be between 1 and 65535.")
    for group in groups:
        if store.get("security_group", group) is None:
            raise invalid(f"The security group {group} does not exist.")


def _check_families(store: Store, name: str, engine: str, targets: list[tuple[str, Doc]]) -> None:
    """A targeted instance must keep an engine of its proxies' families."""
    for key, _target in targets:
        proxy = store.get(c.PROXY, key.split("/", 1)[0])
        if proxy is not None and engine not in c.FAMILY_ENGINES[proxy["EngineFamily"]]:
            raise invalid(
                f"DBInstance {name} is a target of the {proxy['EngineFamily']} DBProxy "
                f"{proxy['DBProxyName']}; it cannot become {engine}."
            )


def adopt_instance(
    plane: Plane,
    identifier: str,
    engine: str,
    host: str,
    port: int,
    security_groups: list[str],
    engine_version: str = "",
) -> dict[str, object]:
    """Record (or update) a DB instance served at host:port; returns its stored document.

    Validated as CreateDBInstance would be; adopting an existing identifier again
    replaces its engine, address and groups, keeps its ARN and resource id, and
    moves the proxy targets that name it to the new address.
    """
    store = plane.store
    name = c.identifier(identifier, "DBInstanceIdentifier")
    _check_adoption(store, engine, host, port, security_groups)
    targets = _targets_of(store, name)
    _check_families(store, name, engine, targets)
    old = store.get(c.INSTANCE, name)
    if old is not None and old.get("_managed"):
        raise ApiError("DBInstanceAlreadyExists",
                       f"DBInstance {name} was created through the API; it cannot be adopted.")
    doc = copy.deepcopy(old) if old is not None else new_instance(plane, name)
    doc.update(
        Engine=engine,
        Endpoint={"Address": host, "Port": port},
        VpcSecurityGroups=[
            {"VpcSecurityGroupId": g, "Status": "active"} for g in dict.fromkeys(security_groups)
        ],
    )
    if engine_version:
        doc["EngineVersion"] = engine_version
    else:
        doc.pop("EngineVersion", None)
    with store.batch():
        store.put(c.INSTANCE, name, doc)
        for key, target in targets:
            store.put(c.TARGET, key, {**target, "Endpoint": host, "Port": port})
    plane.changed("rds")
    return doc


def new_instance(plane: Plane, name: str) -> Doc:
    """The fields every instance has, adopted or created (an adopted one's class says so)."""
    return {
        "DBInstanceIdentifier": name,
        "DBInstanceArn": c.rds_arn(plane, "db", name),
        "DbiResourceId": _resource_id(),
        "DBInstanceClass": "db.sluice.adopted",
        "DBInstanceStatus": "available",
        "InstanceCreateTime": time.time(),
        "AvailabilityZone": f"{plane.region}a",
        "PubliclyAccessible": False,
        "MultiAZ": False,
        "StorageEncrypted": False,
        "IAMDatabaseAuthenticationEnabled": False,
        "TagList": [],
    }


def forget_instance(plane: Plane, identifier: str) -> None:
    """Drop an adopted instance; refused while a proxy targets it."""
    name = identifier.lower()
    doc = plane.store.get(c.INSTANCE, name)
    if doc is None:
        raise not_found("DBInstanceNotFound", f"DBInstance {identifier} not found.")
    if doc.get("_managed"):
        raise ApiError("InvalidDBInstanceState",
                       f"DBInstance {name} was created through the API: delete it instead.")
    targets = _targets_of(plane.store, name)
    if targets:
        proxies = ", ".join(sorted({key.split("/", 1)[0] for key, _doc in targets}))
        raise ApiError(
            "InvalidDBInstanceState",
            f"DBInstance {name} is a target of DB proxies ({proxies}); deregister it first.",
        )
    plane.store.delete(c.INSTANCE, name)
    plane.changed("rds")


FILTER_NAMES = ("db-instance-id", "dbi-resource-id", "engine", "db-cluster-id", "domain")


def _filter_values(name: str, doc: Doc) -> tuple[str, ...]:
    """What a filter of that name compares with (no clusters or domains in Sluice)."""
    if name == "db-instance-id":
        return (doc["DBInstanceIdentifier"], doc["DBInstanceArn"])
    if name == "dbi-resource-id":
        return (doc["DbiResourceId"],)
    if name == "engine":
        return (doc["Engine"],)
    return ()


def _matches(doc: Doc, filters: list[Params]) -> bool:
    return all(
        any(v in _filter_values(item["Name"], doc) for v in item["Values"]) for item in filters
    )


def describe(plane: Plane, call: Call, params: Params) -> Output:
    """DescribeDBInstances by identifier (or ARN), Filters and Marker/MaxRecords."""
    filters = params.get("Filters") or []
    for item in filters:
        if item["Name"] not in FILTER_NAMES:
            raise invalid(f"Unrecognized filter name: {item['Name']}")
    docs = plane.store.all(c.INSTANCE)
    wanted = params.get("DBInstanceIdentifier")
    if wanted is not None:
        docs = [
            d
            for d in docs
            if wanted.lower() == d["DBInstanceIdentifier"] or wanted == d["DBInstanceArn"]
        ]
        if not docs:
            raise not_found("DBInstanceNotFound", f"DBInstance {wanted} not found.")
    docs = [d for d in docs if _matches(d, filters)]
    page, marker = c.paginate(docs, lambda d: str(d["DBInstanceIdentifier"]), params)
    return c.page_output("DBInstances", page, marker)
