"""The STS API: GetCallerIdentity and AssumeRole.

AssumeRole is decided as IAM decides it for a caller in the role's own account:
the role's trust policy must allow the caller, either by naming it (its ARN, or
for a role session the role's ARN) — then nothing more is needed — or by naming
the account (root or id), which delegates to the caller's identity policies:
they must allow `sts:AssumeRole` on the role's ARN. An explicit Deny in those
policies refuses in every case. An unknown role is refused with the same
AccessDenied as a forbidden one, so the answer does not reveal which roles exist.

A session is an "sts_session" document keyed by its ASIA access key id, its
secret and session token sealed by the vault; `principals.Principals` turns the
key back into the assumed-role principal. Sessions long expired are dropped
when new ones are made.
"""

from __future__ import annotations

import re
from typing import Any

from sluice.control import ids
from sluice.control.context import Call, Output, Params, Plane, Principal, timestamp
from sluice.control.errors import ApiError
from sluice.control.policy import Decision, evaluate, parse_policy, trust_allows
from sluice.control.policy import Principal as TrustPrincipal
from sluice.control.principals import Principals
from sluice.control.store import Doc

SESSION = "sts_session"
MIN_DURATION = 900
DEFAULT_DURATION = 3600
CHAINED_MAX_DURATION = 3600  # role chaining: a role session assuming a role
FORGET_AFTER = 86400.0  # an expired session is kept this long, to answer ExpiredToken
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role/(?:[\x21-\x7e]*/)?([\w+=,.@-]+)")


def _validation(message: str) -> ApiError:
    return ApiError("ValidationError", message, 400)


class Sts:
    """STS operations; method names are the API's operation names."""

    name = "sts"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._store = plane.store
        self._principals = Principals(plane.store, plane.vault)

    def GetCallerIdentity(self, call: Call, params: Params) -> Output:
        p = call.principal
        return {"UserId": p.user_id, "Account": p.account, "Arn": p.arn}

    def AssumeRole(self, call: Call, params: Params) -> Output:
        session_name = str(params["RoleSessionName"])
        if not _SESSION_NAME.fullmatch(session_name):
            raise _validation(
                f"1 validation error detected: Value '{session_name}' at 'roleSessionName' "
                r"failed to satisfy constraint: Member must satisfy regular expression "
                r"pattern: [\w+=,.@-]*"
            )
        role = self._authorized_role(call.principal, str(params["RoleArn"]))
        duration = self._duration(call.principal, role, params)
        session_policies = self._session_policies(params)
        self._forget_expired(call.now)
        return self._new_session(call, role, session_name, duration, session_policies)

    # ---- decisions ----

    def _authorized_role(self, caller: Principal, role_arn: str) -> Doc:
        match = _ROLE_ARN.fullmatch(role_arn)
        if not role_arn.startswith("arn:") or len(role_arn) < 20:
            raise _validation(f"{role_arn} is invalid")
        role = self._store.get("iam_role", match.group(2)) if match else None
        if role is None or role["Arn"] != role_arn or not self._may_assume(caller, role):
            raise ApiError(
                "AccessDenied",
                f"User: {caller.arn} is not authorized to perform: sts:AssumeRole "
                f"on resource: {role_arn}",
                403,
            )
        return role

    def _may_assume(self, caller: Principal, role: Doc) -> bool:
        trust = role["AssumeRolePolicyDocument"]
        identity = self._principals.policies(caller)
        decision = evaluate(identity, "sts:AssumeRole", role["Arn"])
        if decision is Decision.EXPLICIT_DENY:
            return False
        arns = [caller.arn]
        if caller.kind == "assumed-role":
            arns.append(caller.identity_arn)
        if trust_allows(trust, TrustPrincipal(arns=arns, services=[], account="")):
            return True  # the trust policy names the caller itself
        by_account = TrustPrincipal(arns=arns, services=[], account=caller.account)
        return decision is Decision.ALLOW and trust_allows(trust, by_account)

    @staticmethod
    def _duration(caller: Principal, role: Doc, params: Params) -> int:
        duration = int(params.get("DurationSeconds", DEFAULT_DURATION))
        if duration < MIN_DURATION:
            raise _validation(
                f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed "
                f"to satisfy constraint: Member must have value greater than or equal to "
                f"{MIN_DURATION}"
            )
        if caller.kind == "assumed-role" and duration > CHAINED_MAX_DURATION:
            raise _validation(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles "
                "assumed by role chaining."
            )
        if duration > int(role.get("MaxSessionDuration", DEFAULT_DURATION)):
            raise _validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
            )
        return duration

    def _session_policies(self, params: Params) -> list[dict[str, Any]] | None:
        """A session policy and managed session policies, which narrow the role's rights."""
        found: list[dict[str, Any]] = []
        if "Policy" in params:
            found.append(parse_policy(str(params["Policy"])))
        for item in params.get("PolicyArns", []):
            arn = str(item.get("arn", ""))
            policy = self._store.get("iam_policy", arn)
            if policy is None:
                raise _validation(f"Policy {arn} does not exist or is not attachable.")
            found.append(policy["Versions"][policy["DefaultVersionId"]]["Document"])
        return found or None

    # ---- sessions ----

    def _new_session(
        self,
        call: Call,
        role: Doc,
        session_name: str,
        duration: int,
        session_policies: list[dict[str, Any]] | None,
    ) -> Output:
        return new_session(self._plane, role, session_name, call.now, duration, session_policies)

    def _forget_expired(self, now: float) -> None:
        stale = [
            s["AccessKeyId"]
            for s in self._store.all(SESSION)
            if s["Expiration"] + FORGET_AFTER < now
        ]
        if stale:
            with self._store.batch():
                for key_id in stale:
                    self._store.delete(SESSION, key_id)


def new_session(
    plane: Plane,
    role: Doc,
    session_name: str,
    now: float,
    duration: float,
    session_policies: list[dict[str, Any]] | None = None,
) -> Output:
    """A role session (AssumeRole's output members) made at `now`, valid `duration` seconds.

    For AssumeRole, and for the control plane itself when it hands a role's credentials to
    the code it runs as that role (a function's execution role).
    """
    key_id, secret = ids.access_key_id(temporary=True), ids.secret_access_key()
    token = ids.token(144)
    account = role["Arn"].split(":")[4]
    assumed = f"arn:aws:sts::{account}:assumed-role/{role['RoleName']}/{session_name}"
    doc: Doc = {
        "AccessKeyId": key_id,
        "_secret": plane.vault.seal(secret),
        "_token": plane.vault.seal(token),
        "Expiration": now + duration,
        "RoleArn": role["Arn"],
        "RoleName": role["RoleName"],
        "RoleId": role["RoleId"],
        "SessionName": session_name,
        "AssumedRoleArn": assumed,
        "CreateDate": now,
    }
    if session_policies is not None:
        doc["_session_policies"] = session_policies
    plane.store.put(SESSION, key_id, doc)
    credentials = {
        "AccessKeyId": key_id,
        "SecretAccessKey": secret,
        "SessionToken": token,
        "Expiration": timestamp(now + duration),
    }
    user = {"AssumedRoleId": f"{role['RoleId']}:{session_name}", "Arn": assumed}
    return {"Credentials": credentials, "AssumedRoleUser": user}
