"""The AWS `rest-json` protocol (Lambda), server side.

Why it is built this way: a rest-json operation is named by its HTTP method and path, not by a
header or a body field. Each operation's `requestUri` in botocore's model is a template
(`/2015-03-31/functions/{FunctionName}/invocations`, sometimes with a literal query such as
`?find=LayerVersion`), so the route table is built from the model once per service: a regular
expression per template, the most literal template winning when two match. Input members come
from four places, as the model says per member: the path (`uri`), the query string
(`querystring`), headers (`header`, `headers` for a prefix map) and the JSON body - or, when the
input names a `payload` member, the whole body is that member (raw bytes for a blob, JSON for a
structure). Answers are the mirror walk: `statusCode` and `header` members leave the body, a
`payload` member becomes the body. The JSON walking itself is the `json` codec's, so both
protocols convert and check values the same way. Sans-IO and stateless, like the other codecs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from botocore.model import OperationModel, ServiceModel

from sluice.control.errors import ApiError
from sluice.control.protocol import (
    OutputError,
    Reply,
    as_utc,
    format_timestamp,
    header,
    parse_float,
    parse_timestamp,
)
from sluice.control.protocol.jsonproto import _dump, _dump_structure, _JsonReader

# Lambda accepts a deployment package of up to 50 MB, base64 in a JSON body (~67 MB).
MAX_REST_BODY_BYTES = 70 * 1024 * 1024

_SERIALIZATION = "SerializationException"
_MAX_SHOWN = 100
_LABEL = re.compile(r"\{([A-Za-z0-9_]+)(\+?)\}")
_BODY_LOCATIONS = (None, "")


@dataclass(frozen=True, slots=True)
class _Route:
    """One operation's method, path pattern and the literal query its requestUri demands."""

    name: str
    method: str
    pattern: re.Pattern[str]
    labels: tuple[str, ...]
    literal_query: tuple[tuple[str, str], ...]
    weight: int  # literal characters of the template: the more, the more specific


def _route(name: str, method: str, request_uri: str) -> _Route:
    path, _, literal = request_uri.partition("?")
    labels: list[str] = []
    parts: list[str] = []
    last = 0
    for match in _LABEL.finditer(path):
        parts.append(re.escape(path[last : match.start()]))
        labels.append(match.group(1))
        parts.append(f"(?P<l{len(labels) - 1}>{'.+' if match.group(2) else '[^/]+'})")
        last = match.end()
    parts.append(re.escape(path[last:]))
    query: list[tuple[str, str]] = []
    for item in filter(None, literal.split("&")):
        key, _, value = item.partition("=")
        query.append((key, value))
    weight = len(_LABEL.sub("", path)) + len(literal)
    pattern = re.compile("".join(parts) + "/?")
    return _Route(name, method.upper(), pattern, tuple(labels), tuple(query), weight)


@lru_cache(maxsize=8)
def _routes(service: ServiceModel) -> tuple[_Route, ...]:
    found = []
    for name in service.operation_names:
        http = service.operation_model(name).http
        found.append(_route(name, http.get("method", "POST"), http.get("requestUri", "/")))
    return tuple(sorted(found, key=lambda r: -r.weight))


def _match(
    service: ServiceModel, method: str, path: str, query: Mapping[str, str]
) -> tuple[_Route, dict[str, str]]:
    for route in _routes(service):
        if route.method != method.upper():
            continue
        found = route.pattern.fullmatch(path)
        if found is None or any(query.get(k) != v for k, v in route.literal_query):
            continue
        values = {label: unquote(found.group(f"l{i}")) for i, label in enumerate(route.labels)}
        return route, values
    shown = path[:_MAX_SHOWN]
    raise ApiError("UnknownOperationException", f"Unknown operation {method} {shown}", 404)


