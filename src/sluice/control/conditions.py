"""IAM policy matching against a request: patterns, policy variables, condition operators.

Why it is built this way: `control.policy` validates documents and decides Allow/Deny
statement by statement; the parts of that decision that look at the request's context
(``*``/``?`` patterns with ``${...}`` variables, and the Condition block) are the
largest and most intricate, so they live here as pure functions that policy.py calls.
Patterns become anchored regular expressions in which resolved policy variables are
always literal text, so a user name containing ``*`` can never widen a grant; inside the
first five ARN segments a wildcard stays within its segment unless it ends the segment,
as AWS documents. Operators are a read-only table (base name -> test, negated).

Fail-closed choices: an unknown operator or malformed block makes a condition false;
an unresolvable policy variable makes the pattern (or value) match nothing; an
uncomparable value (bad number, date, address) makes the condition false.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_VARIABLE = re.compile(r"\$\{([^}]*)\}")


# --- patterns and variables ---------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The request context one policy is matched against."""

    values: Mapping[str, list[str]]  # context, keys lower-cased
    variables: bool  # policy variables are only substituted in 2012-10-17 documents


def make_scope(policy: Mapping[str, Any], context: Mapping[str, str | list[str]] | None) -> Scope:
    """The scope of one policy document: context keys lower-cased, variables if 2012-10-17."""
    values = {k.lower(): [v] if isinstance(v, str) else list(v) for k, v in (context or {}).items()}
    return Scope(values, policy.get("Version") == "2012-10-17")


def _resolve(body: str, scope: Scope) -> str | None:
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


def _chars(text: str, scope: Scope | None) -> list[tuple[bool, str]] | None:
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


def pattern_matches(pattern: str, text: str, scope: Scope | None, fold: bool = False) -> bool:
    """Whether ``text`` matches a policy pattern (no variables are resolved when scope is None)."""
    chars = _chars(pattern, scope)
    if chars is None:
        return False
    flags = (re.IGNORECASE | re.DOTALL) if fold else re.DOTALL
    return re.fullmatch(_regex(chars, pattern.startswith("arn:")), text, flags) is not None


def _substitute(value: object, scope: Scope) -> str | None:
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


_Op = Callable[[str, object, Scope], bool]


def _text_op(fold: bool) -> Callable[[str, object, Scope], bool]:
    def match(actual: str, wanted: object, scope: Scope) -> bool:
        text = _substitute(wanted, scope)
        if text is None:
            return False
        return actual.casefold() == text.casefold() if fold else actual == text

    return match


def _like(actual: str, wanted: object, scope: Scope) -> bool:
    return pattern_matches(str(wanted), actual, scope)


def _arn_like(actual: str, wanted: object, scope: Scope) -> bool:
    return actual.count(":") >= 5 and pattern_matches(str(wanted), actual, scope)


def _compare(parse: Callable[[object], Any], test: Callable[[Any, Any], bool]) -> _Op:
    def match(actual: str, wanted: object, scope: Scope) -> bool:
        text = _substitute(wanted, scope)
        return text is not None and bool(test(parse(actual), parse(text)))

    return match


def _ip(actual: str, wanted: object, scope: Scope) -> bool:
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


def known_operator(name: str) -> bool:
    """Whether ``name`` (with optional set qualifier and IfExists) is an operator we evaluate."""
    qualifier, _, base = name.lower().rpartition(":")
    if qualifier not in ("", "foranyvalue", "forallvalues"):
        return False
    return (base == "null" and not qualifier) or base.removesuffix("ifexists") in _OPERATORS


def _condition(name: str, key: str, wanted: object, scope: Scope) -> bool:
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


def conditions_hold(block: object, scope: Scope) -> bool:
    """Whether every condition of a statement's Condition block (None: no block) holds."""
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
