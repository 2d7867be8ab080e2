"""DB instances Sluice runs itself: CreateDBInstance, Modify, Reboot, Stop, Start, Delete.

These handlers only validate and write documents, as the proxy handlers do: an
instance is created `creating`, a reboot asks for `rebooting`, a delete for
`deleting`, and `control.instances.InstanceRunner` (poked through
`plane.changed("rds")`) runs the database server and moves the status on.

The instance holds an address of its subnet (owner: its DbiResourceId), where
its server listens: Endpoint.Address. The document is the DBInstance output
shape plus fields the output never shows: `_managed` (Sluice runs the server;
adopted instances lack it) and `_password` (the master password, sealed by
the vault, until the runner has given it to the server). ManageMasterUserPassword
keeps the password in a Secrets Manager secret owned by the instance
(`rds!db-...`, deleted with it), shown as MasterUserSecret. A reboot, stop or
delete makes the proxy targets naming the instance UNAVAILABLE at once, as RDS
Proxy reports them; the runtime's health check finds them AVAILABLE again.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import string
import uuid

from sluice.control import registry
from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid, not_found
from sluice.control.services import rds_common as c
from sluice.control.services import rds_subnet_groups
from sluice.control.services.rds_instances import ENGINES, new_instance
from sluice.control.services.secretsmanager import SecretsManager
from sluice.control.store import Doc
from sluice.dbserver import mariadb, postgres

DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgres": 5432}
_LICENSES = {"mysql": "general-public-license", "mariadb": "general-public-license",
             "postgres": "postgresql-license"}  # fmt: skip
_USER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PASSWORD_BANNED = set('/"@ ')
_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!#$%^&*()_+-=[]{}|:,.<>?~"
_HOSTED_ZONE = "Z2R2ITUGPM61AM"
_GONE_STATES = ("deleting",)
_DOWN = frozenset({"rebooting", "stopping", "deleting"})


def engine_version(engine: str) -> str:
    """The version of the binary that serves `engine` on this machine."""
    try:
        return postgres.server_version() if engine == "postgres" else mariadb.server_version()
    except (RuntimeError, OSError) as exc:
        raise ApiError(
            "InvalidParameterCombination",
            f"Cannot find a server for engine {engine} on this machine: {exc}",
        ) from None


def _check_version(engine: str, wanted: str | None) -> str:
    found = engine_version(engine)
    if wanted and not (found == wanted or found.startswith(wanted + ".")):
        server = "PostgreSQL" if engine == "postgres" else "MariaDB"
        raise ApiError(
            "InvalidParameterCombination",
            f"Cannot find version {wanted} for {engine} (this machine serves {engine} "
            f"with {server} {found})",
        )
    return found


def _check_credentials(engine: str, params: Params) -> None:
    user = params.get("MasterUsername")
    longest = 63 if engine == "postgres" else 16
    if not user or not _USER.fullmatch(user) or len(user) > longest:
        raise invalid(
            f"MasterUsername must be 1 to {longest} letters, digits or underscores, "
            "beginning with a letter."
        )
    if user.lower() in ("rdsadmin", "root" if engine != "postgres" else "postgres"):
        raise invalid(f"MasterUsername {user} cannot be used as it is a reserved word.")
    password, managed = params.get("MasterUserPassword"), params.get("ManageMasterUserPassword")
    if password is not None and managed:
        raise ApiError(
            "InvalidParameterCombination",
            "You can't specify MasterUserPassword when ManageMasterUserPassword is turned on.",
        )
    if password is None and not managed:
        raise invalid("MasterUserPassword is required unless ManageMasterUserPassword is on.")
    if password is not None:
        _check_password(engine, password)


def _check_password(engine: str, password: str) -> None:
    longest = 128 if engine == "postgres" else 41
    if not 8 <= len(password) <= longest or _PASSWORD_BANNED & set(password):
        raise invalid(
            f"The parameter MasterUserPassword is not a valid password: it must be 8 to "
            f"{longest} printable characters other than '/', '\"', '@' and space."
        )


def _check_db_name(engine: str, name: str | None) -> None:
    if name is None:
        return
    if not _USER.fullmatch(name) or len(name) > 63:
        raise invalid(f"DBName must begin with a letter and contain only letters, digits or "
                      f"underscores, at most 63: {name!r}")  # fmt: skip


def _port(engine: str, params: Params) -> int:
    port = int(params.get("Port") or DEFAULT_PORTS[engine])
    if not 1150 <= port <= 65535:
        raise invalid(f"Invalid port {port}: the port must be between 1150 and 65535.")
    return port


def _subnet_for(plane: Plane, group: Doc, zone: str | None) -> str:
    for subnet in group["Subnets"]:
        if zone is None or subnet["SubnetAvailabilityZone"]["Name"] == zone:
            return str(subnet["SubnetIdentifier"])
    raise invalid(f"The subnet group {group['DBSubnetGroupName']} has no subnet in {zone}.")


def new_password() -> str:
    """A password for a managed master user secret."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(28))


