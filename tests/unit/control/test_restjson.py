"""The rest-json codec (Lambda), checked against botocore's own client half.

Requests are serialized by botocore's RestJSONSerializer and must parse back to exactly the
parameters given (from path labels, query strings, headers, JSON bodies and raw payloads); answers
are read by botocore's RestJSONParser and must give back what was serialized, status code and
headers included.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.awsrequest import HeadersDict, create_request_object, prepare_request_dict
from botocore.model import ServiceModel
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from botocore.session import get_session

from sluice.control.errors import ApiError
from sluice.control.protocol import OutputError, Reply, codec_for, validate

ROLE = "arn:aws:iam::123456789012:role/fn-role"
FN_ARN = "arn:aws:lambda:us-east-1:123456789012:function:my-fn"
RID = "5f1c2a9e-7d7b-4d3a-9c1e-0a1b2c3d4e5f"


@cache
def lambda_model() -> ServiceModel:
    return get_session().get_service_model("lambda")


def wire(op_name: str, params: dict[str, Any]) -> tuple[str, str, bytes, dict[str, str], Any]:
    """Method, raw path, body, query and headers botocore sends for `params`."""
    op = lambda_model().operation_model(op_name)
    request = create_serializer("rest-json").serialize_to_request(params, op)
    prepare_request_dict(request, endpoint_url="https://sluice.test:8443")
    prepared = create_request_object(request).prepare()
    body = prepared.body or b""
    body = body.encode("utf-8") if isinstance(body, str) else body
    url = urlsplit(prepared.url)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    return prepared.method, url.path, body, query, prepared.headers


def parse_request(op_name: str, params: dict[str, Any]) -> dict[str, Any]:
    method, path, body, query, headers = wire(op_name, params)
    model = lambda_model()
    codec = codec_for(model)
    where = {"method": method, "path": path}
    assert codec.operation_name(model, body, query, headers, **where) == op_name
    parsed = codec.parse(model.operation_model(op_name), body, query, headers, **where)
    validate(model.operation_model(op_name), parsed)
    return parsed


def read_reply(op_name: str, reply: Reply) -> dict[str, Any]:
    response = {"status_code": reply.status, "headers": HeadersDict(reply.headers),
                "body": reply.body}  # fmt: skip
    shape = lambda_model().operation_model(op_name).output_shape
    parsed: dict[str, Any] = create_parser("rest-json").parse(response, shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


def answer(op_name: str, output: dict[str, Any]) -> Reply:
    model = lambda_model()
    return codec_for(model).serialize(model.operation_model(op_name), output, RID)


REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("CreateFunction", {
        "FunctionName": "my-fn", "Runtime": "python3.11", "Role": ROLE, "Handler": "app.handler",
        "Code": {"ZipFile": b"PK\x03\x04 binary \x00\xff"}, "Timeout": 30, "MemorySize": 256,
        "Environment": {"Variables": {"DB_HOST": "127.20.0.4", "EMPTY": "", "UNI": "dév ü"}},
        "VpcConfig": {"SubnetIds": ["subnet-1"], "SecurityGroupIds": ["sg-1", "sg-2"]},
        "Layers": ["arn:aws:lambda:us-east-1:123456789012:layer:lib:1"], "Publish": False,
        "Tags": {"team": "db"},
    }),
    ("GetFunction", {"FunctionName": "my-fn"}),
    ("GetFunction", {"FunctionName": FN_ARN, "Qualifier": "$LATEST"}),
    ("GetFunctionConfiguration", {"FunctionName": "my-fn"}),
    ("ListFunctions", {"MaxItems": 10, "Marker": "a b/c", "FunctionVersion": "ALL"}),
    ("ListFunctions", {}),
    ("UpdateFunctionConfiguration", {"FunctionName": "my-fn", "Timeout": 1,
                                     "Environment": {"Variables": {}}}),
    ("UpdateFunctionCode", {"FunctionName": "my-fn", "ZipFile": b"\x00" * 300, "Publish": True}),
    ("DeleteFunction", {"FunctionName": "my-fn"}),
    ("Invoke", {"FunctionName": "my-fn", "Payload": b'{"a": [1, 2]}', "LogType": "Tail",
                "InvocationType": "RequestResponse", "ClientContext": "eyJ4IjoxfQ=="}),
    ("Invoke", {"FunctionName": FN_ARN, "Qualifier": "$LATEST"}),
    ("PublishLayerVersion", {"LayerName": "lib", "Content": {"ZipFile": b"PK.."},
                             "CompatibleRuntimes": ["python3.11"]}),
    ("GetLayerVersion", {"LayerName": "lib", "VersionNumber": 3}),
    ("GetLayerVersionByArn", {"Arn": "arn:aws:lambda:us-east-1:123456789012:layer:lib:3"}),
    ("ListLayerVersions", {"LayerName": "lib"}),
    ("PutFunctionConcurrency", {"FunctionName": "my-fn", "ReservedConcurrentExecutions": 2}),
    ("TagResource", {"Resource": FN_ARN, "Tags": {"a": "b"}}),
    ("UntagResource", {"Resource": FN_ARN, "TagKeys": ["a"]}),
    ("ListTags", {"Resource": FN_ARN}),
]  # fmt: skip


@pytest.mark.parametrize(("op_name", "params"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_requests_parse_back_to_the_params_botocore_sent(
    op_name: str, params: dict[str, Any]
) -> None:
    assert parse_request(op_name, params) == params


def test_the_most_literal_template_wins() -> None:
    # /2018-10-31/layers?find=LayerVersion and /2018-10-31/layers share a path.
    assert "Arn" in parse_request(
        "GetLayerVersionByArn", {"Arn": "arn:aws:lambda:us-east-1:123456789012:layer:x:1"}
    )
    assert parse_request("ListLayers", {}) == {}


def test_unknown_paths_and_methods_are_refused() -> None:
    model = lambda_model()
    codec = codec_for(model)
    with pytest.raises(ApiError) as err:
        codec.operation_name(model, b"", {}, {}, method="PATCH", path="/2015-03-31/functions")
    assert err.value.code == "UnknownOperationException"
    with pytest.raises(ApiError):
        codec.operation_name(model, b"", {}, {}, method="GET", path="/nowhere")


@pytest.mark.parametrize("body", [b"[1]", b"{", b'{"Timeout": "x"}', b'{"FunctionName": "b"}'])
def test_bad_bodies_are_the_callers_serialization_error(body: bytes) -> None:
    model = lambda_model()
    op = model.operation_model("UpdateFunctionConfiguration")
    with pytest.raises(ApiError) as err:
        codec_for(model).parse(
            op, body, {}, {}, method="PUT", path="/2015-03-31/functions/f/configuration"
        )
    assert err.value.code == "SerializationException"


CONFIG: dict[str, Any] = {
    "FunctionName": "my-fn", "FunctionArn": FN_ARN, "Runtime": "python3.11", "Role": ROLE,
    "Handler": "app.handler", "CodeSize": 321, "CodeSha256": "abc=", "Timeout": 3,
    "MemorySize": 128, "LastModified": "2026-12-04T20:00:00.000+0000", "Version": "$LATEST",
    "Environment": {"Variables": {"A": "1"}}, "State": "Pending", "LastUpdateStatus": "InProgress",
    "Layers": [{"Arn": "arn:aws:lambda:us-east-1:123456789012:layer:lib:1", "CodeSize": 10}],
}  # fmt: skip

ANSWERS: list[tuple[str, dict[str, Any]]] = [
    ("CreateFunction", CONFIG),
    ("GetFunction", {"Configuration": CONFIG, "Tags": {"a": "b"},
                     "Code": {"RepositoryType": "S3", "Location": "http://x/y"}}),
    ("ListFunctions", {"Functions": [CONFIG, CONFIG], "NextMarker": "m"}),
    ("Invoke", {"StatusCode": 200, "Payload": b'{"ok": true}', "FunctionError": "Unhandled",
                "LogResult": base64.b64encode(b"START RequestId").decode(),
                "ExecutedVersion": "$LATEST"}),
    ("Invoke", {"StatusCode": 202, "Payload": b""}),
    ("PutFunctionConcurrency", {"ReservedConcurrentExecutions": 0}),
    ("ListTags", {"Tags": {}}),
]  # fmt: skip


@pytest.mark.parametrize(("op_name", "output"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_answers_read_back_by_botocore_as_given(op_name: str, output: dict[str, Any]) -> None:
    reply = answer(op_name, output)
    parsed = read_reply(op_name, reply)
    if op_name == "Invoke" and "Payload" in parsed:  # a payload blob reads back as text
        parsed["Payload"] = parsed["Payload"].encode()
    assert parsed == output


def test_response_codes_come_from_the_model() -> None:
    assert answer("CreateFunction", CONFIG).status == 201
    assert answer("TagResource", {}).status == 204
    assert answer("TagResource", {}).body == b""
    assert answer("DeleteFunction", {"StatusCode": 204}).status == 204
    assert answer("Invoke", {"StatusCode": 202}).status == 202


def test_answers_that_do_not_fit_raise() -> None:
    with pytest.raises(OutputError):
        answer("GetFunctionConfiguration", {"Nope": 1})
    with pytest.raises(OutputError):
        answer("Invoke", {"Payload": "not bytes"})


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        (ApiError("ResourceNotFoundException", f"Function not found: {FN_ARN}", 404),
         "ResourceNotFoundException"),
        (ApiError("TooManyRequestsException", "Rate Exceeded.", 429), "TooManyRequestsException"),
        (ApiError("ServiceException", "boom", 500, sender=False), "ServiceException"),
    ],
)  # fmt: skip
def test_errors_read_back_by_botocore(error: ApiError, exception: str) -> None:
    model = lambda_model()
    reply = codec_for(model).serialize_error(model, error, RID)
    response = {"status_code": reply.status, "headers": HeadersDict(reply.headers),
                "body": reply.body}  # fmt: skip
    parsed = create_parser("rest-json").parse(response, None)
    assert parsed["Error"]["Code"] == exception
    assert parsed["Error"]["Message"] == error.message
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == error.status
