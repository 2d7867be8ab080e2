"""AWS wire protocols, server side, driven by botocore's service models.

Why it is built this way: botocore only ships the client half of each protocol (serialize a
request, parse a response). Hand-writing the server half per operation would drift from what the
real `aws` CLI and boto3 send and expect, so every codec here walks the operation's input and
output *shapes* from botocore's models instead, inverting exactly what botocore's serializers
produce and producing exactly what its parsers read. Codecs are sans-IO (bytes and mappings in,
a `Reply` out) and stateless, so the HTTP layer stays thin and tests can use botocore itself as
the oracle. This module holds what all codecs share: the `Codec` interface, the `Reply`, scalar
conversions, the error vocabulary of each service family, and `validate()`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.model import OperationModel, ServiceModel
from botocore.validate import ParamValidator

from sluice.control.errors import ApiError

__all__ = [
    "MAX_BODY_BYTES",
    "Codec",
    "OutputError",
    "Reply",
    "codec_for",
    "validate",
]

# The largest request body any codec accepts; the HTTP layer should refuse bigger bodies
# before reading them (AWS's own limits for these services are well below this).
MAX_BODY_BYTES = 1 << 20

_EPOCH = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,9})?")
_MAX_TIMESTAMP_TEXT = 64
# Services whose parameter validation answers Smithy-style `ValidationError` texts.
_SMITHY_QUERY_SERVICES = frozenset({"iam", "sts"})


class OutputError(ValueError):
    """A handler's output does not fit the operation's output shape: our bug, never the caller's."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers and body, ready to send."""

    status: int
    headers: dict[str, str]
    body: bytes


class Codec(Protocol):
    """One wire protocol (query, ec2, json, rest-json): parse requests, serialize answers.

    `method` and `path` (the raw, still percent-encoded path) matter to rest-json only.
    """

    def operation_name(
        self,
        service: ServiceModel,
        body: bytes,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        *,
        method: str = "POST",
        path: str = "/",
    ) -> str:
        """The name of the operation a request calls; ApiError if there is none."""
        ...

    def parse(
        self,
        op: OperationModel,
        body: bytes,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        *,
        method: str = "POST",
        path: str = "/",
    ) -> dict[str, Any]:
        """The request's parameters, as boto3 would have been given them."""
        ...

    def serialize(self, op: OperationModel, output: dict[str, Any], request_id: str) -> Reply:
        """A success answer; `output` uses the output shape's member names."""
        ...

    def serialize_error(self, service: ServiceModel, error: ApiError, request_id: str) -> Reply:
        """An error answer in the service's format."""
        ...


def codec_for(service: ServiceModel) -> Codec:
    """The codec for the protocol of `service` (query, ec2, json or rest-json)."""
    # Imported here: the codec modules build on the helpers defined in this module.
    from sluice.control.protocol.ec2 import Ec2Codec
    from sluice.control.protocol.jsonproto import JsonCodec
    from sluice.control.protocol.query import QueryCodec
    from sluice.control.protocol.restjson import RestJsonCodec

    protocol = service.protocol
    if protocol == "query":
        return QueryCodec()
    if protocol == "ec2":
        return Ec2Codec()
    if protocol == "json":
        return JsonCodec()
    if protocol == "rest-json":
        return RestJsonCodec()
    raise ValueError(f"unsupported protocol {protocol!r} for {service.service_name}")


