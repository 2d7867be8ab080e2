"""The AWS `query` protocol (RDS, IAM, STS), server side.

Why it is built this way: botocore's QuerySerializer flattens parameters into form fields whose
dotted names spell the shape path (`Auth.member.1.SecretArn`, `Tags.Tag.2.Key`). We split the
names back into a tree and walk the operation's input shape over it, so every naming rule
(locationName, `member`, flattened lists and maps) comes from the model, never from a table per
operation. Every field the walk does not read is an unknown parameter, which keeps parsing
strict. Answers are XML written by walking the output shape the way botocore's QueryParser reads
it. The EC2 protocol differs only in names and envelopes: `ec2.py` overrides the `_hooks` here.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from botocore.model import OperationModel, ServiceModel

from sluice.control.errors import ApiError
from sluice.control.protocol import (
    MAX_BODY_BYTES,
    OutputError,
    Reply,
    format_timestamp,
    invalid_input,
    join_path,
    parse_float,
    parse_timestamp,
)

_INDEX = re.compile(r"[1-9][0-9]{0,8}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_MAX_FIELDS = 10_000
_MAX_NAME_IN_MESSAGE = 100
# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_CONTROL_FIELDS = frozenset({"Action", "Version"})


@dataclass
class FormNode:
    """One dotted-name segment of the form: its own value, if any, and the segments below."""

    key: str = ""
    value: str | None = None
    children: dict[str, FormNode] = field(default_factory=dict)


def read_form(body: bytes, query: Mapping[str, str]) -> dict[str, str]:
    """The form fields of a request: the body's and the URL query's, each name at most once."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("RequestEntityTooLarge", "The request body is too large", 413)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except ValueError as exc:
        message = "The request body is not a valid form-encoded query string"
        raise ApiError("MalformedQueryString", message) from exc
    fields: dict[str, str] = {}
    for key, value in [*pairs, *query.items()]:
        if key in fields:
            message = f"The parameter {shorten(key)} appears more than once"
            raise ApiError("MalformedQueryString", message)
        fields[key] = value
    return fields


def shorten(name: str) -> str:
    """A caller-supplied name cut to a length fit for an error message."""
    return name if len(name) <= _MAX_NAME_IN_MESSAGE else name[:_MAX_NAME_IN_MESSAGE] + "..."


def xml_text(value: str, strict: bool = True) -> str:
    """`value` escaped for XML text or attributes; `\\r` survives as a character reference."""
    if _NOT_XML.search(value):
        if strict:
            raise OutputError("text holds characters XML 1.0 cannot carry")
        value = _NOT_XML.sub("\ufffd", value)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace('"', "&quot;").replace("\r", "&#13;")


def xml_reply(status: int, body: str, request_id: str) -> Reply:
    """An XML answer with AWS's headers."""
    headers = {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}
    return Reply(status, headers, body.encode("utf-8"))


def _is_control(name: str) -> bool:
    # Action and Version pick the operation; X-Amz-* carry a presigned request's signature.
    return name in _CONTROL_FIELDS or name.lower().startswith("x-amz-")


def _build_tree(fields: Mapping[str, str]) -> FormNode:
    root = FormNode()
    for key, value in fields.items():
        node = root
        for part in key.split("."):
            node = node.children.setdefault(part, FormNode())
        node.key = key
        node.value = value
    return root


def _numbered(node: FormNode) -> list[FormNode]:
    """The children of `node` named 1, 2, ... in numeric order (the items of a list or map)."""
    items = [(int(name), child) for name, child in node.children.items() if _INDEX.fullmatch(name)]
    return [child for _, child in sorted(items, key=lambda item: item[0])]


def scalar_from_text(shape: Any, text: str) -> Any:
    """The Python value of one form field; ValueError (saying what it must be) if invalid."""
    kind = shape.type_name
    if kind == "string":
        if _NOT_XML.search(text):
            raise ValueError("must not contain control characters")
        return text
    if kind in ("integer", "long"):
        if not _INTEGER.fullmatch(text):
            raise ValueError("must be an integer")
        return int(text)
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise ValueError("must be true or false")
        return text.lower() == "true"
    if kind in ("float", "double"):
        return parse_float(text)
    if kind == "timestamp":
        return parse_timestamp(text)
    if kind == "blob":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError("must be base64-encoded") from exc
    raise ValueError("has a type this service does not accept")


