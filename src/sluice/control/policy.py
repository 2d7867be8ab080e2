"""IAM policy documents: validation and evaluation.

Why it is built this way: the control plane stores the policies callers create
(CreatePolicy, PutRolePolicy, CreateRole trust policies) and the data plane asks one
question per IAM-authenticated login - may this principal ``rds-db:connect`` to this
``dbuser`` ARN? Evaluation is therefore a small pure function over parsed JSON, following
AWS's identity-policy logic: any matching Deny wins, else any matching Allow, else an
implicit deny. How a pattern (``*``/``?``, policy variables, segment-aware ARNs) or a
condition operator matches the request is `control.conditions`; this module owns the
documents and the decision, statement by statement.

Fail-closed choices: an unknown condition operator (or malformed condition block) makes
its statement not match. For an Allow that denies; for a Deny it means the Deny does
*not* apply. `parse_policy` therefore refuses unknown operators, so only documents that
bypassed it can hit this. An unresolvable policy variable makes the pattern (or
condition value) match nothing; an uncomparable value (bad number, date, address) makes
the condition false.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.control.conditions import (
    Scope,
    conditions_hold,
    known_operator,
    make_scope,
    pattern_matches,
)
from sluice.control.errors import ApiError

VERSIONS = ("2012-10-17", "2008-10-17")
_ACTION = re.compile(r"\*|[A-Za-z0-9_*?-]+:[A-Za-z0-9_*?-]+")
_ACCOUNT = re.compile(r"\d{12}")
_ROOT = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):root")
_STATEMENT_KEYS = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
     "NotResource", "Condition"}
)  # fmt: skip


class Decision(enum.Enum):
    """The outcome of evaluating identity policies for one request."""

    ALLOW = "Allow"
    EXPLICIT_DENY = "ExplicitDeny"
    IMPLICIT_DENY = "ImplicitDeny"


@dataclass(frozen=True)
class Principal:
    """Who asks to assume a role: its ARNs, service names, and account id."""

    arns: Sequence[str] = ()
    services: Sequence[str] = ()
    account: str = ""


# --- validation ---------------------------------------------------------------------------


def _malformed(message: str) -> ApiError:
    return ApiError("MalformedPolicyDocument", message, 400)


def _string_list(value: object, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise _malformed(f"{field} must be a string or a non-empty list of strings.")
    return items


def _check_one_of(statement: Mapping[str, Any], field: str, required: bool) -> None:
    present = [k for k in (field, "Not" + field) if k in statement]
    if len(present) > 1:
        raise _malformed(f"Statement may not contain both {field} and Not{field}.")
    if required and not present:
        raise _malformed(f"Missing required field {field}")
    for key in present:
        for item in _string_list(statement[key], key):
            if field == "Action" and not _ACTION.fullmatch(item):
                raise _malformed("Actions/Conditions must be prefaced by a vendor, e.g., iam.")
            if field == "Resource" and item != "*" and not item.startswith("arn:"):
                raise _malformed(f'Resource {item} must be in ARN format or "*".')


def _check_principal(value: object) -> None:
    if value == "*":
        return
    if not isinstance(value, dict) or not value:
        raise _malformed("Invalid principal in policy.")
    for kind, ids in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise _malformed("Invalid principal in policy.")
        _string_list(ids, "Principal")


def _check_condition(value: object) -> None:
    scalar = (str, bool, int, float)
    if not isinstance(value, dict):
        raise _malformed("Condition must be an object.")
    for name, block in value.items():
        if not known_operator(name):
            raise _malformed(f"Invalid Condition type : {name}.")
        if not isinstance(block, dict) or not block:
            raise _malformed("Each condition operator must map keys to values.")
        for values in block.values():
            items = values if isinstance(values, list) else [values]
            if not all(isinstance(v, scalar) for v in items):
                raise _malformed("Condition values must be strings, numbers or booleans.")


def _check_statement(statement: object, trust: bool) -> None:
    if not isinstance(statement, dict):
        raise _malformed("Syntax errors in policy.")
    unknown = set(statement) - _STATEMENT_KEYS
    if unknown:
        raise _malformed(f"Policy statement has unknown field {sorted(unknown)[0]}.")
    if "Sid" in statement and not isinstance(statement["Sid"], str):
        raise _malformed("Sid must be a string.")
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise _malformed("Missing required field Effect or Effect is not Allow or Deny.")
    has_principal = "Principal" in statement or "NotPrincipal" in statement
    if trust and not has_principal:
        raise _malformed("Missing required field Principal")
    if not trust and has_principal:
        raise _malformed("Policy document should not specify a principal.")
    if trust and ("Resource" in statement or "NotResource" in statement):
        raise _malformed("Has prohibited field Resource")
    for key in ("Principal", "NotPrincipal"):
        if key in statement:
            _check_principal(statement[key])
    _check_one_of(statement, "Action", required=True)
    _check_one_of(statement, "Resource", required=not trust)
    if "Condition" in statement:
        _check_condition(statement["Condition"])


def parse_policy(text: str, *, trust: bool = False) -> dict[str, Any]:
    """Validate a policy document and return it parsed.

    Identity policies (``trust=False``) need Action/NotAction and Resource/NotResource and
    may not name a Principal; trust policies need a Principal and may not name a Resource.
    Raises ``MalformedPolicyDocument`` (400).
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise _malformed("Syntax errors in policy.") from None
    if not isinstance(document, dict):
        raise _malformed("Syntax errors in policy.")
    if set(document) - {"Version", "Id", "Statement"}:
        raise _malformed("Syntax errors in policy.")
    if "Version" in document and document["Version"] not in VERSIONS:
        raise _malformed("The policy failed legacy parsing")
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise _malformed("Missing required field Statement")
    for statement in statements:
        _check_statement(statement, trust)
    sids = [s["Sid"] for s in statements if s.get("Sid")]
    if len(sids) != len(set(sids)):
        raise _malformed("Statement IDs (SID) in a single policy must be unique.")
    return document


