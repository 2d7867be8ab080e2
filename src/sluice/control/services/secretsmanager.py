"""Secrets Manager: the secrets that hold a proxy's database credentials.

A secret is one "secret" document keyed by its ARN (name + "-" + six random characters,
as AWS makes them, so a deleted and re-created name gets a new ARN). Each version's value
is sealed with the plane's vault before it reaches the store: the SQLite file never holds
a value in clear, and no value is ever put into a log line or an error message. Staging
labels move as in AWS: a new AWSCURRENT version demotes the old one to AWSPREVIOUS.
Deletion is scheduled (a recovery window) and carried out lazily, when a later call finds
the window over. The data plane reads credentials through `read_secret`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
import uuid
from typing import Any

from sluice.control.context import Call, Output, Params, Plane, timestamp
from sluice.control.errors import ApiError
from sluice.control.store import Doc, Store
from sluice.control.vault import Vault, VaultError

_DAY = 86400.0
_NAME = re.compile(r"[A-Za-z0-9/_+=.@!-]{1,512}")
_SUFFIX = string.ascii_letters + string.digits
_MAX_VERSIONS = 100
_GONE = "You can't perform this operation on the secret because it was marked for deletion."


def _error(code: str, message: str) -> ApiError:
    return ApiError(code, message, 400)


def find_secret(store: Store, secret_id: str) -> Doc | None:
    """A secret by name, full ARN or partial ARN (the ARN without its random suffix)."""
    exact = store.get("secret", secret_id)
    if exact is not None:
        return exact
    if secret_id.startswith("arn:"):
        return next((d for d in store.all("secret") if d["ARN"][:-7] == secret_id), None)
    return next((d for d in store.all("secret") if d["Name"] == secret_id), None)


def read_secret(
    store: Store, vault: Vault, secret_id: str
) -> tuple[str, dict[str, Any] | None] | None:
    """(ARN, the current SecretString parsed as a JSON object or None) of a live secret.

    None when there is no such secret or it is scheduled for deletion. For the data
    plane, which finds database credentials this way; it does not count as an access.
    """
    doc = find_secret(store, secret_id)
    if doc is None or doc.get("_deleted") is not None:
        return None
    current = _holder(doc["_versions"], "AWSCURRENT")
    sealed = doc["_versions"][current].get("_string") if current else None
    if sealed is None:
        return doc["ARN"], None
    try:
        parsed = json.loads(vault.open_text(sealed))
    except (ValueError, VaultError):
        return doc["ARN"], None
    return doc["ARN"], parsed if isinstance(parsed, dict) else None


class SecretsManager:
    """The Secrets Manager operations (JSON 1.1 protocol)."""

    name = "secretsmanager"

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        self.store = plane.store
        self.vault = plane.vault

    def CreateSecret(self, call: Call, params: Params) -> Output:
        name = params["Name"]
        if not _NAME.fullmatch(name):
            raise _error("InvalidParameterException", "Invalid name. Must be a valid name "
                         "containing alphanumeric characters, or any of the following: -/_+=.@!")
        value = _value(params)
        token = params.get("ClientRequestToken") or str(uuid.uuid4())
        self._purge(call.now)
        existing = find_secret(self.store, name)
        if existing is not None:
            return self._create_again(existing, token, value)
        suffix = "".join(secrets.choice(_SUFFIX) for _ in range(6))
        where = f"{self.plane.region}:{self.plane.account}"
        arn = f"arn:aws:secretsmanager:{where}:secret:{name}-{suffix}"
        doc: Doc = {"ARN": arn, "Name": name, "CreatedDate": call.now,
                    "LastChangedDate": call.now, "Tags": _tags(params.get("Tags", [])),
                    "_versions": {}, "_deleted": None, "_purge": None}
        doc.update({k: params[k] for k in ("Description", "KmsKeyId") if k in params})
        if value is not None:
            doc = self._add_version(doc, token, value, ["AWSCURRENT"], call.now)
        self.store.put("secret", arn, doc)
        self.plane.changed("secrets")
        out: Output = {"ARN": arn, "Name": name}
        return {**out, "VersionId": token} if value is not None else out

    def _create_again(self, existing: Doc, token: str, value: str | bytes | None) -> Output:
        if existing["_deleted"] is not None:
            raise _error("InvalidRequestException", "You can't create this secret because a "
                         "secret with this name is already scheduled for deletion.")
        version = existing["_versions"].get(token)
        if version is None or value is None or not self._same(version, value):
            raise _error("ResourceExistsException",
                         f"The operation failed because the secret {existing['Name']} "
                         "already exists.")
        return {"ARN": existing["ARN"], "Name": existing["Name"], "VersionId": token}

    def GetSecretValue(self, call: Call, params: Params) -> Output:
        doc = self._live(params["SecretId"], call.now)
        version_id, version = _version(doc, params.get("VersionId"), params.get("VersionStage"))
        out: Output = {"ARN": doc["ARN"], "Name": doc["Name"], "VersionId": version_id,
                       "CreatedDate": timestamp(version["CreatedDate"])}
        if version["Stages"]:  # a deprecated version has none (and the shape wants 1+)
            out["VersionStages"] = list(version["Stages"])
        if version.get("_string") is not None:
            out["SecretString"] = self._open(version["_string"]).decode()
        if version.get("_binary") is not None:
            out["SecretBinary"] = self._open(version["_binary"])
        today = call.now - call.now % _DAY
        if doc.get("LastAccessedDate") != today:
            self.store.put("secret", doc["ARN"], {**doc, "LastAccessedDate": today})
        return out

    def PutSecretValue(self, call: Call, params: Params) -> Output:
        doc = self._live(params["SecretId"], call.now)
        value = _value(params)
        if value is None:
            raise _error("InvalidParameterException",
                         "You must provide either SecretString or SecretBinary.")
        token = params.get("ClientRequestToken") or str(uuid.uuid4())
        stages = list(params.get("VersionStages") or ["AWSCURRENT"])
        doc = self._add_version(doc, token, value, stages, call.now)
        self.store.put("secret", doc["ARN"], doc)
        self.plane.changed("secrets")
        return {"ARN": doc["ARN"], "Name": doc["Name"], "VersionId": token,
                "VersionStages": list(doc["_versions"][token]["Stages"])}

    def UpdateSecret(self, call: Call, params: Params) -> Output:
        doc = self._live(params["SecretId"], call.now)
        value = _value(params)
        doc = {**doc, **{k: params[k] for k in ("Description", "KmsKeyId") if k in params},
               "LastChangedDate": call.now}
        token = params.get("ClientRequestToken") or str(uuid.uuid4())
        if value is not None:
            doc = self._add_version(doc, token, value, ["AWSCURRENT"], call.now)
        self.store.put("secret", doc["ARN"], doc)
        if value is not None:
            self.plane.changed("secrets")
        out: Output = {"ARN": doc["ARN"], "Name": doc["Name"]}
        return {**out, "VersionId": token} if value is not None else out

    def DescribeSecret(self, call: Call, params: Params) -> Output:
        doc = self._find(params["SecretId"], call.now)
        return {**_summary(doc), "VersionIdsToStages": _stages(doc)}

    def ListSecrets(self, call: Call, params: Params) -> Output:
        self._purge(call.now)
        docs = [d for d in self.store.all("secret")
                if params.get("IncludePlannedDeletion") or d["_deleted"] is None]
        for item in params.get("Filters") or []:
            docs = [d for d in docs if _passes(d, item["Key"], item.get("Values", []),
                                               self.plane.region)]
        docs = _sorted(docs, params.get("SortBy"), params.get("SortOrder"))
        page, token = _page(docs, params)
        out: Output = {"SecretList": [{**_summary(d), "SecretVersionsToStages": _stages(d)}
                                      for d in page]}
        return {**out, "NextToken": token} if token else out

    def DeleteSecret(self, call: Call, params: Params) -> Output:
        doc = self._find(params["SecretId"], call.now)
        force = bool(params.get("ForceDeleteWithoutRecovery"))
        window = params.get("RecoveryWindowInDays")
        if force and window is not None:
            raise _error("InvalidParameterException", "You can't use ForceDeleteWithoutRecovery "
                         "in conjunction with RecoveryWindowInDays.")
        if not force and not 7 <= (30 if window is None else int(window)) <= 30:
            raise _error("InvalidParameterException", "The RecoveryWindowInDays value must be "
                         "between 7 and 30 days (inclusive).")
        if doc["_deleted"] is not None and not force:
            raise _error("InvalidRequestException", "You can't perform this operation on the "
                         "secret because it was already scheduled for deletion.")
        if force:
            deletion = call.now
            self.store.delete("secret", doc["ARN"])
        else:
            deletion = call.now + (30 if window is None else int(window)) * _DAY
            self.store.put("secret", doc["ARN"], {**doc, "_deleted": call.now,
                                                  "_purge": deletion})
        self.plane.changed("secrets")
        return {"ARN": doc["ARN"], "Name": doc["Name"], "DeletionDate": timestamp(deletion)}

    def RestoreSecret(self, call: Call, params: Params) -> Output:
        doc = self._find(params["SecretId"], call.now)
        self.store.put("secret", doc["ARN"], {**doc, "_deleted": None, "_purge": None})
        self.plane.changed("secrets")
        return {"ARN": doc["ARN"], "Name": doc["Name"]}

    def TagResource(self, call: Call, params: Params) -> Output:
        doc = self._live(params["SecretId"], call.now)
        new = _tags(params["Tags"])
        keys = {t["Key"] for t in new}
        tags = [t for t in doc["Tags"] if t["Key"] not in keys] + new
        self.store.put("secret", doc["ARN"], {**doc, "Tags": tags})
        return {}

    def UntagResource(self, call: Call, params: Params) -> Output:
        doc = self._live(params["SecretId"], call.now)
        gone = set(params["TagKeys"])
        tags = [t for t in doc["Tags"] if t["Key"] not in gone]
        self.store.put("secret", doc["ARN"], {**doc, "Tags": tags})
        return {}

    # Helpers

    def _find(self, secret_id: str, now: float) -> Doc:
        self._purge(now)
        doc = find_secret(self.store, secret_id)
        if doc is None:
            raise _error("ResourceNotFoundException",
                         "Secrets Manager can't find the specified secret.")
        return doc

    def _live(self, secret_id: str, now: float) -> Doc:
        doc = self._find(secret_id, now)
        if doc["_deleted"] is not None:
            raise _error("InvalidRequestException", _GONE)
        return doc

    def _purge(self, now: float) -> None:
        """Carry out the deletions whose recovery window is over."""
        due = [d["ARN"] for d in self.store.all("secret")
               if d.get("_purge") is not None and d["_purge"] <= now]
        if due:
            with self.store.batch():
                for arn in due:
                    self.store.delete("secret", arn)

    def _open(self, sealed: str) -> bytes:
        try:
            return self.vault.open(sealed)
        except VaultError:
            raise _error("DecryptionFailure", "Secrets Manager can't decrypt the protected "
                         "secret text using the provided key.") from None

    def _same(self, version: dict[str, Any], value: str | bytes) -> bool:
        field = "_string" if isinstance(value, str) else "_binary"
        sealed = version.get(field)
        raw = value.encode() if isinstance(value, str) else value
        return sealed is not None and self._open(sealed) == raw

    def _add_version(
        self, doc: Doc, version_id: str, value: str | bytes, stages: list[str], now: float
    ) -> Doc:
        """`doc` with a new version holding `stages` (the same doc for a repeated request)."""
        existing = doc["_versions"].get(version_id)
        if existing is not None:
            if self._same(existing, value):
                return doc
            raise _error("ResourceExistsException", "You can't modify an existing version, "
                         "you can only create a new version.")
        sealed = self.vault.seal(value)
        entry = {"_string": sealed if isinstance(value, str) else None,
                 "_binary": None if isinstance(value, str) else sealed, "CreatedDate": now}
        versions = _moved(doc["_versions"], version_id, stages)
        versions[version_id] = {**entry, "Stages": list(stages)}
        return {**doc, "_versions": _pruned(versions), "LastChangedDate": now}


def _value(params: Params) -> str | bytes | None:
    text, blob = params.get("SecretString"), params.get("SecretBinary")
    if text is not None and blob is not None:
        raise _error("InvalidParameterException", "You can't specify both a binary secret "
                     "value and a string secret value in the same secret.")
    if isinstance(blob, str):
        return blob.encode()
    return text if text is not None else blob


def _holder(versions: dict[str, Any], stage: str) -> str | None:
    return next((k for k, v in versions.items() if stage in v["Stages"]), None)


def _moved(versions: dict[str, Any], version_id: str, stages: list[str]) -> dict[str, Any]:
    """Versions with `stages` taken away (they go to `version_id`); AWSCURRENT leaving a
    version makes it AWSPREVIOUS."""
    previous = _holder(versions, "AWSCURRENT")
    moved = {k: {**v, "Stages": [s for s in v["Stages"] if s not in stages]}
             for k, v in versions.items()}
    if "AWSCURRENT" in stages and previous not in (None, version_id):
        for entry in moved.values():
            entry["Stages"] = [s for s in entry["Stages"] if s != "AWSPREVIOUS"]
        moved[str(previous)]["Stages"].append("AWSPREVIOUS")
    return moved


def _pruned(versions: dict[str, Any]) -> dict[str, Any]:
    """At most 100 versions: the oldest ones without a staging label go first."""
    spare = sorted((v["CreatedDate"], k) for k, v in versions.items() if not v["Stages"])
    excess = len(versions) - _MAX_VERSIONS
    dropped = {k for _, k in spare[:max(0, excess)]}
    return {k: v for k, v in versions.items() if k not in dropped}


def _version(
    doc: Doc, version_id: str | None, stage: str | None
) -> tuple[str, dict[str, Any]]:
    versions = doc["_versions"]
    if version_id is not None:
        version = versions.get(version_id)
        if version is None or (stage is not None and stage not in version["Stages"]):
            raise _error("ResourceNotFoundException", "Secrets Manager can't find the specified "
                         f"secret value for VersionId: {version_id}")
        return version_id, version
    wanted = stage or "AWSCURRENT"
    holder = _holder(versions, wanted)
    if holder is None:
        raise _error("ResourceNotFoundException", "Secrets Manager can't find the specified "
                     f"secret value for staging label: {wanted}")
    return holder, versions[holder]


def _tags(tags: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"Key": str(t["Key"]), "Value": str(t.get("Value", ""))} for t in tags]


def _summary(doc: Doc) -> Output:
    out: Output = {"ARN": doc["ARN"], "Name": doc["Name"],
                   "CreatedDate": timestamp(doc["CreatedDate"]),
                   "LastChangedDate": timestamp(doc["LastChangedDate"])}
    out.update({k: doc[k] for k in ("Description", "KmsKeyId") if k in doc})
    if doc.get("LastAccessedDate") is not None:
        out["LastAccessedDate"] = timestamp(doc["LastAccessedDate"])
    if doc.get("_deleted") is not None:
        out["DeletedDate"] = timestamp(doc["_deleted"])
    if doc["Tags"]:
        out["Tags"] = [dict(t) for t in doc["Tags"]]
    return out


def _stages(doc: Doc) -> dict[str, list[str]]:
    return {k: list(v["Stages"]) for k, v in doc["_versions"].items() if v["Stages"]}


def _passes(doc: Doc, key: str, values: list[str], region: str) -> bool:
    """ListSecrets filters: prefix matches; a value starting with "!" excludes."""
    fields = {"name": [doc["Name"]], "description": [doc.get("Description", "")],
              "tag-key": [t["Key"] for t in doc["Tags"]],
              "tag-value": [t["Value"] for t in doc["Tags"]],
              "primary-region": [region], "owning-service": []}
    found = fields.get(key, []) if key != "all" else [doc["Name"], doc.get("Description", "")] + [
        text for t in doc["Tags"] for text in (t["Key"], t["Value"])]
    folded = key in ("description", "all")

    def hit(value: str) -> bool:
        if folded:
            return any(f.lower().startswith(value.lower()) for f in found) or (
                key == "all" and all(_word_hit(w, found) for w in value.lower().split()))
        return any(f.startswith(value) for f in found)

    wanted = [v for v in values if not v.startswith("!")]
    barred = [v[1:] for v in values if v.startswith("!")]
    return (not wanted or any(hit(v) for v in wanted)) and not any(hit(v) for v in barred)


def _word_hit(word: str, found: list[str]) -> bool:
    return any(w.startswith(word) for f in found for w in re.split(r"[^a-z0-9]+", f.lower()))


def _sorted(docs: list[Doc], by: str | None, order: str | None) -> list[Doc]:
    field = {"name": "Name", "last-changed-date": "LastChangedDate",
             "last-accessed-date": "LastAccessedDate"}.get(by or "", "CreatedDate")
    return sorted(docs, key=lambda d: (d.get(field) is None, d.get(field) or 0),
                  reverse=order == "desc")


def _page(docs: list[Doc], params: Params) -> tuple[list[Doc], str | None]:
    start = 0
    if params.get("NextToken"):
        try:
            start = int(base64.urlsafe_b64decode(params["NextToken"]).decode().split(":")[1])
        except (ValueError, IndexError, binascii.Error):
            raise _error("InvalidNextTokenException", "The NextToken value is invalid.") from None
    size = params.get("MaxResults")
    end = len(docs) if size is None else start + int(size)
    token = base64.urlsafe_b64encode(f"secrets:{end}".encode()).decode()
    return docs[start:end], (token if end < len(docs) else None)

