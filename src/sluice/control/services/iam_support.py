"""IAM's rules and wire shapes, kept apart from the operations that use them.

The IAM service (`iam.py`) is a long list of small operations over four kinds of
documents; what they share lives here: AWS's errors and their wording, the
name/path/ARN syntax IAM enforces, policy-document checks (`policy.parse_policy`,
with `trust=True` for a role's trust policy, plus IAM's refusal of a trust policy
naming a user or role that does not exist), IAM's Marker/MaxItems pagination with
opaque markers, and the output shapes.

Policy documents are stored as dicts and answered URL-encoded JSON, as IAM does:
botocore's `json_decode_policies` handler url-decodes and parses every
`policyDocumentType` member, so boto3 hands back a dict and the CLI prints JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from sluice.control.context import Output, Params, timestamp
from sluice.control.errors import ApiError
from sluice.control.policy import parse_policy
from sluice.control.store import Doc, Store

ROLE, USER, POLICY, ACCESS_KEY = "iam_role", "iam_user", "iam_policy", "access_key"
DEFAULT_MAX_ITEMS = 100
_NAME = re.compile(r"[\w+=,.@-]+", re.ASCII)
_PATH = re.compile(r"/|/[\x21-\x7e]+/")
_POLICY_ARN = re.compile(r"arn:aws:iam::(\d{12}|aws):policy(/|/[\x21-\x7e]*/)([\w+=,.@-]+)")
T = TypeVar("T")


# ---- errors, in IAM's words ----


def no_such_entity(message: str) -> ApiError:
    return ApiError("NoSuchEntity", message, 404)


def already_exists(message: str) -> ApiError:
    return ApiError("EntityAlreadyExists", message, 409)


def delete_conflict(message: str) -> ApiError:
    return ApiError("DeleteConflict", message, 409)


def limit_exceeded(message: str) -> ApiError:
    return ApiError("LimitExceeded", message, 409)


def invalid_input(message: str) -> ApiError:
    return ApiError("InvalidInput", message, 400)


def malformed(message: str) -> ApiError:
    return ApiError("MalformedPolicyDocument", message, 400)


def validation_error(value: str, member: str, constraint: str) -> ApiError:
    text = f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
    return ApiError("ValidationError", text + f"constraint: Member must {constraint}", 400)


# ---- syntax ----


def check_name(value: str, member: str) -> str:
    """A user, role or policy name: IAM's `[\\w+=,.@-]+` (lengths are checked by the model)."""
    if not _NAME.fullmatch(value):
        raise validation_error(value, member, r"satisfy regular expression pattern: [\w+=,.@-]+")
    return value


def check_path(params: Params, member: str = "Path") -> str:
    """The entity's path, "/" by default; it must begin and end with a slash."""
    path = str(params.get(member, "/"))
    if not _PATH.fullmatch(path):
        pattern = r"satisfy regular expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F)"
        raise validation_error(path, member[0].lower() + member[1:], pattern)
    return path


def check_policy_arn(arn: str) -> str:
    if not _POLICY_ARN.fullmatch(arn):
        raise invalid_input(f"ARN {arn} is not valid.")
    return arn


def find(store: Store, kind: str, name: str) -> Doc | None:
    """An IAM entity by name: names are unique regardless of case, as on AWS."""
    doc = store.get(kind, name)
    if doc is not None:
        return doc
    folded = name.casefold()
    key = next((k for k in store.keys(kind) if k.casefold() == folded), None)
    return None if key is None else store.get(kind, key)


# ---- policy documents ----


def encode_document(document: dict[str, Any]) -> str:
    """A policy document as IAM answers it: URL-encoded JSON."""
    return quote(json.dumps(document), safe="")


def identity_policy(text: str) -> dict[str, Any]:
    """A permissions policy (CreatePolicy, Put*Policy): a Resource, no Principal."""
    return parse_policy(text)


def trust_policy(text: str, store: Store, account: str) -> dict[str, Any]:
    """A role's trust policy: a Principal and no Resource, naming only existing entities."""
    document = parse_policy(text, trust=True)
    raw = document["Statement"]
    for statement in raw if isinstance(raw, list) else [raw]:
        principal = statement.get("Principal", statement.get("NotPrincipal"))
        if not isinstance(principal, dict):
            continue  # "*"
        for key, values in principal.items():
            for value in values if isinstance(values, list) else [values]:
                if not _known_principal(key, value, store, account):
                    raise malformed(f'Invalid principal in policy: "{key}":"{value}"')
    return document


