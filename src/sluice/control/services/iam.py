"""The IAM API: roles, users, access keys, managed and inline policies.

Each operation reads and writes the "iam_role", "iam_user", "access_key" and
"iam_policy" documents (see the state brief) and nothing else, so the data
plane and `principals.Principals` see the same state. Roles and users share
most of their behaviour (attached managed policies, inline policies), which is
written once over an `_Entity` description rather than twice. Managed-policy
attachment counts are kept on the policy document, changed in the same store
batch as the attachment. Rules, errors and output shapes live in
`iam_support`, so this module reads as the list of operations.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.control import ids
from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError
from sluice.control.services import iam_policies
from sluice.control.services.iam_support import (
    ACCESS_KEY,
    POLICY,
    ROLE,
    USER,
    already_exists,
    check_name,
    check_path,
    check_policy_arn,
    delete_conflict,
    encode_document,
    find,
    identity_policy,
    key_out,
    limit_exceeded,
    name_key,
    no_such_entity,
    page,
    role_out,
    trust_policy,
    user_out,
)
from sluice.control.store import Doc

MAX_ACCESS_KEYS = 2
MAX_TAGS = 50


@dataclass(frozen=True, slots=True)
class _Entity:
    """What differs between a role and a user for the operations they share."""

    kind: str  # store kind
    noun: str  # "role" / "user", as IAM's messages say
    name: str  # the name member: RoleName / UserName
    quota: str  # IAM's quota name for attached managed policies
    max_attached: int = 10


_ROLES = _Entity(ROLE, "role", "RoleName", "PoliciesPerRole")
_USERS = _Entity(USER, "user", "UserName", "PoliciesPerUser")


class Iam:
    """IAM operations; method names are the API's operation names."""

    name = "iam"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._store = plane.store

    # ---- roles ----

    def CreateRole(self, call: Call, params: Params) -> Output:
        name = check_name(params["RoleName"], "roleName")
        path = check_path(params)
        self._unique(_ROLES, name)
        trust = trust_policy(params["AssumeRolePolicyDocument"], self._store, self._plane.account)
        doc: Doc = {
            "RoleName": name,
            "RoleId": ids.unique_id("AROA"),
            "Arn": f"arn:aws:iam::{self._plane.account}:role{path}{name}",
            "Path": path,
            "CreateDate": call.now,
            "AssumeRolePolicyDocument": trust,
            "Description": params.get("Description", ""),
            "MaxSessionDuration": params.get("MaxSessionDuration", 3600),
            "AttachedPolicies": [],
            "InlinePolicies": {},
            "Tags": list(params.get("Tags", [])),
        }
        self._store.put(ROLE, name, doc)
        return {"Role": role_out(doc)}

    def GetRole(self, call: Call, params: Params) -> Output:
        return {"Role": role_out(self._get(_ROLES, params["RoleName"]))}

    def ListRoles(self, call: Call, params: Params) -> Output:
        roles, more = page(self._under(ROLE, params), name_key("RoleName"), params)
        return {"Roles": [role_out(r, tags=False) for r in roles], **more}

    def DeleteRole(self, call: Call, params: Params) -> Output:
        role = self._get(_ROLES, params["RoleName"])
        self._check_no_policies(role)
        self._store.delete(ROLE, role["RoleName"])
        self._plane.changed("iam")
        return {}

    def TagRole(self, call: Call, params: Params) -> Output:
        role = self._get(_ROLES, params["RoleName"])
        tags = {t["Key"]: t for t in role.get("Tags", [])}
        tags.update({t["Key"]: {"Key": t["Key"], "Value": t["Value"]} for t in params["Tags"]})
        if len(tags) > MAX_TAGS:
            raise limit_exceeded(f"Cannot exceed quota for TagsPerRole: {MAX_TAGS}")
        self._store.put(ROLE, role["RoleName"], {**role, "Tags": list(tags.values())})
        return {}

    # ---- users ----

    def CreateUser(self, call: Call, params: Params) -> Output:
        name = check_name(params["UserName"], "userName")
        path = check_path(params)
        self._unique(_USERS, name)
        doc: Doc = {
            "UserName": name,
            "UserId": ids.unique_id("AIDA"),
            "Arn": f"arn:aws:iam::{self._plane.account}:user{path}{name}",
            "Path": path,
            "CreateDate": call.now,
            "AttachedPolicies": [],
            "InlinePolicies": {},
            "Tags": list(params.get("Tags", [])),
        }
        self._store.put(USER, name, doc)
        return {"User": user_out(doc)}

    def GetUser(self, call: Call, params: Params) -> Output:
        return {"User": user_out(self._get(_USERS, self._user_name(call, params)))}

    def ListUsers(self, call: Call, params: Params) -> Output:
        users, more = page(self._under(USER, params), name_key("UserName"), params)
        return {"Users": [user_out(u, tags=False) for u in users], **more}

    def DeleteUser(self, call: Call, params: Params) -> Output:
        user = self._get(_USERS, params["UserName"])
        if self._keys_of(user["UserName"]):
            raise delete_conflict("Cannot delete entity, must delete access keys first.")
        self._check_no_policies(user)
        self._store.delete(USER, user["UserName"])
        self._plane.changed("iam")
        return {}

    # ---- access keys ----

    def CreateAccessKey(self, call: Call, params: Params) -> Output:
        user = self._get(_USERS, self._user_name(call, params))
        if len(self._keys_of(user["UserName"])) >= MAX_ACCESS_KEYS:
            raise limit_exceeded(f"Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS}")
        key_id, secret = ids.access_key_id(), ids.secret_access_key()
        doc: Doc = {
            "AccessKeyId": key_id,
            "UserName": user["UserName"],
            "Status": "Active",
            "CreateDate": call.now,
            "_secret": self._plane.vault.seal(secret),
        }
        self._store.put(ACCESS_KEY, key_id, doc)
        return {"AccessKey": {**key_out(doc), "SecretAccessKey": secret}}

    def DeleteAccessKey(self, call: Call, params: Params) -> Output:
        key = self._key(call, params)
        self._store.delete(ACCESS_KEY, key["AccessKeyId"])
        self._plane.changed("iam")
        return {}

    def UpdateAccessKey(self, call: Call, params: Params) -> Output:
        key = self._key(call, params)
        self._store.put(ACCESS_KEY, key["AccessKeyId"], {**key, "Status": params["Status"]})
        self._plane.changed("iam")
        return {}

    def ListAccessKeys(self, call: Call, params: Params) -> Output:
        user = self._get(_USERS, self._user_name(call, params))
        keys, more = page(self._keys_of(user["UserName"]), lambda k: k["AccessKeyId"], params)
        return {"AccessKeyMetadata": [key_out(k) for k in keys], **more}

    # ---- managed policies (iam_policies) ----

    def CreatePolicy(self, call: Call, params: Params) -> Output:
        return iam_policies.create(self._plane, call, params)

    def GetPolicy(self, call: Call, params: Params) -> Output:
        return iam_policies.get(self._plane, call, params)

    def ListPolicies(self, call: Call, params: Params) -> Output:
        return iam_policies.list_(self._plane, call, params)

    def DeletePolicy(self, call: Call, params: Params) -> Output:
        return iam_policies.delete(self._plane, call, params)

    def CreatePolicyVersion(self, call: Call, params: Params) -> Output:
        return iam_policies.create_version(self._plane, call, params)

    def GetPolicyVersion(self, call: Call, params: Params) -> Output:
        return iam_policies.get_version(self._plane, call, params)

    def ListPolicyVersions(self, call: Call, params: Params) -> Output:
        return iam_policies.list_versions(self._plane, call, params)

    def DeletePolicyVersion(self, call: Call, params: Params) -> Output:
        return iam_policies.delete_version(self._plane, call, params)

    def SetDefaultPolicyVersion(self, call: Call, params: Params) -> Output:
        return iam_policies.set_default_version(self._plane, call, params)

    # ---- attached managed policies ----

    def AttachRolePolicy(self, call: Call, params: Params) -> Output:
        return self._attach(_ROLES, params)

    def DetachRolePolicy(self, call: Call, params: Params) -> Output:
        return self._detach(_ROLES, params)

    def ListAttachedRolePolicies(self, call: Call, params: Params) -> Output:
        return self._list_attached(_ROLES, params)

    def AttachUserPolicy(self, call: Call, params: Params) -> Output:
        return self._attach(_USERS, params)

    def DetachUserPolicy(self, call: Call, params: Params) -> Output:
        return self._detach(_USERS, params)

    def ListAttachedUserPolicies(self, call: Call, params: Params) -> Output:
        return self._list_attached(_USERS, params)

    # ---- inline policies ----

    def PutRolePolicy(self, call: Call, params: Params) -> Output:
        return self._put_inline(_ROLES, params)

    def GetRolePolicy(self, call: Call, params: Params) -> Output:
        return self._get_inline(_ROLES, params)

    def DeleteRolePolicy(self, call: Call, params: Params) -> Output:
        return self._delete_inline(_ROLES, params)

    def ListRolePolicies(self, call: Call, params: Params) -> Output:
        return self._list_inline(_ROLES, params)

    def PutUserPolicy(self, call: Call, params: Params) -> Output:
        return self._put_inline(_USERS, params)

    def GetUserPolicy(self, call: Call, params: Params) -> Output:
        return self._get_inline(_USERS, params)

    def DeleteUserPolicy(self, call: Call, params: Params) -> Output:
        return self._delete_inline(_USERS, params)

    def ListUserPolicies(self, call: Call, params: Params) -> Output:
        return self._list_inline(_USERS, params)

    # ---- shared by roles and users ----

    def _attach(self, entity: _Entity, params: Params) -> Output:
        owner = self._get(entity, params[entity.name])
        policy = iam_policies.get_policy(self._store, params["PolicyArn"])
        attached: list[str] = owner["AttachedPolicies"]
        if policy["Arn"] in attached:
            return {}  # attaching twice changes nothing, as on AWS
        if len(attached) >= entity.max_attached:
            raise limit_exceeded(f"Cannot exceed quota for {entity.quota}: {entity.max_attached}")
        self._set_attachment(entity, owner, policy, [*attached, policy["Arn"]], +1)
        return {}

    def _detach(self, entity: _Entity, params: Params) -> Output:
        owner = self._get(entity, params[entity.name])
        arn = check_policy_arn(params["PolicyArn"])
        if arn not in owner["AttachedPolicies"]:
            raise no_such_entity(f"Policy {arn} was not found.")
        remaining = [a for a in owner["AttachedPolicies"] if a != arn]
        self._set_attachment(entity, owner, self._store.get(POLICY, arn), remaining, -1)
        return {}

    def _set_attachment(
        self, entity: _Entity, owner: Doc, policy: Doc | None, attached: list[str], delta: int
    ) -> None:
        with self._store.batch():
            self._store.put(
                entity.kind, owner[entity.name], {**owner, "AttachedPolicies": attached}
            )
            if policy is not None:
                count = max(0, policy["AttachmentCount"] + delta)
                self._store.put(POLICY, policy["Arn"], {**policy, "AttachmentCount": count})
        self._plane.changed("iam")

    def _list_attached(self, entity: _Entity, params: Params) -> Output:
        owner = self._get(entity, params[entity.name])
        prefix = str(params.get("PathPrefix", "/"))
        items = []
        for arn in owner["AttachedPolicies"]:
            policy = self._store.get(POLICY, arn)
            if policy is not None and policy["Path"].startswith(prefix):
                items.append({"PolicyName": policy["PolicyName"], "PolicyArn": arn})
        chosen, more = page(
            items, lambda i: f"{i['PolicyName'].casefold()}\0{i['PolicyArn']}", params
        )
        return {"AttachedPolicies": chosen, **more}

    def _put_inline(self, entity: _Entity, params: Params) -> Output:
        owner = self._get(entity, params[entity.name])
        name = check_name(params["PolicyName"], "policyName")
        document = identity_policy(params["PolicyDocument"])
        inline = {**owner["InlinePolicies"], name: document}
        self._store.put(entity.kind, owner[entity.name], {**owner, "InlinePolicies": inline})
        self._plane.changed("iam")
        return {}

    def _get_inline(self, entity: _Entity, params: Params) -> Output:
        owner = self._get(entity, params[entity.name])
        name = self._inline_name(entity, owner, params["PolicyName"])
        document = encode_document(owner["InlinePolicies"][name])
        return {entity.name: owner[entity.name], "PolicyName": name, "PolicyDocument": document}

    def _delete_inline(self, entity: _Entity, params: Params) -> Output:
        owner = self._get(entity, params[entity.name])
        name = self._inline_name(entity, owner, params["PolicyName"])
        inline = {k: v for k, v in owner["InlinePolicies"].items() if k != name}
        self._store.put(entity.kind, owner[entity.name], {**owner, "InlinePolicies": inline})
        self._plane.changed("iam")
        return {}

    def _list_inline(self, entity: _Entity, params: Params) -> Output:
        owner = self._get(entity, params[entity.name])
        names, more = page(list(owner["InlinePolicies"]), lambda n: n, params)
        return {"PolicyNames": names, **more}

    @staticmethod
    def _inline_name(entity: _Entity, owner: Doc, name: str) -> str:
        if name not in owner["InlinePolicies"]:
            raise no_such_entity(f"The {entity.noun} policy with name {name} cannot be found.")
        return name

    # ---- look-ups ----

    def _get(self, entity: _Entity, name: str) -> Doc:
        doc = find(self._store, entity.kind, name)
        if doc is None:
            raise no_such_entity(f"The {entity.noun} with name {name} cannot be found.")
        return doc

    def _unique(self, entity: _Entity, name: str) -> None:
        if find(self._store, entity.kind, name) is not None:
            raise already_exists(f"{entity.noun.capitalize()} with name {name} already exists.")

    def _under(self, kind: str, params: Params) -> list[Doc]:
        prefix = str(params.get("PathPrefix", "/"))
        return [d for d in self._store.all(kind) if d["Path"].startswith(prefix)]

    @staticmethod
    def _check_no_policies(owner: Doc) -> None:
        if owner["AttachedPolicies"]:
            raise delete_conflict("Cannot delete entity, must detach all policies first.")
        if owner["InlinePolicies"]:
            raise delete_conflict("Cannot delete entity, must delete policies first.")

    @staticmethod
    def _user_name(call: Call, params: Params) -> str:
        """The UserName given, or (as IAM does) the calling user's own."""
        if "UserName" in params:
            return str(params["UserName"])
        if call.principal.kind != "user":
            message = "Must specify userName when calling with non-User credentials"
            raise ApiError("ValidationError", message, 400)
        return call.principal.name

    def _keys_of(self, user_name: str) -> list[Doc]:
        return [k for k in self._store.all(ACCESS_KEY) if k["UserName"] == user_name]

    def _key(self, call: Call, params: Params) -> Doc:
        user = self._get(_USERS, self._user_name(call, params))
        key = self._store.get(ACCESS_KEY, params["AccessKeyId"])
        if key is None or key["UserName"] != user["UserName"]:
            message = f"The Access Key with id {params['AccessKeyId']} cannot be found."
            raise no_such_entity(message)
        return key