# --- shared helpers -----------------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, looked up case-insensitively."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_timestamp(value: datetime, fmt: str) -> str | float:
    """A timestamp in AWS's `fmt` (iso8601, unixTimestamp, rfc822), millisecond precision."""
    moment = as_utc(value)
    fmt = fmt.lower()
    if fmt == "iso8601":
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"
    if fmt == "unixtimestamp":
        whole = int(moment.replace(microsecond=0).timestamp())
        return whole + (moment.microsecond // 1000) / 1000
    if fmt == "rfc822":
        return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
    raise OutputError(f"unknown timestamp format {fmt!r}")


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp or epoch seconds, as an aware UTC datetime; ValueError if neither."""
    if len(text) > _MAX_TIMESTAMP_TEXT:
        raise ValueError("must be a timestamp")
    try:
        if _EPOCH.fullmatch(text):
            return datetime.fromtimestamp(float(text), UTC)
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError("must be a timestamp") from exc


def parse_float(text: str) -> float:
    """A float as botocore writes it, including Infinity, -Infinity and NaN."""
    special = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
    if text in special:
        return special[text]
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError("must be a number") from exc
    if not math.isfinite(value) or "_" in text:
        raise ValueError("must be a number")
    return value


def _smithy_style(service: ServiceModel) -> bool:
    if service.protocol == "json":
        return True
    return service.endpoint_prefix in _SMITHY_QUERY_SERVICES


def _smithy_path(path: str) -> str:
    return ".".join(part[:1].lower() + part[1:] for part in path.split("."))


def _smithy_code(service: ServiceModel) -> str:
    return "ValidationException" if service.protocol == "json" else "ValidationError"


def missing_input(service: ServiceModel, path: str) -> ApiError:
    """The error `service` answers when a required parameter is absent."""
    if _smithy_style(service):
        message = (
            f"1 validation error detected: Value null at '{_smithy_path(path)}' failed to "
            "satisfy constraint: Member must not be null"
        )
        return ApiError(_smithy_code(service), message)
    return ApiError("MissingParameter", f"The request must contain the parameter {path}")


def invalid_input(service: ServiceModel, path: str, constraint: str) -> ApiError:
    """The error `service` answers for a bad value; `constraint` reads "must ..."."""
    if _smithy_style(service):
        message = (
            f"1 validation error detected: Value at '{_smithy_path(path)}' failed to "
            f"satisfy constraint: Member {constraint}"
        )
        return ApiError(_smithy_code(service), message)
    return ApiError("InvalidParameterValue", f"Invalid value for parameter {path}: {constraint}")


def join_path(path: str, name: str) -> str:
    """`name` appended to a dotted parameter path."""
    return f"{path}.{name}" if path else name


# --- validation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Violation:
    path: str
    constraint: str  # "" when the parameter is missing; never contains the value


def validate(op: OperationModel, params: dict[str, Any]) -> None:
    """Raise the service's ApiError (status 400) for the first constraint `params` break.

    botocore's ParamValidator checks required members, types and minimums; enums, maximums
    and blob lengths, which it leaves to the server, are checked here.
    """
    shape = op.input_shape
    if shape is None:
        if params:
            raise invalid_input(op.service_model, next(iter(params)), "is not a known parameter")
        return
    violation = _botocore_violation(ParamValidator().validate(params, shape))
    if violation is None:
        violation = _constraint_violation(params, shape, "")
    if violation is None:
        return
    if not violation.constraint:
        raise missing_input(op.service_model, violation.path)
    raise invalid_input(op.service_model, violation.path, violation.constraint)


def _botocore_violation(report: Any) -> _Violation | None:
    if not report.has_errors():
        return None
    # botocore keeps its findings as (reason, name, details) tuples; its text report quotes
    # the offending values, which may be secrets, so it is never used.
    errors = getattr(report, "_errors", None)
    if not errors or not isinstance(errors[0], tuple) or len(errors[0]) != 3:
        return _Violation("input", "must be valid")
    reason, name, details = errors[0]
    base = str(name).lstrip(".")
    if reason == "missing required field":
        return _Violation(join_path(base, str(details["required_name"])), "")
    if reason == "unknown field":
        return _Violation(join_path(base, str(details["unknown_param"])), "must not be present")
    if reason == "invalid length":
        bound = details["min_allowed"]
        return _Violation(base, f"must have length greater than or equal to {bound}")
    if reason == "invalid range":
        bound = details["min_allowed"]
        return _Violation(base, f"must have value greater than or equal to {bound}")
    return _Violation(base or "input", "must have a valid type")


def _constraint_violation(value: Any, shape: Any, path: str) -> _Violation | None:
    kind = shape.type_name
    if kind == "structure":
        return _first(
            _constraint_violation(item, shape.members[name], join_path(path, name))
            for name, item in value.items()
        )
    if kind == "list":
        found = _length_violation(len(value), shape, path)
        items = (
            _constraint_violation(item, shape.member, f"{path}[{i}]")
            for i, item in enumerate(value)
        )
        return found or _first(items)
    if kind == "map":
        found = _length_violation(len(value), shape, path)
        entries = (
            _constraint_violation(key, shape.key, path)
            or _constraint_violation(item, shape.value, join_path(path, str(key)))
            for key, item in value.items()
        )
        return found or _first(entries)
    return _scalar_violation(value, shape, path)


def _scalar_violation(value: Any, shape: Any, path: str) -> _Violation | None:
    kind = shape.type_name
    if kind == "string":
        allowed = shape.enum
        if allowed and value not in allowed:
            return _Violation(path, f"must satisfy enum value set: [{', '.join(allowed)}]")
        return _length_violation(len(value), shape, path)
    if kind == "blob" and isinstance(value, bytes | bytearray | str):
        return _length_violation(len(value), shape, path)
    if kind in ("integer", "long", "float", "double"):
        bound = shape.metadata.get("max")
        if bound is not None and value > bound:
            return _Violation(path, f"must have value less than or equal to {bound}")
    return None


def _length_violation(length: int, shape: Any, path: str) -> _Violation | None:
    low = shape.metadata.get("min")
    high = shape.metadata.get("max")
    if low is not None and length < low:
        return _Violation(path, f"must have length greater than or equal to {low}")
    if high is not None and length > high:
        return _Violation(path, f"must have length less than or equal to {high}")
    return None


def _first(found: Iterable[_Violation | None]) -> _Violation | None:
    return next((item for item in found if item is not None), None)