# --- evaluation ---------------------------------------------------------------------------


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _element(statement: Mapping[str, Any], field: str, test: Callable[[str], bool]) -> bool:
    if field in statement:
        return any(test(p) for p in _strings(statement[field]))
    if "Not" + field in statement:
        return not any(test(p) for p in _strings(statement["Not" + field]))
    return False


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = policy.get("Statement")
    found = [found] if isinstance(found, dict) else found
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


def _aws_principal(ident: str, who: Principal) -> bool:
    if ident == "*":
        return bool(who.arns or who.account)
    root = _ROOT.fullmatch(ident)
    account = ident if _ACCOUNT.fullmatch(ident) else root.group(1) if root else None
    if account is not None:
        return account == who.account
    return ident in who.arns


def _principal_matches(value: object, who: Principal) -> bool:
    if value == "*":
        return True
    if not isinstance(value, dict):
        return False
    services = {s.lower() for s in who.services}
    for kind, ids in value.items():
        for ident in _strings(ids):
            if kind == "AWS" and _aws_principal(ident, who):
                return True
            if kind == "Service" and ident.lower() in services:
                return True
    return False


def _principal_applies(statement: Mapping[str, Any], who: Principal) -> bool:
    if "Principal" in statement:
        return _principal_matches(statement["Principal"], who)
    return "NotPrincipal" in statement and not _principal_matches(statement["NotPrincipal"], who)


def _applies(
    statement: Mapping[str, Any],
    action: str,
    scope: Scope,
    resource: str | None = None,
    who: Principal | None = None,
) -> bool:
    """Whether one statement covers the request (principal, action, resource, conditions)."""
    if who is not None and not _principal_applies(statement, who):
        return False
    if resource is not None and not _element(
        statement, "Resource", lambda p: pattern_matches(p, resource, scope)
    ):
        return False
    return _element(
        statement, "Action", lambda p: pattern_matches(p, action, None, fold=True)
    ) and conditions_hold(statement.get("Condition"), scope)


def _decide(matching: Iterable[Mapping[str, Any]]) -> Decision:
    allowed = False
    for statement in matching:
        if statement.get("Effect") == "Deny":
            return Decision.EXPLICIT_DENY
        allowed = allowed or statement.get("Effect") == "Allow"
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def evaluate(
    policies: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, str | list[str]] | None = None,
) -> Decision:
    """Evaluate identity policies: any matching Deny, else any matching Allow, else implicit."""
    scoped = ((policy, make_scope(policy, context)) for policy in policies)
    return _decide(
        statement
        for policy, scope in scoped
        for statement in _statements(policy)
        if _applies(statement, action, scope, resource=resource)
    )


def trust_allows(
    trust_policy: Mapping[str, Any],
    principal: Principal,
    action: str = "sts:AssumeRole",
    context: Mapping[str, str | list[str]] | None = None,
) -> bool:
    """Whether a role's trust policy lets ``principal`` perform ``action`` (Deny wins)."""
    scope = make_scope(trust_policy, context)
    matching = (s for s in _statements(trust_policy) if _applies(s, action, scope, who=principal))
    return _decide(matching) is Decision.ALLOW