def _bad(path: str, expected: str) -> ApiError:
    return ApiError(_SERIALIZATION, f"The value of {path or 'the request'} must be {expected}")


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_REST_BODY_BYTES:
        raise ApiError("RequestEntityTooLargeException", "Request must be smaller than "
                       f"{MAX_REST_BODY_BYTES} bytes for the operation", 413)  # fmt: skip
    if not body.strip():
        return {}
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ApiError(_SERIALIZATION, "The request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise _bad("", "a JSON object")
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# --- scalars from text (path labels, query strings, headers) -------------------------------


def _text_value(shape: Any, text: str, path: str, where: str) -> Any:
    kind = shape.type_name
    try:
        if kind == "string":
            if shape.serialization.get("jsonvalue"):
                return json.loads(base64.b64decode(text, validate=True))
            return text
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return parse_float(text)
        if kind == "boolean" and text in ("true", "false"):
            return text == "true"
        if kind == "timestamp":
            return _text_timestamp(text, where)
        if kind == "list":
            items = [item.strip() for item in text.split(",")] if where == "header" else [text]
            return [_text_value(shape.member, item, path, where) for item in items]
    except (ValueError, binascii.Error, TypeError):
        pass
    raise _bad(path, f"a {kind}")


def _text_timestamp(text: str, where: str) -> datetime:
    if where == "header" and not text[:1].isdigit():
        return as_utc(parsedate_to_datetime(text))
    return parse_timestamp(text)


def _text_out(shape: Any, value: Any, path: str) -> str:
    kind = shape.type_name
    if kind == "string" and shape.serialization.get("jsonvalue"):
        return base64.b64encode(json.dumps(value).encode()).decode("ascii")
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind == "timestamp" and isinstance(value, datetime):
        return str(format_timestamp(value, shape.serialization.get("timestampFormat", "rfc822")))
    if kind == "list" and isinstance(value, list | tuple):
        return ",".join(_text_out(shape.member, item, path) for item in value)
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    if kind in ("string", "integer", "long", "float", "double") and scalar:
        return str(value)
    raise OutputError(f"{path}: {type(value).__name__} does not fit a {kind} header")


# --- the codec ------------------------------------------------------------------------------


class RestJsonCodec:
    """The `rest-json` protocol: method and path name the operation, members say where they go."""

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
        """The operation whose method and requestUri template match the request."""
        return _match(service, method, path, query)[0].name

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
        """The parameters, gathered from path, query, headers and body as the model places them."""
        shape = op.input_shape
        if shape is None:
            return {}
        _, labels = _match(op.service_model, method, path, query)
        params: dict[str, Any] = {}
        payload = shape.serialization.get("payload")
        for name, member in shape.members.items():
            value = self._located(member, name, labels, query, headers)
            if value is not None:
                params[name] = value
        if payload is not None:
            self._payload(shape.members[payload], payload, body, params)
        else:
            params.update(self._body(shape, body))
        return params

    @staticmethod
    def _located(
        member: Any,
        name: str,
        labels: Mapping[str, str],
        query: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> Any:
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            text = labels.get(wire)
            return None if text is None else _text_value(member, text, name, "uri")
        if location == "querystring":
            if member.type_name == "map":
                return {k: v for k, v in query.items() if not k.startswith("X-Amz-")} or None
            text = query.get(wire)
            return None if text is None else _text_value(member, text, name, "querystring")
        if location == "header":
            text = header(headers, wire)
            return None if text is None else _text_value(member, text, name, "header")
        if location == "headers":
            prefix = wire.lower()
            found = {k[len(prefix) :]: v for k, v in headers.items()
                     if k.lower().startswith(prefix)}  # fmt: skip
            return found or None
        return None

    @staticmethod
    def _payload(member: Any, name: str, body: bytes, params: dict[str, Any]) -> None:
        if len(body) > MAX_REST_BODY_BYTES:
            _load(body)  # raises the too-large error
        if member.type_name == "blob":
            if body:
                params[name] = body
        elif member.type_name == "string":
            if body:
                params[name] = body.decode("utf-8", errors="replace")
        else:
            document = _load(body)
            if document:
                params[name] = _JsonReader().value(member, document, name)

    @staticmethod
    def _body(shape: Any, body: bytes) -> dict[str, Any]:
        document = _load(body)
        located = {
            member.serialization.get("name", name)
            for name, member in shape.members.items()
            if member.serialization.get("location") not in _BODY_LOCATIONS
        }
        for key in document:
            if key in located:
                raise ApiError(_SERIALIZATION, f"Unknown parameter {key[:_MAX_SHOWN]}")
        result: dict[str, Any] = _JsonReader().structure(shape, document, "")
        return result

    def serialize(self, op: OperationModel, output: dict[str, Any], request_id: str) -> Reply:
        """Status, headers and body for `output`; OutputError if it does not fit the shape."""
        status = int(op.http.get("responseCode", 200))
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": request_id}
        shape = op.output_shape
        if shape is None:
            if output:
                raise OutputError("this operation answers no members")
            return Reply(status, headers, b"" if status == 204 else b"{}")
        payload = shape.serialization.get("payload")
        in_body: dict[str, Any] = {}
        body: bytes | None = None
        for name, value in output.items():
            member = shape.members.get(name)
            if member is None:
                raise OutputError(f"{name}: not a member of {shape.name}")
            if value is None:
                continue
            location = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if location == "statusCode":
                status = int(value)
            elif location == "header":
                headers[wire] = _text_out(member, value, name)
            elif location == "headers":
                headers.update({f"{wire}{k}": str(v) for k, v in value.items()})
            elif name == payload:
                body = _payload_out(member, value, name)
            else:
                in_body[name] = value
        if body is None:
            document = _dump_structure(shape, in_body, "") if payload is None else {}
            body = b"" if status == 204 and not document else _json(document)
        return Reply(status, headers, body)

    def serialize_error(self, service: ServiceModel, error: ApiError, request_id: str) -> Reply:
        """`{"Type": "User"|"Service", "Message": ...}` with x-amzn-ErrorType, as Lambda answers."""
        headers = {
            "Content-Type": "application/json",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": error.code,
        }
        kind = "User" if error.sender else "Service"
        body = _json({"Type": kind, "Message": error.message})
        return Reply(error.status, headers, body)


def _payload_out(member: Any, value: Any, name: str) -> bytes:
    if member.type_name == "blob":
        if not isinstance(value, bytes | bytearray):
            raise OutputError(f"{name}: expected bytes")
        return bytes(value)
    if member.type_name == "string":
        if not isinstance(value, str):
            raise OutputError(f"{name}: expected a string")
        return value.encode("utf-8")
    return _json(_dump(member, value, name))


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
