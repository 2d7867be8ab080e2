"""Tags on RDS resources: AddTagsToResource, ListTagsForResource, RemoveTagsFromResource.

RDS addresses a resource by its ARN, whose resource type says where to look:
a proxy, a proxy endpoint, a proxy target group or a DB instance. Proxies,
endpoints and target groups have no Tags member in their output shapes, so
their tags live in the internal "_tags" field; a DB instance shows them as
its TagList, so they are kept there.
"""

from __future__ import annotations

import re

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError, invalid, not_found
from sluice.control.services import rds_common as c
from sluice.control.store import Doc

MAX_TAGS = 50
_ARN = re.compile(r"arn:aws:rds:([^:]+):(\d{12}):([a-z-]+):(.+)")
# resource type in the ARN -> (document kind, ARN member, tags member, fault code, noun)
_TYPES = {
    "db-proxy": (c.PROXY, "DBProxyArn", "_tags", "DBProxyNotFoundFault", "DBProxy"),
    "db-proxy-endpoint": (
        c.ENDPOINT,
        "DBProxyEndpointArn",
        "_tags",
        "DBProxyEndpointNotFoundFault",
        "DBProxyEndpoint",
    ),
    "target-group": (
        c.TARGET_GROUP,
        "TargetGroupArn",
        "_tags",
        "DBProxyTargetGroupNotFoundFault",
        "DBProxyTargetGroup",
    ),
    "db": (c.INSTANCE, "DBInstanceArn", "TagList", "DBInstanceNotFound", "DBInstance"),
}


def checked_tags(tags: list[Params]) -> list[Doc]:
    """Tags validated as RDS does (key 1-128, value up to 256, no "aws:" keys, at most 50)."""
    merged: dict[str, str] = {}
    for tag in tags:
        key, value = tag.get("Key", ""), tag.get("Value", "")
        if not 1 <= len(key) <= 128 or len(value) > 256:
            raise invalid("A tag key must be 1 to 128 characters and its value at most 256.")
        if key.lower().startswith("aws:"):
            raise invalid("Tag keys may not begin with 'aws:'.")
        merged[key] = value
    if len(merged) > MAX_TAGS:
        raise ApiError(
            "TagQuotaPerResourceExceeded", f"A resource can have at most {MAX_TAGS} tags."
        )
    return [{"Key": k, "Value": v} for k, v in merged.items()]


def _resource(plane: Plane, arn: str) -> tuple[str, str, Doc, str]:
    """(kind, key, document, tags member) of the resource an ARN names, or the fault."""
    match = _ARN.fullmatch(arn)
    if match is None or match.group(3) not in _TYPES:
        raise invalid(f"The specified resource name does not match an RDS resource: {arn}")
    kind, arn_member, tags_member, code, noun = _TYPES[match.group(3)]
    for key in plane.store.keys(kind):
        doc = plane.store.get(kind, key)
        if doc is not None and doc.get(arn_member) == arn:
            return kind, key, doc, tags_member
    raise not_found(code, f"{noun} {match.group(4)} not found.")


def add(plane: Plane, call: Call, params: Params) -> Output:
    """AddTagsToResource: new keys added, existing keys given new values."""
    kind, key, doc, member = _resource(plane, params["ResourceName"])
    tags = checked_tags([*doc.get(member, []), *params["Tags"]])
    plane.store.put(kind, key, {**doc, member: tags})
    plane.changed("rds")
    return {}


def list_(plane: Plane, call: Call, params: Params) -> Output:
    """ListTagsForResource (Filters accepted and ignored, as AWS documents them unsupported)."""
    _kind, _key, doc, member = _resource(plane, params["ResourceName"])
    return {"TagList": [dict(t) for t in doc.get(member, [])]}


def remove(plane: Plane, call: Call, params: Params) -> Output:
    """RemoveTagsFromResource: keys not present are ignored, as in AWS."""
    kind, key, doc, member = _resource(plane, params["ResourceName"])
    drop = set(params["TagKeys"])
    kept = [t for t in doc.get(member, []) if t["Key"] not in drop]
    plane.store.put(kind, key, {**doc, member: kept})
    plane.changed("rds")
    return {}