class _FormReader:
    """One walk of an input shape over a form tree, remembering which fields it read."""

    def __init__(self, codec: QueryCodec, service: ServiceModel) -> None:
        self._codec = codec
        self._service = service
        self.seen: set[str] = set()

    def value(self, shape: Any, node: FormNode, path: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            return self.structure(shape, node, path)
        if kind == "list":
            return self._sequence(shape, node, path)
        if kind == "map":
            return self._mapping(shape, node, path)
        return self._scalar(shape, node, path)

    def structure(self, shape: Any, node: FormNode, path: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, member in shape.members.items():
            child = self._codec._input_node(node, name, member)
            if child is not None:
                result[name] = self.value(member, child, join_path(path, name))
        return result

    def _sequence(self, shape: Any, node: FormNode, path: str) -> list[Any]:
        if self._codec._EMPTY_LISTS and node.value == "" and not node.children:
            self.seen.add(node.key)
            return []
        container = self._codec._list_items(shape, node)
        if container is None:
            return []  # whatever is there is left unread, hence reported as unknown
        items = _numbered(container)
        return [self.value(shape.member, item, f"{path}[{i}]") for i, item in enumerate(items)]

    def _mapping(self, shape: Any, node: FormNode, path: str) -> dict[Any, Any]:
        container = node if shape.serialization.get("flattened") else node.children.get("entry")
        if container is None:
            return {}
        key_tag = shape.key.serialization.get("name", "key")
        value_tag = shape.value.serialization.get("name", "value")
        result: dict[Any, Any] = {}
        for entry in _numbered(container):
            key_node = entry.children.get(key_tag)
            value_node = entry.children.get(value_tag)
            if key_node is None or value_node is None:
                raise invalid_input(self._service, path, "must have a key and a value per entry")
            key = self._scalar(shape.key, key_node, path)
            if key in result:
                raise invalid_input(self._service, path, "must not repeat a key")
            result[key] = self.value(shape.value, value_node, join_path(path, str(key)))
        return result

    def _scalar(self, shape: Any, node: FormNode, path: str) -> Any:
        if node.value is None:
            raise invalid_input(self._service, path, "must be a single value")
        self.seen.add(node.key)
        try:
            return scalar_from_text(shape, node.value)
        except ValueError as exc:
            raise invalid_input(self._service, path, str(exc)) from None


class _XmlWriter:
    """Writes an output dict as XML elements, the way botocore's XML parsers read them back."""

    def __init__(self, item_tag: str) -> None:
        self._item_tag = item_tag  # list items' element name when the model names none
        self._parts: list[str] = []

    def result(self, shape: Any, output: dict[str, Any]) -> str:
        """The answer's members, inside the shape's resultWrapper element if it has one."""
        if shape is None:
            if output:
                raise OutputError("this operation answers no members")
            return ""
        wrapper = shape.serialization.get("resultWrapper")
        if wrapper:
            self._parts.append(f"<{wrapper}>")
        self._members(shape, output, "")
        if wrapper:
            self._parts.append(f"</{wrapper}>")
        return "".join(self._parts)

    def _members(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise OutputError(f"{path or 'output'}: expected a dict for {shape.name}")
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None:
                raise OutputError(f"{join_path(path, name)}: not a member of {shape.name}")
            if item is not None:
                self._member(name, member, item, join_path(path, name))

    def _member(self, name: str, shape: Any, value: Any, path: str) -> None:
        tag = shape.serialization.get("name", name)
        if shape.type_name == "list" and shape.serialization.get("flattened"):
            item_tag = shape.member.serialization.get("name", tag)
            for i, item in enumerate(_as_list(value, path)):
                self._value(shape.member, item, item_tag, f"{path}[{i}]")
        elif shape.type_name == "map" and shape.serialization.get("flattened"):
            self._entries(shape, value, tag, path)
        else:
            self._value(shape, value, tag, path)

    def _value(self, shape: Any, value: Any, tag: str, path: str) -> None:
        kind = shape.type_name
        self._parts.append(f"<{tag}>")
        if kind == "structure":
            self._members(shape, value, path)
        elif kind == "list":
            item_tag = shape.member.serialization.get("name", self._item_tag)
            for i, item in enumerate(_as_list(value, path)):
                self._value(shape.member, item, item_tag, f"{path}[{i}]")
        elif kind == "map":
            self._entries(shape, value, "entry", path)
        else:
            self._parts.append(xml_text(scalar_to_text(shape, value, path)))
        self._parts.append(f"</{tag}>")

    def _entries(self, shape: Any, value: Any, entry_tag: str, path: str) -> None:
        if not isinstance(value, dict):
            raise OutputError(f"{path}: expected a dict")
        key_tag = shape.key.serialization.get("name", "key")
        value_tag = shape.value.serialization.get("name", "value")
        for key, item in value.items():
            self._parts.append(f"<{entry_tag}>")
            self._value(shape.key, key, key_tag, path)
            self._value(shape.value, item, value_tag, join_path(path, str(key)))
            self._parts.append(f"</{entry_tag}>")


def _as_list(value: Any, path: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise OutputError(f"{path}: expected a list")
    return value


def scalar_to_text(shape: Any, value: Any, path: str) -> str:
    """One scalar as XML text; OutputError if `value` is not of the shape's type."""
    kind = shape.type_name
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind in ("integer", "long") and number and isinstance(value, int):
        return str(value)
    if kind in ("float", "double") and number:
        return _float_text(float(value))
    if kind == "timestamp" and isinstance(value, datetime):
        return str(format_timestamp(value, shape.serialization.get("timestampFormat", "iso8601")))
    if kind == "blob" and isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise OutputError(f"{path}: {type(value).__name__} does not fit a {kind}")


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


class QueryCodec:
    """The `query` protocol: form-encoded requests, XML answers."""

    _ITEM_TAG = "member"
    _EMPTY_LISTS = True  # an empty list arrives as `Name=`

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
        """The Action field, from the form body or the URL query."""
        action = read_form(body, query).get("Action")
        if not action:
            raise ApiError("MissingAction", "The request must contain the parameter Action")
        if action not in service.operation_names:
            message = f"The action {shorten(action)} is not valid for this web service."
            raise ApiError("InvalidAction", message)
        return action

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
        """The parameters of a form-encoded request; ApiError for malformed or unknown ones."""
        fields = {k: v for k, v in read_form(body, query).items() if not _is_control(k)}
        reader = _FormReader(self, op.service_model)
        shape = op.input_shape
        params = reader.structure(shape, _build_tree(fields), "") if shape is not None else {}
        unknown = [key for key in fields if key not in reader.seen]
        if unknown:
            raise self._unknown_parameter(op.service_model, unknown[0])
        return params

    def serialize(self, op: OperationModel, output: dict[str, Any], request_id: str) -> Reply:
        """An XML success answer; OutputError if `output` does not fit the output shape."""
        inner = _XmlWriter(self._ITEM_TAG).result(op.output_shape, output)
        return xml_reply(200, self._envelope(op, inner, request_id), request_id)

    def serialize_error(self, service: ServiceModel, error: ApiError, request_id: str) -> Reply:
        """`<ErrorResponse>` with Type, Code and Message, at the error's HTTP status."""
        namespace = xml_text(service.metadata.get("xmlNamespace", ""), strict=False)
        fault = "Sender" if error.sender else "Receiver"
        body = (
            f'<ErrorResponse xmlns="{namespace}"><Error><Type>{fault}</Type>'
            f"<Code>{xml_text(error.code, strict=False)}</Code>"
            f"<Message>{xml_text(error.message, strict=False)}</Message></Error>"
            f"<RequestId>{xml_text(request_id, strict=False)}</RequestId></ErrorResponse>"
        )
        return xml_reply(error.status, body, request_id)

    # --- hooks the EC2 protocol overrides ---

    def _input_node(self, node: FormNode, name: str, member: Any) -> FormNode | None:
        """The form node holding structure member `name`."""
        if member.type_name == "list" and member.serialization.get("flattened"):
            alias = member.member.serialization.get("name")
            if alias and alias in node.children:
                return node.children[alias]
        return node.children.get(member.serialization.get("name", name))

    def _list_items(self, shape: Any, node: FormNode) -> FormNode | None:
        """The node whose numbered children are the items of list `node`."""
        if shape.serialization.get("flattened"):
            return node
        return node.children.get(shape.member.serialization.get("name", "member"))

    def _unknown_parameter(self, service: ServiceModel, name: str) -> ApiError:
        return invalid_input(service, shorten(name), "must be a parameter of this action")

    def _envelope(self, op: OperationModel, inner: str, request_id: str) -> str:
        name = op.name
        namespace = xml_text(op.metadata["xmlNamespace"])
        return (
            f'<{name}Response xmlns="{namespace}">{inner}<ResponseMetadata>'
            f"<RequestId>{xml_text(request_id)}</RequestId></ResponseMetadata></{name}Response>"
        )
