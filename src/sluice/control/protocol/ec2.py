"""The AWS `ec2` protocol, server side: the query protocol with EC2's own names and envelopes.

Why it is built this way: botocore's EC2Serializer is its QuerySerializer with two changes (a
member's form name is its queryName, else its capitalised locationName, else its own name; and
every list is flattened as `Name.N`), and EC2 answers without a result wrapper, with a lowercase
`requestId` and its own error document. So `Ec2Codec` reuses the query codec's shape walks and
overrides only those naming and envelope hooks.
"""

from __future__ import annotations

from typing import Any

from botocore.model import OperationModel, ServiceModel

from sluice.control.errors import ApiError
from sluice.control.protocol import Reply
from sluice.control.protocol.query import FormNode, QueryCodec, shorten, xml_reply, xml_text

_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def query_name(name: str, member: Any) -> str:
    """A member's form-field name as botocore's EC2Serializer writes it."""
    serialization = member.serialization
    if "queryName" in serialization:
        return str(serialization["queryName"])
    location = serialization.get("name")
    if location:
        return str(location[0].upper() + location[1:])
    return name


def _namespace(service: ServiceModel) -> str:
    # EC2 answers with a trailing slash; botocore's model spells the namespace without one.
    namespace = str(service.metadata.get("xmlNamespace", "http://ec2.amazonaws.com/doc/"))
    return namespace if namespace.endswith("/") else namespace + "/"


class Ec2Codec(QueryCodec):
    """The `ec2` protocol: form-encoded requests with flattened lists, EC2-style XML answers."""

    _ITEM_TAG = "item"
    _EMPTY_LISTS = False  # botocore sends nothing at all for an empty list

    def serialize_error(self, service: ServiceModel, error: ApiError, request_id: str) -> Reply:
        """`<Response><Errors><Error>` with Code and Message, at the error's HTTP status."""
        body = (
            f"{_XML_DECLARATION}<Response><Errors><Error>"
            f"<Code>{xml_text(error.code, strict=False)}</Code>"
            f"<Message>{xml_text(error.message, strict=False)}</Message></Error></Errors>"
            f"<RequestID>{xml_text(request_id, strict=False)}</RequestID></Response>"
        )
        return xml_reply(error.status, body, request_id)

    def _input_node(self, node: FormNode, name: str, member: Any) -> FormNode | None:
        return node.children.get(query_name(name, member))

    def _list_items(self, shape: Any, node: FormNode) -> FormNode | None:
        return node

    def _unknown_parameter(self, service: ServiceModel, name: str) -> ApiError:
        return ApiError("UnknownParameter", f"The parameter {shorten(name)} is not recognized")

    def _envelope(self, op: OperationModel, inner: str, request_id: str) -> str:
        name = op.name
        namespace = xml_text(_namespace(op.service_model))
        return (
            f'{_XML_DECLARATION}<{name}Response xmlns="{namespace}">'
            f"<requestId>{xml_text(request_id)}</requestId>{inner}</{name}Response>"
        )