def _known_principal(key: str, value: str, store: Store, account: str) -> bool:
    """IAM refuses a trust policy naming a user or role of this account that does not exist."""
    prefix = f"arn:aws:iam::{account}:"
    if key != "AWS" or not value.startswith(prefix):
        return bool(value)
    kind, _, rest = value[len(prefix) :].partition("/")
    if kind == "root" and not rest:
        return True
    if kind not in ("user", "role") or not rest:
        return False
    doc = find(store, USER if kind == "user" else ROLE, rest.rsplit("/", 1)[-1])
    return doc is not None and doc["Arn"] == value


# ---- pagination ----


def page(items: Sequence[T], key: Callable[[T], str], params: Params) -> tuple[list[T], Output]:
    """One page of `items` in `key` order, after params' Marker, of at most MaxItems.

    Returns the page and the IsTruncated/Marker members to answer with. A
    marker is the (opaque) sort key of the last item given, so a page stays
    right when items before it are deleted.
    """
    ordered = sorted(items, key=key)
    if "Marker" in params:
        after = _open_marker(str(params["Marker"]))
        ordered = [item for item in ordered if key(item) > after]
    limit = int(params.get("MaxItems", DEFAULT_MAX_ITEMS))
    chosen = ordered[:limit]
    if len(ordered) <= limit:
        return chosen, {"IsTruncated": False}
    marker = base64.urlsafe_b64encode(key(chosen[-1]).encode()).decode()
    return chosen, {"IsTruncated": True, "Marker": marker}


def _open_marker(marker: str) -> str:
    try:
        return base64.b64decode(marker.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise invalid_input("Invalid Marker.") from None


def name_key(field: str) -> Callable[[Doc], str]:
    """Sort key for entities: the name folded to lower case, then as written."""
    return lambda doc: f"{doc[field].casefold()}\0{doc[field]}"


# ---- output shapes ----


def role_out(doc: Doc, *, tags: bool = True) -> Output:
    out = _entity_out(doc, "RoleName", "RoleId")
    out["AssumeRolePolicyDocument"] = encode_document(doc["AssumeRolePolicyDocument"])
    out["MaxSessionDuration"] = doc.get("MaxSessionDuration", 3600)
    if doc.get("Description"):
        out["Description"] = doc["Description"]
    if tags and doc.get("Tags"):
        out["Tags"] = doc["Tags"]
    return out


def user_out(doc: Doc, *, tags: bool = True) -> Output:
    out = _entity_out(doc, "UserName", "UserId")
    if tags and doc.get("Tags"):
        out["Tags"] = doc["Tags"]
    return out


def _entity_out(doc: Doc, name: str, ident: str) -> Output:
    return {
        "Path": doc["Path"],
        name: doc[name],
        ident: doc[ident],
        "Arn": doc["Arn"],
        "CreateDate": timestamp(doc["CreateDate"]),
    }


def policy_out(doc: Doc, *, description: bool = True) -> Output:
    out: Output = {
        key: doc[key]
        for key in ("PolicyName", "PolicyId", "Arn", "Path", "DefaultVersionId", "AttachmentCount")
    }
    out.update(
        PermissionsBoundaryUsageCount=0,
        IsAttachable=doc.get("IsAttachable", True),
        CreateDate=timestamp(doc["CreateDate"]),
        UpdateDate=timestamp(doc["UpdateDate"]),
    )
    if description and doc.get("Description"):
        out["Description"] = doc["Description"]
    if doc.get("Tags"):
        out["Tags"] = doc["Tags"]
    return out


def version_out(doc: Doc, version_id: str, *, document: bool = True) -> Output:
    version = doc["Versions"][version_id]
    out: Output = {
        "VersionId": version_id,
        "IsDefaultVersion": version_id == doc["DefaultVersionId"],
        "CreateDate": timestamp(version["CreateDate"]),
    }
    if document:
        out["Document"] = encode_document(version["Document"])
    return out


def key_out(doc: Doc) -> Output:
    return {k: doc[k] for k in ("UserName", "AccessKeyId", "Status")} | {
        "CreateDate": timestamp(doc["CreateDate"])
    }
