"""IAM policy documents: validation and evaluation.

Why it is built this way: the control plane stores the policies callers create
(CreatePolicy, PutRolePolicy, CreateRole trust policies) and the data plane asks one
question per IAM-authenticated login - may this principal ``rds-db:connect`` to this
``dbuser`` ARN? Evaluation is therefore a small pure function over parsed JSON, following
AWS's identity-policy logic: any matching Deny wins, else any matching Allow, else an
implicit deny. Patterns (``*``/``?``) become anchored regular expressions in which
resolved policy variables are always literal text, so a user name containing ``*`` can
never widen a grant. ARNs are matched segment-aware: inside the first five ARN segments
a wildcard stays within its segment unless it ends the segment, as AWS documents.

Fail-closed choices: an unknown condition operator (or malformed condition block) makes
its statement not match. For an Allow that denies; for a Deny it means the Deny does
*not* apply. `parse_policy` therefore refuses unknown operators, so only documents that
bypassed it can hit this. An unresolvable policy variable makes the pattern (or
condition value) match nothing; an uncomparable value (bad number, date, address) makes
the condition false.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sluice.control.errors import ApiError

VERSIONS = ("2012-10-17", "2008-10-17")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
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
        if not _known_operator(name):
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


# --- patterns and variables ---------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    values: Mapping[str, list[str]]  # context, keys lower-cased
    variables: bool  # policy variables are only substituted in 2012-10-17 documents


def _make_scope(policy: Mapping[str, Any], context: Mapping[str, str | list[str]] | None) -> _Scope:
    values = {k.lower(): [v] if isinstance(v, str) else list(v) for k, v in (context or {}).items()}
    return _Scope(values, policy.get("Version") == "2012-10-17")


def _resolve(body: str, scope: _Scope) -> str | None:
    name, comma, default = body.partition(",")
    name = name.strip()
    if name in ("*", "?", "$"):
        return name
    found = scope.values.get(name.lower())
    if found is not None and len(found) == 1:
        return found[0]
    default = default.strip()
    if comma and len(default) >= 2 and default[0] == default[-1] == "'":
        return default[1:-1]
    return None


def _chars(text: str, scope: _Scope | None) -> list[tuple[bool, str]] | None:
    """Characters of ``text`` flagged literal (from a variable) or pattern; None if unresolved."""
    if scope is None or not scope.variables:
        return [(False, c) for c in text]
    out: list[tuple[bool, str]] = []
    position = 0
    for match in _VARIABLE.finditer(text):
        out += [(False, c) for c in text[position : match.start()]]
        value = _resolve(match.group(1), scope)
        if value is None:
            return None
        out += [(True, c) for c in value]
        position = match.end()
    return out + [(False, c) for c in text[position:]]


def _regex(chars: list[tuple[bool, str]], arn: bool) -> str:
    out, colons = [], 0
    for index, (literal, char) in enumerate(chars):
        if literal or char not in "*?":
            colons += char == ":"
            out.append(re.escape(char))
            continue
        inside = arn and colons < 5  # still within arn:partition:service:region:account
        if char == "?":
            out.append("[^:]" if inside else ".")
        else:
            ends = index + 1 == len(chars) or chars[index + 1][1] == ":"
            out.append("[^:]*" if inside and not ends else ".*")
    return "".join(out)


def _matches(pattern: str, text: str, scope: _Scope | None, fold: bool = False) -> bool:
    chars = _chars(pattern, scope)
    if chars is None:
        return False
    flags = (re.IGNORECASE | re.DOTALL) if fold else re.DOTALL
    return re.fullmatch(_regex(chars, pattern.startswith("arn:")), text, flags) is not None


def _substitute(value: object, scope: _Scope) -> str | None:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    chars = _chars(text, scope)
    return None if chars is None else "".join(c for _, c in chars)


# --- condition operators ------------------------------------------------------------------


class _Unmatchable(Exception):
    """A value that cannot be compared (bad number, date or address): condition fails."""


def _number(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise _Unmatchable from None


def _date(value: object) -> datetime:
    text = str(value)
    try:
        moment = (
            datetime.fromtimestamp(float(text), UTC)
            if text.replace(".", "", 1).isdigit()
            else datetime.fromisoformat(text)
        )
    except (ValueError, OverflowError):
        raise _Unmatchable from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


_Op = Callable[[str, object, _Scope], bool]


def _text_op(fold: bool) -> Callable[[str, object, _Scope], bool]:
    def match(actual: str, wanted: object, scope: _Scope) -> bool:
        text = _substitute(wanted, scope)
        if text is None:
            return False
        return actual.casefold() == text.casefold() if fold else actual == text

    return match


def _like(actual: str, wanted: object, scope: _Scope) -> bool:
    return _matches(str(wanted), actual, scope)


def _arn_like(actual: str, wanted: object, scope: _Scope) -> bool:
    return actual.count(":") >= 5 and _matches(str(wanted), actual, scope)


def _compare(parse: Callable[[object], Any], test: Callable[[Any, Any], bool]) -> _Op:
    def match(actual: str, wanted: object, scope: _Scope) -> bool:
        text = _substitute(wanted, scope)
        return text is not None and bool(test(parse(actual), parse(text)))

    return match


def _ip(actual: str, wanted: object, scope: _Scope) -> bool:
    try:
        return ipaddress.ip_address(actual.strip()) in ipaddress.ip_network(
            str(wanted).strip(), strict=False
        )
    except ValueError:
        raise _Unmatchable from None
    except TypeError:  # IPv4 address against an IPv6 network, or the reverse
        return False


_COMPARISONS = (
    ("equals", operator.eq), ("lessthan", operator.lt), ("lessthanequals", operator.le),
    ("greaterthan", operator.gt), ("greaterthanequals", operator.ge),
)  # fmt: skip
_OPERATORS: Mapping[str, tuple[_Op, bool]] = MappingProxyType(
    {
        "stringequals": (_text_op(False), False), "stringnotequals": (_text_op(False), True),
        "stringequalsignorecase": (_text_op(True), False),
        "stringnotequalsignorecase": (_text_op(True), True),
        "stringlike": (_like, False), "stringnotlike": (_like, True),
        "arnequals": (_arn_like, False), "arnlike": (_arn_like, False),
        "arnnotequals": (_arn_like, True), "arnnotlike": (_arn_like, True),
        "bool": (_text_op(True), False), "binaryequals": (_text_op(False), False),
        "ipaddress": (_ip, False), "notipaddress": (_ip, True),
        "numericnotequals": (_compare(_number, operator.eq), True),
        "datenotequals": (_compare(_date, operator.eq), True),
        **{f"numeric{n}": (_compare(_number, t), False) for n, t in _COMPARISONS},
        **{f"date{n}": (_compare(_date, t), False) for n, t in _COMPARISONS},
    }
)  # fmt: skip


def _known_operator(name: str) -> bool:
    """Whether ``name`` (with optional set qualifier and IfExists) is an operator we evaluate."""
    qualifier, _, base = name.lower().rpartition(":")
    if qualifier not in ("", "foranyvalue", "forallvalues"):
        return False
    return (base == "null" and not qualifier) or base.removesuffix("ifexists") in _OPERATORS


def _condition(name: str, key: str, wanted: object, scope: _Scope) -> bool:
    qualifier, _, base = name.lower().rpartition(":")
    if qualifier not in ("", "foranyvalue", "forallvalues"):
        return False
    values = wanted if isinstance(wanted, list) else [wanted]
    actual = scope.values.get(key.lower()) or []
    if base == "null" and not qualifier:
        return any(str(v).lower() == ("true" if not actual else "false") for v in values)
    if_exists = base.endswith("ifexists")
    entry = _OPERATORS.get(base.removesuffix("ifexists"))
    if entry is None:
        return False
    test, negated = entry
    if not actual:
        return if_exists or qualifier == "forallvalues" or (negated and not qualifier)
    try:
        hits = [any(test(a, v, scope) for v in values) != negated for a in actual]
    except _Unmatchable:
        return False
    every = qualifier == "forallvalues" or (negated and not qualifier)
    return all(hits) if every else any(hits)


def _conditions_hold(block: object, scope: _Scope) -> bool:
    if block is None:
        return True
    if not isinstance(block, dict):
        return False
    for name, keys in block.items():
        if not isinstance(keys, dict):
            return False
        if not all(_condition(name, key, wanted, scope) for key, wanted in keys.items()):
            return False
    return True


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
    scope: _Scope,
    resource: str | None = None,
    who: Principal | None = None,
) -> bool:
    """Whether one statement covers the request (principal, action, resource, conditions)."""
    if who is not None and not _principal_applies(statement, who):
        return False
    if resource is not None and not _element(
        statement, "Resource", lambda p: _matches(p, resource, scope)
    ):
        return False
    return _element(
        statement, "Action", lambda p: _matches(p, action, None, fold=True)
    ) and _conditions_hold(statement.get("Condition"), scope)


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
    scoped = ((policy, _make_scope(policy, context)) for policy in policies)
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
    scope = _make_scope(trust_policy, context)
    matching = (s for s in _statements(trust_policy) if _applies(s, action, scope, who=principal))
    return _decide(matching) is Decision.ALLOW