def _managed_secret(plane: Plane, call: Call, doc: Doc, password: str, key: str | None) -> Doc:
    """The instance's own secret, created; its MasterUserSecret shape."""
    value = json.dumps({"username": doc["MasterUsername"], "password": password})
    kms = key or f"arn:aws:kms:{plane.region}:{plane.account}:alias/aws/secretsmanager"
    made = SecretsManager(plane).CreateSecret(call, {
        "Name": f"rds!{doc['DbiResourceId'].lower()}-{uuid.uuid4()}",
        "Description": f"Secret associated with primary RDS DB instance: {doc['DBInstanceArn']}",
        "SecretString": value,
        "KmsKeyId": kms,
        "Tags": [{"Key": "aws:rds:primaryDBInstanceArn", "Value": doc["DBInstanceArn"]},
                 {"Key": "aws:secretsmanager:owningService", "Value": "rds"}],
    })  # fmt: skip
    return {"SecretArn": made["ARN"], "SecretStatus": "creating", "KmsKeyId": kms}


def create(plane: Plane, call: Call, params: Params) -> Output:
    """CreateDBInstance: validate, take an address and (maybe) a secret, record `creating`."""
    store = plane.store
    name = c.identifier(params["DBInstanceIdentifier"], "DBInstanceIdentifier")
    if store.get(c.INSTANCE, name) is not None:
        raise ApiError("DBInstanceAlreadyExists", f"DB instance already exists: {name}")
    engine = params["Engine"]
    if engine not in ENGINES:
        raise invalid(f"Invalid DB engine: {engine}. Sluice runs mysql, mariadb and postgres.")
    _check_credentials(engine, params)
    _check_db_name(engine, params.get("DBName"))
    c.ipv4_only(params, "NetworkType")
    version = _check_version(engine, params.get("EngineVersion"))
    port = _port(engine, params)
    group = rds_subnet_groups.resolve(plane, params.get("DBSubnetGroupName"))
    groups = c.security_groups(store, group["VpcId"], params.get("VpcSecurityGroupIds"))
    subnet_id = _subnet_for(plane, group, params.get("AvailabilityZone"))
    doc = new_instance(plane, name)
    password = params.get("MasterUserPassword") or new_password()
    with store.batch():
        address = registry.allocate(
            store, subnet_id, doc["DbiResourceId"], registry.Holder.DB_INSTANCE, groups, port
        ).address
        zone = next(s["SubnetAvailabilityZone"]["Name"] for s in group["Subnets"]
                    if s["SubnetIdentifier"] == subnet_id)  # fmt: skip
        doc.update(_created_fields(params, engine, version, address, port, groups))
        doc.update(AvailabilityZone=zone, DBSubnetGroup=c.output(group), _subnet=subnet_id,
                   _password=plane.vault.seal(password))  # fmt: skip
        if params.get("ManageMasterUserPassword"):
            doc["MasterUserSecret"] = _managed_secret(
                plane, call, doc, password, params.get("MasterUserSecretKmsKeyId")
            )
        store.put(c.INSTANCE, name, doc)
    plane.changed("rds")
    return {"DBInstance": c.output(doc)}


