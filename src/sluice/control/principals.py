"""Who holds an access key, and what that principal's policies allow.

The HTTP front calls `lookup` for every API request and the data plane for
every IAM-authenticated database login, so it must cost a dictionary look-up,
not a decryption: the opened secret is cached per access key together with the
very document objects it was built from. The store replaces a document object on
every `put` (and drops it on `delete`), so comparing identities tells whether an
entry is still right without any invalidation protocol; `store.version`
short-cuts even that when nothing changed at all. Misses are never cached.

Expired STS sessions are still found (with their `expires`), so that callers
answer ExpiredToken rather than InvalidClientTokenId, as AWS does.

Identity policies are read from the store on each question (a few dict look-ups);
a session's own policies (AssumeRole Policy/PolicyArns) further restrict what its
role's policies allow, as on AWS — `allowed` applies both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sluice.control.context import Principal
from sluice.control.policy import Decision, evaluate
from sluice.control.store import Doc, Store
from sluice.control.vault import Vault

MAX_CACHED_KEYS = 10_000
Context = Mapping[str, str | list[str]]


@dataclass(frozen=True)
class KeyInfo:
    """An access key's holder and the secrets to check its signatures with."""

    principal: Principal
    secret: str
    session_token: str | None
    expires: float | None  # epoch seconds, for STS sessions


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    docs: tuple[Doc, ...]
    info: KeyInfo


class Principals:
    """Access keys to principals, and principals to their identity policies."""

    def __init__(self, store: Store, vault: Vault) -> None:
        self._store = store
        self._vault = vault
        self._cache: dict[str, _Entry] = {}

    def lookup(self, access_key: str) -> KeyInfo | None:
        """The holder of an active user key or of an STS session (expired ones too)."""
        entry = self._cache.get(access_key)
        version = self._store.version
        if entry is not None and entry.version == version:
            return entry.info
        docs = self._docs(access_key)
        if docs is None:
            self._cache.pop(access_key, None)
            return None
        if entry is None or not _same(entry.docs, docs):
            entry = _Entry(version, docs, self._key_info(access_key, docs))
        if len(self._cache) >= MAX_CACHED_KEYS and access_key not in self._cache:
            self._cache.clear()  # keys that were deleted are never looked up again
        self._cache[access_key] = _Entry(version, docs, entry.info)
        return entry.info

    def policies(self, principal: Principal) -> list[dict[str, Any]]:
        """The identity policies of a user, or of the role behind an assumed-role session:
        each attached managed policy's default version, then the inline policies."""
        entity = self._entity(principal)
        if entity is None:
            return []
        found: list[dict[str, Any]] = []
        for arn in entity.get("AttachedPolicies", []):
            policy = self._store.get("iam_policy", arn)
            if policy is not None:
                found.append(policy["Versions"][policy["DefaultVersionId"]]["Document"])
        found.extend(entity.get("InlinePolicies", {}).values())
        return found

    def allowed(
        self, principal: Principal, action: str, resource: str, context: Context | None = None
    ) -> bool:
        """Whether the principal's policies (and its session's, if any) allow the action."""
        if evaluate(self.policies(principal), action, resource, context) is not Decision.ALLOW:
            return False
        session = self._session_policies(principal)
        return session is None or evaluate(session, action, resource, context) is Decision.ALLOW

    # ---- helpers ----

    def _docs(self, access_key: str) -> tuple[Doc, ...] | None:
        if access_key.startswith("ASIA"):
            session = self._store.get("sts_session", access_key)
            return None if session is None else (session,)
        key = self._store.get("access_key", access_key)
        if key is None or key.get("Status") != "Active":
            return None
        user = self._store.get("iam_user", key["UserName"])
        return None if user is None else (key, user)

    def _key_info(self, access_key: str, docs: tuple[Doc, ...]) -> KeyInfo:
        if len(docs) == 1:
            (session,) = docs
            return KeyInfo(
                principal=session_principal(session),
                secret=self._vault.open_text(session["_secret"]),
                session_token=self._vault.open_text(session["_token"]),
                expires=float(session["Expiration"]),
            )
        key, user = docs
        principal = Principal(
            account=user["Arn"].split(":")[4],
            arn=user["Arn"],
            user_id=user["UserId"],
            kind="user",
            name=user["UserName"],
            access_key=access_key,
        )
        return KeyInfo(principal, self._vault.open_text(key["_secret"]), None, None)

    def _entity(self, principal: Principal) -> Doc | None:
        if principal.kind == "user":
            user = self._store.get("iam_user", principal.name)
            return user if user is not None and user["UserId"] == principal.user_id else None
        role = self._store.get("iam_role", principal.name)
        role_id = principal.user_id.split(":", 1)[0]
        # A role deleted and made again under the same name is another role.
        return role if role is not None and role["RoleId"] == role_id else None

    def _session_policies(self, principal: Principal) -> list[dict[str, Any]] | None:
        if principal.kind != "assumed-role" or not principal.access_key:
            return None
        session = self._store.get("sts_session", principal.access_key)
        if session is None or "_session_policies" not in session:
            return None
        return list(session["_session_policies"])


def session_principal(session: Doc) -> Principal:
    """The assumed-role principal of an "sts_session" document."""
    arn = session["AssumedRoleArn"]
    return Principal(
        account=arn.split(":")[4],
        arn=arn,
        user_id=f"{session['RoleId']}:{session['SessionName']}",
        kind="assumed-role",
        name=session["RoleName"],
        access_key=session["AccessKeyId"],
        session_name=session["SessionName"],
    )


def _same(old: tuple[Doc, ...], new: tuple[Doc, ...]) -> bool:
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))
