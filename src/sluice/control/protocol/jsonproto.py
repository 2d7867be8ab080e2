"""The AWS `json` protocol (JSON 1.0/1.1: Secrets Manager), server side.

Why it is built this way: botocore's JSONSerializer names the operation in the X-Amz-Target
header and writes the input shape as one JSON object keyed by member names (or locationName),
blobs as base64 and timestamps as epoch seconds. We decode the body with the json module (never
anything that evaluates), then walk the input shape over it, converting and type-checking every
value, so a wrong type or an unknown member becomes the caller's SerializationException rather
than our crash. Answers are the mirror walk over the output shape, which also checks that our
handlers answered only what the model allows. (Named `jsonproto` so it never shadows `json`.)
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from botocore.model import OperationModel, ServiceModel

from sluice.control.errors import ApiError
from sluice.control.protocol import (
    MAX_BODY_BYTES,
    OutputError,
    Reply,
    format_timestamp,
    header,
    join_path,
    parse_float,
    parse_timestamp,
)

_SERIALIZATION = "SerializationException"
_MAX_NAME_IN_MESSAGE = 100


def _bad(path: str, expected: str) -> ApiError:
    return ApiError(_SERIALIZATION, f"The value of {path or 'the request'} must be {expected}")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("RequestEntityTooLarge", "The request body is too large", 413)
    if not body.strip():
        return {}
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(_SERIALIZATION, "The request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise _bad("", "a JSON object")
    return document


class _JsonReader:
    """Converts decoded JSON to parameters by walking an input shape."""

    def value(self, shape: Any, raw: Any, path: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            return self.structure(shape, raw, path)
        if kind == "list":
            if not isinstance(raw, list):
                raise _bad(path, "a list")
            return [self._item(shape.member, item, f"{path}[{i}]") for i, item in enumerate(raw)]
        if kind == "map":
            if not isinstance(raw, dict):
                raise _bad(path, "an object")
            return {
                self.value(shape.key, key, path): self._item(
                    shape.value, item, join_path(path, key)
                )
                for key, item in raw.items()
            }
        return _scalar(shape, raw, path)

    def structure(self, shape: Any, raw: Any, path: str) -> Any:
        if shape.is_document_type:
            return raw
        if not isinstance(raw, dict):
            raise _bad(path, "an object")
        names = {
            member.serialization.get("name", name): name for name, member in shape.members.items()
        }
        result: dict[str, Any] = {}
        for key, item in raw.items():
            name = names.get(key)
            if name is None:
                shown = key[:_MAX_NAME_IN_MESSAGE]
                raise ApiError(_SERIALIZATION, f"Unknown parameter {join_path(path, shown)}")
            if item is not None:
                result[name] = self.value(shape.members[name], item, join_path(path, name))
        return result

    def _item(self, shape: Any, raw: Any, path: str) -> Any:
        if raw is None:
            raise _bad(path, "present (null is not allowed)")
        return self.value(shape, raw, path)


def _scalar(shape: Any, raw: Any, path: str) -> Any:
    kind = shape.type_name
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if kind == "string" and isinstance(raw, str):
        return raw
    if kind == "boolean" and isinstance(raw, bool):
        return raw
    if kind in ("integer", "long") and isinstance(raw, int) and number:
        return raw
    if kind in ("float", "double") and (number or isinstance(raw, str)):
        try:
            return float(raw) if number else parse_float(raw)
        except (ValueError, OverflowError):
            raise _bad(path, "a number") from None
    if kind == "timestamp" and (number or isinstance(raw, str)):
        return _timestamp(raw, path)
    if kind == "blob" and isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise _bad(path, "base64-encoded") from None
    raise _bad(path, f"a {kind}")


def _timestamp(raw: float | str, path: str) -> datetime:
    try:
        if isinstance(raw, str):
            return parse_timestamp(raw)
        return datetime.fromtimestamp(raw, UTC)
    except (ValueError, OverflowError, OSError):
        raise _bad(path, "a timestamp") from None


def _dump(shape: Any, value: Any, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _dump_structure(shape, value, path)
    if kind == "list":
        if not isinstance(value, list | tuple):
            raise OutputError(f"{path}: expected a list")
        return [_dump(shape.member, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise OutputError(f"{path}: expected a dict")
        return {
            _dump(shape.key, key, path): _dump(shape.value, item, join_path(path, str(key)))
            for key, item in value.items()
        }
    return _dump_scalar(shape, value, path)


def _dump_structure(shape: Any, value: Any, path: str) -> Any:
    if shape.is_document_type:
        return value
    if not isinstance(value, dict):
        raise OutputError(f"{path or 'output'}: expected a dict for {shape.name}")
    result: dict[str, Any] = {}
    for name, item in value.items():
        member = shape.members.get(name)
        if member is None:
            raise OutputError(f"{join_path(path, name)}: not a member of {shape.name}")
        if item is not None:
            key = member.serialization.get("name", name)
            result[key] = _dump(member, item, join_path(path, name))
    return result


def _dump_scalar(shape: Any, value: Any, path: str) -> Any:
    kind = shape.type_name
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if (kind == "string" and isinstance(value, str)) or (
        kind == "boolean" and isinstance(value, bool)
    ):
        return value
    if kind in ("integer", "long") and number and isinstance(value, int):
        return value
    if kind in ("float", "double") and number:
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind == "timestamp" and isinstance(value, datetime):
        return format_timestamp(value, shape.serialization.get("timestampFormat", "unixTimestamp"))
    if kind == "blob" and isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise OutputError(f"{path}: {type(value).__name__} does not fit a {kind}")


def _headers(service: ServiceModel, request_id: str) -> dict[str, str]:
    version = service.metadata.get("jsonVersion", "1.0")
    return {"Content-Type": f"application/x-amz-json-{version}", "x-amzn-RequestId": request_id}


class JsonCodec:
    """The `json` protocol: X-Amz-Target names the operation, bodies are JSON objects."""

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
        """The operation in the `X-Amz-Target: Prefix.Operation` header."""
        target = header(headers, "X-Amz-Target") or ""
        prefix, _, name = target.rpartition(".")
        if prefix != service.metadata.get("targetPrefix") or name not in service.operation_names:
            shown = target[:_MAX_NAME_IN_MESSAGE] or "(none)"
            raise ApiError("UnknownOperationException", f"Unknown operation {shown}")
        return str(name)

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
        """The parameters of a JSON request; SerializationException if they do not fit."""
        document = _load(body)
        shape = op.input_shape
        if shape is None:
            if document:
                raise ApiError(_SERIALIZATION, "This operation takes no parameters")
            return {}
        params: dict[str, Any] = _JsonReader().structure(shape, document, "")
        return params

    def serialize(self, op: OperationModel, output: dict[str, Any], request_id: str) -> Reply:
        """A JSON success answer; OutputError if `output` does not fit the output shape."""
        shape = op.output_shape
        if shape is None and output:
            raise OutputError("this operation answers no members")
        document = _dump_structure(shape, output, "") if shape is not None else {}
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        return Reply(200, _headers(op.service_model, request_id), body)

    def serialize_error(self, service: ServiceModel, error: ApiError, request_id: str) -> Reply:
        """`{"__type": Code, "message": ...}` with x-amzn-ErrorType, at the error's status."""
        headers = _headers(service, request_id)
        headers["x-amzn-ErrorType"] = error.code
        body = json.dumps({"__type": error.code, "message": error.message}).encode("utf-8")
        return Reply(error.status, headers, body)