def _created_fields(
    params: Params, engine: str, version: str, address: str, port: int, groups: list[str]
) -> Doc:
    fields: Doc = {
        "_managed": True,
        "DBInstanceClass": params["DBInstanceClass"],
        "Engine": engine,
        "EngineVersion": version,
        "DBInstanceStatus": "creating",
        "MasterUsername": params["MasterUsername"],
        "Endpoint": {"Address": address, "Port": port, "HostedZoneId": _HOSTED_ZONE},
        "AllocatedStorage": int(params.get("AllocatedStorage") or 20),
        "StorageType": params.get("StorageType") or "gp2",
        "VpcSecurityGroups": [{"VpcSecurityGroupId": g, "Status": "active"} for g in groups],
        "IAMDatabaseAuthenticationEnabled": bool(params.get("EnableIAMDatabaseAuthentication")),
        "BackupRetentionPeriod": int(params.get("BackupRetentionPeriod", 1)),
        "PreferredBackupWindow": params.get("PreferredBackupWindow") or "03:00-03:30",
        "PreferredMaintenanceWindow": params.get("PreferredMaintenanceWindow")
        or "sun:04:00-sun:04:30",
        "LicenseModel": _LICENSES[engine],
        "DbInstancePort": 0,
        "AutoMinorVersionUpgrade": bool(params.get("AutoMinorVersionUpgrade", True)),
        "DeletionProtection": bool(params.get("DeletionProtection", False)),
        "CopyTagsToSnapshot": bool(params.get("CopyTagsToSnapshot", False)),
        "PendingModifiedValues": {},
        "NetworkType": "IPV4",
        "TagList": [{"Key": t["Key"], "Value": t.get("Value", "")} for t in params.get("Tags", [])],
    }
    if params.get("DBName"):
        fields["DBName"] = params["DBName"]
    return fields


def managed(plane: Plane, identifier: str) -> Doc:
    """A DB instance Sluice runs, or the fault RDS answers."""
    doc = plane.store.get(c.INSTANCE, identifier.lower())
    if doc is None:
        raise not_found("DBInstanceNotFound", f"DBInstance {identifier} not found.")
    if not doc.get("_managed"):
        raise ApiError(
            "InvalidDBInstanceState",
            f"DBInstance {doc['DBInstanceIdentifier']} was adopted: Sluice does not run its "
            "server (use `sluice db-instance forget`).",
        )
    return doc


def _in_state(doc: Doc, *states: str) -> None:
    status = doc["DBInstanceStatus"]
    if status not in states:
        raise ApiError(
            "InvalidDBInstanceState",
            f"Instance {doc['DBInstanceIdentifier']} is not in {' or '.join(states)} state "
            f"(it is {status}).",
        )


def _move(plane: Plane, doc: Doc, status: str, **changes: object) -> Output:
    name = doc["DBInstanceIdentifier"]
    fresh = {**copy.deepcopy(doc), **changes, "DBInstanceStatus": status}
    with plane.store.batch():
        plane.store.put(c.INSTANCE, name, fresh)
        if status in _DOWN:
            _targets_down(plane, name, status)
    plane.changed("rds")
    return {"DBInstance": c.output(fresh)}


def _targets_down(plane: Plane, name: str, status: str) -> None:
    health = {"State": "UNAVAILABLE", "Reason": "UNREACHABLE",
              "Description": f"The DB instance is {status}."}  # fmt: skip
    for key in plane.store.keys(c.TARGET):
        target = plane.store.get(c.TARGET, key)
        if target is not None and target["RdsResourceId"] == name:
            plane.store.put(c.TARGET, key, {**target, "TargetHealth": health})


