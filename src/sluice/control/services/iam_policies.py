"""IAM managed policies and their versions (CreatePolicy ... SetDefaultPolicyVersion).

A managed policy is one "iam_policy" document keyed by ARN, holding all its
versions (at most five, numbered without reuse through `_last_version`) and the
count of roles and users it is attached to. AWS-managed policies (seeded by
`managed_policies.ensure_managed_policies`) are read-only here. The `Iam`
service class delegates to these functions, as the RDS service does to its
modules, so each module stays a readable size.
"""

from __future__ import annotations

from sluice.control import ids
from sluice.control.context import Call, Output, Params, Plane
from sluice.control.services.iam_support import (
    POLICY,
    already_exists,
    check_name,
    check_path,
    check_policy_arn,
    delete_conflict,
    identity_policy,
    invalid_input,
    limit_exceeded,
    no_such_entity,
    page,
    policy_out,
    version_out,
)
from sluice.control.store import Doc, Store

MAX_POLICY_VERSIONS = 5


def get_policy(store: Store, arn: str) -> Doc:
    """The policy of that ARN (InvalidInput for a malformed ARN, NoSuchEntity if unknown)."""
    policy = store.get(POLICY, check_policy_arn(arn))
    if policy is None:
        raise no_such_entity(f"Policy {arn} does not exist or is not attachable.")
    return policy


def create(plane: Plane, call: Call, params: Params) -> Output:
    """CreatePolicy: names are unique in the account whatever the path."""
    name = check_name(params["PolicyName"], "policyName")
    path = check_path(params)
    folded = name.casefold()
    local = (p for p in plane.store.all(POLICY) if not p.get("_managed"))
    if any(p["PolicyName"].casefold() == folded for p in local):
        message = f"A policy called {name} already exists. Duplicate names are not allowed."
        raise already_exists(message)
    document = identity_policy(params["PolicyDocument"])
    arn = f"arn:aws:iam::{plane.account}:policy{path}{name}"
    doc: Doc = {
        "PolicyName": name,
        "PolicyId": ids.unique_id("ANPA"),
        "Arn": arn,
        "Path": path,
        "DefaultVersionId": "v1",
        "AttachmentCount": 0,
        "IsAttachable": True,
        "CreateDate": call.now,
        "UpdateDate": call.now,
        "Description": params.get("Description", ""),
        "Tags": list(params.get("Tags", [])),
        "Versions": {"v1": {"Document": document, "CreateDate": call.now}},
        "_last_version": 1,
        "_managed": False,
    }
    plane.store.put(POLICY, arn, doc)
    return {"Policy": policy_out(doc, description=False)}


def get(plane: Plane, call: Call, params: Params) -> Output:
    return {"Policy": policy_out(get_policy(plane.store, params["PolicyArn"]))}


def list_(plane: Plane, call: Call, params: Params) -> Output:
    """ListPolicies: Scope All|AWS|Local, OnlyAttached, PathPrefix, paged."""
    scope = params.get("Scope", "All")
    prefix = str(params.get("PathPrefix", "/"))
    chosen = [
        p
        for p in plane.store.all(POLICY)
        if (scope == "All" or bool(p.get("_managed")) == (scope == "AWS"))
        and p["Path"].startswith(prefix)
        and (not params.get("OnlyAttached") or p["AttachmentCount"] > 0)
    ]
    if params.get("PolicyUsageFilter") == "PermissionsBoundary":
        chosen = []  # nothing is used as a permissions boundary here
    found, more = page(chosen, lambda p: f"{p['PolicyName'].casefold()}\0{p['Arn']}", params)
    return {"Policies": [policy_out(p, description=False) for p in found], **more}


def delete(plane: Plane, call: Call, params: Params) -> Output:
    """DeletePolicy: only when detached from everything and down to its default version."""
    policy = _local_policy(plane.store, params["PolicyArn"])
    if policy["AttachmentCount"] > 0:
        raise delete_conflict("Cannot delete a policy attached to entities.")
    if len(policy["Versions"]) > 1:
        raise delete_conflict(
            "This policy has more than one version. Before you delete a policy, you must delete "
            "the policy's versions. The default version is deleted with the policy."
        )
    plane.store.delete(POLICY, policy["Arn"])
    return {}


def create_version(plane: Plane, call: Call, params: Params) -> Output:
    """CreatePolicyVersion: at most five versions; SetAsDefault makes it the one in force."""
    policy = _local_policy(plane.store, params["PolicyArn"])
    if len(policy["Versions"]) >= MAX_POLICY_VERSIONS:
        raise limit_exceeded(
            f"A managed policy can have up to {MAX_POLICY_VERSIONS} versions. Before you create "
            "a new version, you must delete an existing version."
        )
    document = identity_policy(params["PolicyDocument"])
    number = int(policy.get("_last_version", len(policy["Versions"]))) + 1
    version_id = f"v{number}"
    versions = {**policy["Versions"], version_id: {"Document": document, "CreateDate": call.now}}
    changed: Doc = {**policy, "Versions": versions, "_last_version": number}
    if params.get("SetAsDefault"):
        changed.update(DefaultVersionId=version_id, UpdateDate=call.now)
    plane.store.put(POLICY, policy["Arn"], changed)
    _changed(plane, changed)
    return {"PolicyVersion": version_out(changed, version_id, document=False)}


def get_version(plane: Plane, call: Call, params: Params) -> Output:
    policy = get_policy(plane.store, params["PolicyArn"])
    return {"PolicyVersion": version_out(policy, _version_id(policy, params["VersionId"]))}


def list_versions(plane: Plane, call: Call, params: Params) -> Output:
    """ListPolicyVersions: newest first, without the documents (as AWS answers)."""
    policy = get_policy(plane.store, params["PolicyArn"])
    chosen, more = page(list(policy["Versions"]), lambda v: f"{10**11 - int(v[1:]):012d}", params)
    return {"Versions": [version_out(policy, v, document=False) for v in chosen], **more}


def delete_version(plane: Plane, call: Call, params: Params) -> Output:
    policy = _local_policy(plane.store, params["PolicyArn"])
    version_id = _version_id(policy, params["VersionId"])
    if version_id == policy["DefaultVersionId"]:
        raise delete_conflict("Cannot delete the default version of a policy.")
    versions = {k: v for k, v in policy["Versions"].items() if k != version_id}
    plane.store.put(POLICY, policy["Arn"], {**policy, "Versions": versions})
    return {}


def set_default_version(plane: Plane, call: Call, params: Params) -> Output:
    policy = _local_policy(plane.store, params["PolicyArn"])
    version_id = _version_id(policy, params["VersionId"])
    changed = {**policy, "DefaultVersionId": version_id, "UpdateDate": call.now}
    plane.store.put(POLICY, policy["Arn"], changed)
    _changed(plane, changed)
    return {}


def _local_policy(store: Store, arn: str) -> Doc:
    policy = get_policy(store, arn)
    if policy.get("_managed"):
        raise invalid_input(f"Policy {arn} is an AWS managed policy and cannot be changed.")
    return policy


def _version_id(policy: Doc, version_id: str) -> str:
    if version_id not in policy["Versions"]:
        arn = policy["Arn"]
        message = f"Policy {arn} version {version_id} does not exist or is not attachable."
        raise no_such_entity(message)
    return version_id


def _changed(plane: Plane, policy: Doc) -> None:
    """A new default document matters to running proxies only where the policy is attached."""
    if policy["AttachmentCount"] > 0:
        plane.changed("iam")