def delete(plane: Plane, call: Call, params: Params) -> Output:
    """DeleteDBInstance: no snapshots in Sluice, so SkipFinalSnapshot is required."""
    doc = managed(plane, params["DBInstanceIdentifier"])
    if params.get("FinalDBSnapshotIdentifier") or not params.get("SkipFinalSnapshot"):
        raise ApiError(
            "InvalidParameterCombination",
            "Sluice takes no snapshots: delete with SkipFinalSnapshot (--skip-final-snapshot) "
            "and no FinalDBSnapshotIdentifier.",
        )
    if doc.get("DeletionProtection"):
        raise ApiError("InvalidParameterCombination",
                       "Cannot delete protected DB Instance, please disable deletion "
                       "protection and try again.")  # fmt: skip
    if doc["DBInstanceStatus"] in _GONE_STATES:
        name = doc["DBInstanceIdentifier"]
        raise ApiError("InvalidDBInstanceState", f"Instance {name} is already being deleted.")
    return _move(plane, doc, "deleting")


def reboot(plane: Plane, call: Call, params: Params) -> Output:
    doc = managed(plane, params["DBInstanceIdentifier"])
    _in_state(doc, "available")
    return _move(plane, doc, "rebooting")


def stop(plane: Plane, call: Call, params: Params) -> Output:
    doc = managed(plane, params["DBInstanceIdentifier"])
    _in_state(doc, "available")
    return _move(plane, doc, "stopping")


def start(plane: Plane, call: Call, params: Params) -> Output:
    doc = managed(plane, params["DBInstanceIdentifier"])
    _in_state(doc, "stopped")
    return _move(plane, doc, "starting")


def modify(plane: Plane, call: Call, params: Params) -> Output:
    """ModifyDBInstance: master password (given or rotated), security groups, storage.

    Changes apply at once whatever ApplyImmediately says (Sluice has no maintenance window).
    """
    doc = managed(plane, params["DBInstanceIdentifier"])
    _in_state(doc, "available")
    changes: Doc = {}
    if "AllocatedStorage" in params:
        changes["AllocatedStorage"] = int(params["AllocatedStorage"])
    if "VpcSecurityGroupIds" in params:
        group = doc["DBSubnetGroup"]
        groups = c.security_groups(plane.store, group["VpcId"], params["VpcSecurityGroupIds"])
        registry.set_groups(plane.store, doc["DbiResourceId"], groups)
        changes["VpcSecurityGroups"] = [
            {"VpcSecurityGroupId": g, "Status": "active"} for g in groups
        ]
    password = _new_master_password(plane, call, doc, params)
    if password is None:
        return _move(plane, doc, "available", **changes)
    changes["_password"] = plane.vault.seal(password)
    return _move(plane, doc, "resetting-master-credentials", **changes)


def _new_master_password(plane: Plane, call: Call, doc: Doc, params: Params) -> str | None:
    secret = doc.get("MasterUserSecret")
    given = params.get("MasterUserPassword")
    if given is not None:
        if secret is not None:
            raise ApiError("InvalidParameterCombination", "You can't specify "
                           "MasterUserPassword for an instance with a managed master user "
                           "password; use RotateMasterUserPassword.")  # fmt: skip
        _check_password(doc["Engine"], given)
        return str(given)
    if not params.get("RotateMasterUserPassword"):
        return None
    if secret is None:
        raise ApiError("InvalidParameterCombination", "RotateMasterUserPassword needs "
                       "ManageMasterUserPassword turned on.")  # fmt: skip
    password = new_password()
    value = json.dumps({"username": doc["MasterUsername"], "password": password})
    SecretsManager(plane).PutSecretValue(
        call, {"SecretId": secret["SecretArn"], "SecretString": value}
    )
    return password
